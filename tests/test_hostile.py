"""Nothing outside the run directory, no markup from strings advbench did not write, and a
clear answer to inputs too big, too deep, or not what they claim (the hostile or careless
user); every such input ends with a message and exit code 2 before work, or a failed job
recorded with exit code 1, never a traceback."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from advbench.cli import app
from advbench.testing import run_spec, tiny_spec

HOSTILE = Path(__file__).parent / "hostile"


def spec_with_plugins(tmp_path, *files, **overrides):
    for name in files:
        shutil.copy(HOSTILE / name, tmp_path / name)
    return tiny_spec(tmp_path, plugins=list(files), **overrides)


class Answer:
    """A command's exit code and output, the output on one line (Rich wraps long messages)."""

    def __init__(self, result):
        self.exit_code = result.exit_code
        self.output = " ".join(result.output.split())


def invoke(*arguments, **environment):
    result = CliRunner().invoke(app, [str(a) for a in arguments], env=environment or None)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return Answer(result)


# -- writing where it should not ------------------------------------------------------------


@pytest.mark.parametrize(
    "plugin, name", [("path_name.py", "../../../escape"), ("markup_name.py", "d|<img src=x onerror=alert(1)>")]
)
def test_names_that_are_paths_or_markup_are_refused_at_registration(tmp_path, clean_sys_path, plugin, name):
    spec = spec_with_plugins(tmp_path, plugin, attacks=[{"name": "fgsm"}])
    result = invoke("run", spec, "--out", tmp_path / "a" / "b" / "out")
    assert result.exit_code == 2
    assert f"with the invalid name {name!r}" in result.output
    assert not (tmp_path / "a").exists() and sorted(p.name for p in tmp_path.iterdir()) == [plugin, "spec.yaml"]


@pytest.mark.parametrize("planted", [".lock", "jobs", "jobs/plain/train.json", "spec.json"])
def test_a_symbolic_link_in_a_run_directory_is_refused_and_its_target_untouched(tmp_path, planted):
    spec = tiny_spec(tmp_path, certifiers=[], attacks=[{"name": "fgsm"}])
    first = run_spec(spec, tmp_path / "run")
    assert first.exit_code == 0, first.output
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    link = tmp_path / "run" / planted
    if link.is_dir():
        shutil.rmtree(link)
    else:
        link.unlink(missing_ok=True)
    link.symlink_to(outside if planted == "jobs" else outside / "precious.txt")
    result = invoke("run", spec, "--out", tmp_path / "run")
    assert result.exit_code == 2 and "is a symbolic link" in result.output, result.output
    assert (outside / "precious.txt").read_text() == "keep me" and sorted(os.listdir(outside)) == ["precious.txt"]
    # --fresh removes the link, never what it points to, and starts over
    again = invoke("run", spec, "--out", tmp_path / "run", "--fresh")
    assert again.exit_code == 0, again.output
    assert (outside / "precious.txt").read_text() == "keep me" and sorted(os.listdir(outside)) == ["precious.txt"]
    assert not link.is_symlink()


