"""Every output format in one table: its name (what ``--format`` takes), the command that
offers it, and one function of one signature that renders runs into it.

A renderer is ``render(run_dirs, output, options) -> Rendered``: a *document* format
(``csv``, ``json``) returns its text, which the CLI writes to ``-o FILE`` or standard
output; a *page* format (``markdown``, ``html``) writes its files at ``output`` itself.
Functions are named as ``"module:function"`` and imported only when used, so listing
the formats (``--help``) imports nothing heavy.  A plugin adds a format with
:func:`register_renderer`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal


@dataclass(frozen=True)
class RenderOptions:
    rank_by: str = "certified"
    figure_format: str = "png"


@dataclass
class Rendered:
    """What a renderer made: ``text`` (a document format) or ``path`` (a page format), what
    to call it in the CLI's message, and the results it read (for warnings and tables)."""

    results: list = field(default_factory=list)
    text: str | None = None
    path: Path | None = None
    what: str = ""


@dataclass(frozen=True)
class Renderer:
    name: str
    command: Literal["export", "leaderboard"]
    help: str
    render: str | Callable  # "module:function" or the function
    several_runs: bool = False  # renders several run directories at once
    document: bool = False  # returns its text (to a file or standard output) instead of writing files

    def __call__(self, run_dirs: list[Path], output: Path | None, options: RenderOptions) -> Rendered:
        function = self.render
        if isinstance(function, str):
            module, _, name = function.partition(":")
            function = getattr(importlib.import_module(module), name)
        return function(run_dirs, output, options)


RENDERERS: dict[str, Renderer] = {}


def register_renderer(renderer: Renderer) -> None:
    """Add an output format; a name that is taken is refused."""
    if renderer.name in RENDERERS:
        raise ValueError(f"an output format named {renderer.name!r} exists already")
    RENDERERS[renderer.name] = renderer


def formats(command: str) -> list[str]:
    """The formats a command offers, in the order they were registered."""
    return [name for name, renderer in RENDERERS.items() if renderer.command == command]


# -- the built-in formats -----------------------------------------------------------


def _csv(run_dirs, output, options) -> Rendered:
    import io

    from advbench.results.csv import export_csv

    stream = io.StringIO()
    rows, results = export_csv(run_dirs[0], stream)
    return Rendered([results], text=stream.getvalue(), what=f"{rows} rows")


def _json(run_dirs, output, options) -> Rendered:
    import json

    from advbench.results.data import load_results
    from advbench.results.json import leaderboard_document

    results = load_results(run_dirs[0])
    text = json.dumps(leaderboard_document(results, options.rank_by), indent=1, ensure_ascii=False) + "\n"
    return Rendered([results], text=text, what="the leaderboard")


def _markdown(run_dirs, output, options) -> Rendered:
    from advbench.results.markdown import write_leaderboard

    path, results = write_leaderboard(run_dirs[0], output, options.rank_by, options.figure_format)
    return Rendered([results], path=path, what="Leaderboard")


def _html(run_dirs, output, options) -> Rendered:
    from advbench.results.website import write_site

    index = write_site(run_dirs, output, options.rank_by, options.figure_format)
    return Rendered([], path=index, what="Site")


for _renderer in (
    Renderer("csv", "export", "one row per (model, norm, test example) with every radius", _csv, document=True),
    Renderer(
        "json", "export", "the leaderboard, every number with its interval (advbench schema --leaderboard)", _json, document=True
    ),
    Renderer("markdown", "leaderboard", "a page beside the run, with its figures", _markdown),
    Renderer("html", "leaderboard", "a static site of one or several runs, a page per model", _html, several_runs=True),
):
    register_renderer(_renderer)
