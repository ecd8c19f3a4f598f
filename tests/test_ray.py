"""``advbench run --executor ray`` on a local Ray cluster (2 cores): the same results as the
in-process executor cell for cell, randomized defense and transfer attack included, and
still the same when a worker or the driver is killed with SIGKILL mid-run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from advbench.testing import tiny_spec
from helpers import kill_midway

pytest.importorskip("ray")

MODELS = [
    {"name": "plain", "architecture": {"name": "mlp", "hidden": 32}, "training": {"epochs": 3, "learning_rate": 0.01}},
    {
        "name": "random",
        "architecture": {"name": "mlp", "hidden": 16},
        "defense": {"name": "randomization"},
        "training": {"epochs": 2, "learning_rate": 0.01},
    },
]
ATTACKS = [{"name": "fgsm"}, {"name": "pgd", "steps": 100}, {"name": "transfer", "source": "plain", "steps": 10}]
EVALUATION = {"examples": 30, "batch_size": 30, "eot_samples": 3, "final_draws": 3}


def advbench(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "advbench.cli", *map(str, args)], capture_output=True, text=True, **kwargs)


def export(run_dir: Path) -> str:
    out = run_dir.with_suffix(".csv")
    result = advbench("export", run_dir, "-o", out)
    assert result.returncode == 0, result.stderr
    return out.read_text()


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    return tiny_spec(
        tmp_path_factory.mktemp("ray"),
        models=MODELS,
        attacks=ATTACKS,
        evaluation=EVALUATION,
        threat_models=[{"norm": "linf", "eps": [0.05, 0.1]}],
    )


@pytest.fixture(scope="module")
def sequential(spec):
    result = advbench("run", spec, "--out", spec.parent / "sequential")
    assert result.returncode == 0, result.stderr
    return export(spec.parent / "sequential")


def ray_processes(title: str) -> list[int]:
    """PIDs of this user's Ray workers whose process title starts with ``title``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid == os.getuid():
                if (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").startswith(title):
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_a_ray_run_equals_the_sequential_run_cell_for_cell(spec, sequential):
    result = advbench("run", spec, "--out", spec.parent / "ray", "--executor", "ray")
    assert result.returncode == 0, result.stderr
    assert "Ray " in result.stderr and "2 CPU(s)" in result.stderr
    assert "12 jobs run, 0 already done" in result.stdout
    assert export(spec.parent / "ray") == sequential
    # the transfer attack on `random` waited for its source's training
    model_record = next((spec.parent / "ray" / "models").glob("plain-*.json"))
    transfer = spec.parent / "ray" / "jobs" / "random" / "linf" / "attack-transfer.json"
    import json

    started = transfer.stat().st_mtime - json.loads(transfer.read_text())["seconds"]
    assert model_record.stat().st_mtime <= started + 0.05


def test_a_worker_killed_mid_job_is_replaced_and_the_results_do_not_change(spec, sequential):
    run_dir = spec.parent / "worker-killed"
    driver = subprocess.Popen(
        [sys.executable, "-m", "advbench.cli", "run", str(spec), "--out", str(run_dir), "--executor", "ray"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    victims, deadline = [], time.time() + 180
    while not victims and time.time() < deadline and driver.poll() is None:
        victims = ray_processes("ray::advbench plain/linf/attack-pgd")
        time.sleep(0.05)
    assert victims, "the PGD job of `plain` never ran"
    time.sleep(0.5)  # well inside the job
    os.kill(victims[0], signal.SIGKILL)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err
    assert "plain/linf/attack-pgd: started again" in err  # the kill hit the job, which Ray reran
    assert export(run_dir) == sequential


def test_a_driver_killed_mid_run_resumes_to_the_same_results(spec, sequential):
    run_dir = spec.parent / "driver-killed"
    command = [sys.executable, "-m", "advbench.cli", "run", str(spec), "--out", str(run_dir), "--executor", "ray"]
    assert 4 <= kill_midway(command, run_dir, records=4) < 12, "the driver should have been killed midway"
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "already done" in result.stdout
    assert export(run_dir) == sequential


PLUGIN = '''
from advbench import hookimpl
from advbench.contract.components import Attack


class Explode(Attack):
    """Fails on one model: the run must go on with every other job."""

    def perturb(self, target, x, y, eps, norm, seed):
        raise ValueError("boom " + "x" * 10)


@hookimpl
def advbench_register_attacks(register):
    register("explode", Explode)
'''


def test_a_failed_job_is_reported_and_the_others_finish(tmp_path):
    (tmp_path / "explode.py").write_text(PLUGIN)
    spec = tiny_spec(
        tmp_path,
        models=MODELS[:1],
        plugins=["explode.py"],
        attacks=[{"name": "fgsm"}, {"name": "explode"}],
        threat_models=[{"norm": "linf", "eps": [0.1]}],
        evaluation={"examples": 10, "batch_size": 10},
    )
    result = advbench("run", spec, "--out", tmp_path / "run", "--executor", "ray")
    assert result.returncode == 1
    assert "plain/linf/attack-explode failed: ValueError: boom" in result.stderr
    assert "1 job(s) failed" in result.stderr
    import json

    record = json.loads((tmp_path / "run" / "jobs" / "plain" / "linf" / "attack-explode.json").read_text())
    assert record["status"] == "error" and "Traceback" in record["traceback"]
    assert json.loads((tmp_path / "run" / "jobs" / "plain" / "linf" / "attack-fgsm.json").read_text())["status"] == "ok"


def test_ray_options_are_checked_before_any_work(tmp_path):
    spec = tiny_spec(tmp_path, resources={"cpus_per_job": 64})
    result = advbench("run", spec, "--out", tmp_path / "run", "--executor", "ray")
    assert result.returncode == 2 and "resources: no node of the Ray cluster has 64 CPU(s)" in result.stderr
    result = advbench("run", spec, "--out", tmp_path / "run", "--address", "localhost:1")
    assert result.returncode == 2 and "--address: only with --executor ray" in result.stderr
    result = advbench("run", spec, "--executor", "dask")
    assert result.returncode == 2 and "--executor: expected one of local, ray" in result.stderr