def test_the_leaderboard_replaces_a_link_instead_of_writing_through_it(tmp_path):
    spec = tiny_spec(tmp_path, certifiers=[], attacks=[{"name": "fgsm"}])
    assert run_spec(spec, tmp_path / "run").exit_code == 0
    precious = tmp_path / "precious.md"
    precious.write_text("keep me")
    for name in ("leaderboard.md", "leaderboard-linf.png"):
        target = tmp_path / "run" / name
        target.unlink()
        target.symlink_to(precious)
    result = invoke("leaderboard", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert precious.read_text() == "keep me"
    assert (
        not (tmp_path / "run" / "leaderboard.md").is_symlink()
        and "advbench leaderboard" in (tmp_path / "run" / "leaderboard.md").read_text()
    )


# -- markup from strings advbench did not write -----------------------------------------------


def test_hostile_strings_are_escaped_in_the_markdown_and_keep_the_tables_whole(tmp_path, clean_sys_path):
    spec = spec_with_plugins(tmp_path, "hostile_plugins.py", attacks=[{"name": "shouting"}, {"name": "fgsm"}], certifiers=[])
    result = invoke("run", spec, "--out", tmp_path / "run")
    assert result.exit_code == 1  # the failed job, recorded
    board = (tmp_path / "run" / "leaderboard.md").read_text()
    assert "<script>" not in board and "&lt;script>" in board
    assert "\n## injected" not in board
    tables, current = [], []
    for line in board.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    assert len(tables) >= 2
    for rows in tables:  # every row of every table has its header's columns (an escaped \| is not a column)
        widths = {len(row.replace("\\|", "").split("|")) for row in rows}
        assert len(widths) == 1, rows
    assert any("fgsm" in row for rows in tables for row in rows)


def test_rendering_escapes_names_and_messages_in_every_format():
    from rich.console import Console

    from advbench.results.data import Bounds
    from advbench.results.table import table
    from advbench.results.terminal import print_tables
    from advbench.text import markdown, terminal

    assert markdown("d|<img src=x onerror=alert(1)>") == "d\\|&lt;img src=x onerror=alert(1)>"
    assert markdown("line\n## injected") == "line ## injected"
    assert terminal("red\x1b[31m") == "red\\x1b[31m"
    b = Bounds(
        model="m", defense="none", norm="linf", eps=[0.1], index=np.arange(3), label=np.zeros(3, int), predicted=np.zeros(3, int)
    )
    b.empirical["a"] = np.array([0.05, 0.2, np.inf])
    b.flags.append("[bold red]not markup[/] \x1b[2J")
    console = Console(record=True, width=120)
    results = type(
        "R", (), {"spec": {"name": "x", "threat_models": [{"norm": "linf", "eps": [0.1]}]}, "for_norm": lambda self, n: [b]}
    )()
    print_tables(console, results)
    text = console.export_text()
    assert "[bold red]not markup[/]" in text and "\x1b" not in text
    assert table([b]).rows[0].cells[1] == "m"


# -- inputs too big or too deep ------------------------------------------------------------------


def test_a_spec_nested_3000_deep_is_refused_with_the_limit(tmp_path):
    spec = tmp_path / "deep.yaml"
    spec.write_text("name: deep\nmodels: " + "[" * 3000 + "]" * 3000 + "\n")
    result = invoke("validate", spec)
    assert result.exit_code == 2 and "nested 3000 levels deep; a spec nests at most 32" in result.output


def test_a_huge_spec_is_refused_before_it_is_read(tmp_path):
    spec = tmp_path / "huge.yaml"
    spec.write_text("name: huge\n# " + "x" * (2 << 20) + "\n")
    result = invoke("validate", spec)
    assert result.exit_code == 2 and "a spec is at most 1,048,576" in result.output


def test_a_long_list_in_an_unknown_parameter_is_answered_at_once_and_shortly(tmp_path):
    import time

    spec = tiny_spec(tmp_path, attacks=[{"name": "pgd", "stepz": list(range(100_000))}])  # just under 1 MiB of YAML
    started = time.perf_counter()
    result = invoke("validate", spec)
    assert result.exit_code == 2 and "unknown parameter 'stepz'" in result.output
    assert len(result.output) < 2000 and time.perf_counter() - started < 30


# -- models and data that are not what they claim --------------------------------------------------


def test_a_pretrained_model_with_infinite_logits_is_refused(tmp_path):
    import keras

    inputs = keras.Input((8, 8, 1))
    dense = keras.layers.Dense(10)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.kernel.assign(np.full((64, 10), 3e38, np.float32))  # overflows on any bright enough image
    model.save(tmp_path / "overflow.keras")
    spec = tiny_spec(tmp_path, models=[{"name": "m", "path": "overflow.keras"}])
    result = invoke("validate", spec)
    assert result.exit_code == 2 and "outputs NaN or inf on" in result.output and "models[0].path" in result.output


def test_a_constant_model_gets_sound_lipschitz_radii_not_nan():
    import keras

    from advbench.kit.target import Target
    from helpers import certifier

    inputs = keras.Input((8, 8, 1))
    dense = keras.layers.Dense(3)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.kernel.assign(np.zeros((64, 3), np.float32))
    dense.bias.assign(np.array([1.0, 0.0, 1.0], np.float32))
    x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype(np.float32)
    radius = certifier("lipschitz").certify(Target(model, num_classes=3), x, np.array([0, 0, 1, 2]), "l2")
    assert not np.any(np.isnan(radius))
    assert radius.tolist() == [0.0, 0.0, 0.0, 0.0]  # class 0 ties with 2 (margin 0): nothing proved; 1 and 2 lose


def test_a_float16_model_is_recorded_as_float16(tmp_path):
    import keras

    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Dense(10, dtype="float16")(keras.layers.Flatten(dtype="float16")(inputs)))
    model.save(tmp_path / "half.keras")
    spec = tiny_spec(tmp_path, models=[{"name": "m", "path": "half.keras"}], certifiers=[], attacks=[{"name": "fgsm"}])
    run = run_spec(spec, tmp_path / "run")
    assert run.exit_code == 0, run.output
    records = run.results.records
    assert records["m/clean"]["environment"]["precision"] == "float16"
    assert "float16" in (tmp_path / "run" / "leaderboard.md").read_text()


