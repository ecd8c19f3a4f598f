"""The leaderboard: one ranked table per threat model, plots, and the provenance.

Rendered from :mod:`advbench.results` only, so a table can never disagree with the
records it comes from.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from advbench.results import Bounds, Results, load_results
from advbench.statistics import rank_ranges

RANK_KEYS = ("certified", "empirical", "clean")
MODEL_WIDTH = 24
"""The terminal table's model column: longer names end in an ellipsis."""


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
        return _with_interval(value, b.interval(kind, eps) if intervals else None)

    rows = []
    radii = [[b.median_radius("certified"), b.median_radius("empirical"), b.median_gap()] for b in order]
    columns = [_radius_column([r[k] for r in radii]) for k in range(3)]
    for position, b in enumerate(order):
        rank_range = ranges[position] if position < len(ranges) else None  # the ranked models come first
        if rank_range is None:
            rank = "—"
        else:
            rank = str(rank_range[0]) if rank_range[0] == rank_range[1] else f"{rank_range[0]}–{rank_range[1]}"
        cells = [rank, b.model, b.defense, accuracy(b, "clean")]
        cells += [f"{accuracy(b, 'certified', e)} / {accuracy(b, 'empirical', e)}" for e in eps_list]
        cells += [column[position] for column in columns]
        flags = list(b.flags) + (["ERROR"] if b.errors else [])
        cells.append(", ".join(flags) or "")
        rows.append(Row(position + 1, b, cells, rank_range))
    notes = _table_notes(order, rank_by, decide, intervals, len(bounds[0].label) if bounds else 0)
    return Table(header, rows, notes)


def _with_interval(value: float | None, interval: tuple[float, float] | None) -> str:
    """An accuracy in % with the larger half-width of its interval (``38.3 ±5.5``)."""
    if value is None or interval is None:
        return _pct(value)
    lower, upper = interval
    return f"{_pct(value)} ±{100 * max(value - lower, upper - value):.1f}"


def _table_notes(order: list[Bounds], rank_by: str, decide, intervals: bool, examples: int) -> list[str]:
    where = f" at ε={format_eps(decide)}" if decide is not None else ""
    notes = [f"#: ranked by {rank_by} accuracy{where}; a range (1–3) where the 95% intervals of that accuracy overlap: "
             "those models are not told apart by these examples."]
    if decide is not None and order and decide != max(order[0].eps):
        notes.append(f"Every ranked model has the same {rank_by} accuracy above ε={format_eps(decide)}: ranked by the largest "
                     "ε where they differ.")
    if intervals:
        notes.append(f"±: the 95% Clopper-Pearson interval of each accuracy over the {examples} evaluated examples "
                     "(its larger side; the two ends are in `advbench export --format json`).")
    if any(unranked(b, rank_by) for b in order):
        notes.append(f"— as rank: not ranked, listed last: a failed job or unsound certificate (ERROR), or no {rank_by} "
                     f"accuracy (— in its cells: no {'certifier' if rank_by == 'certified' else 'attack'} applies), "
                     "which is unknown, not 0.")
    return notes


