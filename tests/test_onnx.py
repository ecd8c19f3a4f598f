"""ONNX networks in: imported as Keras layers every attack and certifier reads, checked
against onnxruntime, and refused with a clear error when they cannot be reproduced."""

import gzip
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from advbench.errors import AdvbenchError  # noqa: E402

VNNCOMP = Path(__file__).resolve().parents[2] / "shared" / "data" / "vnncomp2022"


def save(tmp_path, nodes, initializers, input_shape, output_size, name="net.onnx", inputs=None):
    rng = np.random.default_rng(0)
    tensors = [numpy_helper.from_array(np.asarray(v(rng) if callable(v) else v, np.float32), k) for k, v in initializers.items()]
    graph = helper.make_graph(
        nodes,
        "net",
        inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, output_size])],
        tensors,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    return path


def residual_cnn(tmp_path):
    """NCHW 1x8x8 (digits): normalisation, convolutions with padding and strides, batch
    norm, a residual Add, max and average pooling, flatten, Gemm; ReLU only."""
    w = lambda *shape: lambda rng: rng.normal(0, 0.4, shape)  # noqa: E731
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["n1"]),
        helper.make_node("Div", ["n1", "std"], ["n2"]),
        helper.make_node("Conv", ["n2", "c1w", "c1b"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "g", "b", "m", "v"], ["bn"], epsilon=1e-3),
        helper.make_node("Relu", ["bn"], ["r1"]),
        helper.make_node("Conv", ["r1", "c2w", "c2b"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Add", ["r1", "r2"], ["res"]),
        helper.make_node("Conv", ["res", "c3w", "c3b"], ["c3"], strides=[2, 2], pads=[0, 0, 1, 1]),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("MaxPool", ["r3"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p1"], ["f"]),
        helper.make_node("Gemm", ["f", "d1w", "d1b"], ["d1"], transB=1),
        helper.make_node("Relu", ["d1"], ["r4"]),
        helper.make_node("MatMul", ["r4", "d2w"], ["d2"]),
        helper.make_node("Add", ["d2", "d2b"], ["y"]),
    ]
    initializers = {
        "mean": [[[[0.3]]]],
        "std": [[[[0.5]]]],
        "c1w": w(4, 1, 3, 3),
        "c1b": w(4),
        "g": lambda rng: rng.uniform(0.5, 1.5, 4),
        "b": w(4),
        "m": w(4),
        "v": lambda rng: rng.uniform(0.5, 2, 4),
        "c2w": w(4, 4, 3, 3),
        "c2b": w(4),
        "c3w": w(6, 4, 3, 3),
        "c3b": w(6),
        "d1w": w(16, 6 * 2 * 2),
        "d1b": w(16),
        "d2w": w(16, 10),
        "d2b": w(10),
    }
    return save(tmp_path, nodes, initializers, [1, 1, 8, 8], 10, "cnn.onnx")


def smooth_net(tmp_path):
    """Sigmoid and tanh, average and global average pooling, Mul, a final Softmax."""
    w = lambda *shape: lambda rng: rng.normal(0, 0.5, shape)  # noqa: E731
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["m"]),
        helper.make_node("Conv", ["m", "cw", "cb"], ["c"], dilations=[2, 2]),
        helper.make_node("Sigmoid", ["c"], ["s"]),
        helper.make_node("AveragePool", ["s"], ["a"], kernel_shape=[2, 2], strides=[1, 1]),
        helper.make_node("GlobalAveragePool", ["a"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "dw", "db"], ["d"]),
        helper.make_node("Tanh", ["d"], ["t"]),
        helper.make_node("Gemm", ["t", "ew", "eb"], ["e"]),
        helper.make_node("Softmax", ["e"], ["y"], axis=1),
    ]
    initializers = {"two": 2.0, "cw": w(5, 1, 3, 3), "cb": w(5), "dw": w(5, 12), "db": w(12), "ew": w(12, 10), "eb": w(10)}
    return save(tmp_path, nodes, initializers, [1, 1, 8, 8], 10, "smooth.onnx")


def onnxruntime_logits(path, images):
    from advbench.core.onnx import read_proto, run_onnxruntime

    return run_onnxruntime(read_proto(path), images)


@pytest.mark.parametrize("build", [residual_cnn, smooth_net])
def test_every_listed_operator_imports_and_matches_onnxruntime(tmp_path, build):
    from advbench.core.onnx import load_onnx
    from advbench.lazy import keras

    path = build(tmp_path)
    model = load_onnx(path, (8, 8, 1))
    images = np.random.default_rng(5).uniform(0, 1, (300, 8, 8, 1)).astype(np.float32)
    ours = np.asarray(keras.ops.convert_to_numpy(model(images)), np.float64)
    reference = onnxruntime_logits(path, images)
    if build is smooth_net:  # the import returns the logits before the final Softmax
        ours = np.exp(ours - ours.max(axis=1, keepdims=True))
        ours /= ours.sum(axis=1, keepdims=True)
    assert np.max(np.abs(ours - reference)) <= 1e-5 * max(1.0, np.max(np.abs(reference)))


def test_an_imported_network_gets_both_bounds_and_they_are_sound(tmp_path):
    import advbench

    path = residual_cnn(tmp_path)
    digits = advbench.load_dataset("digits")
    x = digits.x_test[:40]
    y = onnxruntime_logits(path, x).argmax(axis=1)  # its own predictions: every example is correct
    result = advbench.evaluate(str(path), x, y, norm="linf", eps=[0.01, 0.05], attacks=["pgd"], certifiers=["ibp", "crown"])
    ibp, crown = result.per_certifier["ibp"], result.per_certifier["crown"]
    assert np.all(crown >= ibp * (1 - 1e-3)) and np.any(crown > 0)
    assert np.all(result.certified_radius <= result.empirical_radius * (1 + 1e-4) + 1e-9)
    assert not result.errors


def gz(path):
    target = path.with_suffix(".onnx.gz")
    target.write_bytes(gzip.compress(path.read_bytes()))
    return target


def test_bad_onnx_files_are_refused_naming_the_file_and_the_node(tmp_path):
    from advbench.core.onnx import load_onnx

    good = residual_cnn(tmp_path)
    cases = {}
    truncated = tmp_path / "truncated.onnx.gz"
    truncated.write_bytes(gz(good).read_bytes()[:300])
    cases[truncated] = "not an ONNX model"
    junk = tmp_path / "junk.onnx"
    junk.write_text("this is not a network")
    cases[junk] = "not an ONNX model"
    leaky = save(
        tmp_path,
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("LeakyRelu", ["f"], ["y"], name="leaky")],
        {},
        [1, 1, 8, 8],
        64,
        "leaky.onnx",
    )
    cases[leaky] = "node 'leaky' (LeakyRelu): this operator is not supported (advbench imports: Add,"
    two = save(
        tmp_path,
        [helper.make_node("Add", ["x", "z"], ["y"])],
        {},
        None,
        10,
        "two.onnx",
        inputs=[helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 10]) for n in ("x", "z")],
    )
    cases[two] = "the graph has 2 inputs"
    dynamic = save(tmp_path, [helper.make_node("Flatten", ["x"], ["y"])], {}, ["n", 1, "h", 8], 64, "dynamic.onnx")
    cases[dynamic] = "dynamic shape"
    nan = save(
        tmp_path,
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "w", "b"], ["y"])],
        {"w": np.full((64, 10), np.nan), "b": np.zeros(10)},
        [1, 1, 8, 8],
        10,
        "nan.onnx",
    )
    cases[nan] = "initializer 'w' holds NaN"
    for path, expected in cases.items():
        with pytest.raises(AdvbenchError) as error:
            load_onnx(path, (8, 8, 1))
        assert str(path) in str(error.value) and expected in str(error.value), str(error.value)
    with pytest.raises(AdvbenchError, match="does not fit the dataset's images"):
        load_onnx(good, (28, 28, 1))


