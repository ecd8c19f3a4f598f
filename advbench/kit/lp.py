"""L_p geometry shared by attacks, defenses and certifiers (``keras.ops``, batched).

Every function works on a batch: ``x`` has shape ``(batch, ...)`` and per-example
quantities (``eps``, norms) have shape ``(batch,)``.
"""

from __future__ import annotations

import numpy as np

from advbench.contract.components import box_diameter  # noqa: F401 (the threat model's geometry, here with the rest)
from advbench.lazy import keras

DUAL = {"linf": "l1", "l2": "l2", "l1": "linf"}
"""The dual norm q of each norm p (1/p + 1/q = 1)."""


def broadcast(v, x):
    """Reshape a per-example vector to broadcast against ``x``."""
    return keras.ops.reshape(v, (-1,) + (1,) * (len(x.shape) - 1))


def flat(x):
    """``(batch, features)`` view of a batch."""
    return keras.ops.reshape(x, (keras.ops.shape(x)[0], -1))


def norm(x, p: str):
    """Per-example p-norm of a batch."""
    ops = keras.ops
    rows = flat(x)
    if p == "linf":
        return ops.max(ops.abs(rows), axis=1)
    if p == "l2":
        return ops.sqrt(ops.sum(ops.square(rows), axis=1))
    if p == "l1":
        return ops.sum(ops.abs(rows), axis=1)
    raise ValueError(f"unknown norm {p!r}")


def numpy_norm(x: np.ndarray, p: str) -> np.ndarray:
    """Per-example p-norm in float64 (for recorded radii)."""
    rows = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    order = {"linf": np.inf, "l2": 2, "l1": 1}[p]
    return np.linalg.norm(rows, ord=order, axis=1)


def project(delta, eps, p: str):
    """Project perturbations onto the p-ball of per-example radius ``eps``."""
    ops = keras.ops
    if p == "linf":
        e = broadcast(eps, delta)
        return ops.clip(delta, -e, e)
    if p == "l2":
        n = norm(delta, "l2")
        factor = ops.minimum(1.0, eps / ops.maximum(n, 1e-12))
        return delta * broadcast(factor, delta)
    raise ValueError(f"unknown norm {p!r}")


def clip_to_box(x, delta):
    """Shrink ``delta`` so that ``x + delta`` lies in [0, 1]; never increases any |delta_i|."""
    return keras.ops.clip(x + delta, 0.0, 1.0) - x


def project_in_box(x, delta, eps, p: str):
    """The exact Euclidean projection of ``delta`` onto {d : ||d||_p <= eps, 0 <= x + d <= 1}.

    For linf the set is a box and projecting is clipping.  For l2, projecting onto the ball
    and then clipping (what PGD does) is not the projection: the clipped coordinates' share
    of the budget is lost.  The projection is ``clip(s delta, -x, 1 - x)`` with the largest
    ``s`` in (0, 1] whose point lies in the ball (KKT of the separable problem); the squared
    norm ``sum_i min(s^2 delta_i^2, room_i^2)`` is piecewise quadratic in s, and s is found
    exactly by sorting the breakpoints ``room_i / |delta_i|``."""
    ops = keras.ops
    if p == "linf":
        return clip_to_box(x, project(delta, eps, p))
    if p != "l2":
        raise ValueError(f"unknown norm {p!r}")
    inf = float("inf")
    d_flat, x_flat = flat(delta), flat(x)
    magnitude = ops.abs(d_flat)
    room = ops.where(d_flat > 0, 1.0 - x_flat, x_flat)
    breakpoint_ = ops.where(magnitude > 0, room / ops.maximum(magnitude, 1e-30), inf)
    order = ops.argsort(breakpoint_, axis=1)
    t = ops.take_along_axis(breakpoint_, order, axis=1)
    d2 = ops.take_along_axis(ops.square(d_flat), order, axis=1)
    r2 = ops.take_along_axis(ops.square(ops.minimum(room, magnitude * 1e30)), order, axis=1)
    clipped_before = ops.cumsum(r2, axis=1) - r2  # sum_{i < k} room_i^2
    free_from = ops.flip(ops.cumsum(ops.flip(d2, axis=1), axis=1), axis=1)  # sum_{i >= k} delta_i^2
    finite = ops.isfinite(t)
    at = ops.where(finite, clipped_before + r2 + ops.square(ops.where(finite, t, 0.0)) * (free_from - d2), inf)
    e2 = ops.reshape(ops.square(ops.cast(eps, x_flat.dtype)), (-1, 1))
    reaches = at >= e2  # the squared norm at breakpoint k reaches eps^2
    k = ops.argmax(ops.cast(reaches, "int32"), axis=1)[:, None]
    before = ops.take_along_axis(clipped_before, k, axis=1)[:, 0]
    free = ops.take_along_axis(free_from, k, axis=1)[:, 0]
    s = ops.sqrt(ops.maximum(e2[:, 0] - before, 0.0) / ops.maximum(free, 1e-30))
    s = ops.where(ops.any(reaches, axis=1), ops.minimum(s, 1.0), 1.0)
    return clip_to_box(x, delta * broadcast(s, delta))


