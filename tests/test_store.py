"""Never stale, never misranked, never a traceback: the run directory under damaged
records, changed code and data, concurrent runs and unsound certificates."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from advbench.cli import app
from advbench.testing import run_spec, tiny_spec

SMALL = dict(threat_models=[{"norm": "linf", "eps": [0.1]}], attacks=[{"name": "fgsm"}], certifiers=[{"name": "lipschitz"}])


def export(run_dir, out):
    result = CliRunner().invoke(app, ["export", str(run_dir), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return result, out.read_text()


@pytest.fixture
def finished(tmp_path):
    spec = tiny_spec(tmp_path, **SMALL)
    run = run_spec(spec, tmp_path / "run")
    assert run.exit_code == 0, run.output
    return spec, run


@pytest.mark.parametrize("damage", ["truncate", "edit"])
def test_a_damaged_record_is_reported_by_name_and_its_job_redone(finished, tmp_path, damage):
    spec, run = finished
    _, before = export(run.run_dir, tmp_path / "before.csv")
    record = run.run_dir / "jobs" / "plain" / "linf" / "attack-fgsm.json"
    text = record.read_text()
    record.write_text(text[: len(text) // 2] if damage == "truncate" else text.replace('"radius": [', '"radius": ["oops", '))
    result, _ = export(run.run_dir, tmp_path / "during.csv")
    assert "attack-fgsm.json is damaged" in result.output and "Traceback" not in result.output
    board = CliRunner().invoke(app, ["leaderboard", str(run.run_dir)])
    assert board.exit_code == 0 and "Damaged records" in (run.run_dir / "leaderboard.md").read_text()
    rerun = run_spec(spec, run.run_dir)
    assert rerun.exit_code == 0 and "attack-fgsm.json is damaged" in rerun.output and "1 job run" in rerun.output
    assert export(run.run_dir, tmp_path / "after.csv")[1] == before


def test_a_damaged_array_file_leaves_the_figure_out_not_the_leaderboard(finished):
    _, run = finished
    (run.run_dir / "jobs" / "plain" / "linf" / "attack-fgsm.npz").write_bytes(b"not a zip file")
    board = CliRunner().invoke(app, ["leaderboard", str(run.run_dir)])
    assert board.exit_code == 0, board.output
    assert "attack-fgsm.npz is damaged" in board.output


@pytest.mark.parametrize("damage", ["delete", "corrupt"])
def test_a_missing_or_changed_model_file_is_retrained_not_trusted(finished, tmp_path, damage):
    spec, run = finished
    _, before = export(run.run_dir, tmp_path / "before.csv")
    model_file = next((run.run_dir / "models").glob("plain-*.keras"))
    if damage == "delete":
        model_file.unlink()
    else:
        model_file.write_bytes(model_file.read_bytes()[:-100] + b"x" * 100)
    rerun = run_spec(spec, run.run_dir)
    assert rerun.exit_code == 0, rerun.output
    assert "1 job run" in rerun.output and model_file.name in rerun.output  # retrained, said so; the evaluations stand
    assert export(run.run_dir, tmp_path / "after.csv")[1] == before


def test_a_second_process_on_the_same_run_directory_is_refused_with_who_holds_it(finished):
    spec, run = finished
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time
            from advbench.runs.store import RunStore
            store = RunStore({str(run.run_dir)!r})
            store.lock()
            print("locked", flush=True)
            time.sleep(60)
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = run_spec(spec, run.run_dir)
        assert second.exit_code != 0 and f"is in use by pid {holder.pid}" in second.output
    finally:
        holder.kill()
        holder.wait()
    assert run_spec(spec, run.run_dir).exit_code == 0  # a killed holder leaves no lock behind


def test_temporary_files_of_a_killed_run_are_cleaned_up(finished):
    spec, run = finished
    orphans = [run.run_dir / "jobs" / "plain" / ".train.json.abc123.tmp", run.run_dir / "models" / ".plain-x.q1w2e3.tmp.keras"]
    for orphan in orphans:
        orphan.write_text("half written")
    assert run_spec(spec, run.run_dir).exit_code == 0
    assert not any(orphan.exists() for orphan in orphans)


LOCAL_ATTACK = textwrap.dedent("""
    from advbench import hookimpl
    from advbench.kit.pgd import PGD

    class Mine(PGD):
        \"\"\"PGD under another name.\"\"\"
        STRENGTH = 1

    @hookimpl
    def advbench_register_attacks(register):
        register("mine", Mine)
