"""The ``advbench`` command line.

Importing this module does not import TensorFlow: the commands import what they need
when they run, so ``advbench --help`` and ``advbench plugins`` stay fast.
"""

from __future__ import annotations

import json
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import advbench
from advbench.errors import AdvbenchError, UsageError
from advbench.text import terminal

app = typer.Typer(
    name="advbench",
    help="How robust is this classifier, really? Certified lower and empirical upper bounds, ranked.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# The terminal's tables fit the terminal; outside one (CI logs, pipes) they are as wide as 120 columns.
console = Console() if sys.stdout.isatty() else Console(width=120)
errors = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=160)

Strict = Annotated[bool, typer.Option("--strict", help="Treat a plugin that fails to load as fatal.")]
Backend = Annotated[
    Optional[str],
    typer.Option("--backend", help="Keras backend: tensorflow (default), jax or torch; the same as setting KERAS_BACKEND."),
]
from advbench.results.table import RANK_KEYS  # noqa: E402 (light: NumPy, which `advbench` imports anyway)

RankBy = Annotated[
    str, typer.Option("--rank-by", help=f"Ranking key: {', '.join(RANK_KEYS)} robust accuracy at the largest eps.")
]


def _check_rank_by(rank_by: str) -> None:
    if rank_by not in RANK_KEYS:
        raise UsageError(f"--rank-by: expected one of {', '.join(RANK_KEYS)}, got {rank_by!r}")


def _version(value: bool) -> None:
    if value:
        console.print(f"advbench {advbench.__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = None,
) -> None:
    """How robust is this classifier, really?"""


