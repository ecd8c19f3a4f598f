"""The input set bound propagation starts from: a linf or l2 ball around x intersected
with the [0, 1] box, its bounding box, and the minimum of a linear function over it."""

from __future__ import annotations

from advbench.lazy import keras


def input_box(x, eps, norm):
    """The box [x - eps, x + eps] intersected with [0, 1] (for l2 the ball's bounding box)."""
    e = keras.ops.reshape(eps, (-1,) + (1,) * (len(x.shape) - 1))
    return keras.ops.maximum(x - e, 0.0), keras.ops.minimum(x + e, 1.0)


def l2_norm(tensor, axis):
    """The l2 norm along ``axis``, with gradient 0 (not NaN) where the norm is 0."""
    ops = keras.ops
    squares = ops.sum(ops.square(tensor), axis=axis)
    positive = squares > 0
    return ops.where(positive, ops.sqrt(ops.where(positive, squares, 1.0)), 0.0)


def input_bound(lam, x, eps, norm):
    """min over the input set of lam . z, set = (ball around x) intersected with [0, 1];
    lam (B, S, *input shape), the result (B, S)."""
    ops = keras.ops
    batch, size = ops.shape(lam)[0], lam.shape[1]
    flat = ops.reshape(lam, (batch, size, -1))
    lo, up = input_box(x, eps, norm)
    lo, up = ops.reshape(lo, (batch, 1, -1)), ops.reshape(up, (batch, 1, -1))
    box = ops.sum(ops.minimum(flat * lo, flat * up), axis=2)
    if norm == "linf":
        return box
    center = ops.sum(flat * ops.reshape(x, (batch, 1, -1)), axis=2)
    ball = center - ops.reshape(eps, (-1, 1)) * l2_norm(flat, axis=2)
    return ops.maximum(box, ball)
