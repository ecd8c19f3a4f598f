"""A whole spec on every installed Keras backend: wall-clock time and agreement.

Runs ``advbench run SPEC --backend B --fresh`` for each installed backend (TensorFlow,
JAX, PyTorch), each in its own process as a user would, then compares every exported
cell with the first backend's: the share of examples with the same clean prediction,
the share of certified radii equal to 1e-4 (relative), and the share of empirical radii
within the spec's bisection tolerance.  The acceptance targets: identical predictions,
certified radii equal, empirical radii within the tolerance on at least 95%.

    python benchmarks/backends.py [specs/quickstart.yaml] [--out runs/backends]

JAX compiles every program on first use; the first run on a machine fills its
compilation cache (~/.cache/advbench/jax), so the script reports JAX cold and warm.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml


def run(spec: Path, out: Path, backend: str, env: dict) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from advbench.cli import main; main()",
            "run",
            str(spec),
            "--out",
            str(out),
            "--backend",
            backend,
            "--fresh",
        ],
        env={**env, "KERAS_BACKEND": backend},
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{backend} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    export = subprocess.run(
        [sys.executable, "-c", "from advbench.cli import main; main()", "export", str(out), "-o", str(out / "export.csv")],
        env={**env, "KERAS_BACKEND": backend},
        capture_output=True,
        text=True,
    )
    if export.returncode != 0:
        raise SystemExit(export.stderr)
    return seconds


def cells(path: Path) -> dict:
    with path.open() as stream:
        return {(r["model"], r["norm"], r["index"]): r for r in csv.DictReader(stream)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default="specs/quickstart.yaml")
    parser.add_argument("--out", default="runs/backends")
    args = parser.parse_args()
    spec = Path(args.spec)
    tolerance = yaml.safe_load(spec.read_text()).get("evaluation", {}).get("radius_tolerance", 0.02)
    backends = [b for b in ("tensorflow", "jax", "torch") if importlib.util.find_spec(b) is not None]
    out = Path(args.out)
    timings = {}
    for backend in backends:
        env = dict(os.environ)
        if backend == "jax":
            with tempfile.TemporaryDirectory() as cold:
                timings["jax (cold compilation cache)"] = run(spec, out / "jax-cold", backend, {**env, "ADVBENCH_CACHE": cold})
        timings[backend] = run(spec, out / backend, backend, env)
    reference = cells(out / backends[0] / "export.csv")
    columns = list(next(iter(reference.values())).keys())
    print(f"{spec}: {len(reference)} (model, norm, example) cells")
    for name, seconds in timings.items():
        print(f"  {name:32s} {seconds:7.1f} s")
    for backend in backends[1:]:
        other = cells(out / backend / "export.csv")
        assert other.keys() == reference.keys()
        same = np.mean([other[k]["predicted"] == reference[k]["predicted"] for k in reference])
        print(f"  {backend} vs {backends[0]}: same clean prediction on {100 * same:.1f}%")
        for column in columns:
            if not column.startswith(("cert:", "attack:")):
                continue
            a = np.array([float(reference[k][column]) if reference[k][column] else np.nan for k in reference])
            b = np.array([float(other[k][column]) if other[k][column] else np.nan for k in reference])
            equal = (a == b) | (np.isnan(a) & np.isnan(b))
            with np.errstate(invalid="ignore", divide="ignore"):
                relative = np.abs(a - b) / np.abs(a)
            limit = 1e-4 if column.startswith("cert:") else tolerance
            share = np.mean(equal | (relative <= limit))
            print(f"    {column:24s} within {limit:g} (relative) on {100 * share:.1f}%")


if __name__ == "__main__":
    main()
