"""The pipeline end to end through the CLI: leaderboard, export, resume, kill -9,
changed specs, failures and the certified <= empirical check."""

import csv
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from advbench.cli import app
from advbench.testing import run_spec, tiny_spec
from helpers import kill_midway


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    directory = tmp_path_factory.mktemp("quick")
    spec = tiny_spec(
        directory,
        models=[
            {"name": "plain", "architecture": {"name": "mlp", "hidden": 32}, "training": {"epochs": 3, "learning_rate": 0.01}},
            {
                "name": "decay",
                "architecture": {"name": "mlp", "hidden": 32},
                "defense": {"name": "weight_decay", "lambda": 0.001},
                "training": {"epochs": 3, "learning_rate": 0.01},
            },
            {
                "name": "cnn",
                "architecture": {"name": "cnn", "filters": [8], "hidden": 16},
                "defense": {"name": "dropout"},
                "training": {"epochs": 3, "learning_rate": 0.01},
            },
            {
                "name": "stacked",
                "architecture": {"name": "mlp", "hidden": 32},
                "defense": [{"name": "weight_decay", "lambda": 0.001}, {"name": "gaussian_noise", "sigma": 0.1}],
                "training": {"epochs": 3, "learning_rate": 0.01},
            },
        ],
        attacks=[{"name": "fgsm"}, {"name": "pgd", "steps": 10}],
    )
    run = run_spec(spec, directory / "run")
    return spec, run


def test_run_writes_a_ranked_leaderboard_with_both_bounds(finished):
    spec, run = finished
    assert run.exit_code == 0, run.output
    board = (run.run_dir / "leaderboard.md").read_text()
    for piece in (
        "## linf threat model",
        "## l2 threat model",
        "ε=0.05 cert / emp",
        "median r cert",
        "## Provenance",
        "pgd",
        "steps: 10",
        "lipschitz",
        "tensorflow",
        "![linf",
        "leaderboard-linf.png",
        "leaderboard-linf-examples.png",
        "weight_decay+gaussian_noise",
        "Which attack found each example's smallest",
    ):
        assert piece in board, piece
    assert (run.run_dir / "leaderboard-linf.png").stat().st_size > 1000
    assert (run.run_dir / "leaderboard-l2-examples.png").stat().st_size > 1000
    for bounds in run.results.bounds:
        assert set(bounds.empirical) == {"fgsm", "pgd"} and set(bounds.certified) == {"lipschitz"}
        assert not bounds.errors
        assert (bounds.certified_radius <= bounds.empirical_radius).all()
        shares = dict(bounds.source_shares())
        assert sum(shares.values()) == pytest.approx(1.0) and set(shares) <= {"fgsm", "pgd", ""}
        for eps in bounds.eps:
            assert bounds.certified_accuracy(eps) <= bounds.empirical_accuracy(eps) <= bounds.clean_accuracy()
    assert "plain" in run.output and "cert / emp" in run.output  # the Rich table


def test_leaderboard_ranking_follows_certified_accuracy(finished):
    from advbench.results.table import ranked

    _, run = finished
    for norm in ("linf", "l2"):
        bounds = run.results.for_norm(norm)
        order = ranked(bounds, "certified")
        top = max(bounds[0].eps)
        values = [(b.certified_accuracy(top), b.empirical_accuracy(top)) for b in order]
        assert values == sorted(values, reverse=True)
    result = CliRunner().invoke(
        app, ["leaderboard", str(run.run_dir), "-o", str(run.run_dir / "by-emp.md"), "--rank-by", "empirical"]
    )
    assert result.exit_code == 0, result.output
    assert "Ranked by empirical" in (run.run_dir / "by-emp.md").read_text()