def test_a_spec_names_an_onnx_model_and_a_broken_one_exits_2_without_a_traceback(tmp_path):
    from typer.testing import CliRunner

    from advbench.cli import app
    from advbench.testing import run_spec, tiny_spec

    residual_cnn(tmp_path)
    spec = tiny_spec(
        tmp_path,
        models=[{"name": "imported", "path": "cnn.onnx"}],
        threat_models=[{"norm": "linf", "eps": [0.02]}],
        attacks=[{"name": "fgsm"}],
        certifiers=[{"name": "crown"}],
    )
    run = run_spec(spec, tmp_path / "run")
    assert run.exit_code == 0, run.output
    (bounds,) = run.results.for_norm("linf")
    assert set(bounds.certified) == {"crown"} and not bounds.errors and not bounds.violations()
    (tmp_path / "cnn.onnx").write_bytes(b"\x08\x07broken")
    broken = CliRunner().invoke(app, ["validate", str(spec)])
    assert broken.exit_code == 2 and "cnn.onnx" in broken.output and "not an ONNX model" in broken.output
    assert "Traceback" not in broken.output


@pytest.mark.skipif(not VNNCOMP.exists(), reason="VNN-COMP 2022 networks not present")
@pytest.mark.parametrize("network", sorted(p.name for p in VNNCOMP.glob("*/onnx/*.onnx.gz")) or ["none"])
def test_the_vnncomp_networks_import_and_match_onnxruntime_on_1000_points(network):
    from advbench.core.onnx import load_onnx

    (path,) = VNNCOMP.glob(f"*/onnx/{network}")
    load_onnx(path, (28, 28, 1) if network.startswith("mnist") else (32, 32, 3), check_points=1000)


def test_a_stated_normalization_becomes_the_first_layer_so_budgets_stay_in_pixel_space(tmp_path):
    from advbench.core.onnx import load_onnx
    from advbench.lazy import keras

    path = residual_cnn(tmp_path)
    model = load_onnx(path, (8, 8, 1), normalization={"mean": [0.5], "std": [0.25]})
    assert model.layers[1].name == "onnx_normalization"
    images = np.random.default_rng(1).uniform(0, 1, (50, 8, 8, 1)).astype(np.float32)
    ours = np.asarray(keras.ops.convert_to_numpy(model(images)))
    reference = onnxruntime_logits(path, (images - 0.5) / 0.25)
    assert np.max(np.abs(ours - reference)) <= 1e-5 * max(1.0, np.max(np.abs(reference)))
    with pytest.raises(AdvbenchError, match="normalization mean: 2 values for 1 channels"):
        load_onnx(path, (8, 8, 1), normalization={"mean": [0.5, 0.4], "std": [0.25]})


def test_normalization_is_refused_for_a_keras_model(tmp_path):
    from typer.testing import CliRunner

    from advbench.cli import app
    from advbench.testing import tiny_spec

    (tmp_path / "m.keras").write_bytes(b"x")
    spec = tiny_spec(tmp_path, models=[{"name": "m", "path": "m.keras", "normalization": {"mean": [0.5], "std": [0.2]}}])
    result = CliRunner().invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2 and "`normalization` is for an ONNX network" in result.output
