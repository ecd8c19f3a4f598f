"""The local executor: one job after another in this process."""

from __future__ import annotations

from typing import Iterator


class InProcess:
    """One job after another in this process: every training first, then each model's
    evaluations in the spec's order."""

    def __init__(self, address: str | None = None, strict: bool = False):
        self.strict = strict  # plugins are loaded once, with the spec, in this process

    def execute(self, runner, todo: list) -> Iterator[dict]:
        failed: set[str] = set()
        for job in sorted(todo, key=lambda job: job.kind != "train"):  # stable: the plan's order otherwise
            record = runner.run_one(job, failed)
            if job.kind == "train" and record["status"] == "error":
                failed.add(job.model)
            yield record