def print_tables(console, results: Results, rank_by: str = "certified") -> None:
    """The terminal's tables: rank, model, clean and cert / emp per eps, within the
    console's width (eps split over several tables when they do not fit), then the notes
    and each model's flags; defenses, intervals and radii are in leaderboard.md."""
    from rich.table import Table as RichTable

    for threat in results.spec["threat_models"]:
        bounds = results.for_norm(threat["norm"])
        if not bounds:
            continue
        shown = table(bounds, rank_by, intervals=False)
        eps_cells = [[row.cells[4 + k] for row in shown.rows] for k in range(len(bounds[0].eps))]
        # each column takes its text plus 3 (padding and border); the model column at most MODEL_WIDTH
        rank_width = max(len(r.cells[0]) for r in shown.rows)
        model_width = min(MODEL_WIDTH, max(5, *(len(r.cells[1]) for r in shown.rows)))
        fixed = 4 + (rank_width + 3) + (model_width + 3) + (len("clean") + 3)
        widths = [max(len(f"ε={format_eps(e)}"), *(len(c) for c in column)) + 3 for e, column in zip(bounds[0].eps, eps_cells)]
        groups, current, used = [], [], fixed
        for k, width in enumerate(widths):
            if current and used + width > console.width:
                groups.append(current)
                current, used = [], fixed
            current.append(k)
            used += width
        groups.append(current)
        for part, group in enumerate(groups):
            title = f"{results.spec['name']}: {threat['norm']}, cert / emp robust accuracy (%)"
            if len(groups) > 1:
                title += f" ({part + 1}/{len(groups)})"
            rich_table = RichTable(title=title, title_justify="left")
            for name in ("#", "model", "clean"):
                rich_table.add_column(name, justify="left" if name == "model" else "right", no_wrap=True,
                                      overflow="ellipsis", max_width=MODEL_WIDTH if name == "model" else None)
            for k in group:
                rich_table.add_column(f"ε={format_eps(bounds[0].eps[k])}", justify="right", no_wrap=True)
            for position, row in enumerate(shown.rows):
                rich_table.add_row(row.cells[0], row.cells[1], row.cells[3], *(eps_cells[k][position] for k in group),
                                   style="red" if row.bounds.errors else None)
            console.print(rich_table)
        for note in shown.notes:
            console.print(note, highlight=False, markup=False)
        for row in shown.rows:
            flags = row.cells[-1]
            if flags:
                console.print(f"{row.bounds.model}: {flags}", highlight=False, markup=False)
    console.print("", highlight=False)


def render_markdown(results: Results, rank_by: str = "certified", plots: dict[str, str] | None = None,
                    figures: dict[str, str] | None = None, diagnostics: dict[str, dict] | None = None) -> str:
    spec = results.spec
    dataset = spec["dataset"]
    evaluated = {len(b.label) for b in results.bounds}
    lines = [
        f"# advbench leaderboard: {spec['name']}",
        "",
        f"Dataset `{dataset['name']}`"
        + (f" (train {dataset.get('train_size') or 'all'}, test {dataset.get('test_size') or 'all'})")
        + f", {', '.join(map(str, sorted(evaluated))) or 0} evaluated test examples, seed {spec['seed']}.",
        "",
        "For every model and budget ε, two bounds on the true robust accuracy: **cert** is the certified robust "
        "accuracy (a lower bound: no perturbation within ε changes these predictions), **emp** the empirical robust "
        "accuracy (an upper bound: the attacks found no adversarial example within ε); **clean** the accuracy on the "
        "same evaluated examples. Every accuracy is in % with the half-width of its 95% interval. The radii are "
        "medians over all evaluated examples (a misclassified one counts 0): the certified radius is the largest any "
        "certifier proved, the empirical radius the smallest adversarial perturbation any attack found, and the gap "
        "their per-example difference: what is not known yet. "
        f"Ranked by {rank_by} robust accuracy at the largest ε (ties: the other bound, then the next smaller ε); "
        "the notes under each table say how.",
        "",
    ]
    for threat in spec["threat_models"]:
        norm = threat["norm"]
        bounds = results.for_norm(norm)
        lines += [f"## {norm} threat model: ε ∈ {{{', '.join(format_eps(e) for e in threat['eps'])}}}", ""]
        if not bounds:
            lines += ["No results yet.", ""]
            continue
        shown = table(bounds, rank_by)
        header = shown.header
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---:" if i == 0 or i >= 3 and i < len(header) - 1 else "---" for i in range(len(header))]) + "|")
        lines += ["| " + " | ".join(row.cells) + " |" for row in shown.rows]
        lines += [""] + shown.notes + [""]
        lines += _per_method(bounds, rank_by, threat["eps"])
        lines += _sources(bounds, rank_by)
        ceiling = results.robustness_limit(threat["eps"])
        if ceiling is not None:
            lines += [
                "Fawzi et al.'s limit for this generator: no classifier can have a robust accuracy above "
                + ", ".join(f"{_pct(float(c))}% at ε={format_eps(e)}" for e, c in zip(threat["eps"], ceiling)) + ".",
                "",
            ]
        if plots and norm in plots:
            lines += [f"![{norm}: robust accuracy against ε]({plots[norm]})", ""]
        if figures and norm in figures:
            lines += [f"![{norm}: smallest adversarial examples found]({figures[norm]})", ""]
        smoothed = [(b, label) for b in ranked(bounds, rank_by) for label in b.smoothed]
        if smoothed:
            lines += [
                "Randomized smoothing certifies the *smoothed* classifier g (a majority vote under Gaussian noise), "
                "not the model above, and holds with probability at least 1 − α; abstentions count as not certified.",
                "",
                "| model | certifier | smoothed clean | " + " | ".join(f"ε={format_eps(e)} cert" for e in threat["eps"]) + " |",
                "|---|---|---:|" + "---:|" * len(threat["eps"]),
            ]
            lines += [
                f"| {b.model} | {label} | "
                + " | ".join(_with_interval(b.smoothed_accuracy(label, e), b.smoothed_interval(label, e)) for e in [0, *threat["eps"]])
                + " |"
                for b, label in smoothed
            ]
            lines += ["", "±: the 95% Clopper-Pearson interval over the evaluated examples (its larger side), as above; it does "
                      "not include the smoothing certificate's own failure probability α.", ""]
        details = []
        for b in ranked(bounds, rank_by):
            details += [f"- **ERROR** `{b.model}`: {e}" for e in b.errors]
            details += [f"- `{b.model}`: {n}" for n in b.notes]
        if details:
            lines += details + [""]
    if diagnostics:
        lines += ["## Defense diagnostics", "",
                  "What each model's defense records about itself when it is evaluated (e.g. `prm`: the IoU between the top "
                  "pixels by mean absolute input gradient and the pixels it designates).", ""]
        for model, found in diagnostics.items():
            values = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in found["values"].items())
            lines.append(f"- `{model}`: {values}")
        lines.append("")
        images = [(model, name) for model, found in diagnostics.items() for name in found["figures"]]
        if images:
            lines += ["| " + " | ".join(model for model, _ in images) + " |", "|" + "---|" * len(images),
                      "| " + " | ".join(f"![{model}]({name})" for model, name in images) + " |", ""]
    if results.damaged:
        lines += ["## Damaged records", "", "These files of the run directory do not read back; their jobs are "
                  "missing above and are redone by the next `advbench run` of the spec.", ""]
        lines += [f"- `{name}`: {problem}" for name, problem in sorted(results.damaged.items())] + [""]
    lines += _provenance(results)
    return "\n".join(lines) + "\n"


