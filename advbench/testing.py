"""Helpers for testing advbench and advbench plugins through the real pipeline.

A plugin author can run a tiny spec that uses their component in a test::

    from advbench.testing import tiny_spec, run_spec

    def test_my_defense(tmp_path):
        spec = tiny_spec(tmp_path, models=[{"name": "m", "architecture": {"name": "mlp", "hidden": 16},
                                            "defense": {"name": "my_defense"}, "training": {"epochs": 2}}])
        result = run_spec(spec, tmp_path / "run")
        assert result.exit_code == 0, result.output
        bounds = result.results.bounds  # per (model, norm): radii of every attack and certifier

and register a plugin the way an installed package would (an entry point) with
:func:`entry_point_plugin`.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TINY = {
    "name": "tiny",
    "seed": 0,
    "dataset": {"name": "digits", "train_size": 300, "test_size": 60},
    "models": [
        {
            "name": "plain",
            "architecture": {"name": "mlp", "hidden": 32},
            "defense": {"name": "none"},
            "training": {"epochs": 3, "batch_size": 64, "learning_rate": 0.01},
        }
    ],
    "threat_models": [{"norm": "linf", "eps": [0.05, 0.1]}, {"norm": "l2", "eps": [0.5]}],
    "attacks": [{"name": "pgd", "steps": 10}],
    "certifiers": [{"name": "lipschitz"}],
    "evaluation": {"examples": 30, "batch_size": 30},
}
"""A spec that runs in seconds: digits, one small MLP, PGD and the Lipschitz bound."""


def tiny_spec(directory: str | Path, filename: str = "spec.yaml", **overrides: Any) -> Path:
    """Write :data:`TINY` with top-level ``overrides`` to ``directory/filename``."""
    spec = copy.deepcopy(TINY)
    spec.update(overrides)
    path = Path(directory) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@dataclass
class RunResult:
    exit_code: int
    output: str
    run_dir: Path

    @property
    def results(self):
        from advbench.results.data import load_results

        return load_results(self.run_dir)


def run_spec(spec: str | Path, out: str | Path, *args: str) -> RunResult:
    """Run ``advbench run spec --out out *args`` in this process (through Typer's CliRunner)."""
    from typer.testing import CliRunner

    from advbench.cli import app

    result = CliRunner().invoke(app, ["run", str(spec), "--out", str(out), *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return RunResult(result.exit_code, result.output, Path(out))


def entry_point_plugin(
    directory: str | Path, module_name: str, source: str, *, distribution: str = "example-plugin", version: str = "1.0"
) -> Path:
    """Make ``source`` an importable module registered in the ``advbench`` entry-point
    group by a (minimal, uninstalled) distribution in ``directory``, and put the
    directory on ``sys.path``, exactly as ``pip install`` of a plugin package would.
    Returns the directory; remove it from ``sys.path`` when done."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{module_name}.py").write_text(source)
    info = directory / f"{distribution.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[advbench]\n{module_name} = {module_name}\n")
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    return directory
