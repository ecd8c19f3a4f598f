"""Where a run's jobs execute, behind one small interface: an executor's
``execute(runner, jobs)`` runs each job with ``runner.run_one(job, failed)`` (in this
process or elsewhere, after the trainings ``runner.needs(job)`` names) and yields each
job's record as it ends.

Every executor writes the same records into the run directory, which stays the one
source of truth: a record is written atomically when its job ends, so a run interrupted
in any way resumes where it stopped, with any executor.  Every job seeds itself from its
identity, so neither the order in which jobs run nor the process that runs them changes
a result.  A new executor is a class in a module here and a line in :data:`EXECUTORS`.
"""

from __future__ import annotations

import importlib
from typing import Iterator, Protocol

from advbench.errors import UsageError


class Executor(Protocol):
    def __init__(self, address: str | None = None, strict: bool = False) -> None:
        """``address``: a cluster to join (where the executor has clusters); ``strict``:
        plugin failures are fatal where jobs run, too."""

    def execute(self, runner, jobs: list) -> Iterator[dict]:
        """Run ``jobs`` (``runner.run_one``), yielding each one's record when it ends."""


EXECUTORS = {
    "local": "advbench.runs.executors.local:InProcess",
    "ray": "advbench.runs.executors.ray:RayExecutor",
}
"""Each executor by the name ``--executor`` takes, as ``module:class`` (imported when chosen:
Ray takes seconds to import)."""


def executor(name: str, address: str | None = None, strict: bool = False) -> Executor:
    """The executor called ``name``; a :class:`UsageError` for an unknown name, for
    ``address`` with an executor that joins no cluster, or for a missing extra."""
    if name not in EXECUTORS:
        raise UsageError(f"--executor: expected one of {', '.join(EXECUTORS)}, got {name!r}")
    if address is not None and name != "ray":
        raise UsageError("--address: only with --executor ray")
    module, cls = EXECUTORS[name].split(":")
    return getattr(importlib.import_module(module), cls)(address=address, strict=strict)


__all__ = ["EXECUTORS", "Executor", "executor"]
