"""Spec validation: every malformed spec is refused before any work, with the file, the
line, the field and what was expected, exit code 2 and no traceback."""

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

# The malformed specs themselves are in tests/bad_inputs/ (one file a case; test_bad_inputs.py).


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


@pytest.mark.parametrize(
    "shape, classes, message",
    [
        ((8, 8, 3), 10, "input shape (8, 8, 3) does not match the dataset's (8, 8, 1)"),
        ((8, 8, 1), 7, "outputs 7 classes, the dataset has 10"),
    ],
)
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
    assert resolved["attacks"][0] == {
        "name": "pgd",
        "steps": 5,
        "restarts": 1,
        "step_size": None,
        "loss": "ce",
        "random_start": True,
        "early_stop": True,
    }
    assert resolved["threat_models"][0]["eps"] == [0.05, 0.1]
    path.write_text(GOOD.replace("steps: 5", "steps: 6"))
    assert load_spec(path).hash != spec.hash


def test_the_readmes_first_spec_validates_as_written(tmp_path):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    first = re.search(r"```yaml\n(.*?)```", readme, re.S).group(1)
    (tmp_path / "spec.yaml").write_text(first)
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "spec.yaml")])
    assert result.exit_code == 0, result.output
    assert "valid (1 model, 8 jobs)" in result.output  # and counted in the right number


def test_a_misspelled_required_field_is_reported_once_with_its_correction(tmp_path):
    import yaml

    from advbench.testing import TINY

    spec = dict(TINY)
    spec["thret_models"] = spec.pop("threat_models")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "spec.yaml")])
    assert result.exit_code == 2
    assert "did you mean 'threat_models'?" in result.output
    assert "required field missing" not in result.output  # the misspelling says it all
