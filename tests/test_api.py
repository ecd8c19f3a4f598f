"""The Python API: advbench.evaluate on a model in memory, advbench.run on a spec, the
same numbers as the CLI, and clear errors for bad arguments."""

import json
from pathlib import Path

import numpy as np
import pytest

import advbench
from advbench import AdvbenchError
from helpers import trained_mlp


@pytest.fixture(scope="module")
def mlp():
    model, data = trained_mlp(hidden=32, epochs=10, activation="relu")
    return model, data.x_test[:40], data.y_test[:40]


def readme_api_example() -> str:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("```python\nimport keras\n\nimport advbench")
    return readme[start + len("```python\n") : readme.index("```", start + 10)]


@pytest.mark.slow
def test_the_readme_example_runs():
    namespace: dict = {}
    exec(compile(readme_api_example(), "README.md", "exec"), namespace)
    result = namespace["result"]
    assert result.certified_radius.shape == (100,) and result.empirical_radius.shape == (100,)
    assert np.all(result.certified_radius <= result.empirical_radius * (1 + 1e-4) + 1e-9)


def test_evaluate_gives_both_bounds_per_example_and_sound(mlp):
    model, x, y = mlp
    result = advbench.evaluate(
        model,
        x,
        y,
        norm="linf",
        eps=[0.05, "8/255"],
        attacks=["fgsm", {"name": "pgd", "steps": 10}],
        certifiers=["lipschitz", "crown"],
        batch_size=40,
    )
    assert result.norm == "linf" and result.eps == [8 / 255, 0.05]
    assert result.certified_radius.shape == result.empirical_radius.shape == (len(x),)
    correct = result.predicted == y
    assert np.all(result.certified_radius[~correct] == 0) and np.all(result.empirical_radius[~correct] == 0)
    assert np.all(result.certified_radius <= result.empirical_radius * (1 + 1e-4) + 1e-9)
    assert set(result.per_attack) == {"fgsm", "pgd"} and set(result.per_certifier) == {"lipschitz", "crown"}
    for eps in result.eps:
        assert result.certified_accuracy(eps) <= result.empirical_accuracy(eps) <= result.clean_accuracy()
        assert result.empirical_accuracy(eps) == np.mean(correct & (result.empirical_radius > eps * (1 + 1e-5)))
    assert not result.errors
    text = repr(result)
    assert len(text) < 300 and "linf" in text and "[" not in text.split(":", 1)[1]  # no array dumps
    document = json.loads(result.to_json())
    assert document["threat_models"]["linf"]["certified_radius"][0] == pytest.approx(float(result.certified_radius[0]))


