"""Rich progress bars for a run: one bar for the jobs, one for each job running."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from advbench.runs.reporting import Reporter
from advbench.text import terminal


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

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def start(self, total: int, skipped: int) -> None:
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
            self.progress.advance(self.overall)

    def queue(self, running: int, waiting: int) -> None:
        self.progress.update(self.overall, description=f"jobs ({running} running, {waiting} waiting)")

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/] {escape(terminal(message))}", highlight=False, soft_wrap=True)

    def note(self, message: str) -> None:
        self.console.print(escape(terminal(message)), style="dim", highlight=False, soft_wrap=True)
