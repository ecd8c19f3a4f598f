"""`advbench verify`: VNN-LIB properties decided on ONNX networks, every answer checked
against an exact one (MILP) or onnxruntime, and benchmark folders run through the store."""

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from advbench.cli.app import app  # noqa: E402
from advbench.core.vnnlib import read_counterexample  # noqa: E402

VNNCOMP = Path(__file__).resolve().parents[2] / "shared" / "data" / "vnncomp2022"


def mlp_onnx(path, seed=0, sizes=(6, 12, 12, 3)):
    """A ReLU MLP as ONNX taking a flat [1, n] input (as mnist_fc's networks)."""
    rng = np.random.default_rng(seed)
    nodes, weights, current = [], [], "x"
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        weights += [
            numpy_helper.from_array(rng.normal(0, 1 / np.sqrt(a), (a, b)).astype(np.float32), f"w{k}"),
            numpy_helper.from_array(rng.normal(0, 0.1, b).astype(np.float32), f"b{k}"),
        ]
        nodes.append(helper.make_node("MatMul", [current, f"w{k}"], [f"m{k}"]))
        last = k == len(sizes) - 2
        nodes.append(helper.make_node("Add", [f"m{k}", f"b{k}"], ["y" if last else f"a{k}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"a{k}"], [f"r{k}"]))
            current = f"r{k}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, sizes[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, sizes[-1]])],
        weights,
    )
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString())
    return path


def robustness_vnnlib(path, lower, upper, label, classes):
    lines = [f"(declare-const X_{i} Real)" for i in range(len(lower))] + [f"(declare-const Y_{j} Real)" for j in range(classes)]
    for i, (lo, hi) in enumerate(zip(lower, upper)):
        lines += [f"(assert (>= X_{i} {float(lo)!r}))", f"(assert (<= X_{i} {float(hi)!r}))"]
    lines.append("(assert (or " + " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(classes) if j != label) + "))")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    from advbench.core.verification import Network

    folder = tmp_path_factory.mktemp("net")
    path = mlp_onnx(folder / "mlp.onnx")
    return path, Network.load(path)


def test_verdicts_agree_with_milp_and_every_sat_reproduces_under_onnxruntime(network, tmp_path):
    from advbench.contract.plugins import load_plugins
    from advbench.core import onnx as onnx_import
    from advbench.core.verification import read_instance, verify
    from helpers import exact_linf_radius_relu

    path, net = network
    keras_model = onnx_import.load_onnx(path, input_shape=(1, 6, 1))
    rng = np.random.default_rng(1)
    registry = load_plugins().registry
    verdicts = []
    for k in range(3):
        x = rng.uniform(0.2, 0.8, 6).astype(np.float32)
        label = int(np.argmax(net.run(x[None])[0]))
        radius = exact_linf_radius_relu(keras_model, x.reshape(1, 6, 1), label)
        for factor, expected in ((0.8, "unsat"), (1.25, "sat")):
            eps = factor * radius
            prop_path = robustness_vnnlib(
                tmp_path / f"p{k}{factor}.vnnlib", np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1), label, 3
            )
            _, prop = read_instance(path, prop_path)
            verdict = verify(net, prop, 60, registry)
            verdicts.append(verdict.result)
            assert verdict.result == expected, (k, factor, radius, verdict)
            if expected == "sat":
                inputs, outputs = verdict.counterexample
                assert prop.cases[0].inside(inputs[None])[0]
                assert np.array_equal(net.run(inputs[None])[0], outputs)
                assert np.argmax(outputs) != label or outputs.max() == outputs[label]
    assert verdicts.count("sat") == 3


def test_a_property_over_several_boxes_is_sat_when_one_box_holds_a_counterexample(network, tmp_path):
    from advbench.contract.plugins import load_plugins
    from advbench.core.verification import verify
    from advbench.core.vnnlib import parse_vnnlib

    path, net = network
    x = np.full(6, 0.5, np.float32)
    label = int(np.argmax(net.run(x[None])[0]))
    declare = "".join(f"(declare-const X_{i} Real)\n" for i in range(6)) + "".join(
        f"(declare-const Y_{j} Real)\n" for j in range(3)
    )
    tiny = " ".join(f"(>= X_{i} 0.4999) (<= X_{i} 0.5001)" for i in range(6))
    whole = " ".join(f"(>= X_{i} 0) (<= X_{i} 1)" for i in range(6))
    outputs = " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(3) if j != label)
    registry = load_plugins().registry
    one = parse_vnnlib(declare + f"(assert (and {tiny}))\n(assert (or {outputs}))\n", inputs=6, outputs=3)
    assert verify(net, one, 60, registry).result == "unsat"
    both = parse_vnnlib(declare + f"(assert (or (and {tiny}) (and {whole})))\n(assert (or {outputs}))\n", inputs=6, outputs=3)
    assert len(both.cases) == 2
    verdict = verify(net, both, 60, registry)
    assert verdict.result == "sat" and both.cases[1].inside(verdict.counterexample[0][None])[0]


