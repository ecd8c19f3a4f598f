"""advbench on every installed Keras backend: the conformance suite again under JAX and
PyTorch, the same spec giving the same results on each, a model saved under TensorFlow
evaluated under the others, and a PyTorch ``nn.Module`` evaluated as is.

This process runs TensorFlow (Keras' default); the other backends run in subprocesses
(a process has one Keras backend), through the CLI a user would call."""

import csv
import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from advbench.testing import run_spec, tiny_spec

ROOT = Path(__file__).resolve().parents[1]
OTHERS = [name for name in ("jax", "torch") if importlib.util.find_spec(name) is not None]


def subprocess_env(backend: str) -> dict:
    return {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT / "tests")}


def advbench(*args: str, backend: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "from advbench.cli import main; main()", *args]
    return subprocess.run(command, env=subprocess_env(backend), capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("backend", OTHERS)
def test_the_conformance_suite_passes_on_every_installed_backend(backend):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_conformance.py")],
        env=subprocess_env(backend),
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


def rows(path: Path) -> dict:
    with path.open() as stream:
        return {(r["model"], r["norm"], r["index"]): r for r in csv.DictReader(stream)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The spec run on TensorFlow, with a second model loaded from the .keras file the
    first one was saved to."""
    folder = tmp_path_factory.mktemp("backends")
    models = [
        {
            "name": "trained",
            "architecture": {"name": "mlp", "hidden": 32},
            "training": {"epochs": 3, "batch_size": 64, "learning_rate": 0.01},
        }
    ]
    settings = dict(
        threat_models=[{"norm": "linf", "eps": [0.05, 0.1]}, {"norm": "l2", "eps": [0.5]}],
        attacks=[{"name": "fgsm"}, {"name": "pgd", "steps": 10}],
        certifiers=[{"name": "lipschitz"}, {"name": "crown", "tolerance": 1e-4}],
    )
    first = run_spec(tiny_spec(folder, "first.yaml", models=models, **settings), folder / "first")
    assert first.exit_code == 0, first.output
    shutil.copy(next((folder / "first" / "models").glob("trained-*.keras")), folder / "saved-by-tensorflow.keras")
    spec = tiny_spec(folder, models=models + [{"name": "pretrained", "path": "saved-by-tensorflow.keras"}], **settings)
    run = run_spec(spec, folder / "tensorflow")
    assert run.exit_code == 0, run.output
    from typer.testing import CliRunner

    from advbench.cli import app

    assert CliRunner().invoke(app, ["export", str(folder / "tensorflow"), "-o", str(folder / "tensorflow.csv")]).exit_code == 0
    return folder, spec, rows(folder / "tensorflow.csv")


@pytest.mark.parametrize("backend", OTHERS)
def test_the_same_spec_gives_the_same_results_on_every_backend(reference, backend):
    folder, spec, expected = reference
    result = advbench("run", str(spec), "--out", str(folder / backend), "--backend", backend, backend=backend)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert advbench("export", str(folder / backend), "-o", str(folder / f"{backend}.csv"), backend=backend).returncode == 0
    got = rows(folder / f"{backend}.csv")
    assert got.keys() == expected.keys()
    # clean predictions identical, for the model trained here and the one saved by TensorFlow
    assert all(got[k]["predicted"] == expected[k]["predicted"] for k in expected)
    for column in ("cert:lipschitz", "cert:crown"):
        np.testing.assert_allclose(
            [float(got[k][column]) for k in expected], [float(expected[k][column]) for k in expected], rtol=1e-4
        )
    for column in ("attack:fgsm", "attack:pgd"):
        mine, theirs = (np.array([float(r[k][column]) for k in expected]) for r in (got, expected))
        close = (mine == theirs) | (np.abs(mine - theirs) <= 0.02 * np.abs(theirs))  # the bisection's tolerance
        assert close.mean() >= 0.95, (column, mine[~close], theirs[~close])
    board = (folder / backend / "leaderboard.md").read_text()
    assert f"Keras on {backend}" in board


TORCH_MODULE = textwrap.dedent("""
    import torch

    class Net(torch.nn.Module):
        def __init__(self, hidden=16):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))

        def forward(self, x):
            return self.body(x)