""")

LOCAL_DATASET = textwrap.dedent("""
    from pathlib import Path
    import numpy as np
    from advbench import Dataset, DatasetArrays, hookimpl

    class Folder(Dataset):
        \"\"\"Arrays from a .npz next to this file.\"\"\"
        def load(self):
            data = np.load(Path(__file__).parent / "arrays.npz")
            return DatasetArrays(data["x"][:300], data["y"][:300], data["x"][300:], data["y"][300:], 10, [str(k) for k in range(10)])

    @hookimpl
    def advbench_register_datasets(register):
        register("folder", Folder)
""")


def test_changed_plugin_code_or_data_content_recomputes_what_depends_on_it(tmp_path, clean_sys_path):
    from advbench import load_dataset

    digits = load_dataset("digits")
    x, y = np.concatenate([digits.x_train, digits.x_test])[:400], np.concatenate([digits.y_train, digits.y_test])[:400]
    np.savez(tmp_path / "arrays.npz", x=x, y=y)
    (tmp_path / "mine.py").write_text(LOCAL_ATTACK)
    (tmp_path / "folder.py").write_text(LOCAL_DATASET)
    spec = tiny_spec(
        tmp_path,
        plugins=["mine.py", "folder.py"],
        dataset={"name": "folder"},
        threat_models=[{"norm": "linf", "eps": [0.1]}],
        attacks=[{"name": "mine", "steps": 5}, {"name": "fgsm"}],
        certifiers=[],
    )
    assert run_spec(spec, tmp_path / "run").exit_code == 0
    assert "nothing left to do" in run_spec(spec, tmp_path / "run").output
    (tmp_path / "mine.py").write_text(LOCAL_ATTACK.replace("STRENGTH = 1", "STRENGTH = 2"))  # the attack's code changed
    rerun = run_spec(spec, tmp_path / "run")
    assert "1 job run, 3 already done" in rerun.output, rerun.output
    x[:, 0, 0, 0] = 1.0  # the data changed, under the same file name
    np.savez(tmp_path / "arrays.npz", x=x, y=y)
    rerun = run_spec(spec, tmp_path / "run")
    assert "4 jobs run, 0 already done" in rerun.output, rerun.output
    board = (tmp_path / "run" / "leaderboard.md").read_text()
    assert "mine.py" in board and "sha256:" in board and "content fingerprint" in board  # the provenance says what ran


UNSOUND = textwrap.dedent("""
    import numpy as np
    from advbench import Certifier, hookimpl

    class Boastful(Certifier):
        \"\"\"Claims far too much, for one model.\"\"\"
        def certify(self, target, x, y, norm):
            boast = target.model.count_params() < 1000
            return np.full(len(x), 10.0 if boast else 0.0)

    @hookimpl
    def advbench_register_certifiers(register):
        register("boastful", Boastful)
