"""How a run reports its progress: the :class:`Reporter` interface (the CLI passes a Rich
one, Ray workers one that posts to the driver) and the :class:`RunSummary`."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class RunSummary:
    total: int = 0
    skipped: int = 0
    done: int = 0
    errors: list[dict] = field(default_factory=list)


class Reporter:
    """Progress reporting; the default reports nothing.

    A job's progress is ``handle = begin(job, size)``, then ``advance(handle, n)`` as work
    is done and ``end(handle)`` when the job's record is saved; :meth:`job` wraps the three
    for a job run in this process.  Executors that run jobs in parallel also call
    :meth:`queue` with how many jobs are running and how many wait."""

    def start(self, total: int, skipped: int) -> None:
        pass

    def begin(self, job, size: int):
        return None

    def advance(self, handle, n: int, description: str | None = None) -> None:
        pass

    def end(self, handle, finished: bool = True) -> None:
        """The job's bar goes; ``finished``: its record is saved (False: it will start again)."""

    def queue(self, running: int, waiting: int) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    @contextmanager
    def job(self, job, size: int):
        """A context manager yielding ``advance(n, description=None)``."""
        handle = self.begin(job, size)
        try:
            yield lambda n, description=None: self.advance(handle, n, description)
        finally:
            self.end(handle)
