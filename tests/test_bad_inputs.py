"""Bad input, one case per file: every spec in ``tests/bad_inputs/`` is refused by
``advbench validate`` and ``advbench run`` before any work, with exit code 2, no
traceback, and a message containing each of its ``# expect:`` lines (``FILE`` stands for
the spec's path).  A new case is one file.  Command-line mistakes follow below."""

import errno
from pathlib import Path

import pytest
from typer.testing import CliRunner

from advbench.cli import app
from advbench.testing import run_spec, tiny_spec

CASES = sorted((Path(__file__).parent / "bad_inputs").glob("*.yaml"))


def expected(path: Path) -> list[str]:
    lines = path.read_bytes().decode("latin-1").splitlines()
    return [line.split("# expect:", 1)[1].strip().replace("FILE", str(path)) for line in lines if line.startswith("# expect:")]


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_bad_spec_is_refused_before_any_work_with_a_precise_message(path, tmp_path, clean_sys_path):
    pieces = expected(path)
    assert pieces, f"{path.name} has no '# expect:' line"
    for command in ("validate", "run"):
        arguments = [command, str(path)] + (["--out", str(tmp_path / "run")] if command == "run" else [])
        result = CliRunner().invoke(app, arguments)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        for piece in pieces:
            assert piece in result.output, f"{piece!r} not in {result.output!r}"
    assert not (tmp_path / "run").exists()


def test_validate_reports_every_problem_in_one_pass(tmp_path):
    spec = tiny_spec(
        tmp_path,
        dataset={"name": "digits", "train_size": 300, "test_size": 60},
        models=[{"name": "a", "architecture": {"name": "mlp", "hidden": "many"}}, {"name": "b", "path": "missing.keras"}],
        threat_models=[{"norm": "linf", "eps": [0.1, 3.0]}, {"norm": "l7", "eps": [1]}],
        attacks=[{"name": "pgdd"}, {"name": "pgd", "steps": -1}],
        certifiers=[{"name": "lipschitz", "tolerance": 1}],
        evaluation={"examples": 100, "batch_size": 0},
    )
    result = CliRunner().invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2, result.output
    for piece in (
        "models[0].architecture.hidden",
        "models[1].path",
        "model file not found",
        "threat_models[1].norm",
        "attacks[0].name",
        "attacks[1].steps",
        "certifiers[0].tolerance",
        "evaluation.batch_size",
        "threat_models[0].eps[1]",
        "exceeds the largest linf distance",
        "evaluation.examples",
    ):
        assert piece in result.output, piece


def test_a_pretrained_model_that_outputs_probabilities_is_refused_unless_the_spec_says_so(tmp_path):
    import keras
    import numpy as np

    inputs = keras.Input((8, 8, 1))
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs))).save(
        tmp_path / "softmax.keras"
    )
    hidden = keras.layers.Dense(10)(keras.layers.Flatten()(inputs))
    keras.Model(inputs, keras.layers.Rescaling(1.0)(keras.layers.Softmax()(hidden))).save(tmp_path / "hidden_softmax.keras")
    for name, message in (
        ("softmax.keras", "ends in a softmax"),
        ("hidden_softmax.keras", "outputs on the test images are probabilities"),
    ):
        spec = tiny_spec(tmp_path, models=[{"name": "m", "path": name}])
        result = CliRunner().invoke(app, ["validate", str(spec)])
        assert result.exit_code == 2 and message in result.output and "outputs: probabilities" in result.output, result.output
        assert "spec.yaml:" in result.output  # the line of the model's entry
    spec = tiny_spec(tmp_path, models=[{"name": "m", "path": "softmax.keras", "outputs": "probabilities"}])
    run = run_spec(spec, tmp_path / "run")
    assert run.exit_code == 0, run.output
    from advbench.core.models import load_keras_model
    from advbench.kit import backend

    stored = load_keras_model(next((tmp_path / "run" / "models").glob("m-*.keras")))
    x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype(np.float32)
    original = backend.to_numpy(load_keras_model(tmp_path / "softmax.keras")(x))
    np.testing.assert_allclose(backend.to_numpy(stored(x)), np.log(original), rtol=1e-5)  # evaluated on log-probabilities