def test_one_instance_through_the_cli_writes_the_competitions_result_file(network, tmp_path):
    path, net = network
    x = np.full(6, 0.5, np.float32)
    label = int(np.argmax(net.run(x[None])[0]))
    prop = robustness_vnnlib(tmp_path / "wide.vnnlib", np.zeros(6), np.ones(6), label, 3)
    result = tmp_path / "out.txt"
    outcome = CliRunner().invoke(app, ["verify", str(path), str(prop), "--timeout", "60", "--result", str(result)])
    assert outcome.exit_code == 0, outcome.output
    assert result.read_text().splitlines()[0] == "sat"
    inputs, outputs = read_counterexample(result)
    assert inputs.shape == (6,) and np.allclose(net.run(inputs[None])[0], outputs)
    missing = CliRunner().invoke(app, ["verify", str(path), str(tmp_path / "absent.vnnlib")])
    assert missing.exit_code == 2 and "absent.vnnlib: no such property file" in missing.output


def benchmark(tmp_path, rows):
    folder = tmp_path / "bench"
    (folder / "onnx").mkdir(parents=True)
    (folder / "vnnlib").mkdir()
    mlp_onnx(folder / "onnx" / "mlp.onnx")
    rng = np.random.default_rng(3)
    for k in range(4):
        x = rng.uniform(0.2, 0.8, 6)
        eps = 0.02 * (k + 1) ** 2
        robustness_vnnlib(folder / "vnnlib" / f"p{k}.vnnlib", np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1), k % 3, 3)
    (folder / "instances.csv").write_text("\n".join(rows) + "\n")
    return folder


GOOD = [f"onnx/mlp.onnx,vnnlib/p{k}.vnnlib,60" for k in range(4)]


def test_a_benchmark_folder_reports_bad_rows_by_number_and_still_decides_the_others(tmp_path):
    (tmp_path / "bench").mkdir()
    rows = GOOD[:2] + [
        "onnx/mlp.onnx,vnnlib/p2.vnnlib",
        "onnx/mlp.onnx,vnnlib/p2.vnnlib,-5",
        "onnx/absent.onnx,vnnlib/p2.vnnlib,60",
        "onnx/mlp.onnx,vnnlib/bad.vnnlib,60",
        "onnx/corrupt.onnx,vnnlib/p2.vnnlib,60",
    ]
    folder = benchmark(tmp_path, rows)
    (folder / "vnnlib" / "bad.vnnlib").write_text("(declare-const X_0 Real)\n(declare-const Y_9 Real)\n")
    (folder / "onnx" / "corrupt.onnx").write_bytes(b"not a protobuf")
    out = tmp_path / "run"
    outcome = CliRunner().invoke(app, ["verify", str(folder), "--out", str(out)])
    assert outcome.exit_code == 2, outcome.output
    text = " ".join(outcome.output.split())
    assert "row 3: 2 field(s); expected 3: onnx, vnnlib, timeout" in text
    assert "row 4: timeout '-5'; expected a positive number of seconds" in text
    assert "row 5: onnx file 'onnx/absent.onnx' not found" in text
    assert "bad.vnnlib: 1 inputs declared, but the network has 6" in text
    assert "corrupt.onnx: not an ONNX model" in text
    with open(out / "results.csv") as handle:
        results = list(csv.reader(handle))
    assert [r[4] for r in results][2:] == ["error"] * 5
    assert all(r[4] in ("sat", "unsat") for r in results[:2])
    assert [r[0] for r in results] == ["bench"] * 7 and [r[2] for r in results][:2] == ["vnnlib/p0.vnnlib", "vnnlib/p1.vnnlib"]


def test_a_killed_benchmark_run_resumes_with_the_same_answers(tmp_path):
    from helpers import kill_midway

    folder = benchmark(tmp_path, GOOD)
    whole = tmp_path / "whole"
    assert CliRunner().invoke(app, ["verify", str(folder), "--out", str(whole)]).exit_code == 0
    expected = (whole / "results.csv").read_text()
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "advbench.cli", "verify", str(folder), "--out", str(out)]
    left = kill_midway(command, out, records=2)
    assert 2 <= left < 4
    finished = {p.name: p.read_bytes() for p in (out / "jobs").glob("*.json")}
    rerun = CliRunner().invoke(app, ["verify", str(folder), "--out", str(out)])
    assert rerun.exit_code == 0, rerun.output
    assert rerun.output.count("decided before") == len(finished)
    assert all((out / "jobs" / name).read_bytes() == data for name, data in finished.items())
    verdicts = [line.split(",")[4] for line in (out / "results.csv").read_text().splitlines()]
    assert verdicts == [line.split(",")[4] for line in expected.splitlines()]
    for path in (out / "counterexamples").glob("*"):
        assert path.read_text() == (whole / "counterexamples" / path.name).read_text()