def _per_method(bounds: list[Bounds], rank_by: str, eps_list: list[float]) -> list[str]:
    """Robust accuracy per attack (empirical) and per certifier (certified), at every eps."""
    attacks = sorted({label for b in bounds for label in b.empirical})
    certifiers = sorted({label for b in bounds for label in b.certified})
    if len(attacks) + len(certifiers) < 2:
        return []
    header = ["model"] + [f"{a} (emp)" for a in attacks] + [f"{c} (cert)" for c in certifiers]
    eps_text = " / ".join(format_eps(e) for e in eps_list)
    lines = [f"Per method, at ε = {eps_text} (%). The table above combines them per example: an example "
             "counts as broken if any attack broke it and as certified if any certifier certified it, so its "
             "empirical numbers can lie below every single attack's.", "",
             "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for b in ranked(bounds, rank_by):
        cells = [b.model]
        cells += [" / ".join(_pct(b.empirical_accuracy(e, a)) for e in eps_list) if a in b.empirical else "n/a" for a in attacks]
        cells += ["unsound" if c in b.unsound else " / ".join(_pct(b.certified_accuracy(e, c)) for e in eps_list) if c in b.certified
                  else "n/a" for c in certifiers]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _sources(bounds: list[Bounds], rank_by: str) -> list[str]:
    """Which attack gave the empirical radius, as shares of the correctly classified examples."""
    shares = {b.model: b.source_shares() for b in ranked(bounds, rank_by) if b.empirical and b.correct.any()}
    if not shares:
        return []
    lines = ["Which attack found each example's smallest adversarial example (the empirical radius), "
             "as a share of the correctly classified examples (`ensemble: fab`: the ensemble's FAB member; "
             "per example in `advbench export`, column `empirical_by`):", ""]
    for model, parts in shares.items():
        text = ", ".join(f"{name or 'none found'} {_pct(share)}%" for name, share in parts)
        lines.append(f"- `{model}`: {text}")
    return lines + [""]


def _provenance(results: Results) -> list[str]:
    spec = results.spec
    records = [r for r in results.records.values() if r.get("status") == "ok"]
    spec_hashes = sorted({r["spec_hash"][:12] for r in records})
    versions = records[-1]["versions"] if records else {}
    lines = ["## Provenance", ""]
    lines.append(f"- spec `{spec['name']}`, hash `{spec_hashes[-1] if spec_hashes else '?'}`, seed {spec['seed']}")
    lines.append(f"- evaluation: `{_inline(spec['evaluation'])}`")
    for model in spec["models"]:
        train = results.training.get(model["name"], {})
        described = _inline({k: v for k, v in model.items() if k != "name"})
        accuracy = (f", accuracy on all {train.get('test_size', results.plan.get('data', {}).get('test', '?'))} test images "
                    f"{_pct(train['test_accuracy'])}% (the tables' clean: on the evaluated examples)") if "test_accuracy" in train else ""
        lines.append(f"- model `{model['name']}`: `{described}`{accuracy}")
    for kind in ("attacks", "certifiers"):
        for method in spec[kind]:
            lines.append(f"- {kind[:-1]} `{method.get('label', method['name'])}`: `{_inline(method)}`")
    attack_records = [r for r in records if r.get("kind") == "attack"]
    if attack_records:
        calls = sum(r["evaluations"]["gradient"] for r in attack_records)
        lines.append(
            f"- fixed-budget attacks: radius by per-example bisection over ε to relative tolerance "
            f"{spec['evaluation']['radius_tolerance']}; {calls:,} gradient evaluations in all"
        )
    plugins = results.plan.get("plugins", {})
    if plugins:
        by_code: dict[str, list[str]] = {}
        for name, fingerprint in plugins.items():
            by_code.setdefault(fingerprint, []).append(name.split(" (")[0])
        lines.append("- code: " + "; ".join(f"`{code}` ({', '.join(names)})" for code, names in by_code.items()))
    data = results.plan.get("data", {})
    if data:
        lines.append(f"- data: {data['train']} training and {data['test']} test images, {data['evaluated']} evaluated; "
                     f"content fingerprint `{data['fingerprint']}`")
    environments = sorted({(e["backend"], e["device"], e["precision"]) for e in (r.get("environment") for r in records) if e})
    if environments:
        lines.append("- computed with " + "; ".join(f"Keras on {b} ({d}, {p})" for b, d, p in environments))
    if versions:
        lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    lines.append(f"- generated {dt.date.today().isoformat()} by `advbench leaderboard`")
    return lines


def plot(results: Results, norm: str, path: Path, rank_by: str = "certified") -> None:
    """Robust accuracy against eps, one panel per model in ranked order (small multiples,
    legible with many models): its certified (solid, lower) and empirical (dashed, upper)
    curve with the band between them shaded, 95% intervals as error bars at the spec's
    budgets, the other models' curves in grey for comparison, and its flags in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table(results.for_norm(norm), rank_by).rows
    bounds = [row.bounds for row in rows]
    shown = {row.bounds.model: row.cells[0] for row in rows}
    top = max(max(b.eps) for b in bounds) * 1.25
    grid = np.linspace(0, top, 200)
    columns = min(3, len(bounds))
    grid_rows = math.ceil(len(bounds) / columns)
    figure, axes = plt.subplots(grid_rows, columns, figsize=(3.4 * columns, 2.6 * grid_rows + 0.6), dpi=120, squeeze=False,
                                sharex=True, sharey=True)
    curves = {b.model: (np.array([b.certified_accuracy(e) for e in grid]) if b.sound_certified else None,
                        np.array([b.empirical_accuracy(e) for e in grid]) if b.empirical else None) for b in bounds}
    ceiling = results.robustness_limit(grid)
    for i, b in enumerate(bounds):
        axis = axes[i // columns][i % columns]
        for other, (lower, upper) in curves.items():
            if other != b.model:
                for curve in (lower, upper):
                    if curve is not None:
                        axis.plot(grid, curve * 100, color="0.8", linewidth=0.8, zorder=1)
        lower, upper = curves[b.model]
        color = "C3" if b.errors else "C0"
        if upper is not None:
            axis.plot(grid, upper * 100, color=color, linestyle="--", zorder=3, label="empirical (upper bound)")
        if lower is not None:
            axis.plot(grid, lower * 100, color=color, zorder=3, label="certified (lower bound)")
        if upper is not None and lower is not None:
            axis.fill_between(grid, lower * 100, upper * 100, color=color, alpha=0.15, zorder=2)
        for kind in ("certified", "empirical"):
            for e in b.eps:
                value, ends = b.accuracy(kind, e), b.interval(kind, e)
                if value is not None:
                    axis.errorbar([e], [value * 100], yerr=[[100 * (value - ends[0])], [100 * (ends[1] - value)]],
                                  color=color, capsize=2, linewidth=0.8, zorder=4)
        if ceiling is not None:
            axis.plot(grid, ceiling * 100, color="black", linestyle=":", linewidth=1.2, label="Fawzi et al. limit")
        flags = list(b.flags) + (["ERROR"] if b.errors else [])
        title = f"#{shown.get(b.model, '—')} {b.model}" + (f"\n{', '.join(flags)}" if flags else "")
        axis.set_title(title if len(title) < 90 else title[:87] + "...", fontsize=8, color="C3" if flags else "black")
        axis.set_ylim(0, 100)
        axis.set_xlim(0, top)
        if i % columns == 0:
            axis.set_ylabel("robust accuracy (%)", fontsize=8)
        if i // columns == grid_rows - 1 or i + columns >= len(bounds):
            axis.set_xlabel(f"ε ({norm})", fontsize=8)
        axis.tick_params(labelsize=7)
    for j in range(len(bounds), grid_rows * columns):
        axes[j // columns][j % columns].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
    figure.suptitle(f"{results.spec['name']}, {norm}: certified ≤ true robust accuracy ≤ empirical; bars: 95% intervals; "
                    "grey: the other models", fontsize=8)
    figure.tight_layout(rect=(0, 0.05, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def smallest_adversarials(results: Results, store, norm: str) -> dict[str, dict]:
    """Per model, for the examples whose adversarial examples were kept: the smallest one
    any attack found (by ``norm``) and its size; from the jobs' saved arrays."""
    from advbench.lp import numpy_norm

    found = {}
    for b in results.for_norm(norm):
        best = None
        for label, record in b.attack_records.items():
            arrays = store.job_arrays(record["id"])
            if not arrays:
                continue
            size = numpy_norm(arrays["adversarial"] - arrays["original"], norm)
            radius = np.asarray(record["radius"])[: len(size)]
            size = np.where(np.isfinite(radius) & (radius > 0), size, np.inf)
            predicted = arrays["predicted"] if "predicted" in arrays else np.full(len(size), -1)  # runs before it was kept
            if best is None:
                best = {"index": arrays["index"], "original": arrays["original"], "adversarial": arrays["adversarial"].copy(), "size": size,
                        "label": arrays["label"] if "label" in arrays else np.full(len(size), -1), "predicted": predicted.copy()}
            else:
                better = size < best["size"]
                best["adversarial"][better], best["size"][better] = arrays["adversarial"][better], size[better]
                best["predicted"][better] = predicted[better]
        if best is not None:
            found[b.model] = best
    return found


def examples_figure(results: Results, store, norm: str, path: Path, count: int = 6) -> bool:
    """For a few test images, the original and the smallest adversarial example found
    against each model, with its norm (as in the Cross-Lipschitz paper's figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = smallest_adversarials(results, store, norm)
    if not found:
        return False
    models = [b.model for b in ranked(results.for_norm(norm)) if b.model in found]
    first = found[models[0]]
    count = min(count, len(first["index"]))
    figure, axes = plt.subplots(len(models) + 1, count, figsize=(1.3 * count, 1.45 * (len(models) + 1)), dpi=110, squeeze=False)

    records = [results.records.get(f"{model}/clean") or {} for model in models]
    names = next((r["class_names"] for r in records if r.get("class_names")), None)

    def name(index) -> str:
        index = int(index)
        if index < 0:
            return "?"
        return names[index][:14] if names and index < len(names) else str(index)

    def show(axis, image, title, row_label=None):
        image = np.clip(image, 0, 1)
        axis.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None, vmin=0, vmax=1)
        axis.set_title(title, fontsize=6)
        axis.set_xticks([])
        axis.set_yticks([])
        if row_label:
            axis.set_ylabel(row_label, fontsize=6)

    for column in range(count):
        show(axes[0, column], first["original"][column], f"test #{int(first['index'][column])}\ntrue: {name(first['label'][column])}",
             "clean" if column == 0 else None)
        for row, model in enumerate(models, start=1):
            entry = found[model]
            size = entry["size"][column]
            title = f"→ {name(entry['predicted'][column])}, ‖δ‖={size:.3g}" if np.isfinite(size) else "none found"
            show(axes[row, column], entry["adversarial"][column] if np.isfinite(size) else entry["original"][column], title,
                 model[:18] if column == 0 else None)
    figure.suptitle(f"{results.spec['name']}: smallest {norm} adversarial example found per model (row); "
                    f"→ the class the model predicts for it, ‖δ‖ its {norm} norm", fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return True


def write_leaderboard(run_dir: str | Path, output: str | Path | None = None, rank_by: str = "certified") -> tuple[Path, Results]:
    """Write the markdown leaderboard (default ``<run_dir>/leaderboard.md``) with its
    plots and adversarial-example figures beside it."""
    from advbench.store import RunStore

    results = load_results(run_dir)
    store = RunStore.open(run_dir)
    output = Path(output) if output else Path(run_dir) / "leaderboard.md"
    plots, figures = {}, {}
    for threat in results.spec["threat_models"]:
        norm = threat["norm"]
        if results.for_norm(norm):
            name = f"{output.stem}-{norm}.png"
            plot(results, norm, output.parent / name, rank_by)
            plots[norm] = name
            figure_name = f"{output.stem}-{norm}-examples.png"
            if examples_figure(results, store, norm, output.parent / figure_name):
                figures[norm] = figure_name
    results.damaged.update(store.damaged)  # array files found damaged while drawing
    output.parent.mkdir(parents=True, exist_ok=True)
    diagnostics = _copy_diagnostics(results, Path(run_dir), output)
    output.write_text(render_markdown(results, rank_by, plots, figures, diagnostics))
    return output, results


def _copy_diagnostics(results: Results, run_dir: Path, output: Path) -> dict[str, dict]:
    """Per model, what its defense recorded in ``diagnostics`` (e.g. PRM's gradient IoU),
    with its figures copied beside the leaderboard (``<stem>-<figure>``)."""
    import shutil

    found = {}
    for model in results.spec["models"]:
        record = results.records.get(f"{model['name']}/clean") or {}
        diagnostics = record.get("diagnostics") or {}
        if not isinstance(diagnostics, dict) or not diagnostics:
            continue
        figures = []
        for name in diagnostics.get("figures", []):
            source = run_dir / "diagnostics" / name
            if source.is_file():
                target = output.parent / f"{output.stem}-{name}"
                if source.resolve() != target.resolve():
                    shutil.copyfile(source, target)
                figures.append(target.name)
        found[model["name"]] = {"values": {k: v for k, v in diagnostics.items() if k != "figures"}, "figures": figures}
    return found


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _radius_column(values: list[float | None]) -> list[str]:
    """Radii of one column in one format: fixed decimals, enough for three significant digits
    of the column's typical (median nonzero) value (so 0.993, 1.000 and 0.000, never 1.94e-07)."""
    finite = [abs(v) for v in values if v is not None and math.isfinite(v) and v != 0]
    decimals = min(6, max(0, 2 - math.floor(math.log10(float(np.median(finite)))))) if finite else 0
    return ["—" if v is None else "∞" if math.isinf(v) else f"{v:.{decimals}f}" for v in values]


def format_eps(eps: float) -> str:
    """A budget as people write it: a short decimal (0.1, 0.25, 1.5), else k/255 when it is
    exactly that fraction (8/255, as image budgets are given), else four significant digits."""
    short = f"{eps:.3g}"
    if float(short) == eps:
        return short
    k = round(eps * 255)
    if k and k / 255 == eps:
        return f"{k}/255"
    return f"{eps:.4g}"


def _inline(data: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in data.items())