def test_evaluate_and_run_on_the_same_saved_model_agree(mlp, tmp_path):
    model, _, _ = mlp
    model.save(tmp_path / "model.keras")
    attacks = [{"name": "deepfool", "steps": 20}, {"name": "pgd", "steps": 10, "random_start": False}]
    certifiers = [{"name": "lipschitz"}, {"name": "crown"}]
    spec = {
        "name": "same",
        "seed": 0,
        "dataset": {"name": "digits", "test_size": 200},
        "models": [{"name": "saved", "path": str(tmp_path / "model.keras")}],
        "threat_models": [{"norm": "l2", "eps": [0.5, 1.0]}],
        "attacks": attacks,
        "certifiers": certifiers,
        "evaluation": {"examples": 30, "batch_size": 30, "radius_tolerance": 0.02},
    }
    runs = advbench.run(spec, out=tmp_path / "run")
    assert set(runs) == {"saved"} and runs.summary.errors == []
    from_run = runs["saved"]["l2"]
    data = advbench.load_dataset("digits")
    index = from_run.bounds.index
    evaluated = advbench.evaluate(
        model,
        data.x_test[index],
        data.y_test[index],
        norm="l2",
        eps=[0.5, 1.0],
        attacks=attacks,
        certifiers=certifiers,
        batch_size=30,
        radius_tolerance=0.02,
    )
    np.testing.assert_array_equal(evaluated.predicted, from_run.predicted)
    for name in ("lipschitz", "crown"):
        np.testing.assert_allclose(evaluated.per_certifier[name], from_run.per_certifier[name], rtol=1e-6)
    for name in ("deepfool", "pgd"):
        finite = np.isfinite(from_run.per_attack[name])
        np.testing.assert_array_equal(np.isfinite(evaluated.per_attack[name]), finite)
        np.testing.assert_allclose(evaluated.per_attack[name][finite], from_run.per_attack[name][finite], rtol=0.02)
    # run() reuses the finished jobs the second time, like the CLI
    again = advbench.run(spec, out=tmp_path / "run")
    assert again.summary.skipped == again.summary.total and again.summary.done == 0


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"norm": "l3"}, "norm: unsupported norm 'l3'"),
        ({"eps": [-0.1]}, "eps: every eps must be a finite number > 0"),
        ({"eps": [0.1, 0.1]}, "eps values must be distinct"),
        ({"attacks": ["pgdd"]}, "unknown attack 'pgdd'; did you mean 'pgd'?"),
        ({"attacks": [{"name": "pgd", "stepz": 3}]}, "unknown parameter 'stepz'"),
        ({"attacks": [{"steps": 3}]}, "attacks[0]: expected a name"),
        ({"attacks": [], "certifiers": []}, "give at least one attack or certifier"),
        ({"certifiers": ["crown", "crown"]}, "distinct labels"),
        ({"batch_sise": 8}, "batch_sise: unknown argument; did you mean 'batch_size'?"),
        ({"batch_size": 0}, "batch_size: Input should be greater than or equal to 1"),
        ({"seed": -1}, "seed: expected an integer >= 0"),
        ({"x": np.full((4, 8, 8, 1), 255.0, np.float32)}, "x: expected pixels in [0, 1]"),
        ({"x": np.zeros((4, 64), np.float32)}, "x: expected a NumPy float array of images"),
        ({"y": np.zeros(3, np.int64)}, "y: expected 4 integer labels"),
        ({"y": np.full(4, 12)}, "y: label 12 but the model has 10 outputs"),
        ({"y": np.array([0, 1, 2**63, 0], np.uint64)}, "y: label 9223372036854775808 is beyond"),
        ({"y": np.array([0, 1, 2**64 - 1, 0], np.uint64)}, "y: label 18446744073709551615 is beyond"),
        ({"model": "model.keras"}, "model: expected a Keras model"),
    ],
)
def test_bad_arguments_raise_one_clear_error_naming_the_argument(mlp, arguments, message):
    model, x, y = mlp
    call = {
        "model": model,
        "x": x[:4],
        "y": y[:4],
        "norm": "linf",
        "eps": [0.1],
        "attacks": ["fgsm"],
        "certifiers": [],
        **arguments,
    }
    with pytest.raises(AdvbenchError) as raised:
        advbench.evaluate(call.pop("model"), call.pop("x"), call.pop("y"), **call)
    assert message in str(raised.value) and "advbench.evaluate" in str(raised.value)


def test_a_model_that_outputs_probabilities_is_refused(mlp):
    import keras

    model, x, y = mlp
    softmax = keras.Sequential([model, keras.layers.Softmax()])
    with pytest.raises(AdvbenchError, match="outputs probabilities, advbench needs logits"):
        advbench.evaluate(softmax, x[:4], y[:4], eps=[0.1], attacks=["fgsm"])


def test_run_refuses_a_spec_that_is_neither_a_path_nor_a_mapping(tmp_path):
    with pytest.raises(AdvbenchError, match="spec: expected a file path or a mapping"):
        advbench.run(42, out=tmp_path / "run")


