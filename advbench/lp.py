"""L_p geometry shared by attacks, defenses and certifiers (TensorFlow, batched).

Every function works on a batch: ``x`` has shape ``(batch, ...)`` and per-example
quantities (``eps``, norms) have shape ``(batch,)``.
"""

from __future__ import annotations

import numpy as np

from advbench.lazy import tf

DUAL = {"linf": "l1", "l2": "l2", "l1": "linf"}
"""The dual norm q of each norm p (1/p + 1/q = 1)."""


def broadcast(v, x):
    """Reshape a per-example vector to broadcast against ``x``."""
    return tf.reshape(v, [-1] + [1] * (len(x.shape) - 1))


def norm(x, p: str):
    """Per-example p-norm of a batch."""
    flat = tf.reshape(x, [tf.shape(x)[0], -1])
    if p == "linf":
        return tf.reduce_max(tf.abs(flat), axis=1)
    if p == "l2":
        return tf.sqrt(tf.reduce_sum(tf.square(flat), axis=1))
    if p == "l1":
        return tf.reduce_sum(tf.abs(flat), axis=1)
    raise ValueError(f"unknown norm {p!r}")


def numpy_norm(x: np.ndarray, p: str) -> np.ndarray:
    """Per-example p-norm in float64 (for recorded radii)."""
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    order = {"linf": np.inf, "l2": 2, "l1": 1}[p]
    return np.linalg.norm(flat, ord=order, axis=1)


def project(delta, eps, p: str):
    """Project perturbations onto the p-ball of per-example radius ``eps``."""
    if p == "linf":
        e = broadcast(eps, delta)
        return tf.clip_by_value(delta, -e, e)
    if p == "l2":
        n = norm(delta, "l2")
        factor = tf.minimum(1.0, eps / tf.maximum(n, 1e-12))
        return delta * broadcast(factor, delta)
    raise ValueError(f"unknown norm {p!r}")


def clip_to_box(x, delta):
    """Shrink ``delta`` so that ``x + delta`` lies in [0, 1]; never increases any |delta_i|."""
    return tf.clip_by_value(x + delta, 0.0, 1.0) - x


def steepest_ascent(grad, p: str):
    """The unit-p-norm direction that maximizes the first-order gain <grad, d>."""
    if p == "linf":
        return tf.sign(grad)
    if p == "l2":
        return grad / broadcast(tf.maximum(norm(grad, "l2"), 1e-12), grad)
    raise ValueError(f"unknown norm {p!r}")


def random_in_ball(shape, eps, p: str, seed):
    """Uniform samples in the p-ball of per-example radius ``eps`` (stateless, seeded)."""
    if p == "linf":
        u = tf.random.stateless_uniform(shape, seed, -1.0, 1.0)
        return u * broadcast(eps, u)
    if p == "l2":
        seeds = tf.random.experimental.stateless_split(seed, 2)
        direction = tf.random.stateless_normal(shape, seeds[0])
        direction = direction / broadcast(tf.maximum(norm(direction, "l2"), 1e-12), direction)
        dim = tf.cast(tf.reduce_prod(shape[1:]), tf.float32)
        radius = eps * tf.random.stateless_uniform([shape[0]], seeds[1]) ** (1.0 / dim)
        return direction * broadcast(radius, direction)
    raise ValueError(f"unknown norm {p!r}")


def box_diameter(input_shape, p: str) -> float:
    """The largest p-distance between two points of [0, 1]^d: no budget needs to exceed it."""
    dim = int(np.prod(input_shape))
    return {"linf": 1.0, "l2": float(np.sqrt(dim)), "l1": float(dim)}[p]


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
    shape = tf.shape(x)
    v = tf.reshape(v, [shape[0], -1])
    x_flat = tf.reshape(x, [shape[0], -1])
    magnitude = tf.abs(v)
    room = tf.where(v > 0, x_flat, 1.0 - x_flat)  # how far each coordinate can move along -v
    # coordinate i saturates at lam_i = room_i / |v_i| (never, for v_i = 0)
    breakpoint_ = tf.where(magnitude > 0, room / tf.maximum(magnitude, 1e-30), float("inf"))
    order = tf.argsort(breakpoint_, axis=1)
    t = tf.gather(breakpoint_, order, batch_dims=1)
    v2 = tf.gather(tf.square(v), order, batch_dims=1)
    saturated = tf.gather(magnitude * room, order, batch_dims=1)
    # g(lam) = lam * sum_{t_i > lam} v_i^2 + sum_{t_i <= lam} |v_i| room_i, increasing in lam
    saturated_before = tf.cumsum(saturated, axis=1, exclusive=True)
    free_from = tf.cumsum(v2, axis=1, reverse=True)  # sum_{j >= k} v_j^2
    finite_t = tf.where(tf.math.is_finite(t), t, 0.0)
    g_at = finite_t * (free_from - v2) + saturated_before + saturated  # g(t_k)
    g_at = tf.where(tf.math.is_finite(t), g_at, float("inf"))
    c = tf.reshape(tf.cast(c, x_flat.dtype), [-1, 1])
    k = tf.argmax(tf.cast(g_at >= c, tf.int32), axis=1, output_type=tf.int32)  # first segment end reaching c
    feasible = tf.reduce_any(g_at >= c, axis=1)
    before = tf.gather(saturated_before, k[:, None], batch_dims=1)[:, 0]
    free = tf.gather(free_from, k[:, None], batch_dims=1)[:, 0]
    lam = (c[:, 0] - before) / tf.maximum(free, 1e-30)
    lam = tf.where(feasible, lam, float("inf"))
    step = -tf.minimum(lam[:, None], 1e30) * v
    delta = tf.clip_by_value(step, -x_flat, 1.0 - x_flat)
    return tf.reshape(delta, shape), feasible
