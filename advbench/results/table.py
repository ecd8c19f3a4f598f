"""A threat model's ranked table, shared by every renderer (markdown, terminal, JSON,
plots): the ranking, rank ranges from the 95% intervals, the cells and the notes that
say how to read them."""

from __future__ import annotations

from dataclasses import dataclass

from advbench.results.data import Bounds
from advbench.results.formats import format_eps, percent, radius_column  # noqa: F401 (the formatters every format shares)
from advbench.results.statistics import rank_ranges

RANK_KEYS = ("certified", "empirical", "clean")


@dataclass
class Row:
    rank: int  # position in the table
    bounds: Bounds
    cells: list[str]
    rank_range: tuple[int, int] | None = None  # best and worst rank the 95% intervals allow; None: not ranked


def unranked(b: Bounds, rank_by: str) -> bool:
    """Whether ``b`` is left out of the ranking: it has an error (a failed job, an unsound
    certificate), or it lacks the ranking accuracy (``—``: no certifier applies to it),
    which is unknown, not worse than 0."""
    top = max(b.eps) if b.eps else None
    return bool(b.errors) or b.accuracy(rank_by, top) is None


def ranked(bounds: list[Bounds], rank_by: str = "certified") -> list[Bounds]:
    """Sort by the chosen accuracy at the largest eps; ties (every model at 0 there, say) by
    the same accuracy at the next smaller eps, and so on, so that the ranking is decided at
    the largest eps where the models differ; then by the other bound in the same way, then
    clean accuracy (``rank_by="clean"``: clean accuracy first, then certified, then
    empirical).  The models :func:`unranked` leaves out come last, in the same order among
    themselves (a missing number last)."""
    if rank_by not in RANK_KEYS:
        raise ValueError(f"rank_by must be one of {', '.join(RANK_KEYS)}")
    kinds = ("empirical", "certified") if rank_by == "empirical" else ("certified", "empirical")

    def key(b: Bounds):
        values = [b.clean_accuracy()] if rank_by == "clean" else []
        for kind in kinds:
            values += [b.accuracy(kind, eps) for eps in sorted(b.eps, reverse=True)]
        values.append(b.clean_accuracy())
        return (unranked(b, rank_by), bool(b.errors)) + tuple(-(v if v is not None else -1.0) for v in values)

    return sorted(bounds, key=key)


def deciding_eps(bounds: list[Bounds], rank_by: str) -> float | None:
    """The budget the ranking is decided at: the largest eps where the ranked models' ranking
    accuracies differ (the largest eps when they never do); ``None`` when ranking by clean."""
    if rank_by == "clean" or not bounds:
        return None
    ranked_models = [b for b in bounds if not unranked(b, rank_by)]
    for eps in sorted(bounds[0].eps, reverse=True):
        if len({b.accuracy(rank_by, eps) for b in ranked_models}) > 1:
            return eps
    return max(bounds[0].eps)


@dataclass
class Table:
    header: list[str]
    rows: list[Row]
    notes: list[str]  # what the table's ranks, intervals and dashes mean


def table(bounds: list[Bounds], rank_by: str = "certified", intervals: bool = True) -> Table:
    """One threat model's table (shared by markdown and the terminal): ranks as rank ranges
    (models whose 95% intervals overlap share one), accuracies in % with the half-width of
    their interval when ``intervals``, radii with one number format per column."""
    eps_list = bounds[0].eps if bounds else []
    header = ["#", "model", "defense", "clean"]
    header += [f"ε={format_eps(e)} cert / emp" for e in eps_list]
    header += ["median r cert", "median r emp", "median gap", "flags"]
    order = ranked(bounds, rank_by)
    decide = deciding_eps(bounds, rank_by)
    ranked_models = [b for b in order if not unranked(b, rank_by)]
    ends = [b.interval(rank_by, decide) for b in ranked_models]
    ranges = rank_ranges([lo for lo, _ in ends], [hi for _, hi in ends]) if ends else []

    def accuracy(b: Bounds, kind: str, eps=None) -> str:
        value = b.accuracy(kind, eps)
        return with_interval(value, b.interval(kind, eps) if intervals else None)

    rows = []
    radii = [[b.median_radius("certified"), b.median_radius("empirical"), b.median_gap()] for b in order]
    columns = [radius_column([r[k] for r in radii]) for k in range(3)]
    for position, b in enumerate(order):
        rank_range = ranges[position] if position < len(ranges) else None  # the ranked models come first
        cells = [rank_text(rank_range), b.model, b.defense, accuracy(b, "clean")]
        cells += [f"{accuracy(b, 'certified', e)} / {accuracy(b, 'empirical', e)}" for e in eps_list]
        cells += [column[position] for column in columns]
        cells.append(", ".join(shown_flags(b.flags, b.errors)))
        rows.append(Row(position + 1, b, cells, rank_range))
    shared = any(lo != hi for lo, hi in ranges)
    notes = _table_notes(order, rank_by, decide, intervals, len(bounds[0].label) if bounds else 0, shared)
    return Table(header, rows, notes)


