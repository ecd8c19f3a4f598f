"""The leaderboard's figures: robust accuracy against eps (small multiples), and the
smallest adversarial examples found."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from advbench.results.data import Results
from advbench.results.table import ranked, shown_flags, table
from advbench.runs.jobs import job_id

FONT = 8  # points: the smallest text of any figure (legible at a paper's single-column width)
COLUMN_WIDTH = 3.4  # inches: one column of a two-column paper
FIGURE_FORMATS = ("png", "pdf", "svg")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curves(b, grid):
    """A model's certified and empirical robust accuracy (%) over ``grid``; None: no such bound."""
    lower = np.array([b.certified_accuracy(e) for e in grid]) * 100 if b.sound_certified else None
    upper = np.array([b.empirical_accuracy(e) for e in grid]) * 100 if b.empirical else None
    return lower, upper


def _error_bars(axis, b, color, shift: float = 0.0) -> None:
    """95% intervals as error bars at the spec's budgets (moved right by ``shift`` so that
    several models' bars on one axis stay apart)."""
    for kind in ("certified", "empirical"):
        for e in b.eps:
            value, ends = b.accuracy(kind, e), b.interval(kind, e)
            if value is not None:
                axis.errorbar(
                    [e + shift],
                    [value * 100],
                    yerr=[[100 * (value - ends[0])], [100 * (ends[1] - value)]],
                    color=color,
                    capsize=2,
                    linewidth=0.8,
                    zorder=4,
                )