@pytest.mark.parametrize(
    "dataset, message", [("bytes", "ranges over [0, 255], expected [0, 1]"), ("holes", "1 NaN or infinite pixels")]
)
def test_a_dataset_outside_the_box_or_with_nan_pixels_is_refused(tmp_path, clean_sys_path, dataset, message):
    spec = spec_with_plugins(tmp_path, "hostile_plugins.py", dataset={"name": dataset})
    result = invoke("validate", spec)
    assert result.exit_code == 2 and message in result.output and f"dataset {dataset!r}" in result.output


def test_an_attack_needing_a_model_the_spec_lacks_is_refused(tmp_path, clean_sys_path):
    spec = spec_with_plugins(tmp_path, "hostile_plugins.py", attacks=[{"name": "needs_a_ghost"}])
    result = invoke("validate", spec)
    assert result.exit_code == 2 and "needs the model 'ghost', which is not a model of this spec" in result.output


# -- exits and environments --------------------------------------------------------------------------


@pytest.mark.parametrize("attack, what", [("exiting", "os._exit(0)"), ("aborting", "os.abort()")])
def test_a_plugin_that_ends_the_process_fails_its_job_not_the_run(tmp_path, clean_sys_path, attack, what):
    spec = spec_with_plugins(tmp_path, "hostile_plugins.py", attacks=[{"name": attack}, {"name": "fgsm"}], certifiers=[])
    result = invoke("run", spec, "--out", tmp_path / "run")
    assert result.exit_code == 1 and f"called {what}" in result.output
    assert (tmp_path / "run" / "jobs" / "plain" / "linf" / "attack-fgsm.json").is_file()  # the others ran


def test_an_unknown_keras_backend_is_refused_by_validate_and_run(tmp_path):
    spec = tiny_spec(tmp_path)
    for command in (["validate", spec], ["run", spec, "--out", tmp_path / "run"]):
        result = invoke(*command, KERAS_BACKEND="bogus")
        assert result.exit_code == 2 and "KERAS_BACKEND='bogus': expected one of tensorflow, jax, torch" in result.output
    assert not (tmp_path / "run").exists()