def steepest_ascent(grad, p: str):
    """The unit-p-norm direction that maximizes the first-order gain <grad, d>."""
    ops = keras.ops
    if p == "linf":
        return ops.sign(grad)
    if p == "l2":
        return grad / broadcast(ops.maximum(norm(grad, "l2"), 1e-12), grad)
    raise ValueError(f"unknown norm {p!r}")


def random_in_ball(shape, eps, p: str, seed):
    """Uniform samples in the p-ball of per-example radius ``eps``, a function of the seed
    tensor alone (see :func:`advbench.kit.rng.seed`)."""
    from advbench.kit import rng

    ops = keras.ops
    if p == "linf":
        u = rng.uniform(shape, seed, -1.0, 1.0)
        return u * broadcast(eps, u)
    if p == "l2":
        direction = rng.normal(shape, rng.fold_in(seed, 0))
        direction = direction / broadcast(ops.maximum(norm(direction, "l2"), 1e-12), direction)
        dim = float(np.prod(shape[1:]))
        radius = eps * rng.uniform(shape[:1], rng.fold_in(seed, 1)) ** (1.0 / dim)
        return direction * broadcast(radius, direction)
    raise ValueError(f"unknown norm {p!r}")


def box_constrained_l2_step(v, c, x):
    """The exactly minimal L2 perturbation that lowers a linear function by ``c``
    inside the box, per example::

        min ||delta||_2  s.t.  <v, delta> = -c,  0 <= x + delta <= 1

    (Hein & Andriushchenko 2017).  The solution is the clipped ray
    ``clip(-lam v, -x, 1 - x)``; ``lam`` is found exactly by sorting the breakpoints at
    which coordinates hit the box.  ``v`` and ``x`` have shape (batch, ...), ``c``
    (batch,) with ``c >= 0``.  Returns ``(delta, feasible)``; where even the whole box
    cannot lower the function by ``c``, ``feasible`` is False and ``delta`` the farthest
    clipped point.
    """
    ops = keras.ops
    inf = float("inf")
    v = ops.reshape(ops.convert_to_tensor(v), ops.shape(x))
    v_flat, x_flat = flat(v), flat(x)
    magnitude = ops.abs(v_flat)
    room = ops.where(v_flat > 0, x_flat, 1.0 - x_flat)  # how far each coordinate can move along -v
    # coordinate i saturates at lam_i = room_i / |v_i| (never, for v_i = 0)
    breakpoint_ = ops.where(magnitude > 0, room / ops.maximum(magnitude, 1e-30), inf)
    order = ops.argsort(breakpoint_, axis=1)
    t = ops.take_along_axis(breakpoint_, order, axis=1)
    v2 = ops.take_along_axis(ops.square(v_flat), order, axis=1)
    saturated = ops.take_along_axis(magnitude * room, order, axis=1)
    # g(lam) = lam * sum_{t_i > lam} v_i^2 + sum_{t_i <= lam} |v_i| room_i, increasing in lam
    saturated_before = ops.cumsum(saturated, axis=1) - saturated
    free_from = ops.flip(ops.cumsum(ops.flip(v2, axis=1), axis=1), axis=1)  # sum_{j >= k} v_j^2
    finite = ops.isfinite(t)
    g_at = ops.where(finite, t, 0.0) * (free_from - v2) + saturated_before + saturated  # g(t_k)
    g_at = ops.where(finite, g_at, inf)
    c = ops.reshape(ops.cast(c, x_flat.dtype), (-1, 1))
    reaches = g_at >= c
    k = ops.argmax(ops.cast(reaches, "int32"), axis=1)[:, None]  # first segment end reaching c
    feasible = ops.any(reaches, axis=1)
    before = ops.take_along_axis(saturated_before, k, axis=1)[:, 0]
    free = ops.take_along_axis(free_from, k, axis=1)[:, 0]
    lam = (c[:, 0] - before) / ops.maximum(free, 1e-30)
    lam = ops.where(feasible, lam, inf)
    step = -ops.minimum(lam[:, None], 1e30) * v_flat
    delta = ops.clip(step, -x_flat, 1.0 - x_flat)
    return ops.reshape(delta, ops.shape(x)), feasible