def test_export_has_one_row_per_model_norm_and_example(finished, tmp_path):
    from advbench import load_dataset

    _, run = finished
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(app, ["export", str(run.run_dir), "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == [
        "model",
        "norm",
        "index",
        "label",
        "predicted",
        "certified_radius",
        "empirical_radius",
        "empirical_by",
        "cert:lipschitz",
        "attack:fgsm",
        "attack:pgd",
    ]
    assert len(rows) == 4 * 2 * 30
    data = load_dataset("digits")
    for row in rows[:30]:
        assert int(row["label"]) == data.y_test[int(row["index"])]  # the index finds the example again
        assert float(row["empirical_radius"]) == min(float(row["attack:fgsm"]), float(row["attack:pgd"]))
        if row["empirical_by"]:  # the attack credited with the radius found it
            assert float(row["empirical_radius"]) == float(row[f"attack:{row['empirical_by']}"])
        else:
            assert row["empirical_radius"] in ("inf", "0.0")
        assert float(row["certified_radius"]) <= float(row["empirical_radius"])


def test_rerun_skips_finished_jobs_and_a_changed_spec_recomputes_only_what_changed(finished, tmp_path):
    spec, run = finished
    again = run_spec(spec, run.run_dir)
    assert again.exit_code == 0 and "nothing left to do, 32 already done" in again.output
    train_record = (run.run_dir / "jobs/plain/train.json").read_text()
    text = spec.read_text().replace("steps: 10", "steps: 11")
    changed = spec.with_name("changed.yaml")
    changed.write_text(text)
    rerun = run_spec(changed, run.run_dir)
    assert rerun.exit_code == 0
    assert "8 jobs run, 24 already done" in rerun.output  # pgd on 4 models x 2 norms
    assert (run.run_dir / "jobs/plain/train.json").read_text() == train_record
    assert "steps: 11" in (run.run_dir / "leaderboard.md").read_text()


def export(run_dir, out):
    subprocess.run(
        [sys.executable, "-m", "advbench.cli", "export", str(run_dir), "-o", str(out)], check=True, capture_output=True
    )
    return out.read_text()


def test_a_run_killed_with_sigkill_resumes_to_the_same_results(tmp_path):
    spec = tiny_spec(
        tmp_path,
        models=[
            {"name": f"m{i}", "architecture": {"name": "mlp", "hidden": 16 + i}, "training": {"epochs": 4, "learning_rate": 0.01}}
            for i in range(3)
        ],
    )
    command = [sys.executable, "-m", "advbench.cli", "run", str(spec), "--out"]
    subprocess.run(command + [str(tmp_path / "clean")], check=True, capture_output=True)
    finished_before = kill_midway(command + [str(tmp_path / "killed")], tmp_path / "killed", records=5, timeout=120)
    assert 5 <= finished_before < 15, "the run should have been killed midway"
    subprocess.run(command + [str(tmp_path / "killed")], check=True, capture_output=True)
    assert export(tmp_path / "clean", tmp_path / "a.csv") == export(tmp_path / "killed", tmp_path / "b.csv")


def test_a_resumed_run_of_a_randomized_model_draws_as_an_uninterrupted_one(tmp_path):
    import shutil

    spec = tiny_spec(
        tmp_path,
        models=[
            {
                "name": "random",
                "architecture": {"name": "mlp", "hidden": 16},
                "defense": {"name": "randomization"},
                "training": {"epochs": 2, "learning_rate": 0.01},
            }
        ],
        threat_models=[{"norm": "linf", "eps": [0.05, 0.1]}],
        attacks=[{"name": "fgsm"}, {"name": "pgd", "steps": 5}],
        evaluation={"examples": 20, "batch_size": 20, "eot_samples": 3, "final_draws": 3},
    )
    assert run_spec(spec, tmp_path / "whole").exit_code == 0
    shutil.copytree(tmp_path / "whole", tmp_path / "resumed")
    # as if the run had stopped before PGD: on resuming, PGD is the first job to use the model
    (tmp_path / "resumed" / "jobs" / "random" / "linf" / "attack-pgd.json").unlink()
    resumed = run_spec(spec, tmp_path / "resumed")
    assert resumed.exit_code == 0 and "1 job run" in resumed.output
    assert export(tmp_path / "whole", tmp_path / "a.csv") == export(tmp_path / "resumed", tmp_path / "b.csv")


def test_fresh_starts_over(finished, tmp_path):
    spec = tiny_spec(tmp_path, models=[{"name": "one", "architecture": {"name": "linear"}, "training": {"epochs": 2}}])
    first = run_spec(spec, tmp_path / "run")
    assert first.exit_code == 0, first.output
    fresh = run_spec(spec, tmp_path / "run", "--fresh")
    assert "6 jobs run, 0 already done" in fresh.output


def test_refuses_to_write_into_a_foreign_directory(tmp_path):
    spec = tiny_spec(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    result = run_spec(spec, tmp_path / "mine")
    assert result.exit_code != 0 and "not an advbench run directory" in result.output
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


PLUGINS = textwrap.dedent("""
    import numpy as np
    from advbench import Attack, Certifier, hookimpl

    class Crash(Attack):
        \"\"\"Always fails.\"\"\"
        def perturb(self, target, x, y, eps, norm, seed):
            raise RuntimeError("boom")

    class Boastful(Certifier):
        \"\"\"Claims far too much.\"\"\"
        def certify(self, target, x, y, norm):
            return np.full(len(x), 10.0)

    @hookimpl
    def advbench_register_attacks(register):
        register("crash", Crash)

    @hookimpl
    def advbench_register_certifiers(register):
        register("boastful", Boastful)
""")


def test_a_failing_attack_and_an_unsound_certifier_are_reported_not_hidden(tmp_path, clean_sys_path):
    (tmp_path / "bad.py").write_text(PLUGINS)
    spec = tiny_spec(
        tmp_path,
        plugins=["bad.py"],
        attacks=[{"name": "crash"}, {"name": "pgd", "steps": 5}],
        certifiers=[{"name": "boastful"}, {"name": "lipschitz"}],
    )
    run = run_spec(spec, tmp_path / "run")
    assert run.exit_code == 1
    board = (run.run_dir / "leaderboard.md").read_text()
    assert "**ERROR** `plain`: crash failed: RuntimeError: boom" in board
    assert "certified > empirical" in board and "boastful" in board
    bounds = run.results.for_norm("linf")[0]
    assert set(bounds.empirical) == {"pgd"}  # the rest of the run went on


def test_a_randomized_model_is_attacked_with_eot_and_turning_it_off_is_flagged(tmp_path):
    model = {
        "name": "random",
        "architecture": {"name": "mlp", "hidden": 16},
        "defense": {"name": "randomization", "max_ratio": 1.5},
        "training": {"epochs": 2, "learning_rate": 0.01},
    }
    spec = tiny_spec(
        tmp_path,
        models=[model],
        evaluation={"examples": 10, "eot_samples": 3, "final_draws": 3},
        threat_models=[{"norm": "linf", "eps": [0.1]}],
        certifiers=[{"name": "lipschitz"}],
    )
    run = run_spec(spec, tmp_path / "eot")
    assert run.exit_code == 0, run.output
    bounds = run.results.bounds[0]
    assert "randomized" in bounds.flags and any("needs a deterministic model" in note for note in bounds.notes)
    assert run.results.records["random/linf/attack-pgd"]["eot"]["eot_samples"] == 3
    off = tiny_spec(
        tmp_path,
        "off.yaml",
        models=[model],
        evaluation={"examples": 10, "eot": False},
        threat_models=[{"norm": "linf", "eps": [0.1]}],
        certifiers=[],
    )
    run = run_spec(off, tmp_path / "off")
    assert "EOT off" in run.output
    assert "EOT disabled: invalid evaluation" in run.results.bounds[0].flags
    assert "EOT disabled" in (run.run_dir / "leaderboard.md").read_text()


def test_ranking_breaks_ties_at_the_largest_eps_with_smaller_eps():
    import numpy as np

    from advbench.results.data import Bounds
    from advbench.results.table import ranked

    def bounds(name, certified, empirical):
        n = len(certified)
        return Bounds(
            name,
            "none",
            "linf",
            [0.1, 0.3],
            np.arange(n),
            np.zeros(n, int),
            np.zeros(n, int),
            certified={"c": np.array(certified)},
            empirical={"a": np.array(empirical)},
        )

    # nothing survives eps 0.3 anywhere; at eps 0.1, "b" keeps more examples empirically
    a = bounds("a", [0.0, 0.0, 0.0, 0.0], [0.2, 0.05, 0.05, 0.05])
    b = bounds("b", [0.0, 0.0, 0.0, 0.0], [0.2, 0.2, 0.05, 0.05])
    c = bounds("c", [0.15, 0.0, 0.0, 0.0], [0.2, 0.05, 0.05, 0.05])  # certifies one example at 0.1
    assert [x.model for x in ranked([a, b, c], "certified")] == ["c", "b", "a"]
    assert [x.model for x in ranked([a, b, c], "empirical")] == ["b", "c", "a"]
    a.predicted = np.array([0, 0, 0, 0])
    b.predicted = c.predicted = np.array([0, 0, 0, 1])  # "a" is the most accurate
    assert [x.model for x in ranked([a, b, c], "clean")][0] == "a"


def test_cost_per_model_is_in_the_leaderboard_and_every_job_in_the_json_export(finished, tmp_path):
    spec, run = finished
    board = (run.run_dir / "leaderboard.md").read_text()
    assert "## Cost" in board and "| plain |" in board.split("## Cost")[1]
    subprocess.run(
        [sys.executable, "-m", "advbench.cli", "export", str(run.run_dir), "--format", "json", "-o", str(tmp_path / "r.json")],
        check=True,
        capture_output=True,
    )
    import json

    cost = json.loads((tmp_path / "r.json").read_text())["cost"]
    assert set(cost["models"]) == {"plain", "decay", "cnn", "stacked"}
    jobs = cost["models"]["plain"]["jobs"]
    assert {j["kind"] for j in jobs} == {"train", "clean", "attack", "certify"} and all(j["seconds"] > 0 for j in jobs)
    pgd = [j for j in jobs if j["job"].endswith("/attack-pgd")]
    assert pgd and all(j["gradient"] > 0 for j in pgd)  # the evaluations the attack counted
    total = sum(m["total_seconds"] for m in cost["models"].values())
    assert cost["total_seconds"] == pytest.approx(total)


def test_progress_outside_a_terminal_is_plain_lines_and_a_rerun_says_what_it_reuses(finished):
    spec, run = finished
    assert run.output.startswith("advbench: reading ")  # the first line comes before any framework loads
    assert "advbench: 32 jobs\n" in run.output and "[32/32] " in run.output and "\x1b[" not in run.output
    again = run_spec(spec, run.run_dir)  # after the test above changed pgd's steps: those 8 are redone
    assert "advbench: 32 jobs, 24 finished already (reused)" in again.output and "8 jobs run" in again.output


def test_compare_of_a_run_with_itself_finds_no_difference_and_of_two_seeds_names_every_model(finished, tmp_path):
    spec, run = finished
    same = CliRunner().invoke(app, ["compare", str(run.run_dir), str(run.run_dir), "--format", "json"])
    assert same.exit_code == 0, same.output
    import json

    comparison = json.loads(same.output)
    assert comparison["settings"] == [] and not comparison["only_in_first"] and not comparison["only_in_second"]
    cells = [cell for row in comparison["bounds"] for key, cell in row.items() if isinstance(cell, dict)]
    assert cells and all(cell["difference"] in (0, None) and not cell["intervals_separate"] for cell in cells)
    other = spec.with_name("seed.yaml")
    other.write_text(spec.read_text().replace("seed: 0", "seed: 1"))
    assert "seed: 1" in other.read_text()
    second = run_spec(other, tmp_path / "seed1")
    assert second.exit_code == 0, second.output
    table = CliRunner().invoke(app, ["compare", str(run.run_dir), str(tmp_path / "seed1")], terminal_width=200)
    assert table.exit_code == 0, table.output
    for model in ("plain", "decay", "cnn", "stacked"):
        assert model in table.output
    assert "seed" in table.output  # the setting that differs
