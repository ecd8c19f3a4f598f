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
from typing import Annotated, Literal, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import advbench
from advbench.errors import AdvbenchError, UsageError
from advbench.text import close_matches, plural, terminal

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

Strict = Annotated[bool, typer.Option("--strict", metavar="", help="Treat a plugin that fails to load as fatal.")]
Backend = Annotated[
    Optional[Literal["tensorflow", "jax", "torch"]],
    typer.Option("--backend", help="Keras backend: tensorflow (default), jax or torch; the same as setting KERAS_BACKEND."),
]
from advbench.results.table import RANK_KEYS  # noqa: E402 (light: NumPy, which `advbench` imports anyway)

RankBy = Annotated[
    Literal[RANK_KEYS],
    typer.Option("--rank-by", help="Rank by certified, empirical or clean robust accuracy at the largest eps."),
]


def _version(value: bool) -> None:
    if value:
        console.print(f"advbench {advbench.__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        Optional[bool], typer.Option("--version", metavar="", callback=_version, is_eager=True, help="Show the version and exit.")
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
    spec: Annotated[Path, typer.Argument(metavar="SPEC", help="The YAML spec to run.")],
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", metavar="DIR", help="Run directory (default: runs/<name>/).")
    ] = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", metavar="", help="Delete earlier results in the run directory and start over.")
    ] = False,
    strict: Strict = False,
    rank_by: RankBy = "certified",
    backend: Backend = None,
    executor: Annotated[
        str,
        typer.Option(
            "--executor",
            metavar="<local|ray>",
            help="Where jobs run: local (one after another in this process) or ray (in parallel on Ray; "
            'pip install "advbench\\[ray]"). The results are the same.',
        ),
    ] = "local",
    address: Annotated[
        Optional[str],
        typer.Option(
            "--address",
            metavar="HOST:PORT",
            help="With --executor ray: the Ray cluster to join (host:port, or auto); default: start Ray on this machine.",
        ),
    ] = None,
) -> None:
    """Train or load every model, attack and certify it, and write the leaderboard.

    Finished jobs are skipped on a rerun of the same spec; an interrupted run resumes.
    """
    with reported():
        errors.print(f"advbench: reading {spec}", style="dim", highlight=False, markup=False)  # said at once
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
        ran = "nothing left to do" if not summary.done else f"{plural(summary.done, 'job')} run"
        console.print(f"{ran}, {summary.skipped} already done. Leaderboard: [bold]{escape(str(path))}[/]", highlight=False)
        if summary.errors:
            errors.print(f"[red]{len(summary.errors)} job(s) failed[/]; see the leaderboard and {root / 'jobs'}")
            raise typer.Exit(1)
        if any(b.errors for b in results.bounds):
            errors.print("[red]the leaderboard reports errors[/] (a certified radius above an empirical one, or a failed job)")
            raise typer.Exit(1)


