"""The leaderboard in the terminal (Rich tables within the console's width)."""

from __future__ import annotations

from advbench.results.data import Results
from advbench.results.table import format_eps, table
from advbench.text import terminal

MODEL_WIDTH = 24
"""The terminal table's model column: longer names end in an ellipsis."""


def print_tables(console, results: Results, rank_by: str = "certified") -> None:
    """The terminal's tables: rank, model, clean and cert / emp per eps, within the
    console's width (eps split over several tables when they do not fit), then the notes
    and each model's flags; defenses, intervals and radii are in leaderboard.md."""
    from rich.table import Table as RichTable
    from rich.text import Text

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
            rich_table = RichTable(title=Text(terminal(title)), title_justify="left")  # Text: no markup from disk
            for name in ("#", "model", "clean"):
                rich_table.add_column(
                    name,
                    justify="left" if name == "model" else "right",
                    no_wrap=True,
                    overflow="ellipsis",
                    max_width=MODEL_WIDTH if name == "model" else None,
                )
            for k in group:
                rich_table.add_column(f"ε={format_eps(bounds[0].eps[k])}", justify="right", no_wrap=True)
            for position, row in enumerate(shown.rows):
                rich_table.add_row(  # Text, not markup: a name is shown as it is
                    Text(row.cells[0]),
                    Text(terminal(row.cells[1])),
                    Text(row.cells[3]),
                    *(eps_cells[k][position] for k in group),
                    style="red" if row.bounds.errors else None,
                )
            console.print(rich_table)
        for note in shown.notes:
            console.print(terminal(note), highlight=False, markup=False)
        for row in shown.rows:
            flags = row.cells[-1]
            if flags:
                console.print(terminal(f"{row.bounds.model}: {flags}"), highlight=False, markup=False)
    console.print("", highlight=False)