""")


TRAIN_TORCH_MODULE = textwrap.dedent("""
    import sys
    import numpy as np
    import torch
    from net import Net

    folder = sys.argv[1]
    data = np.load(folder + "/digits.npz")
    torch.manual_seed(0)
    net = Net()
    images, labels = torch.tensor(data["x"]).permute(0, 3, 1, 2), torch.tensor(data["y"])
    optimizer = torch.optim.Adam(net.parameters(), 0.01)
    for _ in range(100):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(images), labels).backward()
        optimizer.step()
    torch.save(net.state_dict(), folder + "/net.pt")
    with torch.no_grad():
        np.save(folder + "/predicted.npy", net(torch.tensor(data["test"]).permute(0, 3, 1, 2)).argmax(1).numpy())
""")


@pytest.mark.skipif("torch" not in OTHERS, reason="PyTorch is not installed")
def test_a_pytorch_module_is_evaluated_as_is_on_the_torch_backend(tmp_path):
    from advbench import load_dataset

    # PyTorch runs in its own process: imported after TensorFlow, PyTorch's CUDA wheel
    # (its triton) crashes the process; a user picks one backend per process anyway.
    data = load_dataset("digits")
    np.savez(tmp_path / "digits.npz", x=data.x_train, y=data.y_train, test=data.x_test)
    (tmp_path / "net.py").write_text(TORCH_MODULE)
    (tmp_path / "train.py").write_text(TRAIN_TORCH_MODULE)
    trained = subprocess.run(
        [sys.executable, str(tmp_path / "train.py"), str(tmp_path)], cwd=tmp_path, capture_output=True, text=True
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    spec = tiny_spec(
        tmp_path,
        dataset={"name": "digits"},
        models=[{"name": "torchnet", "torch": {"module": "net.py:Net", "arguments": {"hidden": 16}, "weights": "net.pt"}}],
        threat_models=[{"norm": "linf", "eps": [0.05]}],
        attacks=[{"name": "pgd", "steps": 10}],
        certifiers=[{"name": "crown"}],
        evaluation={"examples": 40, "batch_size": 40},
    )
    wrong = advbench("validate", str(spec), backend="tensorflow")
    assert wrong.returncode == 2 and "models[0].torch" in wrong.stderr and "--backend torch" in wrong.stderr
    result = advbench("run", str(spec), "--out", str(tmp_path / "run"), backend="torch")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert advbench("export", str(tmp_path / "run"), "-o", str(tmp_path / "out.csv"), backend="torch").returncode == 0
    exported = list(rows(tmp_path / "out.csv").values())
    index = np.array([int(r["index"]) for r in exported])
    direct = np.load(tmp_path / "predicted.npy")[index]
    np.testing.assert_array_equal([int(r["predicted"]) for r in exported], direct)
    radius = np.array([float(r["attack:pgd"]) for r in exported])
    assert np.isfinite(radius[direct == data.y_test[index]]).mean() > 0.5  # attacked through torch's autograd
    assert "crown" in (tmp_path / "run" / "leaderboard.md").read_text()  # refused by name, not crashed


def test_the_recorded_device_names_the_cpu_and_its_vector_instructions(tmp_path):
    """The CPU kernels pick their code by the instruction set, so two machines round
    differently: every record names the processor and its widest vector set."""
    from advbench.kit import backend

    intel = tmp_path / "intel"
    intel.write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
        "flags\t\t: fpu sse sse2 sse4_2 avx avx2 avx512f avx512bw\n\n"
        "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu\n"
    )
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm crc32\nCPU part\t: 0xd0c\n")
    assert backend.cpu(str(intel)) == "Intel(R) Xeon(R) Platinum 8480+, avx512f"
    assert backend.cpu(str(arm)).endswith(", asimd")
    assert backend.cpu(str(tmp_path / "missing")) != ""
    described = backend.describe()["device"]
    assert described == f"cpu: {backend.cpu()}" or described.startswith("gpu")