def test_a_near_chance_pretrained_model_is_flagged(tmp_path):
    import keras

    inputs = keras.Input((8, 8, 1))
    scaled = keras.layers.Rescaling(255.0)(inputs)  # expects pixels in [0, 255]: the classic mistake
    dense = keras.layers.Dense(10)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(scaled)))
    dense.kernel.assign(keras.ops.zeros((64, 10)))
    model.save(tmp_path / "chance.keras")
    spec = tiny_spec(tmp_path, models=[{"name": "m", "path": "chance.keras"}], certifiers=[])
    run = run_spec(spec, tmp_path / "run")
    assert "near chance" in run.output
    assert any("near-chance" in flag for flag in run.results.bounds[0].flags)


def test_relative_paths_in_parameters_are_relative_to_the_spec(tmp_path, monkeypatch):
    from advbench.spec import load_spec

    folder = tmp_path / "experiment"
    spec = tiny_spec(
        folder,
        dataset={"name": "mnist", "data_dir": "data"},
        attacks=[{"name": "masked_pgd", "pixels": "file", "mask_file": "mask.npy"}],
    )
    (folder / "mask.npy").write_bytes(b"")
    monkeypatch.chdir(tmp_path)  # elsewhere than the spec
    loaded = load_spec(spec)
    assert loaded.dataset.params.data_dir == str((folder / "data").resolve())
    assert loaded.attacks[0].params.mask_file == str((folder / "mask.npy").resolve())
    assert "data_dir" not in loaded.dataset.identity()  # where the data lives is not what it is


def test_command_line_mistakes_are_refused_before_any_work(tmp_path):
    spec = tiny_spec(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(spec), "--out", str(tmp_path / "run"), "--rank-by", "bogus"])
    assert result.exit_code == 2 and "--rank-by" in result.output and not (tmp_path / "run").exists()
    (tmp_path / "a-file").write_text("")
    result = runner.invoke(app, ["run", str(spec), "--out", str(tmp_path / "a-file")])
    assert result.exit_code == 2 and "is a file" in result.output
    run = run_spec(spec, tmp_path / "run")
    assert run.exit_code == 0
    result = runner.invoke(app, ["export", str(tmp_path / "run"), "-o", str(tmp_path)])
    assert result.exit_code == 2 and "is a directory" in result.output
    result = runner.invoke(app, ["leaderboard", str(tmp_path / "run"), "--rank-by", "bogus"])
    assert result.exit_code == 2 and "--rank-by" in result.output


def test_a_full_disk_is_reported_with_the_run_directory_and_nothing_is_lost(tmp_path, monkeypatch):
    import os

    spec = tiny_spec(tmp_path, attacks=[{"name": "fgsm"}], certifiers=[{"name": "lipschitz"}])
    original = os.replace
    writes = {"count": 0}

    def fills_up(source, destination):
        evaluation = Path(destination).parent.name in ("linf", "l2")
        if evaluation and writes["count"] >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        writes["count"] += evaluation
        original(source, destination)

    monkeypatch.setattr(os, "replace", fills_up)
    result = run_spec(spec, tmp_path / "run")
    assert result.exit_code == 1 and "no space left" in result.output and str(tmp_path / "run") in result.output
    assert "Traceback" not in result.output
    saved = sorted(str(p.relative_to(tmp_path / "run" / "jobs")) for p in (tmp_path / "run" / "jobs").rglob("*.json"))
    assert saved == ["plain/clean.json", "plain/linf/attack-fgsm.json", "plain/train.json"]
    monkeypatch.setattr(os, "replace", original)
    again = run_spec(spec, tmp_path / "run")
    assert again.exit_code == 0 and "3 jobs run, 3 already done" in again.output
