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
