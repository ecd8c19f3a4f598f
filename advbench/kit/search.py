"""The searches attacks and certifiers share, written once: a per-example bracket that grows
and then bisects a radius (or a constant), keeping the smallest adversarial point found, and
whether an optimization was still improving when it stopped.

These loops decide soundness (a certified radius is the last budget the bounds held at; an
empirical radius is the norm of a point that was checked to be adversarial), so each lives
here once.  Two forms exist where the callers need both: NumPy (a Python loop between
compiled calls) and ``keras.ops`` (inside a compiled function, ``xp=keras.ops``).

Vocabulary: ``low`` is a value known to fail (not adversarial, or certified), ``high`` one
known to succeed (adversarial, or not certified); ``hit`` says a query at ``value``
succeeded, which moves ``high`` down to it, and a miss moves ``low`` up to it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from advbench.contract.components import Certifier, box_diameter

STILL_RISING = 0.05
"""Pintor et al.'s threshold: the running best loss rose by more than 5% of its range over
the last chunk of steps (the last ten), the sign of an optimization stopped too early."""


# -- brackets ------------------------------------------------------------------------


def midpoint(low, high, geometric: bool):
    """The bisection point of ``[low, high]``: geometric (radii spanning orders of
    magnitude) or arithmetic."""
    return np.sqrt(low * high) if geometric else (low + high) / 2


def splittable(low, high, middle) -> np.ndarray:
    """Whether float32 (what models and bounds compute in) can tell ``middle`` from both ends."""
    middle = np.float32(middle)
    return (middle > np.float32(low)) & (middle < np.float32(high))


def wide(low, high, tolerance: float, geometric: bool) -> np.ndarray:
    """Whether the bracket is wider than ``tolerance``: relative to ``low`` on a geometric
    search (``high > low (1 + tolerance)``), to ``high`` on an arithmetic one (and finite)."""
    if geometric:
        return high > low * (1 + tolerance)
    return np.isfinite(high) & (high - low > tolerance * high)


def still_open(low, high, tolerance: float, geometric: bool) -> np.ndarray:
    """Per example: the bracket is wider than the tolerance and float32 can still split it."""
    return wide(low, high, tolerance, geometric) & splittable(low, high, midpoint(low, high, geometric))


def narrow(value, hit, low, high, active=None, xp=np):
    """One bracket update: where ``hit``, ``high`` comes down to ``value``; elsewhere ``low``
    goes up to it; rows outside ``active`` (if given) keep their bracket.  Returns
    ``(low, high)``; ``xp`` is ``numpy`` or ``keras.ops``."""
    up, down = ~hit, hit
    if active is not None:
        up, down = active & up, active & down
    return xp.where(up, xp.maximum(low, value), low), xp.where(down, xp.minimum(high, value), high)


def next_guess(value, low, high, factor: float, xp=np):
    """The next value to try: ``factor`` times ``value`` while no success bounds the bracket
    above (``high`` infinite), else the bracket's arithmetic midpoint."""
    return xp.where(xp.isinf(high), value * factor, (low + high) / 2)


def grow_then_bisect(crosses: Callable, low, high, growth_steps: int, bisection_steps: int, xp=np):
    """A fixed-length search for the smallest scale that ``crosses`` (``scale -> success``
    per example): double ``high`` from ``[low, high]`` until it succeeds (``growth_steps``
    times at most), then bisect arithmetically ``bisection_steps`` times where it did.
    Fixed lengths so that it compiles inside a training step (``xp=keras.ops``).
    Returns ``(success, low, high)``: ``high`` succeeded where ``success``."""
    success = crosses(high)
    for _ in range(growth_steps):
        if xp is np and success.all():
            break  # the rest of the growth would change nothing
        low, _ = narrow(high, success, low, high, xp=xp)
        high = xp.where(success, high, 2 * high)
        success = crosses(high)
    for _ in range(bisection_steps):
        middle = (low + high) / 2
        low, high = narrow(middle, crosses(middle), low, high, active=success, xp=xp)
    return success, low, high


def grow(attempt: Callable, unbounded: Callable, start: float, cap: float, factor: float = 2.0) -> None:
    """Grow one common budget from ``start`` by ``factor`` up to ``cap``, calling
    ``attempt(index, budgets)`` on the examples ``unbounded()`` still lists (those with no
    success yet), until none is left."""
    value = float(start)
    while value < cap:
        value = min(factor * value, cap)
        todo = np.flatnonzero(unbounded())
        if not len(todo):
            return
        attempt(todo, np.full(len(todo), value))