@app.command()
def verify(
    network: Annotated[
        Path, typer.Argument(metavar="NET.onnx|BENCHMARK_DIR", help="An ONNX network, or a benchmark folder with instances.csv.")
    ],
    prop: Annotated[
        Optional[Path], typer.Argument(metavar="[PROP.vnnlib]", help="The VNN-LIB property (with a network).")
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", metavar="S", help="Seconds for the instance (one instance).")] = 300.0,
    result: Annotated[
        Optional[Path],
        typer.Option(
            "--result", metavar="FILE", help="Write the verdict there (and a sat's counterexample), as VNN-COMP's run_instance."
        ),
    ] = None,
    out: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", metavar="RUN_DIR", help="The run directory (a benchmark; default runs/<benchmark>/)."),
    ] = None,
    instances: Annotated[
        Optional[Path],
        typer.Option("--instances", metavar="FILE", help="Another instances listing (default BENCHMARK_DIR/instances.csv)."),
    ] = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", metavar="", help="Delete earlier answers in the run directory first.")
    ] = False,
    executor: Annotated[
        str,
        typer.Option(
            "--executor", metavar="<local|ray>", help="A benchmark's instances one after another, or in parallel on Ray."
        ),
    ] = "local",
    address: Annotated[
        Optional[str], typer.Option("--address", metavar="HOST:PORT", help="With --executor ray: the Ray cluster to join.")
    ] = None,
    backend: Backend = None,
) -> None:
    """Decide VNN-LIB properties on ONNX networks: sat (with a counterexample that
    reproduces under onnxruntime), unsat, timeout or unknown.

    With a network and a property: one instance, printed and written to --result.  With a
    benchmark folder (VNN-COMP's layout): every instance, through a run directory that a
    rerun resumes, and RUN_DIR/results.csv in the competition's columns.
    """
    with reported():
        from advbench.kit.backend import check_environment, select

        if backend:
            select(backend)
        if network.is_dir():
            if prop is not None:
                raise UsageError(f"{network} is a benchmark folder: give no property (its instances.csv lists them)")
            check_environment()
            from advbench.runs.verification import verify_benchmark

            root = out or Path("runs") / network.resolve().name
            from advbench.runs.executors import executor as make_executor

            make_executor(executor, address)  # an unknown executor, a stray --address or a missing extra: before any work
            records = verify_benchmark(
                network,
                root,
                instances,
                fresh,
                report=lambda line: errors.print(line, highlight=False, markup=False),
                executor=executor,
                address=address,
            )
            counts = {name: sum(r["result"] == name for r in records) for name in ("sat", "unsat", "timeout", "unknown", "error")}
            console.print(
                ", ".join(f"{n} {name}" for name, n in counts.items() if n) + f"; {root / 'results.csv'}", highlight=False
            )
            if counts["error"]:
                raise typer.Exit(2)
            return
        if prop is None:
            raise UsageError("give a property file after the network (or a benchmark folder alone)")
        if not timeout > 0:
            raise UsageError(f"--timeout {timeout}: expected a positive number of seconds")
        for option, given in (("out", out), ("instances", instances), ("address", address)):
            if given is not None:
                raise UsageError(f"--{option}: only with a benchmark folder")
        if executor != "local":
            raise UsageError("--executor: only with a benchmark folder")
        check_environment()
        from advbench.contract.plugins import load_plugins
        from advbench.core.verification import read_instance
        from advbench.core.verification import verify as decide
        from advbench.core.vnnlib import counterexample_text

        try:
            net, parsed = read_instance(network, prop)
        except AdvbenchError as exc:  # a missing, corrupt or unsupported file: bad input
            exc.exit_code = 2
            raise
        verdict = decide(net, parsed, timeout, load_plugins().registry)
        text = verdict.result + "\n"
        if verdict.counterexample is not None:
            text += counterexample_text(*verdict.counterexample)
        if result is not None:
            try:
                result.write_text(text)
            except OSError as exc:
                raise AdvbenchError(f"--result {result}: cannot write ({exc.strerror or exc})") from None
        console.print(verdict.result, highlight=False)
        detail = "; ".join(f"{s['stage']} {s['seconds']:.1f} s: {s['outcome']}" for s in verdict.stages)
        errors.print(
            f"{verdict.seconds:.1f} s ({detail})" + (f"; {verdict.reason}" if verdict.reason else ""),
            highlight=False,
            markup=False,
        )


@app.command()
def validate(
    spec: Annotated[Path, typer.Argument(metavar="SPEC", help="The YAML spec to check.")],
    strict: Strict = False,
    backend: Backend = None,
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
        console.print(f"{spec}: valid ({plural(len(loaded.models), 'model')}, {plural(jobs, 'job')})", highlight=False)
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
        bool, typer.Option("--leaderboard", metavar="", help="The schema of `advbench export --format json` instead.")
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


def _format_option(command: str, default: str):
    from advbench.results.renderers import RENDERERS, formats

    names = formats(command)
    listing = "; ".join(f"{name}: {RENDERERS[name].help}" for name in names)
    return Annotated[str, typer.Option("--format", help=f"{listing}.", metavar=f"<{'|'.join(names)}>")]


def _renderer(command: str, name: str):
    from advbench.results.renderers import RENDERERS, formats

    if name not in formats(command):
        raise UsageError(f"--format {name}: expected one of {', '.join(formats(command))}")
    return RENDERERS[name]


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="A run directory.")],
    output: Annotated[str, typer.Option("--output", "-o", metavar="FILE", help="The file to write; - for standard output.")],
    format_: _format_option("export", "csv") = "csv",
    rank_by: RankBy = "certified",
) -> None:
    """Write the results for other tools: per-example radii (CSV) or the leaderboard (JSON)."""
    with reported():
        from advbench.results.renderers import RenderOptions

        renderer = _renderer("export", format_)
        to_stdout = output == "-"
        if not to_stdout and Path(output).is_dir():
            raise UsageError(f"--output {output}: is a directory; give the file to write")
        rendered = renderer([run_dir], None if to_stdout else Path(output), RenderOptions(rank_by=rank_by))
        for results in rendered.results:
            _warn_damaged(results)
        if rendered.text is None:
            console.print(f"{rendered.what} written to {rendered.path}", highlight=False)
        elif to_stdout:
            sys.stdout.write(rendered.text)
            sys.stdout.flush()
        else:
            from advbench.runs.store import write_atomic

            try:
                write_atomic(Path(output), rendered.text.encode())
            except OSError as exc:
                raise UsageError(f"--output {output}: cannot write it ({exc.strerror or exc})") from None
            console.print(f"{rendered.what} written to {output}", highlight=False)