def test_unwritable_outputs_are_usage_errors(tmp_path):
    spec = tiny_spec(tmp_path, certifiers=[], attacks=[{"name": "fgsm"}])
    assert run_spec(spec, tmp_path / "run").exit_code == 0
    (tmp_path / "a-file").write_text("")
    for command in (
        ["export", tmp_path / "run", "-o", tmp_path / "a-file" / "x.csv"],
        ["leaderboard", tmp_path / "run", "-o", tmp_path / "a-file" / "x.md"],
    ):
        result = invoke(*command)
        assert result.exit_code == 2 and "cannot write" in result.output, result.output
    result = invoke("run", spec, "--out", "/proc/advbench-cannot-write-here")
    assert result.exit_code == 2 and "cannot write the run directory" in result.output


def test_markup_and_escape_sequences_in_a_run_directorys_spec_name_are_shown_as_text(tmp_path):
    """A run directory made elsewhere: its spec.json names the run '[/x]\\x1b[2J'. The
    terminal tables and compare show it as text; rich's markup never reads it."""
    import json

    from typer.testing import CliRunner

    from advbench.cli import app
    from advbench.testing import run_spec, tiny_spec

    spec = tiny_spec(tmp_path, threat_models=[{"norm": "linf", "eps": [0.1]}], attacks=[{"name": "fgsm"}], certifiers=[])
    assert run_spec(spec, tmp_path / "run").exit_code == 0
    stored = tmp_path / "run" / "spec.json"
    data = json.loads(stored.read_text())
    data["name"] = "[/x][bold]evil\x1b[2J"
    stored.write_text(json.dumps(data))
    for command in (
        ["leaderboard", str(tmp_path / "run"), "-o", str(tmp_path / "board.md")],
        ["compare", str(tmp_path / "run"), str(tmp_path / "run")],
    ):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 0, result.output
        assert "\x1b[2J" not in result.output
    assert (
        "[/x][bold]evil" in CliRunner().invoke(app, ["leaderboard", str(tmp_path / "run"), "-o", str(tmp_path / "b.md")]).output
    )


def test_names_planted_in_a_run_directory_never_make_a_path_outside_it(tmp_path):
    """A record's diagnostics.figures and spec.json's norm are names advbench would build
    file names from: a planted '../' or absolute name is reported, never followed."""
    import json

    from typer.testing import CliRunner

    from advbench.cli import app
    from advbench.testing import run_spec, tiny_spec

    work = tmp_path / "work"
    spec = tiny_spec(work, threat_models=[{"norm": "linf", "eps": [0.1]}], attacks=[{"name": "fgsm"}], certifiers=[])
    run = work / "run"
    assert run_spec(spec, run).exit_code == 0
    (run / "diagnostics").mkdir(exist_ok=True)
    (tmp_path / "secret.png").write_bytes(b"not yours")
    clean = next(run.glob("jobs/*/clean.json"))
    record = json.loads(clean.read_text())
    record["diagnostics"] = {"figures": ["x/../../../escaped.png", str(tmp_path / "secret.png"), "../secret.png"], "iou": 0.5}
    clean.write_text(json.dumps(record))
    stored = json.loads((run / "spec.json").read_text())
    stored["threat_models"][0]["norm"] = "x/../../../planted"
    (run / "spec.json").write_text(json.dumps(stored))
    before = {p: sorted(x.name for x in p.iterdir()) for p in (tmp_path, work)}
    result = CliRunner().invoke(app, ["leaderboard", str(run)])
    assert result.exit_code in (0, 2) and "Traceback" not in result.output
    assert {p: sorted(x.name for x in p.iterdir()) for p in (tmp_path, work)} == before  # nothing written outside
    assert not any(run.rglob("*escaped*")) and not any(run.rglob("*planted*"))