def bisect(
    step: Callable,
    low: np.ndarray,
    high: np.ndarray,
    todo: np.ndarray,
    *,
    tolerance: float,
    geometric: bool,
    whole_batch: bool = False,
    first=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Bisect each example's bracket ``[low, high]`` where ``todo``, until it is narrower
    than ``tolerance`` (:func:`wide`), float32 cannot split it, or a step left it as it was.

    :param step: ``step(index, middle)``: query the examples ``index`` at ``middle`` and
        return whether each succeeded (``hit``: ``high`` comes down to ``middle``, else
        ``low`` goes up to it), or ``(hit, low_to, high_to)``: the end that moves moves to
        these values instead (an attack can find a point nearer than its budget; a bound
        holds at the float32 budget it was computed at).
    :param whole_batch: query every example at every step (the finished ones at ``low``),
        so that a compiled computation sees one shape; only open brackets are updated.
    :param first: the values of the first query instead of the midpoints (e.g. a cap).
    :return: the final ``(low, high)``.
    """
    low, high = np.array(low, dtype=np.float64), np.array(high, dtype=np.float64)
    todo = np.array(todo, dtype=bool)
    first_step = True
    while todo.any():
        middle = midpoint(low, high, geometric) if first is None or not first_step else np.asarray(first, np.float64)
        first_step = False
        index = np.flatnonzero(todo)
        if whole_batch:
            answer = step(np.arange(len(low)), np.where(todo, middle, low))
            answer = tuple(np.asarray(a)[index] for a in answer) if isinstance(answer, tuple) else np.asarray(answer)[index]
        else:
            answer = step(index, middle[index])
        hit, to_low, to_high = answer if isinstance(answer, tuple) else (answer, middle[index], middle[index])
        hit = np.asarray(hit, bool)
        new_low, new_high = np.where(hit, low[index], to_low), np.where(hit, to_high, high[index])
        stalled = np.zeros(len(low), dtype=bool)
        stalled[index] = (new_low == low[index]) & (new_high == high[index])
        low[index], high[index] = new_low, new_high
        todo = todo & ~stalled & still_open(low, high, tolerance, geometric)
    return low, high


# -- the smallest adversarial point ------------------------------------------------------


def keep_smaller(adversarial, size, point, best_norm, best, xp=None):
    """Inside a compiled loop: where ``point`` is adversarial and smaller than the best so
    far, it becomes the best.  Returns ``(best_norm, best)``."""
    from advbench.kit import lp
    from advbench.lazy import keras

    ops = xp or keras.ops
    better = adversarial & (size < best_norm)
    return ops.where(better, size, best_norm), ops.where(lp.broadcast(better, point), point, best)


def keep_smaller_rows(index, adversarial, size, point, best_norm, best) -> np.ndarray:
    """NumPy, in place: rows ``index`` of ``best_norm`` and ``best`` take ``point`` where it
    is adversarial and smaller.  Returns the mask of rows (of ``index``) that improved."""
    better = adversarial & (size < best_norm[index])
    best_norm[index[better]] = size[better]
    best[index[better]] = point[better]
    return better


# -- incomplete optimization ---------------------------------------------------------


def still_rising(best, before, lowest, xp=np):
    """Pintor et al.'s incomplete-optimization indicator, per example: the running best loss
    (``best``) rose by more than :data:`STILL_RISING` of its range (``best - lowest``) since
    ``before`` (its value a chunk of steps earlier)."""
    with np.errstate(invalid="ignore"):  # inf - inf where an example never started: not rising
        span = best - lowest
        return xp.isfinite(span) & (best - before > STILL_RISING * xp.maximum(span, 1e-12))


# -- a certifier from a yes/no answer ------------------------------------------------


class BisectionCertifier(Certifier):
    """A certifier that answers "is every example certified at its eps?"; advbench turns
    that into a radius by bisection on a log scale between ``diameter / 2**12`` and the
    box diameter (the largest possible budget), keeping the last certified eps, to the
    relative ``tolerance`` of the parameters (default 1e-3)."""

    def certified(self, target, x, y, norm: str, eps: np.ndarray) -> np.ndarray:
        """Boolean per example: certified at ``eps`` (one budget per example)."""
        raise NotImplementedError

    def certify(self, target, x, y, norm):
        tolerance = getattr(self.params, "tolerance", 1e-3)
        diameter = box_diameter(x.shape[1:], norm)
        low = np.full(len(x), diameter / 2**12)
        ok = self.certified(target, x, y, norm, low)
        high = np.full(len(x), diameter)
        top = self.certified(target, x, y, norm, high)
        low = np.where(top, high, low)

        def step(index, eps):  # certified at eps: the radius is at least eps
            return ~np.asarray(self.certified(target, x, y, norm, eps), bool)

        # Every step queries the whole batch (finished examples at their certified eps), so
        # compiled bound computations see one shape and are not traced again.
        low, high = bisect(step, low, high, ok & ~top, tolerance=tolerance, geometric=True, whole_batch=True)
        return np.where(ok, low, 0.0)