@contextmanager
def reported():
    """Turn advbench's errors into a message and an exit code, never a traceback; show
    plugin warnings as one line each."""

    def show(message, category, filename, lineno, file=None, line=None):
        errors.print(f"[yellow]warning:[/] {escape(terminal(str(message)))}", highlight=False, soft_wrap=True)

    previous = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    except AdvbenchError as exc:
        text = escape(terminal(str(exc)))
        errors.print(f"[red]error:[/] {text}" if "\n" not in text else f"[red]error:[/]\n{text}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    finally:
        warnings.showwarning = previous


@app.command()
def run(
    spec: Annotated[Path, typer.Argument(help="The YAML spec to run.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory (default: runs/<name>/).")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Delete earlier results in the run directory and start over.")] = False,
    strict: Strict = False,
    rank_by: RankBy = "certified",
    backend: Backend = None,
    executor: Annotated[
        str,
        typer.Option(
            "--executor",
            help="Where jobs run: local (one after another in this process) or ray (in parallel on Ray; "
            'pip install "advbench[ray]"). The results are the same.',
        ),
    ] = "local",
    address: Annotated[
        Optional[str],
        typer.Option(
            "--address",
            help="With --executor ray: the Ray cluster to join (host:port, or auto); default: start Ray on this machine.",
        ),
    ] = None,
) -> None:
    """Train or load every model, attack and certify it, and write the leaderboard.

    Finished jobs are skipped on a rerun of the same spec; an interrupted run resumes.
    """
    with reported():
        errors.print(f"advbench: reading {spec}", style="dim", highlight=False, markup=False)  # said at once
        _check_rank_by(rank_by)
        from advbench.runs.executors import executor as make_executor

        make_executor(executor, address, strict)  # an unknown executor or a missing extra: before any work
        from advbench.kit.backend import check_environment, select

        if backend:
            select(backend)
        check_environment()
        from advbench.spec.loading import load_spec

        if out is not None and out.exists() and not out.is_dir():
            raise UsageError(f"--out {out}: is a file; give a directory for the run")
        loaded = load_spec(spec, strict=strict)  # the data checks follow, once the run directory is known free
        from advbench.api import run as run_spec
        from advbench.cli.progress import reporter_for
        from advbench.results.markdown import leaderboard_is_current, write_leaderboard

        root = out or Path("runs") / loaded.name
        reporter = reporter_for(errors)
        try:
            with reporter:
                outcome = run_spec(
                    loaded, root, fresh=fresh, executor=executor, address=address, strict=strict, reporter=reporter
                )
            summary = outcome.summary
            path = root / "leaderboard.md"
            if summary.done or not leaderboard_is_current(root, path, rank_by):
                path, results = write_leaderboard(root, rank_by=rank_by)
            else:
                results = outcome.results  # nothing new: the leaderboard on disk is this one
        except KeyboardInterrupt:
            saved = getattr(reporter, "finished", None)
            counted = f"{saved} job(s) finished and saved; " if saved is not None else "finished jobs are saved; "
            errors.print(f"[yellow]interrupted[/]: {counted}rerun the same command in {escape(str(root))} to resume")
            raise typer.Exit(130) from None
        _print_tables(results, rank_by)
        ran = "nothing left to do" if not summary.done else f"{summary.done} job{'s' if summary.done != 1 else ''} run"
        console.print(f"{ran}, {summary.skipped} already done. Leaderboard: [bold]{escape(str(path))}[/]", highlight=False)
        if summary.errors:
            errors.print(f"[red]{len(summary.errors)} job(s) failed[/]; see the leaderboard and {root / 'jobs'}")
            raise typer.Exit(1)
        if any(b.errors for b in results.bounds):
            errors.print("[red]the leaderboard reports errors[/] (a certified radius above an empirical one, or a failed job)")
            raise typer.Exit(1)


@app.command()
def validate(
    spec: Annotated[Path, typer.Argument(help="The YAML spec to check.")], strict: Strict = False, backend: Backend = None
) -> None:
    """Check a spec (fields, plugins, parameters, data, pretrained models) without running it."""
    with reported():
        from advbench.kit.backend import check_environment, select

        if backend:
            select(backend)
        check_environment()
        from advbench.spec.loading import load_spec

        loaded = load_spec(spec, strict=strict, check_data=True)
        jobs = len(loaded.models) * (2 + len(loaded.threat_models) * (len(loaded.attacks) + len(loaded.certifiers)))
        console.print(f"{spec}: valid ({len(loaded.models)} models, {jobs} jobs)", highlight=False)
        if loaded.plugin_files:
            console.print(
                "This spec imports and runs the code of: "
                + ", ".join(str(p) for p in loaded.plugin_files)
                + " (trust a spec from elsewhere like a script)",
                highlight=False,
            )


@app.command()
def schema(
    strict: Strict = False,
    leaderboard: Annotated[
        bool, typer.Option("--leaderboard", help="The schema of `advbench export --format json` instead.")
    ] = False,
) -> None:
    """Print the JSON schema of a spec, including the loaded plugins' parameters."""
    with reported():
        if leaderboard:
            from advbench.results.json import leaderboard_schema

            sys.stdout.write(json.dumps(leaderboard_schema(), indent=1) + "\n")
            return
        from advbench.contract.plugins import load_plugins
        from advbench.spec.jsonschema import spec_schema

        console.print_json(json.dumps(spec_schema(load_plugins(strict=strict).registry)))


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    output: Annotated[str, typer.Option("--output", "-o", help="The file to write; - for standard output.")],
    format_: Annotated[
        str,
        typer.Option(
            "--format",
            help="csv: one row per (model, norm, test example) with every radius; json: the leaderboard, every "
            "number with its interval (schema: advbench schema --leaderboard).",
        ),
    ] = "csv",
    rank_by: RankBy = "certified",
) -> None:
    """Write the results for other tools: per-example radii (CSV) or the leaderboard (JSON)."""
    with reported():
        if format_ not in ("csv", "json"):
            raise UsageError(f"--format: expected csv or json, got {format_!r}")
        _check_rank_by(rank_by)
        to_stdout = output == "-"
        if not to_stdout and Path(output).is_dir():
            raise UsageError(f"--output {output}: is a directory; give the file to write")
        import io

        from advbench.results.csv import export_csv
        from advbench.results.data import load_results

        stream = io.StringIO()
        if format_ == "csv":
            rows, results = export_csv(run_dir, stream)
            what = f"{rows} rows"
        else:
            from advbench.results.json import leaderboard_document

            results = load_results(run_dir)
            stream.write(json.dumps(leaderboard_document(results, rank_by), indent=1, ensure_ascii=False) + "\n")
            what = "the leaderboard"
        _warn_damaged(results)
        if to_stdout:
            sys.stdout.write(stream.getvalue())
            sys.stdout.flush()
        else:
            from advbench.runs.store import write_atomic

            try:
                write_atomic(Path(output), stream.getvalue().encode())
            except OSError as exc:
                raise UsageError(f"--output {output}: cannot write it ({exc.strerror or exc})") from None
            console.print(f"{what} written to {output}", highlight=False)


@app.command()
def leaderboard(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    output: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", help="Markdown file (default: <run_dir>/leaderboard.md); plots go beside it."),
    ] = None,
    rank_by: RankBy = "certified",
) -> None:
    """Render the markdown leaderboard (and its plots) from a run directory."""
    with reported():
        from advbench.results.markdown import write_leaderboard

        _check_rank_by(rank_by)
        if output is not None and output.is_dir():
            raise UsageError(f"--output {output}: is a directory; give the markdown file to write")
        try:
            path, results = write_leaderboard(run_dir, output, rank_by)
        except OSError as exc:
            where = output if output is not None else Path(run_dir) / "leaderboard.md"
            raise UsageError(f"--output {where}: cannot write the leaderboard ({exc.strerror or exc})") from None
        _warn_damaged(results)
        _print_tables(results, rank_by)
        console.print(f"Leaderboard: [bold]{path}[/]", highlight=False)