def rank_text(rank_range) -> str:
    """A rank range as every renderer shows it: ``3``, ``1–3``, or ``—`` for a model not ranked."""
    if rank_range is None:
        return "—"
    best, worst = rank_range
    return str(best) if best == worst else f"{best}–{worst}"


def shown_flags(flags, errors) -> list[str]:
    """A model's flags as every renderer shows them: its own, then ``ERROR`` if it has errors."""
    return list(flags) + (["ERROR"] if errors else [])


def with_interval(value: float | None, interval: tuple[float, float] | None) -> str:
    """An accuracy in % with the larger half-width of its interval (``38.3 ±5.5``)."""
    if value is None or interval is None:
        return percent(value)
    lower, upper = interval
    return f"{percent(value)} ±{100 * max(value - lower, upper - value):.1f}"


def _table_notes(order: list[Bounds], rank_by: str, decide, intervals: bool, examples: int, shared: bool) -> list[str]:
    """What the table needs said, and only that: each note where it applies."""
    where = f" at ε={format_eps(decide)}" if decide is not None else ""
    notes = []
    if any(not unranked(b, rank_by) for b in order):
        ranking = f"#: ranked by {rank_by} accuracy{where}"
        if shared:
            ranking += (
                "; a range (1–3) where the 95% intervals of that accuracy overlap: those models are not told apart "
                "by these examples"
            )
        notes.append(ranking + ".")
    if decide is not None and order and decide != max(order[0].eps):
        notes.append(
            f"Every ranked model has the same {rank_by} accuracy above ε={format_eps(decide)}: ranked by the largest "
            "ε where they differ."
        )
    if intervals:
        notes.append(
            f"±: the 95% Clopper-Pearson interval of each accuracy over the {examples} evaluated examples "
            "(its larger side; the two ends are in `advbench export --format json`)."
        )
    failed = [b.model for b in order if b.errors]
    if failed:
        notes.append(
            f"— as rank: {_names(failed)} not ranked, listed last: a failed job or an unsound certificate (ERROR; "
            "the errors say which)."
        )
    kind = {"certified": "certify", "empirical": "attack"}.get(rank_by)
    waiting = [b for b in order if b.pending]
    if waiting:
        jobs = sum(len(b.pending) for b in waiting)
        notes.append(
            f"Unfinished: {jobs} attack and certifier {'job has' if jobs == 1 else 'jobs have'} no result yet "
            f"({_listed([b.model for b in waiting])}); the numbers are those of the jobs that finished: rerun "
            "the spec to finish them."
        )
    missing = [b.model for b in order if not b.errors and unranked(b, rank_by) and not any(k == kind for k, _ in b.pending)]
    if missing:
        applies = "certifier" if rank_by == "certified" else "attack"
        suggestion = " `--rank-by empirical` ranks every model by its attacks' upper bound." if rank_by != "empirical" else ""
        notes.append(
            f"— as rank: {_names(missing)} not ranked, listed last: no {rank_by} accuracy (— in its cells: no "
            f"{applies} applies to it), which is unknown, not 0.{suggestion}"
        )
    return notes


def _listed(models: list[str]) -> str:
    return ", ".join(models[:5]) + (f" and {len(models) - 5} more" if len(models) > 5 else "")


def _names(models: list[str]) -> str:
    return _listed(models) + (" is" if len(models) == 1 else " are")


COMPLETE_LEGEND = (
    "Complete verification: 'exact' counts the correctly classified examples whose robust radius is known, the "
    "certified radius within the verifier's bisection tolerance of a verified adversarial example (an attack's or the "
    "verifier's own counterexample); 'unknown' at ε those neither certified nor broken there; 'undecided' those "
    "where some step of the verifier's radius search ended undecided (its subdomain or time budget ran out, or a "
    "subdomain with every ReLU split stayed unproven without a counterexample), so their radius may be larger; "
    "'capped' those verified at the verifier's max_radius, where its search stops (their radius is at least that)."
)
"""The legend of the complete-verification table (markdown and site)."""


def exact_text(summary: dict) -> str:
    """A complete verifier's exact count of the correctly classified, with those capped."""
    capped = summary.get("capped", 0)
    share = f"{percent(summary['exact'] / max(1, summary['correct']))}%"
    return f"{summary['exact']} of {summary['correct']} ({share}" + (f"; {capped} capped)" if capped else ")")


def undecided_text(summary: dict) -> str:
    """A complete verifier's undecided count, with how many of them timed out."""
    timed_out = summary.get("timed_out", 0)
    return f"{summary['undecided']}" + (f" ({timed_out} timed out)" if timed_out else "")
