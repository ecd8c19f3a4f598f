"""How long the command line keeps a user waiting for nothing (issue 28's "no waiting on
nothing"): seconds to the first output line of ``advbench run``, of a rerun with nothing
left to do, of ``advbench validate``, and of the error a second run gets while the first
holds the run directory's lock.  Each is the median of ``--repeats`` runs of the installed
``advbench`` in a fresh process (what a user waits for), on the quickstart spec.

    python benchmarks/responsiveness.py --repeats 3

Run it alone: two cores shared with other work make every number larger.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "quickstart.yaml"


def advbench(*arguments: str) -> list[str]:
    return [str(Path(sys.executable).parent / "advbench"), *arguments]


def first_line_seconds(command: list[str]) -> float:
    """Seconds until the command's first line on stderr or stdout (then it is stopped)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    process.stdout.readline()
    seconds = time.perf_counter() - started
    process.kill()
    process.wait()
    return seconds


def whole_seconds(command: list[str], expect: int) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != expect:
        raise SystemExit(f"{' '.join(command)} exited {result.returncode}, expected {expect}:\n{result.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        run_dir = str(Path(folder) / "run")
        print("training the quickstart once (what the rerun finds finished) ...", flush=True)
        whole_seconds(advbench("run", str(SPEC), "--out", run_dir), expect=0)
        measured = {
            "first output line of advbench run": lambda: first_line_seconds(
                advbench("run", str(SPEC), "--out", str(Path(folder) / "other"))
            ),
            "a rerun with nothing left to do": lambda: whole_seconds(advbench("run", str(SPEC), "--out", run_dir), 0),
            "advbench validate": lambda: whole_seconds(advbench("validate", str(SPEC)), 0),
            "the lock error of a second run": lambda: lock_error_seconds(run_dir),
        }
        for what, measure in measured.items():
            times = [measure() for _ in range(args.repeats)]
            print(f"{what}: {statistics.median(times):.1f} s (median of {args.repeats}; {', '.join(f'{t:.1f}' for t in times)})")


def lock_error_seconds(run_dir: str) -> float:
    """A run holding the lock (the first, on --fresh would redo everything: a plain rerun
    holds it for as long as it runs), then a second run into the same directory."""
    holder = subprocess.Popen(
        advbench("run", str(SPEC), "--out", run_dir, "--fresh"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        lock = Path(run_dir) / ".lock"
        deadline = time.time() + 120
        while f"pid {holder.pid} " not in (lock.read_text() if lock.exists() else ""):
            if time.time() > deadline or holder.poll() is not None:
                raise SystemExit("the first run did not take the lock")
            time.sleep(0.05)
        return whole_seconds(advbench("run", str(SPEC), "--out", run_dir), expect=1)  # busy: not a usage error
    finally:
        holder.kill()
        holder.wait()


if __name__ == "__main__":
    main()