""")


def test_a_model_with_an_unsound_certificate_is_ranked_last_and_its_certificate_not_used(tmp_path, clean_sys_path):
    from advbench.results.table import ranked

    (tmp_path / "boast.py").write_text(UNSOUND)
    models = [
        {"name": "small", "architecture": {"name": "linear"}, "training": {"epochs": 3, "learning_rate": 0.01}},
        {"name": "big", "architecture": {"name": "mlp", "hidden": 32}, "training": {"epochs": 3, "learning_rate": 0.01}},
    ]
    spec = tiny_spec(
        tmp_path,
        plugins=["boast.py"],
        models=models,
        threat_models=[{"norm": "linf", "eps": [0.1]}],
        attacks=[{"name": "pgd", "steps": 10}],
        certifiers=[{"name": "boastful"}, {"name": "lipschitz"}],
    )
    run = run_spec(spec, tmp_path / "run")
    assert run.exit_code == 1
    bounds = run.results.for_norm("linf")
    order = [b.model for b in ranked(bounds, "certified")]
    assert order == ["big", "small"]  # "small" would lead with its impossible 100% certified
    small = next(b for b in bounds if b.model == "small")
    assert small.unsound == {"boastful"} and small.errors
    assert small.certified_accuracy(0.1) <= small.empirical_accuracy(0.1)  # only the sound certificate counts
    board = (run.run_dir / "leaderboard.md").read_text()
    table = board[board.index("| # |") :]
    assert table.index("| big |") < table.index("| small |") and "unsound" in board


def test_the_radius_bisection_stops_where_float32_cannot_split_the_bracket():
    from advbench.contract.plugins import load_plugins
    from advbench.kit.target import Target
    from advbench.runs.harness import attack_radii
    from helpers import linear_model

    model = linear_model(classes=3, seed=1)
    x = np.random.default_rng(0).uniform(0.3, 0.7, size=(8, 8, 8, 1)).astype(np.float32)
    target = Target(model, num_classes=3)
    predicted = target.predict(x)
    fgsm = load_plugins().registry.get("attack", "fgsm")()
    started = time.perf_counter()
    outcome = attack_radii(fgsm, target, x, predicted, predicted, "linf", [0.5], 1e-6, 0, 8)
    assert outcome.attack_calls < 80 and time.perf_counter() - started < 60
    outcome = attack_radii(fgsm, target, x, predicted, predicted, "linf", [0.5], 1e-12, 0, 8)  # below float32: still ends
    assert outcome.attack_calls < 80


EXITING = textwrap.dedent("""
    import sys
    from advbench import Attack, hookimpl

    class Quitter(Attack):
        \"\"\"Ends the process.\"\"\"
        def perturb(self, target, x, y, eps, norm, seed):
            sys.exit(3)

    @hookimpl
    def advbench_register_attacks(register):
        register("quitter", Quitter)
