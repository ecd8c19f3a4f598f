"""The number formatters every output format shares (markdown, the terminal, the HTML site,
the JSON's display texts), so a radius or an accuracy reads the same everywhere.  The CSV
export alone writes numbers exactly (``repr``), for other programs."""

from __future__ import annotations

import math

import numpy as np


def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def radius_column(values: list[float | None]) -> list[str]:
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


def radius(value) -> str:
    """One radius on its own (three significant digits in fixed decimals; inf as ∞)."""
    if value == "inf":
        value = math.inf
    return radius_column([None if value is None else float(value)])[0]


def share(value: float | None) -> str:
    """A share as a percentage with one decimal."""
    return "—" if value is None else f"{percent(value)}%"


def count(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def seconds(value: float) -> str:
    """A duration: whole seconds from 10 s on, tenths below."""
    return f"{value:,.0f} s" if value >= 10 else f"{value:.1f} s"