@app.command()
def compare(
    first: Annotated[Path, typer.Argument(help="A run directory.")],
    second: Annotated[Path, typer.Argument(help="Another run directory.")],
    format_: Annotated[str, typer.Option("--format", help="terminal (a table) or json.")] = "terminal",
) -> None:
    """Compare two runs: each bound's difference per model and eps (and whether the 95%
    intervals separate), the models in only one, and the settings that differ."""
    with reported():
        if format_ not in ("terminal", "json"):
            raise UsageError(f"--format: expected terminal or json, got {format_!r}")
        from advbench.results.compare import compare as compare_runs
        from advbench.results.compare import print_comparison
        from advbench.results.data import load_results

        comparison = compare_runs(load_results(first), load_results(second))
        if format_ == "json":
            sys.stdout.write(json.dumps(comparison, indent=1, ensure_ascii=False) + "\n")
        else:
            print_comparison(console, comparison)


@app.command()
def plugins(strict: Strict = False) -> None:
    """List every plugin with its version and the components it registers."""
    with reported():
        from advbench.contract.plugins import load_plugins

        host = load_plugins(strict=strict)
        table = Table(title="advbench plugins")
        for column in ("plugin", "from", "version", "registers"):
            table.add_column(column)
        for info in host.plugins.values():
            registers = ", ".join(f"{kind} {name}" for kind, name in info.components)
            if info.error:
                registers = f"[red]not loaded: {info.error}[/]"
            table.add_row(info.name, info.source, info.version, registers)
        console.print(table)


def _warn_damaged(results) -> None:
    for name, problem in sorted(results.damaged.items()):
        errors.print(
            f"[yellow]warning:[/] {escape(name)} is damaged ({escape(problem)}); left out (rerun the spec to redo its job)",
            highlight=False,
            soft_wrap=True,
        )


def _print_tables(results, rank_by: str) -> None:
    from advbench.results.terminal import print_tables

    print_tables(console, results, rank_by)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