""")


def test_a_plugin_calling_sys_exit_in_a_job_fails_that_job_not_the_run(tmp_path, clean_sys_path):
    (tmp_path / "quit.py").write_text(EXITING)
    spec = tiny_spec(
        tmp_path,
        plugins=["quit.py"],
        threat_models=[{"norm": "linf", "eps": [0.1]}],
        attacks=[{"name": "quitter"}, {"name": "fgsm"}],
        certifiers=[],
    )
    run = run_spec(spec, tmp_path / "run")
    assert run.exit_code == 1 and "quitter failed: SystemExit" in (run.run_dir / "leaderboard.md").read_text()
    assert "fgsm" in run.results.for_norm("linf")[0].empirical


def test_a_rerun_with_nothing_left_to_do_does_not_import_keras(finished, tmp_path):
    spec, run = finished
    run_dir = run.run_dir
    check = textwrap.dedent(f"""
        import sys
        from advbench.cli import app
        from typer.testing import CliRunner
        result = CliRunner().invoke(app, ["run", {str(spec)!r}, "--out", {str(run_dir)!r}])
        assert result.exit_code == 0, result.output
        assert "nothing left to do" in result.output, result.output
        print("keras imported:", "keras" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "keras imported: False" in result.stdout  # the seconds TensorFlow's import takes are not spent


@pytest.mark.parametrize("config", [{"backend": "jax", "floatx": "float64"}, {"floatx": "float16"}, {}])
def test_the_backend_read_without_keras_is_the_one_keras_runs_on(tmp_path, config):
    import json
    import os

    (tmp_path / "keras.json").write_text(json.dumps(config))
    environment = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"} | {"KERAS_HOME": str(tmp_path)}
    check = textwrap.dedent("""
        from advbench.kit import backend
        guessed = backend.identity()
        import keras
        actual = {"backend": keras.backend.backend(), "precision": keras.config.floatx()}
        assert guessed == actual, (guessed, actual)
        backend.check_identity(guessed)
        print("same:", guessed)
    """)
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0 and "same:" in result.stdout, result.stderr[-3000:]


def test_editing_renderers_or_the_cli_reuses_every_job_and_editing_the_kit_redoes_them(tmp_path):
    """A job's key covers advbench's record-making code only (RECORD_MAKING): a copy of the
    package whose results/ and cli/ were edited reuses a finished run; one whose kit was
    edited recomputes every job."""
    import shutil

    import advbench

    source = tmp_path / "src"
    shutil.copytree(Path(advbench.__file__).parent, source / "advbench", ignore=shutil.ignore_patterns("__pycache__"))
    spec = tiny_spec(tmp_path, **SMALL)
    environment = {**os.environ, "PYTHONPATH": str(source)}

    def run() -> str:
        script = f"from advbench.cli import main; import sys; sys.argv = ['advbench', 'run', {str(spec)!r}, '--out', {str(tmp_path / 'run')!r}]; main()"
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=environment, cwd=tmp_path
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        assert (
            str(source)
            in subprocess.run(
                [sys.executable, "-c", "import advbench; print(advbench.__file__)"],
                capture_output=True,
                text=True,
                env=environment,
                cwd=tmp_path,
            ).stdout
        )  # the copy is what runs
        return result.stdout

    run()
    for renderer in ("results/markdown.py", "results/website.py", "cli/app.py", "api.py"):
        with open(source / "advbench" / renderer, "a") as file:
            file.write("\n# an edit that computes nothing\n")
    assert "nothing left to do" in run()
    with open(source / "advbench" / "kit" / "lp.py", "a") as file:
        file.write("\n# an edit of the kit: it could change any number\n")
    output = run()
    assert "nothing left to do" not in output and "0 already done" in output, output


def test_the_record_making_digest_covers_exactly_the_record_making_modules(tmp_path):
    import shutil

    import advbench
    from advbench.contract.plugins import RECORD_MAKING, record_code_digest

    copy = tmp_path / "advbench"
    shutil.copytree(Path(advbench.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = record_code_digest(copy)
    assert before == record_code_digest()  # the copy is the installed code
    for path in sorted(copy.rglob("*.py")):
        name = path.relative_to(copy).as_posix()
        original = path.read_bytes()
        path.write_bytes(original + b"\n# edited\n")
        keyed = name in RECORD_MAKING or any(name.startswith(part) for part in RECORD_MAKING if part.endswith("/"))
        assert (record_code_digest(copy) != before) == keyed, name
        path.write_bytes(original)
    assert not any(name.startswith(("results/", "cli/")) for name in RECORD_MAKING) and "api.py" not in RECORD_MAKING


def test_a_leaderboard_is_current_by_the_content_of_its_records_not_by_file_times(finished):
    """A record saved while the leaderboard was drawn (the race between run and
    leaderboard): the page is newer than every record, yet stale; the next run redraws it."""
    import json
    import os

    from advbench.results.markdown import leaderboard_is_current

    spec, run = finished
    board = run.run_dir / "leaderboard.md"
    assert leaderboard_is_current(run.run_dir, board, "certified")
    record_file = next(run.run_dir.glob("jobs/*/linf/attack-fgsm.json"))
    record = json.loads(record_file.read_text())
    record["attack_calls"] = record.get("attack_calls", 0) + 1  # what the saved job wrote after the page read it
    when = board.stat().st_mtime - 60
    record_file.write_text(json.dumps(record))
    os.utime(record_file, (when, when))  # older than the page
    assert not leaderboard_is_current(run.run_dir, board, "certified")
    rerun = run_spec(spec, run.run_dir)
    assert "nothing left to do" in rerun.output and leaderboard_is_current(run.run_dir, board, "certified")