@app.command()
def leaderboard(
    run_dirs: Annotated[list[Path], typer.Argument(metavar="RUN...", help="Run directories (several only with --format html).")],
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output",
            "-o",
            metavar="PATH",
            help="markdown: the file (default: <run_dir>/leaderboard.md), figures beside it; html: the site's folder.",
        ),
    ] = None,
    format_: _format_option("leaderboard", "markdown") = "markdown",
    figure_format: Annotated[
        str, typer.Option("--figure-format", help="png, pdf or svg (a site: png or svg).", metavar="<png|pdf|svg>")
    ] = "png",
    rank_by: RankBy = "certified",
    compare_with: Annotated[
        Optional[list[str]],
        typer.Option(
            "--compare",
            metavar="NAME=results.csv",
            help="A verification run: another tool's results.csv beside advbench's, instance by instance (repeatable).",
        ),
    ] = None,
) -> None:
    """Render the leaderboard of a run: a markdown page with its figures, or a static HTML
    site (one page per run, with an index for several, and a page per model) that opens
    from disk.  A verification run (`advbench verify BENCHMARK_DIR`) gets its report:
    counts and times per network, the cactus plot, and other tools' answers with --compare."""
    with reported():
        from advbench.results.verification import is_verification_run

        if len(run_dirs) == 1 and is_verification_run(run_dirs[0]):
            from advbench.results.verification import parse_compare, write_report

            if format_ != "markdown":
                raise UsageError(f"--format {format_}: a verification run's report is markdown")
            path = write_report(run_dirs[0], output, parse_compare(compare_with or []), figure_format)
            console.print(f"Report: [bold]{escape(str(path))}[/]", highlight=False)
            return
        if compare_with:
            raise UsageError("--compare: only for a verification run (advbench verify BENCHMARK_DIR)")
        from advbench.results.plots import FIGURE_FORMATS
        from advbench.results.renderers import RenderOptions

        renderer = _renderer("leaderboard", format_)
        if figure_format not in FIGURE_FORMATS:
            raise UsageError(f"--figure-format: expected one of {', '.join(FIGURE_FORMATS)}, got {figure_format!r}")
        if format_ == "html":
            _check_site(output, figure_format)
        elif len(run_dirs) != 1 and not renderer.several_runs:
            raise UsageError(
                f"{len(run_dirs)} run directories: a {format_} leaderboard is of one run (a site, --format html, of several)"
            )
        elif output is not None and str(output) == "-":
            raise UsageError(
                f"--output -: a {format_} leaderboard is a file with figures beside it; give its path (export writes to standard output)"
            )
        elif output is not None and output.is_dir():
            raise UsageError(f"--output {output}: is a directory; give the {format_} file to write")
        try:
            rendered = renderer(run_dirs, output, RenderOptions(rank_by=rank_by, figure_format=figure_format))
        except OSError as exc:
            where = output if output is not None else Path(run_dirs[0]) / "leaderboard.md"
            raise UsageError(f"--output {where}: cannot write the {format_} leaderboard ({exc.strerror or exc})") from None
        for results in rendered.results:
            _warn_damaged(results)
            _print_tables(results, rank_by)
        if rendered.text is not None:
            sys.stdout.write(rendered.text)
        elif format_ == "html":
            console.print(
                f"Site: [bold]{escape(str(rendered.path))}[/] (open it in a browser; it needs no server)", highlight=False
            )
        else:
            console.print(f"{rendered.what}: [bold]{escape(str(rendered.path))}[/]", highlight=False)


