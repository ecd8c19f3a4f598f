"""The leaderboard's figures: robust accuracy against eps (small multiples), and the
smallest adversarial examples found."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from advbench.results.data import Results
from advbench.results.table import ranked, table
from advbench.runs.jobs import job_id


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
    figure, axes = plt.subplots(
        grid_rows, columns, figsize=(3.4 * columns, 2.6 * grid_rows + 0.6), dpi=120, squeeze=False, sharex=True, sharey=True
    )
    curves = {
        b.model: (
            np.array([b.certified_accuracy(e) for e in grid]) if b.sound_certified else None,
            np.array([b.empirical_accuracy(e) for e in grid]) if b.empirical else None,
        )
        for b in bounds
    }
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
                    axis.errorbar(
                        [e],
                        [value * 100],
                        yerr=[[100 * (value - ends[0])], [100 * (ends[1] - value)]],
                        color=color,
                        capsize=2,
                        linewidth=0.8,
                        zorder=4,
                    )
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
    figure.suptitle(
        f"{results.spec['name']}, {norm}: certified ≤ true robust accuracy ≤ empirical; bars: 95% intervals; "
        "grey: the other models",
        fontsize=8,
    )
    figure.tight_layout(rect=(0, 0.05, 1, 0.97))
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

    records = [results.records.get(job_id(model, "clean")) or {} for model in models]
    names = next((r["class_names"] for r in records if r.get("class_names")), None)

    def name(index) -> str:
        index = int(index)
        if index < 0:
            return "?"
        return names[index][:14] if names and index < len(names) else str(index)

    def show(axis, image, title, row_label=None):
        image = np.clip(image, 0, 1)
        axis.imshow(
            image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None, vmin=0, vmax=1
        )
        axis.set_title(title, fontsize=6)
        axis.set_xticks([])
        axis.set_yticks([])
        if row_label:
            axis.set_ylabel(row_label, fontsize=6)

    for column in range(count):
        show(
            axes[0, column],
            first["original"][column],
            f"test #{int(first['index'][column])}\ntrue: {name(first['label'][column])}",
            "clean" if column == 0 else None,
        )
        for row, model in enumerate(models, start=1):
            entry = found[model]
            size = entry["size"][column]
            title = f"→ {name(entry['predicted'][column])}, ‖δ‖={size:.3g}" if np.isfinite(size) else "none found"
            show(
                axes[row, column],
                entry["adversarial"][column] if np.isfinite(size) else entry["original"][column],
                title,
                model[:18] if column == 0 else None,
            )
    figure.suptitle(
        f"{results.spec['name']}: smallest {norm} adversarial example found per model (row); "
        f"→ the class the model predicts for it, ‖δ‖ its {norm} norm",
        fontsize=7,
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