def test_leaderboard_to_standard_output_is_refused_and_writes_nothing(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from advbench.cli import app
    from advbench.testing import run_spec, tiny_spec

    spec = tiny_spec(tmp_path, threat_models=[{"norm": "linf", "eps": [0.1]}], attacks=[{"name": "fgsm"}], certifiers=[])
    assert run_spec(spec, tmp_path / "run").exit_code == 0
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = CliRunner().invoke(app, ["leaderboard", str(tmp_path / "run"), "-o", "-"])
    assert result.exit_code == 2 and "--output -" in result.output
    assert list(elsewhere.iterdir()) == []  # no file named '-' or '--linf.png'


def test_bab_refuses_a_subdomain_budget_beyond_what_it_can_count(tmp_path):
    from typer.testing import CliRunner

    from advbench.cli import app
    from advbench.testing import tiny_spec

    spec = tiny_spec(tmp_path, certifiers=[{"name": "bab", "max_domains": 10**19}])
    result = CliRunner().invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2 and "max_domains" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("content", [b"name: caf\xe9\n", b"plugins: " + b"[" * 3000 + b"]" * 3000 + b"\n"])
def test_plugins_spec_reads_the_spec_through_the_loaders_guards(tmp_path, content):
    from typer.testing import CliRunner

    from advbench.cli import app

    (tmp_path / "spec.yaml").write_bytes(content)
    result = CliRunner().invoke(app, ["plugins", "--spec", str(tmp_path / "spec.yaml")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "not UTF-8" in result.output or "nested" in result.output


@pytest.mark.parametrize(
    "file, change, expected",
    [
        ("spec.json", lambda data: {}, "spec.json: name: expected a string"),
        ("spec.json", lambda data: {**data, "models": "abc"}, "spec.json: models: expected a list"),
        ("spec.json", lambda data: {**data, "seed": "x"}, "spec.json: seed: expected an integer"),
        ("plan.json", lambda data: {**data, "jobs": "abc"}, "plan.json: jobs: expected a mapping"),
    ],
)
def test_a_damaged_spec_or_plan_is_reported_by_file_and_field_in_every_reader(tmp_path, file, change, expected):
    import json

    from typer.testing import CliRunner

    from advbench.cli import app
    from advbench.testing import run_spec, tiny_spec

    spec = tiny_spec(tmp_path, threat_models=[{"norm": "linf", "eps": [0.1]}], attacks=[{"name": "fgsm"}], certifiers=[])
    run = tmp_path / "run"
    assert run_spec(spec, run).exit_code == 0
    (run / file).write_text(json.dumps(change(json.loads((run / file).read_text()))))
    for command in (
        ["leaderboard", str(run), "-o", str(tmp_path / "b.md")],
        ["leaderboard", str(run), "--format", "html", "-o", str(tmp_path / "site")],
        ["export", str(run), "-o", "-"],
        ["export", str(run), "-o", "-", "--format", "json"],
        ["compare", str(run), str(run)],
    ):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2 and expected in result.output, (command, result.output)


@pytest.mark.parametrize("field, value", [("environment", "abc"), ("evaluations", {"forward": "abc"}), ("seconds", "slow")])
def test_a_record_of_the_wrong_shape_is_left_out_and_named_not_a_traceback(tmp_path, field, value):
    import json

    from typer.testing import CliRunner

    from advbench.cli import app
    from advbench.testing import run_spec, tiny_spec

    spec = tiny_spec(tmp_path, threat_models=[{"norm": "linf", "eps": [0.1]}], attacks=[{"name": "fgsm"}], certifiers=[])
    run = tmp_path / "run"
    assert run_spec(spec, run).exit_code == 0
    record_file = next(run.glob("jobs/*/linf/attack-fgsm.json"))
    record = json.loads(record_file.read_text())
    record[field] = value
    record_file.write_text(json.dumps(record))
    for command in (["leaderboard", str(run), "-o", str(tmp_path / "b.md")], ["export", str(run), "-o", "-", "--format", "json"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 0, result.output
        assert "attack-fgsm.json is damaged" in result.output and field in result.output