def _check_site(output: Path | None, figure_format: str) -> None:
    from advbench.results.website import SITE_FORMATS

    if output is None:
        raise UsageError("--format html needs --output DIR: the folder the site is written to")
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output}: is a file; give the folder for the site")
    if figure_format not in SITE_FORMATS:
        raise UsageError(
            f"--figure-format {figure_format}: a site shows {' or '.join(SITE_FORMATS)} (a browser does not show a PDF inline)"
        )


@app.command()
def compare(
    first: Annotated[Path, typer.Argument(metavar="RUN", help="A run directory.")],
    second: Annotated[Path, typer.Argument(metavar="RUN", help="Another run directory.")],
    format_: Annotated[Literal["terminal", "json"], typer.Option("--format", help="terminal (a table) or json.")] = "terminal",
) -> None:
    """Compare two runs: each bound's difference per model and eps (and whether the 95%
    intervals separate), the models in only one, and the settings that differ."""
    with reported():
        from advbench.results.compare import compare as compare_runs
        from advbench.results.compare import print_comparison
        from advbench.results.data import load_results

        comparison = compare_runs(load_results(first), load_results(second))
        if format_ == "json":
            sys.stdout.write(json.dumps(comparison, indent=1, ensure_ascii=False) + "\n")
        else:
            print_comparison(console, comparison)


@app.command()
def plugins(
    name: Annotated[
        Optional[str],
        typer.Argument(
            metavar="NAME",
            help="A plugin or a component (e.g. pgd): list its parameters with their types, defaults and descriptions.",
        ),
    ] = None,
    spec: Annotated[
        Optional[Path],
        typer.Option("--spec", metavar="SPEC", help="Also load the plugin files this spec names under plugins:."),
    ] = None,
    strict: Strict = False,
) -> None:
    """List every plugin with its version and the components it registers, or one plugin's
    or component's parameters."""
    with reported():
        from advbench.contract.plugins import load_plugins

        host = load_plugins(strict=strict, files=_spec_plugin_files(spec) if spec else ())
        if name is None:
            table = Table(title="advbench plugins")
            for column in ("plugin", "from", "version", "registers"):
                table.add_column(column)
            for info in host.plugins.values():
                shown = lambda text: escape(terminal(text))  # noqa: E731 (metadata anyone can write)
                registers = shown(", ".join(f"{kind} {component}" for kind, component in info.components))
                if info.error:
                    registers = f"[red]not loaded: {shown(info.error)}[/]"
                table.add_row(shown(info.name), shown(info.source), shown(info.version), registers)
            console.print(table)
            return
        entries = host.registry.entries()
        chosen = [entry for entry in entries if name in (entry.name, entry.plugin)]
        if not chosen:
            known = {entry.name for entry in entries} | {entry.plugin for entry in entries}
            close = close_matches(name, sorted(known), count=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else "; advbench plugins lists them"
            raise UsageError(f"no plugin or component is named {name!r}{hint}")
        for entry in chosen:
            console.print(
                f"[bold]{escape(terminal(entry.kind))} {escape(terminal(entry.name))}[/] (plugin {escape(terminal(entry.plugin))}): "
                f"{escape(terminal(entry.cls.summary()))}",
                highlight=False,
            )
            rows = entry.cls.parameters()
            if not rows:
                console.print("  no parameters", highlight=False)
                continue
            table = Table(show_edge=False, pad_edge=False)
            for column in ("parameter", "type", "default", "description"):
                table.add_column(column, overflow="fold")
            for row in rows:
                table.add_row(*(escape(terminal(cell)) for cell in row))
            console.print(table)


def _spec_plugin_files(spec: Path) -> list[Path]:
    """The plugin files a spec names (relative to its folder), read without validating the rest."""
    from advbench.errors import SpecError
    from advbench.spec.loading import read_spec_file

    try:
        data, _ = read_spec_file(spec)
    except SpecError as exc:
        raise UsageError(f"--spec {spec}: cannot read it: {exc}") from None
    entries = data.get("plugins") if isinstance(data, dict) else None
    if entries is None:
        return []
    if not isinstance(entries, list) or not all(isinstance(entry, str) for entry in entries):
        raise UsageError(f"--spec {spec}: plugins: expected a list of Python files")
    return [spec.parent / entry for entry in entries]


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
