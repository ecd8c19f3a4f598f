"""``advbench compare RUN_A RUN_B``: what changed between two runs, per model and budget
(each bound's difference, and whether the 95% intervals of the two separate), the models
in only one of them, and the settings that differ (spec, code, data, backend)."""

from __future__ import annotations

from advbench.results.data import Results


def compare(first: Results, second: Results) -> dict:
    """The comparison as plain data (what ``--format json`` prints)."""
    a = {(b.model, b.norm): b for b in first.bounds}
    b = {(x.model, x.norm): x for x in second.bounds}
    rows = []
    for key in sorted(set(a) & set(b)):
        left, right = a[key], b[key]
        for eps in sorted(set(left.eps) & set(right.eps)):
            row = {"model": key[0], "norm": key[1], "eps": eps}
            for kind in ("clean", "certified", "empirical"):
                if kind == "clean" and eps != min(set(left.eps) & set(right.eps)):
                    continue
                x, y = left.accuracy(kind, eps), right.accuracy(kind, eps)
                if x is None and y is None:
                    continue
                ix, iy = left.interval(kind, eps), right.interval(kind, eps)
                separated = None if ix is None or iy is None else bool(ix[1] < iy[0] or iy[1] < ix[0])
                row[kind] = {
                    "first": x,
                    "second": y,
                    "difference": None if x is None or y is None else y - x,
                    "intervals_separate": separated,
                }
            rows.append(row)
    models_a = {m for m, _ in a} | {m["name"] for m in first.spec["models"]}
    models_b = {m for m, _ in b} | {m["name"] for m in second.spec["models"]}
    return {
        "first": first.spec["name"],
        "second": second.spec["name"],
        "bounds": rows,
        "only_in_first": sorted(models_a - models_b),
        "only_in_second": sorted(models_b - models_a),
        "settings": _differences(_settings(first), _settings(second)),
    }


def _settings(results: Results) -> dict:
    records = [r for r in results.records.values() if r.get("status") == "ok"]
    environments = sorted({tuple(r["environment"].values()) for r in records if r.get("environment")})
    return {
        "spec": {k: v for k, v in results.spec.items() if k != "name"},
        "code": results.plan.get("plugins", {}),
        "data": results.plan.get("data", {}),
        "environments": [list(e) for e in environments],
        "versions": records[-1].get("versions", {}) if records else {},
    }


def _differences(first, second, path: str = "") -> list[dict]:
    """Every leaf that differs, by its path (``spec.models[1].training.epochs``)."""
    if isinstance(first, dict) and isinstance(second, dict):
        found = []
        for key in sorted(set(first) | set(second), key=str):
            where = f"{path}.{key}" if path else str(key)
            found += _differences(first.get(key, _MISSING), second.get(key, _MISSING), where)
        return found
    if isinstance(first, list) and isinstance(second, list) and len(first) == len(second):
        return [d for k, (x, y) in enumerate(zip(first, second)) for d in _differences(x, y, f"{path}[{k}]")]
    if first != second:
        return [
            {"setting": path, "first": None if first is _MISSING else first, "second": None if second is _MISSING else second}
        ]
    return []


_MISSING = object()


def print_comparison(console, comparison: dict) -> None:
    """The comparison in the terminal: a table of the bounds' differences, then the rest."""
    from rich.table import Table
    from rich.text import Text

    from advbench.results.table import format_eps
    from advbench.text import terminal

    table = Table(  # Text, not markup: run names come from disk
        title=Text(terminal(f"{comparison['first']} → {comparison['second']}: second minus first, percentage points")),
        title_justify="left",
    )
    for name in ("model", "norm", "ε", "clean", "certified", "empirical"):
        table.add_column(name, justify="left" if name in ("model", "norm") else "right")

    def cell(entry) -> Text:
        if not entry or entry["difference"] is None:
            return Text("—")
        text = f"{100 * entry['difference']:+.1f}"
        return Text(text + (" *" if entry["intervals_separate"] else ""), style="bold" if entry["intervals_separate"] else None)

    for row in comparison["bounds"]:
        table.add_row(
            Text(terminal(row["model"])),
            Text(terminal(row["norm"])),
            format_eps(row["eps"]),
            cell(row.get("clean")),
            cell(row.get("certified")),
            cell(row.get("empirical")),
        )
    console.print(table)
    console.print("*: the 95% intervals of the two runs do not overlap.", highlight=False, markup=False)
    for side in ("first", "second"):
        if comparison[f"only_in_{side}"]:
            console.print(
                terminal(f"only in the {side} run: {', '.join(comparison[f'only_in_{side}'])}"), highlight=False, markup=False
            )
    if comparison["settings"]:
        console.print(f"{len(comparison['settings'])} setting(s) differ:", highlight=False, markup=False)
        for d in comparison["settings"]:
            console.print(
                terminal(f"  {d['setting']}: {_short(d['first'])} → {_short(d['second'])}"), highlight=False, markup=False
            )
    else:
        console.print("the settings are the same", highlight=False, markup=False)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