def test_a_bad_spec_given_as_data_is_reported_like_a_file():
    from advbench.errors import SpecError

    with pytest.raises(SpecError) as raised:
        advbench.run({"name": "x", "dataset": {"name": "digitz"}, "models": [], "threat_models": []})
    text = str(raised.value)
    assert "<spec>: dataset.name: unknown dataset 'digitz'; did you mean 'digits'?" in text
    assert "<spec>: models: List should have at least 1 item" in text


@pytest.mark.slow
def test_a_model_advbench_trained_loads_in_a_fresh_process_with_load_model(tmp_path):
    import subprocess
    import sys

    from advbench.testing import run_spec, tiny_spec

    spec = tiny_spec(
        tmp_path,
        models=[dict(advbench.testing.TINY["models"][0], architecture={"name": "mlp", "hidden": 8, "activation": "softplus"})],
    )
    assert run_spec(spec, tmp_path / "run").exit_code == 0
    (saved,) = (tmp_path / "run" / "models").glob("*.keras")
    check = (
        "import sys, numpy as np, advbench\n"
        "from sklearn.datasets import load_digits\n"
        f"model = advbench.load_model({str(saved)!r})\n"
        "x = np.zeros((2, 8, 8, 1), 'float32')\n"
        "print(model(x).shape)\n"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "(2, 10)" in result.stdout, result.stderr[-2000:]
    plain = subprocess.run(
        [sys.executable, "-c", f"import keras; keras.saving.load_model({str(saved)!r})"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert plain.returncode != 0  # what the function is for: Keras alone does not know advbench's layers


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda a, tmp: a.run("specs/quickstart.yaml", out=tmp, fresh="no"), "fresh: expected True or False, got str 'no'"),
        (lambda a, tmp: a.run("specs/quickstart.yaml", out=123), "out: expected a directory path or None"),
        (
            lambda a, tmp: a.run("specs/quickstart.yaml", out=tmp, reporter=5),
            "reporter: expected an advbench.runs.reporting.Reporter",
        ),
        (lambda a, tmp: a.load_model(None), "load_model: path: expected the path of a .keras or ONNX file"),
        (lambda a, tmp: a.load_model(tmp), "is a directory"),
        (lambda a, tmp: a.load_model(tmp / "missing.keras"), "not found"),
        (lambda a, tmp: a.load_model("pyproject.toml"), "not a Keras model file"),
        (lambda a, tmp: a.load_dataset("nope"), "unknown dataset 'nope'"),
        (lambda a, tmp: a.load_dataset("digits", train_size="many"), "digits: train_size:"),
    ],
)
def test_api_arguments_of_the_wrong_type_raise_advbench_error_naming_them(tmp_path, call, message):
    import advbench

    finished = tmp_path / "run"
    finished.mkdir()
    (finished / "keep").write_text("a finished run's file")
    with pytest.raises(advbench.AdvbenchError) as error:
        call(advbench, finished)
    assert message in str(error.value)
    assert (finished / "keep").exists()  # nothing deleted by a wrong argument


def test_evaluate_refuses_what_a_spec_refuses(mlp):
    """A budget beyond the inputs' box (every point in the ball) and a model with one output
    (nothing can be misclassified) are refused, as a spec refuses them."""
    import keras

    import advbench

    model, x, y = mlp
    with pytest.raises(advbench.AdvbenchError, match="eps: 1.5 exceeds the largest linf distance"):
        advbench.evaluate(model, x, y, norm="linf", eps=[0.1, 1.5], attacks=["fgsm"])
    with pytest.raises(advbench.AdvbenchError, match="eps: 1e\\+30 exceeds the largest l2 distance"):
        advbench.evaluate(model, x, y, norm="l2", eps=[1e30], attacks=["fgsm"])
    single = keras.Sequential([keras.Input(x.shape[1:]), keras.layers.Flatten(), keras.layers.Dense(1)])
    with pytest.raises(advbench.AdvbenchError, match="it has 1 output"):
        advbench.evaluate(single, x, np.zeros(len(x), int), norm="linf", eps=[0.1], attacks=["fgsm"])
