"""Rich progress bars for a run: one bar for the jobs, one for each job running."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from advbench.runs.reporting import Reporter
from advbench.text import plural, terminal


class RichReporter(Reporter):
    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.overall = None
        self.finished = 0

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def start(self, total: int, skipped: int) -> None:
        self.finished = skipped
        if skipped:
            self.console.print(f"{skipped} of {plural(total, 'job')} finished already: reused", style="dim", highlight=False)
        self.overall = self.progress.add_task("jobs", total=total, completed=skipped)

    def begin(self, job, size: int):
        return job.id, self.progress.add_task(f"  {escape(job.id)}", total=size)

    def advance(self, handle, n: int, description: str | None = None) -> None:
        name, task = handle
        self.progress.update(
            task, advance=n, description=f"  {escape(name)}" + (f" ({escape(terminal(description))})" if description else "")
        )

    def end(self, handle, finished: bool = True) -> None:
        self.progress.remove_task(handle[1])
        if finished:
            self.finished += 1
            self.progress.advance(self.overall)

    def queue(self, running: int, waiting: int) -> None:
        self.progress.update(self.overall, description=f"jobs ({running} running, {waiting} waiting)")

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/] {escape(terminal(message))}", highlight=False, soft_wrap=True)

    def note(self, message: str) -> None:
        self.console.print(escape(terminal(message)), style="dim", highlight=False, soft_wrap=True)


class PlainReporter(Reporter):
    """Progress as plain lines, for output that is not a terminal (CI logs, pipes): one when
    the run starts (with the jobs it reuses), one per finished job, and warnings."""

    def __init__(self, console: Console):
        self.console = console
        self.total = self.finished = 0
        self.started: dict = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def start(self, total: int, skipped: int) -> None:
        self.total, self.finished = total, skipped
        reused = f", {skipped} finished already (reused)" if skipped else ""
        self._line(f"advbench: {plural(total, 'job')}{reused}")

    def begin(self, job, size: int):
        import time

        self.started[job.id] = time.perf_counter()
        return job.id

    def end(self, handle, finished: bool = True) -> None:
        import time

        started = self.started.pop(handle, None)
        if finished and handle is not None:
            self.finished += 1
            seconds = f" in {time.perf_counter() - started:.1f} s" if started is not None else ""
            self._line(f"[{self.finished}/{self.total}] {handle}{seconds}")

    def warn(self, message: str) -> None:
        self.console.print(f"warning: {terminal(message)}", highlight=False, markup=False, soft_wrap=True)

    def note(self, message: str) -> None:
        self._line(message)

    def _line(self, text: str) -> None:
        self.console.print(terminal(text), highlight=False, markup=False, soft_wrap=True)


def reporter_for(console: Console) -> Reporter:
    """Rich progress bars in a terminal, plain lines elsewhere."""
    return RichReporter(console) if console.is_terminal else PlainReporter(console)
