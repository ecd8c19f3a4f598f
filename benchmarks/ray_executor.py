"""Sequential vs ``--executor ray`` on a spec of many small jobs: wall-clock, scheduling
overhead per job, and the speed-up to expect with more workers.

Writes a spec (scikit-learn's digits, ``--models`` small MLPs, FGSM, PGD and the
Lipschitz certifier under linf and l2: 8 jobs per model), runs it with the in-process
executor and with ``--executor ray`` (a local Ray on this machine's cores, one job per
core), each in its own process as a user would, checks that both exports are identical
cell for cell, and prints:

* the wall-clock of each, and the speed-up;
* the scheduling overhead: the round trip of an empty Ray task (submit, run, result), and
  per job the time workers were held but not inside a job (``(workers * wall - sum of the
  jobs' seconds) / jobs``: Ray's start, each worker's import of the framework and the
  spec, the driver's scheduling);
* the critical path (each model's training, then its longest evaluation) and the
  speed-up N workers (one GPU each) can reach on this spec: min(N, total / critical path).

    pip install -e ".[ray]" && python benchmarks/ray_executor.py [--models 6] [--out runs/ray-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml


def spec_text(models: int) -> dict:
    return {
        "name": "ray-bench",
        "seed": 0,
        "dataset": {"name": "digits", "train_size": 1200, "test_size": 300},
        "models": [
            {
                "name": f"mlp{i}",
                "architecture": {"name": "mlp", "hidden": 64 + 32 * i},
                "defense": {"name": "weight_decay", "lambda": 0.001} if i % 2 else {"name": "none"},
                "training": {"epochs": 10, "batch_size": 64, "learning_rate": 0.003},
            }
            for i in range(models)
        ],
        "threat_models": [{"norm": "linf", "eps": [0.05, 0.1]}, {"norm": "l2", "eps": [0.5, 1.0]}],
        "attacks": [{"name": "fgsm"}, {"name": "pgd", "steps": 20}],
        "certifiers": [{"name": "lipschitz"}],
        "evaluation": {"examples": 100, "batch_size": 100},
    }


def advbench(*args: str) -> float:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "advbench.cli", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"advbench {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def job_seconds(run_dir: Path) -> dict[str, float]:
    return {
        str(p.relative_to(run_dir / "jobs").with_suffix("")): json.loads(p.read_text())["seconds"]
        for p in (run_dir / "jobs").rglob("*.json")
    }


def empty_task_round_trip(tasks: int = 200) -> float:
    import ray

    ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:

        @ray.remote
        def empty():
            return None

        ray.get([empty.remote() for _ in range(os.cpu_count() or 1)])  # workers up
        started = time.perf_counter()
        for _ in range(tasks):
            ray.get(empty.remote())
        return (time.perf_counter() - started) / tasks
    finally:
        ray.shutdown()


def fresh_worker_start(spec: Path) -> float:
    """Seconds a new worker process takes before its first job: Python, the framework, the
    spec and the data (what a GPU job pays: Ray gives each GPU job a fresh process)."""
    code = (
        "import tempfile\n"
        "from advbench.kit import backend\n"
        "from advbench.runs.executors.ray import WorkerContext, worker_pipeline\n"
        "from advbench.spec import load_spec\n"
        f"spec = {str(spec.resolve())!r}\n"
        "context = WorkerContext(spec, False, tempfile.mkdtemp(), backend.name(), load_spec(spec).hash)\n"
        "worker_pipeline(context).plan()\n"
    )
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("runs/ray-bench"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    spec = args.out / "spec.yaml"
    spec.write_text(yaml.safe_dump(spec_text(args.models), sort_keys=False))
    workers = os.cpu_count() or 1

    walls = {}
    for executor in ("local", "ray"):
        run_dir = args.out / executor
        walls[executor] = advbench("run", str(spec), "--out", str(run_dir), "--fresh", "--executor", executor)
        advbench("export", str(run_dir), "-o", str(args.out / f"{executor}.csv"))
    same = (args.out / "local.csv").read_text() == (args.out / "ray.csv").read_text()
    seconds = {executor: job_seconds(args.out / executor) for executor in walls}
    jobs = len(seconds["local"])

    print(f"{jobs} jobs ({args.models} models x 8), {workers} cores; exports identical cell for cell: {same}")
    print(f"{'executor':<10}{'wall s':>9}{'sum of jobs s':>15}{'overhead s/job':>16}")
    for executor, wall in walls.items():
        slots = 1 if executor == "local" else workers
        total = sum(seconds[executor].values())
        print(f"{executor:<10}{wall:>9.1f}{total:>15.1f}{(slots * wall - total) / jobs:>16.3f}")
    print(f"speed-up of ray with {workers} workers: {walls['local'] / walls['ray']:.2f}x")
    print(f"an empty Ray task, submitted and waited for: {1000 * empty_task_round_trip():.2f} ms")

    local = seconds["local"]
    critical = max(
        local[f"{m}/train"] + max(s for job, s in local.items() if job.startswith(f"{m}/") and not job.endswith("/train"))
        for m in (f"mlp{i}" for i in range(args.models))
    )
    total = sum(local.values())
    start = fresh_worker_start(spec)
    print(
        f"critical path (a training, then its longest evaluation): {critical:.1f} s of {total:.1f} s in all; "
        f"a fresh worker process needs {start:.1f} s before its first job"
    )
    print("expected on N GPUs, one job per GPU, each GPU job paying a fresh worker process:")
    for scale, what in ((1, "jobs as long as here"), (60, "jobs 60x longer (minutes, as on real data)")):
        speedups = []
        for n in (2, 4, 8, 16):
            wall = max(scale * critical + 2 * start, (scale * total + jobs * start) / n)
            speedups.append(f"{n} GPUs {scale * total / wall:.1f}x")
        print(f"  {what}: " + ", ".join(speedups) + f" (without overheads at most min(N, {total / critical:.1f})x)")


if __name__ == "__main__":
    main()
