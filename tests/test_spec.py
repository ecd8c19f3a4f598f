"""Spec validation: every malformed spec is refused before any work, with the file, the
line, the field and what was expected, exit code 2 and no traceback."""

import textwrap

import pytest
from typer.testing import CliRunner

from advbench.cli import app

GOOD = """\
name: t
seed: 0
dataset: {name: digits, train_size: 200, test_size: 40}
models:
  - name: plain
    architecture: {name: mlp, hidden: 16}
    defense: {name: none}
    training: {epochs: 1}
threat_models:
  - {norm: linf, eps: [0.05, 0.1]}
attacks:
  - {name: pgd, steps: 5}
certifiers:
  - {name: lipschitz}
evaluation: {examples: 10}
"""

# (description, text replacement, expected pieces of the message)
CASES = [
    ("unknown attack", ("{name: pgd, steps: 5}", "{name: pgdd, steps: 5}"),
     ["spec.yaml:12", "attacks[0].name", "unknown attack 'pgdd'", "did you mean 'pgd'?", "known: "]),
    ("unknown parameter", ("{name: pgd, steps: 5}", "{name: pgd, stepz: 5}"),
     ["spec.yaml:12", "attacks[0].stepz", "unknown parameter 'stepz'", "known: steps, restarts"]),
    ("wrong type", ("{name: pgd, steps: 5}", "{name: pgd, steps: forty}"),
     ["spec.yaml:12", "attacks[0].steps", "valid integer", "'forty'"]),
    ("empty eps", ("eps: [0.05, 0.1]", "eps: []"), ["spec.yaml:10", "threat_models[0].eps", "at least 1 item"]),
    ("negative eps", ("eps: [0.05, 0.1]", "eps: [-0.1]"), ["spec.yaml:10", "threat_models[0].eps", "> 0", "-0.1"]),
    ("unsupported norm", ("norm: linf", "norm: l7"), ["spec.yaml:10", "threat_models[0].norm", "unsupported norm 'l7'", "linf, l2"]),
    ("unknown architecture", ("name: mlp,", "name: mpl,"), ["spec.yaml:6", "models[0].architecture.name", "did you mean 'mlp'?"]),
    ("architecture parameter out of range", ("hidden: 16", "hidden: 0"), ["spec.yaml:6", "models[0].architecture.hidden", "greater than or equal to 1"]),
    ("unknown dataset", ("name: digits", "name: digitz"), ["spec.yaml:3", "dataset.name", "unknown dataset 'digitz'"]),
    ("unknown top-level field", ("seed: 0", "seed: 0\nsede: 1"), ["spec.yaml:3", "sede", "unknown field"]),
    ("missing models", ("models:\n  - name: plain\n    architecture: {name: mlp, hidden: 16}\n    defense: {name: none}\n    training: {epochs: 1}\n", ""),
     ["models", "required field missing"]),
    ("neither architecture nor path", ("    architecture: {name: mlp, hidden: 16}\n", ""), ["models[0]", "exactly one of `architecture`"]),
    ("duplicate key", ("seed: 0", "seed: 0\nseed: 1"), ["spec.yaml:3", "seed", "duplicate key"]),
    ("invalid yaml", ("attacks:", "attacks: [unclosed"), ["invalid YAML"]),
    ("missing pretrained model file", ("    architecture: {name: mlp, hidden: 16}\n", "    path: nowhere.keras\n"),
     ["models[0].path", "model file not found", "nowhere.keras"]),
    ("missing plugin file", ("seed: 0", "seed: 0\nplugins: [missing.py]"), ["spec.yaml:3", "plugins[0]", "plugin file not found"]),
]


@pytest.mark.parametrize("description, replacement, expected", CASES, ids=[c[0] for c in CASES])
def test_malformed_spec_is_refused_with_a_precise_message(tmp_path, description, replacement, expected):
    old, new = replacement
    assert old in GOOD
    path = tmp_path / "spec.yaml"
    path.write_text(GOOD.replace(old, new, 1))
    for command in ("validate", "run"):
        result = CliRunner().invoke(app, [command, str(path), *(["--out", str(tmp_path / "run")] if command == "run" else [])])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
        for piece in expected:
            assert piece in result.output, f"{piece!r} not in {result.output!r}"
    assert not (tmp_path / "run").exists()  # validation happens before any work


def test_every_problem_is_reported_at_once(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(GOOD.replace("steps: 5", "steps: -1").replace("hidden: 16", "hidden: many"))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "attacks[0].steps" in result.output and "models[0].architecture.hidden" in result.output


def test_missing_spec_file(tmp_path):
    result = CliRunner().invoke(app, ["run", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "nope.yaml" in result.output and "file not found" in result.output


def test_a_good_spec_validates(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(GOOD)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


@pytest.mark.parametrize("shape, classes, message", [((8, 8, 3), 10, "input shape (8, 8, 3) does not match the dataset's (8, 8, 1)"),
                                                     ((8, 8, 1), 7, "outputs 7 classes, the dataset has 10")])
def test_pretrained_model_must_fit_the_dataset(tmp_path, shape, classes, message):
    import keras

    inputs = keras.Input(shape)
    keras.Model(inputs, keras.layers.Dense(classes)(keras.layers.Flatten()(inputs))).save(tmp_path / "m.keras")
    path = tmp_path / "spec.yaml"
    path.write_text(GOOD.replace("    architecture: {name: mlp, hidden: 16}\n", "    path: m.keras\n"))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert "models[0].path" in result.output and message in result.output


def test_resolved_spec_fills_defaults_and_hash_tracks_changes(tmp_path):
    from advbench.spec import load_spec

    path = tmp_path / "spec.yaml"
    path.write_text(GOOD)
    spec = load_spec(path)
    resolved = spec.as_dict()
    assert resolved["attacks"][0] == {"name": "pgd", "steps": 5, "restarts": 1, "step_size": None, "loss": "ce", "random_start": True,
                                    "early_stop": True}
    assert resolved["threat_models"][0]["eps"] == [0.05, 0.1]
    path.write_text(GOOD.replace("steps: 5", "steps: 6"))
    assert load_spec(path).hash != spec.hash