def box_constrained_linf_step(v, c, x):
    """The exactly minimal linf perturbation that lowers a linear function by ``c``
    inside the box, per example::

        min ||delta||_inf  s.t.  <v, delta> = -c,  0 <= x + delta <= 1

    At budget t the largest decrease is ``g(t) = sum_i |v_i| min(t, room_i)`` (every
    coordinate moved against ``v`` by t, or as far as the box allows: ``room_i`` is
    ``x_i`` or ``1 - x_i``), so ``delta_i = -sign(v_i) min(t, room_i)`` with the smallest t
    where ``g(t) = c``; g is piecewise linear, and t is found exactly by sorting the rooms.
    Shapes and return value as :func:`box_constrained_l2_step`."""
    ops = keras.ops
    inf = float("inf")
    v = ops.reshape(ops.convert_to_tensor(v), ops.shape(x))
    v_flat, x_flat = flat(v), flat(x)
    magnitude = ops.abs(v_flat)
    room = ops.where(v_flat > 0, x_flat, 1.0 - x_flat)
    order = ops.argsort(room, axis=1)
    r = ops.take_along_axis(room, order, axis=1)
    a = ops.take_along_axis(magnitude, order, axis=1)
    spent = ops.cumsum(a * r, axis=1)  # sum_{i <= k} |v_i| room_i
    slope_from = ops.flip(ops.cumsum(ops.flip(a, axis=1), axis=1), axis=1)  # sum_{i >= k} |v_i|
    g_at = spent + r * (slope_from - a)  # g(r_k)
    c = ops.reshape(ops.cast(c, x_flat.dtype), (-1, 1))
    reaches = g_at >= c
    k = ops.argmax(ops.cast(reaches, "int32"), axis=1)[:, None]
    feasible = ops.any(reaches, axis=1)
    before = ops.take_along_axis(spent - a * r, k, axis=1)[:, 0]  # sum_{i < k} |v_i| room_i
    slope = ops.take_along_axis(slope_from, k, axis=1)[:, 0]
    t = (c[:, 0] - before) / ops.maximum(slope, 1e-30)
    t = ops.where(feasible, t, inf)
    delta = -ops.sign(v_flat) * ops.minimum(ops.minimum(t[:, None], 1e30), room)
    return ops.reshape(delta, ops.shape(x)), feasible


BOX_STEPS = {"l2": box_constrained_l2_step, "linf": box_constrained_linf_step}
"""The exactly minimal box-constrained step onto a hyperplane, per norm."""