def overlay(results: Results, norm: str, path: Path, rank_by: str = "certified") -> None:
    """Every model on one axis at a single column's width, for a paper: a colour and a
    legend entry per model (in ranked order), its certified curve solid and its empirical
    curve dashed, 95% intervals as error bars at the spec's budgets."""
    plt = _pyplot()
    rows = table(results.for_norm(norm), rank_by).rows
    bounds = [row.bounds for row in rows]
    top = max(max(b.eps) for b in bounds) * 1.25
    grid = np.linspace(0, top, 200)
    figure, axis = plt.subplots(figsize=(COLUMN_WIDTH, 2.6 + 0.16 * len(bounds)), dpi=150)
    colours = plt.get_cmap("tab10" if len(bounds) <= 10 else "tab20")
    for i, (row, b) in enumerate(zip(rows, bounds)):
        colour = colours(i % colours.N)
        lower, upper = _curves(b, grid)
        label = b.model if row.rank_range is None else f"{row.cells[0]}. {b.model}"
        if lower is not None:
            axis.plot(grid, lower, color=colour, linewidth=1.2, label=label)
        if upper is not None:
            axis.plot(grid, upper, color=colour, linewidth=1.2, linestyle="--", label=None if lower is not None else label)
        _error_bars(axis, b, colour, shift=top * 0.012 * (i - (len(bounds) - 1) / 2))
    ceiling = results.robustness_limit(grid)
    if ceiling is not None:
        axis.plot(grid, ceiling * 100, color="black", linestyle=":", linewidth=1.2, label="Fawzi et al. limit")
    axis.set_xlim(0, top)
    axis.set_ylim(0, 100)
    axis.set_xlabel(f"ε ({norm})", fontsize=FONT)
    axis.set_ylabel("robust accuracy (%)", fontsize=FONT)
    axis.tick_params(labelsize=FONT)
    axis.set_title("solid: certified, dashed: empirical", fontsize=FONT)
    axis.legend(fontsize=FONT, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    figure.tight_layout()
    save_figure(figure, path)


def plot(results: Results, norm: str, path: Path, rank_by: str = "certified") -> None:
    """Robust accuracy against eps, one panel per model in ranked order (small multiples,
    legible with many models): its certified (solid, lower) and empirical (dashed, upper)
    curve with the band between them shaded, 95% intervals as error bars at the spec's
    budgets, the model's rank and name and its flags in the title.  The models side by side
    are :func:`overlay`'s figure."""
    plt = _pyplot()
    rows = table(results.for_norm(norm), rank_by).rows
    bounds = [row.bounds for row in rows]
    shown = {row.bounds.model: row.cells[0] for row in rows}
    top = max(max(b.eps) for b in bounds) * 1.25
    grid = np.linspace(0, top, 200)
    columns = min(3, len(bounds))
    grid_rows = math.ceil(len(bounds) / columns)
    figure, axes = plt.subplots(
        grid_rows, columns, figsize=(3.4 * columns, 2.7 * grid_rows + 0.7), dpi=120, squeeze=False, sharex=True, sharey=True
    )
    ceiling = results.robustness_limit(grid)
    for i, b in enumerate(bounds):
        axis = axes[i // columns][i % columns]
        lower, upper = _curves(b, grid)
        color = "C3" if b.errors else "C0"
        if upper is not None:
            axis.plot(grid, upper, color=color, linestyle="--", zorder=3, label="empirical (upper bound)")
        if lower is not None:
            axis.plot(grid, lower, color=color, zorder=3, label="certified (lower bound)")
        if upper is not None and lower is not None:
            axis.fill_between(grid, lower, upper, color=color, alpha=0.15, zorder=2)
        _error_bars(axis, b, color)
        if ceiling is not None:
            axis.plot(grid, ceiling * 100, color="black", linestyle=":", linewidth=1.2, label="Fawzi et al. limit")
        flags = shown_flags(b.flags, b.errors)
        flag_text = ", ".join(flags)
        title = f"#{shown.get(b.model, '—')} {b.model}" + (
            f"\n{flag_text[:57] + '...' if len(flag_text) > 60 else flag_text}" if flags else ""
        )
        axis.set_title(title, fontsize=FONT, color="C3" if flags else "black")
        axis.set_ylim(0, 100)
        axis.set_xlim(0, top)
        if i % columns == 0:
            axis.set_ylabel("robust accuracy (%)", fontsize=FONT)
        if i // columns == grid_rows - 1 or i + columns >= len(bounds):
            axis.set_xlabel(f"ε ({norm})", fontsize=FONT)
        axis.tick_params(labelsize=FONT)
    for j in range(len(bounds), grid_rows * columns):
        axes[j // columns][j % columns].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=3, fontsize=FONT, frameon=False)
    separator = " " if columns > 1 else "\n"
    figure.suptitle(
        f"{results.spec['name']}, {norm}: certified ≤ true robust accuracy ≤ empirical;{separator}bars: 95% intervals",
        fontsize=FONT,
    )
    figure.tight_layout(rect=(0, 0.06, 1, 0.97))
    save_figure(figure, path)


def smallest_adversarials(results: Results, store, norm: str) -> dict[str, dict]:
    """Per model, for the examples whose adversarial examples were kept: the smallest one
    any attack found (by ``norm``) and its size; from the jobs' saved arrays."""
    from advbench.kit.lp import numpy_norm

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
                best = {
                    "misclassified": radius == 0,  # wrong on the clean image: nothing to attack
                    "index": arrays["index"],
                    "original": arrays["original"],
                    "adversarial": arrays["adversarial"].copy(),
                    "size": size,
                    "label": arrays["label"] if "label" in arrays else np.full(len(size), -1),
                    "predicted": predicted.copy(),
                }
            else:
                better = size < best["size"]
                best["adversarial"][better], best["size"][better] = arrays["adversarial"][better], size[better]
                best["predicted"][better] = predicted[better]
        if best is not None:
            found[b.model] = best
    return found


def examples_figure(results: Results, store, norm: str, path: Path, count: int = 6) -> bool:
    """For a few test images, the original and the smallest adversarial example found
    against each model, with its norm (as in the Cross-Lipschitz paper's figure); each
    caption under its own image, a model's row named on its left."""
    plt = _pyplot()
    found = smallest_adversarials(results, store, norm)
    if not found:
        return False
    models = [b.model for b in ranked(results.for_norm(norm)) if b.model in found]
    first = found[models[0]]
    count = min(count, len(first["index"]))
    figure, axes = plt.subplots(
        len(models) + 1, count, figsize=(1.45 * count + 0.4, 1.75 * (len(models) + 1) + 0.4), dpi=110, squeeze=False
    )

    records = [results.records.get(job_id(model, "clean")) or {} for model in models]
    names = next((r["class_names"] for r in records if r.get("class_names")), None)

    def name(index) -> str:
        index = int(index)
        if index < 0:
            return "?"
        return names[index][:12] if names and index < len(names) else str(index)

    def show(axis, image, caption, row_label=None, colour="black"):
        image = np.clip(image, 0, 1)
        axis.imshow(
            image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None, vmin=0, vmax=1
        )
        axis.set_xlabel(caption, fontsize=FONT, color=colour, labelpad=2)  # under its own image
        axis.set_xticks([])
        axis.set_yticks([])
        if row_label:
            axis.set_ylabel(row_label, fontsize=FONT)

    for column in range(count):
        show(
            axes[0, column],
            first["original"][column],
            f"#{int(first['index'][column])}, true {name(first['label'][column])}",
            "clean" if column == 0 else None,
        )
        for row, model in enumerate(models, start=1):
            entry = found[model]
            size = entry["size"][column]
            if np.isfinite(size):
                caption, colour = f"→ {name(entry['predicted'][column])}, ‖δ‖={size:.3g}", "black"
            elif entry["misclassified"][column]:
                caption, colour = "misclassified clean", "C3"
            else:
                caption, colour = "none found", "0.4"
            show(
                axes[row, column],
                entry["adversarial"][column] if np.isfinite(size) else entry["original"][column],
                caption,
                model[:16] if column == 0 else None,
                colour,
            )
    figure.suptitle(
        f"{results.spec['name']}: smallest {norm} adversarial example per model (row)\n"
        f"→ the class predicted for it, ‖δ‖ its {norm} norm",
        fontsize=FONT,
    )
    figure.tight_layout()
    save_figure(figure, path)
    return True


def save_figure(figure, path: Path) -> None:
    """Save a matplotlib figure to ``path`` atomically (a link there is replaced, not written
    through), in the format its suffix names, and close it."""
    import io

    import matplotlib.pyplot as plt

    from advbench.runs.store import write_atomic

    buffer = io.BytesIO()
    figure.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(figure)
    write_atomic(Path(path), buffer.getvalue())