@pytest.mark.skipif(not VNNCOMP.is_dir(), reason="VNN-COMP 2022 files not present")
def test_no_unsat_where_a_published_counterexample_reproduces():
    from advbench.contract.plugins import load_plugins
    from advbench.core.verification import read_instance, verify

    registry = load_plugins().registry
    bench = VNNCOMP / "mnist_fc"
    for name in ("prop_1_0.03", "prop_2_0.05"):
        published = VNNCOMP / "results" / "mn_bab" / "mnist_fc" / f"mnist-net_256x2_{name}.counterexample.gz"
        net, prop = read_instance(bench / "onnx" / "mnist-net_256x2.onnx.gz", bench / "vnnlib" / f"{name}.vnnlib.gz")
        inputs, _ = read_counterexample(published)
        assert prop.cases[0].inside(inputs[None])[0] and prop.cases[0].violated(net.run(inputs[None]))[0]
        assert verify(net, prop, 120, registry).result == "sat"


def test_the_report_sets_other_tools_beside_and_says_who_was_wrong(tmp_path):
    folder = benchmark(tmp_path, GOOD)
    out = tmp_path / "run"
    assert CliRunner().invoke(app, ["verify", str(folder), "--out", str(out)]).exit_code == 0
    answers = {line.split(",")[2]: line.split(",")[4] for line in (out / "results.csv").read_text().splitlines()}
    assert set(answers.values()) == {"sat", "unsat"}, answers
    flipped = {"sat": "unsat", "unsat": "sat"}
    other = tmp_path / "other"
    other.mkdir()
    rows = [f"bench,./benchmarks/bench/onnx/mlp.onnx,./benchmarks/bench/{v},1.0,{flipped[r]},2.5" for v, r in answers.items()]
    (other / "results.csv").write_text(
        "\n".join(rows + ["bench,./benchmarks/test/test_nano.onnx,./benchmarks/test/test_nano.vnnlib,1,unsat,1"]) + "\n"
    )
    unsat = next(v for v, r in answers.items() if r == "unsat")
    # the other tool's "counterexample" for an instance advbench proved: the box's centre, which is no counterexample
    from advbench.core.vnnlib import counterexample_text, read_vnnlib

    case = read_vnnlib(folder / unsat).cases[0]
    centre = ((case.lower + case.upper) / 2).astype(np.float32)
    (other / f"mlp_{Path(unsat).stem}.counterexample").write_text(counterexample_text(centre, np.zeros(3)))
    outcome = CliRunner().invoke(app, ["leaderboard", str(out), "--compare", f"rival={other / 'results.csv'}"])
    assert outcome.exit_code == 0, outcome.output
    report = (out / "leaderboard.md").read_text()
    assert f"Contradictions (sat against unsat): {len(answers)}." in report
    proved = list(answers.values()).count("unsat")
    assert report.count("wrong: rival") == len(answers) - proved + 1 and "wrong: advbench" not in report
    assert report.count("wrong: undecided (no counterexample published)") == proved - 1
    assert (out / "leaderboard-cactus.png").is_file()
    assert "How far each instance is from the other answer" in report
    import json

    for path in (out / "jobs").glob("*.json"):
        record = json.loads(path.read_text())
        d = record["radii"]
        empirical = np.inf if d["empirical"] is None else d["empirical"]
        assert d["certified"] <= empirical
        if record["result"] == "sat":
            assert d["certified"] <= 1 and empirical <= 1 + 1e-6
        else:
            assert empirical > 1
    assert "| rival | " in report and "test_nano" not in report
    bad = CliRunner().invoke(app, ["leaderboard", str(out), "--compare", "rival"])
    assert bad.exit_code != 0 and "expected NAME=results.csv" in bad.output


def test_a_benchmark_on_ray_gives_the_answers_of_a_local_run(tmp_path):
    pytest.importorskip("ray")
    folder = benchmark(tmp_path, GOOD[:2])
    local, parallel = tmp_path / "local", tmp_path / "ray"
    assert CliRunner().invoke(app, ["verify", str(folder), "--out", str(local)]).exit_code == 0
    outcome = CliRunner().invoke(app, ["verify", str(folder), "--out", str(parallel), "--executor", "ray"])
    assert outcome.exit_code == 0, outcome.output
    verdicts = [
        [line.split(",")[:3] + [line.split(",")[4]] for line in (d / "results.csv").read_text().splitlines()]
        for d in (local, parallel)
    ]
    assert verdicts[0] == verdicts[1]
    assert (
        CliRunner()
        .invoke(app, ["verify", str(folder), "--out", str(parallel), "--executor", "ray"])
        .output.count("decided before")
        == 2
    )
