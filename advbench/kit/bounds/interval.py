"""Interval bound propagation (Gowal et al. 2018): boxes through every operator, the
margins ``f_y - f_j`` bounded with the logits layer folded in."""

from __future__ import annotations

import numpy as np

from advbench.kit.bounds.sets import input_box, l2_norm
from advbench.lazy import keras


def ibp(nodes, x, eps, norm, until=None, raw=None):
    """Interval bounds (lower, upper) of every node's output; stops after node ``until``.

    For an l2 ball, the first affine layer is bounded over the ball as well as over its
    bounding box, and the intervals intersected (both contain the true set).  ``raw``, a
    dict, receives the nodes whose output is the input itself, reshaped (index -1: x)."""
    lower_in, upper_in = input_box(x, eps, norm)
    bounds: list = []
    raw = {} if raw is None else raw
    raw[-1] = x

    def get(i):
        return (lower_in, upper_in) if i == -1 else bounds[i]

    for k, node in enumerate(nodes):
        bounds.append(node.interval([get(i) for i in node.inputs], eps, norm, raw, k))
        if until is not None and k == until:
            break
    return bounds


def margin_matrix(labels, classes):
    """C with rows e_y - e_j for j != y: (batch, classes - 1, classes); ``labels`` may be a
    tensor inside compiled code (certifiers and certified training build it alike)."""
    ops = keras.ops
    others = np.array([[j for j in range(classes) if j != c] for c in range(classes)], dtype=np.int32)
    labels = ops.cast(labels, "int32")
    rows = ops.take(ops.convert_to_tensor(others), labels, axis=0)  # (batch, classes - 1): every j != y
    return ops.one_hot(labels, classes)[:, None, :] - ops.one_hot(rows, classes)


def ibp_margins(nodes, x, C, eps, norm):
    """Lower bounds of f_y - f_j (rows of ``C``), the last layer folded into the margins."""
    raw = {}
    bounds = ibp(nodes, x, eps, norm, until=len(nodes) - 2, raw=raw)
    return fold_head(nodes, x, C, eps, norm, bounds, raw)


def fold_head(nodes, x, C, eps, norm, bounds, raw):
    """The margins' lower bounds from the interval bounds of the logits layer's input, the
    logits layer folded into the margins.

    Where the logits layer reads the input itself (a linear model), an l2 ball bounds the
    margins by the dual norm, ``C W x + C b - eps ||(C W)_j||_2``, as well as by its box."""
    source = nodes[-1].inputs[0]
    head = nodes[-1].layer
    lo, up = bounds[source] if source != -1 else input_box(x, eps, norm)
    ops = keras.ops
    batch = ops.shape(x)[0]
    W = ops.einsum("bsk,dk->bsd", C, head.kernel)
    bias = ops.einsum("bsk,k->bs", C, head.bias) if head.use_bias else 0.0
    center, radius = (lo + up) / 2, (up - lo) / 2
    flat_c = ops.reshape(center, (batch, -1))
    flat_r = ops.reshape(radius, (batch, -1))
    margins = ops.einsum("bsd,bd->bs", W, flat_c) - ops.einsum("bsd,bd->bs", ops.abs(W), flat_r) + bias
    if norm == "l2" and source in raw:
        at_x = ops.einsum("bsd,bd->bs", W, ops.reshape(raw[source], (batch, -1))) + bias
        ball = at_x - ops.reshape(eps, (-1, 1)) * l2_norm(W, axis=2)
        margins = ops.maximum(margins, ball)
    return margins
