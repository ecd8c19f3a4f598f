"""Rich progress bars for a run: one bar for the jobs, one for the job at hand."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from advbench.pipeline import Job, Reporter


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

    @contextmanager
    def job(self, job: Job, size: int):
        task = self.progress.add_task(f"  {job.id}", total=size)

        def advance(n: int, description: str | None = None) -> None:
            self.progress.update(task, advance=n, description=f"  {job.id}" + (f" ({description})" if description else ""))

        try:
            yield advance
        finally:
            self.progress.update(task, completed=size, visible=False)
            self.progress.remove_task(task)
            self.progress.advance(self.overall)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)
