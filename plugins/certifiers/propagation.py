"""Bound propagation through a Keras model: interval bound propagation (Gowal et al. 2018)
and CROWN (Zhang et al. 2018), shared by the `ibp` and `crown` certifiers.

The model is read as a graph of supported layers (Dense, Conv2D, ReLU, softplus, Flatten,
Reshape, max- and average-pooling, global average pooling, batch normalization in
inference mode, Dropout, Rescaling, ZeroPadding2D, residual Add); any other layer is
refused by name.  The input set is a linf or l2 ball around x intersected with [0, 1].

Both certifiers bound the margins ``f_c - f_j`` with the last Dense layer folded in,
and certify an example at eps when every margin's lower bound is positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from advbench import backend
from advbench.adam import adam_direction
from advbench.lazy import keras
from advbench.structure import UnsupportedModel, activation_name

# Linear layers whose outputs mix several inputs: CROWN bounds them (the others are
# elementwise or reshape, exact in interval arithmetic).
MIXING = ("Dense", "Conv2D", "AveragePooling2D", "GlobalAveragePooling2D", "Add")
LINEAR = ("Dense", "Conv2D", "Flatten", "Reshape", "AveragePooling2D", "GlobalAveragePooling2D", "BatchNormalization",
          "Dropout", "Rescaling", "ZeroPadding2D", "Add")


@dataclass
class Node:
    layer: object
    kind: str  # "linear", "relu", "softplus", "maxpool"
    inputs: list[int]  # indices of input nodes (-1: the model input)
    alpha: float = 1.0  # softplus sharpness


def read_graph(model) -> list[Node]:
    """The model's layers in topological order, each split into its linear part and
    its (fused) activation; refuses what it cannot bound."""
    from advbench.layers import Softplus

    index_of = {}
    nodes: list[Node] = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            index_of[id(layer)] = -1
            continue
        if isinstance(layer, keras.Model):
            raise UnsupportedModel(f"layer {layer.name!r} is a nested model; bound propagation needs a flat model")
        tensors = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
        sources = []
        for tensor in tensors:
            producer = tensor._keras_history.operation
            sources.append(index_of.get(id(producer), -1))
        name = type(layer).__name__
        if isinstance(layer, Softplus):
            nodes.append(Node(layer, "softplus", sources, layer.alpha))
        elif isinstance(layer, keras.layers.ReLU):
            if layer.negative_slope != 0 or layer.max_value is not None or layer.threshold != 0:
                raise UnsupportedModel(f"layer {layer.name!r}: only the plain ReLU is supported")
            nodes.append(Node(layer, "relu", sources))
        elif isinstance(layer, keras.layers.Activation):
            act = activation_name(layer)
            if act not in ("relu", "linear", "softplus"):
                raise UnsupportedModel(f"layer {layer.name!r}: activation {act!r} is not supported")
            nodes.append(Node(layer, {"linear": "identity", "relu": "relu", "softplus": "softplus"}[act], sources))
        elif isinstance(layer, keras.layers.MaxPooling2D):
            nodes.append(Node(layer, "maxpool", sources))
        elif name in LINEAR:
            if name in ("Dense", "Conv2D") and getattr(layer, "data_format", "channels_last") != "channels_last":
                raise UnsupportedModel(f"layer {layer.name!r}: only channels_last is supported")
            nodes.append(Node(layer, "linear", sources))
            act = activation_name(layer)
            if act == "relu":
                nodes.append(Node(None, "relu", [len(nodes) - 1]))
            elif act == "softplus":
                nodes.append(Node(None, "softplus", [len(nodes) - 1]))
            elif act != "linear":
                raise UnsupportedModel(f"layer {layer.name!r}: fused activation {act!r} is not supported")
        else:
            raise UnsupportedModel(f"layer {layer.name!r} ({name}) is not supported by bound propagation")
        index_of[id(layer)] = len(nodes) - 1
    head = nodes[-1]
    if head.kind != "linear" or type(head.layer).__name__ != "Dense":
        raise UnsupportedModel("the last layer must be a Dense layer without activation (logits)")
    return nodes


def linear_apply(layer, inputs, with_bias=True):
    """The linear (affine) part of a layer; ``with_bias=False`` drops the constant term."""
    ops = keras.ops
    name = type(layer).__name__
    if name == "Dense":
        out = ops.tensordot(inputs[0], layer.kernel, axes=[[-1], [0]])
        return out + layer.bias if with_bias and layer.use_bias else out
    if name == "Conv2D":
        out = _conv(inputs[0], layer.kernel, layer)
        return out + layer.bias if with_bias and layer.use_bias else out
    if name == "BatchNormalization":
        scale = 1.0 / ops.sqrt(layer.moving_variance + layer.epsilon)
        if layer.scale:
            scale = layer.gamma * scale
        out = inputs[0] * scale
        if with_bias:
            out = out - layer.moving_mean * scale + (layer.beta if layer.center else 0.0)
        return out
    if name == "Add":
        return _sum(inputs)
    if name in ("Dropout",):
        return inputs[0]
    if name == "Rescaling":
        out = inputs[0] * layer.scale
        return out + layer.offset if with_bias else out
    return layer(inputs[0], training=False) if len(inputs) == 1 else layer(inputs, training=False)


def _conv(inputs, kernel, layer):
    return keras.ops.conv(inputs, kernel, strides=layer.strides, padding=layer.padding, data_format="channels_last",
                          dilation_rate=layer.dilation_rate)


def _sum(tensors):
    total = tensors[0]
    for tensor in tensors[1:]:
        total = total + tensor
    return total


def softplus(z, alpha):
    return keras.ops.softplus(alpha * z) / alpha


# -- interval bound propagation -------------------------------------------------------------


def input_box(x, eps, norm):
    """The box [x - eps, x + eps] intersected with [0, 1] (for l2 the ball's bounding box)."""
    e = keras.ops.reshape(eps, (-1,) + (1,) * (len(x.shape) - 1))
    return keras.ops.maximum(x - e, 0.0), keras.ops.minimum(x + e, 1.0)


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
        bounds.append(interval_step(node, [get(i) for i in node.inputs], eps, norm, raw, k))
        if until is not None and k == until:
            break
    return bounds


def interval_step(node, parts, eps, norm, raw, k):
    """Interval bounds of node ``k``'s output from its inputs' (``parts``); ``raw``: see :func:`ibp`."""
    name = type(node.layer).__name__ if node.layer is not None else ""
    if node.kind == "linear" and name in ("Dense", "Conv2D", "Rescaling"):
        center = [(lo + up) / 2 for lo, up in parts]
        radius = [(up - lo) / 2 for lo, up in parts]
        mid = linear_apply(node.layer, center)
        spread = _abs_linear(node.layer, radius)
        lower, upper = mid - spread, mid + spread
        if norm == "l2" and node.inputs[0] in raw:
            ball_mid = linear_apply(node.layer, [raw[node.inputs[0]]])
            ball_spread = _l2_spread(node.layer, raw[node.inputs[0]], eps)
            lower, upper = keras.ops.maximum(lower, ball_mid - ball_spread), keras.ops.minimum(upper, ball_mid + ball_spread)
        return lower, upper
    if node.kind == "linear" and name == "BatchNormalization":
        lo, up = parts[0]
        a, b = linear_apply(node.layer, [lo]), linear_apply(node.layer, [up])
        return keras.ops.minimum(a, b), keras.ops.maximum(a, b)
    if node.kind == "linear" and name == "Add":
        return _sum([p[0] for p in parts]), _sum([p[1] for p in parts])
    if node.kind == "linear":  # non-decreasing linear maps: flatten, reshape, averages, padding, dropout
        if name in ("Flatten", "Reshape", "Dropout") and node.inputs[0] in raw:
            raw[k] = linear_apply(node.layer, [raw[node.inputs[0]]])
        return linear_apply(node.layer, [parts[0][0]]), linear_apply(node.layer, [parts[0][1]])
    if node.kind == "relu":
        return keras.ops.relu(parts[0][0]), keras.ops.relu(parts[0][1])
    if node.kind == "softplus":
        return softplus(parts[0][0], node.alpha), softplus(parts[0][1], node.alpha)
    if node.kind == "maxpool":
        return node.layer(parts[0][0]), node.layer(parts[0][1])
    return parts[0]  # identity


def _abs_linear(layer, radius):
    name = type(layer).__name__
    if name == "Dense":
        return keras.ops.tensordot(radius[0], keras.ops.abs(layer.kernel), axes=[[-1], [0]])
    if name == "Conv2D":
        return _conv(radius[0], keras.ops.abs(layer.kernel), layer)
    return radius[0] * abs(layer.scale)  # Rescaling


def _l2_spread(layer, x, eps):
    """Over an l2 ball of radius eps: eps times the l2 norm of each output's weights (for a
    convolution, of the whole kernel: an upper bound at the borders)."""
    ops = keras.ops
    name = type(layer).__name__
    e = ops.reshape(eps, (-1,) + (1,) * (len(x.shape) - 1))
    if name == "Dense":
        return l2_norm(layer.kernel, axis=0) * e
    if name == "Conv2D":
        return l2_norm(layer.kernel, axis=(0, 1, 2)) * e
    return abs(layer.scale) * e


def l2_norm(tensor, axis):
    """The l2 norm along ``axis``, with gradient 0 (not NaN) where the norm is 0."""
    ops = keras.ops
    squares = ops.sum(ops.square(tensor), axis=axis)
    positive = squares > 0
    return ops.where(positive, ops.sqrt(ops.where(positive, squares, 1.0)), 0.0)


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


# -- CROWN -------------------------------------------------------------------------------


class Crown:
    """Backward linear bound propagation with ReLU/softplus relaxations; intermediate
    bounds by CROWN where a layer has at most ``max_neurons`` neurons, IBP otherwise
    (both intersected); ``max_neurons=0`` gives CROWN-IBP (IBP for every intermediate
    layer).  ``differentiable``: the bounds stay differentiable with respect to the
    weights (certified training)."""

    def __init__(self, nodes, max_neurons: int = 2048, differentiable: bool = False):
        self.nodes = nodes
        self.max_neurons = max_neurons
        self.differentiable = differentiable
        self.sizes = node_sizes(nodes)
        # Nodes with no nonlinearity between them and the input: IBP is exact there already.
        self.affine_in_input = set()
        for k, node in enumerate(nodes):
            if node.kind in ("linear", "identity") and all(i == -1 or i in self.affine_in_input for i in node.inputs):
                self.affine_in_input.add(k)

    def margins(self, x, C, eps, norm):
        """Lower bounds of f_y - f_j (rows of ``C``), shape (batch, classes - 1)."""
        self.prepare(x, C, eps, norm)
        return self.lower_bound(len(self.nodes) - 1, C)

    def prepare(self, x, C, eps, norm):
        """Start a bound computation: the interval bounds of every layer."""
        self.x, self.eps, self.norm, self.C = x, eps, norm, C
        self.bounds = {}
        self.tightened = set()  # nodes whose bounds may be tighter than IBP's
        self.pools = {}
        self.raw = {}
        self.ibp = ibp(self.nodes, x, eps, norm, until=len(self.nodes) - 2, raw=self.raw)

    def ibp_margins(self):
        """IBP's lower bounds of the margins of the last :meth:`margins` call, from the
        interval bounds it computed already (CROWN-IBP training blends the two)."""
        return fold_head(self.nodes, self.x, self.C, self.eps, self.norm, self.ibp, self.raw)

    def lower_bound(self, node_index, spec, slopes=None):
        """Lower bound of spec . (output of node ``node_index``); spec (B, S, *shape).
        ``slopes`` (alpha-CROWN), (B, S, *shape) in [0, 1]: for some ReLU nodes, the lower
        lines' slopes of their unstable neurons; for some max-pool nodes, the lower lines'
        weights of each window's inputs (see :meth:`pool_simplex`); CROWN's choice elsewhere."""
        specs = {node_index: spec}
        constant = keras.ops.zeros(keras.ops.shape(spec)[:2])
        for k in range(node_index, -1, -1):
            if k not in specs:
                continue
            lam = specs.pop(k)
            node = self.nodes[k]
            if node.kind == "linear":
                contributions, offset = self._linear_backward(node, lam)
                constant = constant + offset
            elif node.kind == "identity":
                contributions = [lam]
            else:
                contributions, offset = self._relaxation_backward(k, node, lam, None if slopes is None else slopes.get(k))
                constant = constant + offset
            for source, contribution in zip(node.inputs, contributions):
                specs[source] = specs[source] + contribution if source in specs else contribution
        return constant + self._input_bound(specs[-1])

    def _linear_backward(self, node, lam):
        """lam . (W z + b) = (W^T lam) . z + lam . b: the transpose comes from the
        gradient of the layer's linear part, so every linear layer needs no own rule."""
        ops = keras.ops
        layer = node.layer
        batch, size = ops.shape(lam)[0], lam.shape[1]
        out_shape = tuple(lam.shape[2:])
        folded = ops.reshape(lam, (-1,) + out_shape)
        in_shapes = [self._shape(i) for i in node.inputs]
        zeros = [ops.zeros((1,) + s) for s in in_shapes]
        offset_out = linear_apply(layer, zeros)  # the layer's constant term, (1, *out)
        offset = ops.sum(ops.reshape(lam, (batch, size, -1)) * ops.reshape(offset_out, (1, 1, -1)), axis=2)
        probes = [ops.zeros((ops.shape(folded)[0],) + s) for s in in_shapes]
        grads, _ = backend.grad(lambda p: (ops.sum(linear_apply(layer, p, with_bias=False) * folded), None), probes,
                                self.differentiable)
        contributions = [ops.reshape(g, (batch, size) + s) for g, s in zip(grads, in_shapes)]
        return contributions, offset

    def _shape(self, index) -> tuple[int, ...]:
        if index == -1:
            return tuple(self.x.shape[1:])
        return tuple(self.ibp[index][0].shape[1:])

    def crown_bounded(self, index) -> bool:
        """Whether node ``index`` gets CROWN bounds of its own: a layer that mixes its inputs
        (elementwise and shape-only layers take their input's bounds through interval
        arithmetic, which is exact for them), with no nonlinearity before it, and small enough."""
        if index == -1 or index in self.affine_in_input or self.nodes[index].kind != "linear":
            return False
        return type(self.nodes[index].layer).__name__ in MIXING and self.sizes[index] <= self.max_neurons

    def _pre_bounds(self, index):
        """Bounds of node ``index``'s output: interval arithmetic on its inputs' bounds
        (tightened where an earlier layer got CROWN bounds), intersected with CROWN's own
        bounds where :meth:`crown_bounded`."""
        ops = keras.ops
        if index in self.bounds:
            return self.bounds[index]
        if index == -1:
            return input_box(self.x, self.eps, self.norm)
        lower, upper = self.ibp[index]
        node = self.nodes[index]
        parts = [self._pre_bounds(i) for i in node.inputs]
        if any(i in self.tightened for i in node.inputs):  # else interval arithmetic gives IBP's bounds again
            tight_lower, tight_upper = interval_step(node, parts, self.eps, self.norm, {}, index)
            lower, upper = ops.maximum(lower, tight_lower), ops.minimum(upper, tight_upper)
            self.tightened.add(index)
        if self.crown_bounded(index):
            self.tightened.add(index)
            shape = tuple(lower.shape[1:])
            neurons = self.sizes[index]
            batch = ops.shape(self.x)[0]
            eye = np.eye(neurons, dtype=np.float32).reshape((1, neurons) + shape)
            spec = ops.broadcast_to(ops.convert_to_tensor(np.concatenate([eye, -eye], axis=1)), (batch, 2 * neurons) + shape)
            both = self.lower_bound(index, spec)
            crown_lower = ops.reshape(both[:, :neurons], ops.shape(lower))
            crown_upper = -ops.reshape(both[:, neurons:], ops.shape(upper))
            lower, upper = ops.maximum(lower, crown_lower), ops.minimum(upper, crown_upper)
        self.bounds[index] = (lower, upper)
        return lower, upper

    def relu_relaxation(self, index):
        """The linear bounds of ReLU node ``index`` from its input's bounds: (unstable,
        lower slope, upper slope, upper intercept); CROWN's adaptive lower slope is 1 where
        the upper bound outweighs the lower, else 0 (the lower intercept is 0)."""
        ops = keras.ops
        lower, upper = self._pre_bounds(self.nodes[index].inputs[0])
        unstable = (lower < 0) & (upper > 0)
        active = ops.cast(lower >= 0, lower.dtype)
        slope_up = ops.where(unstable, upper / ops.maximum(upper - lower, 1e-12), active)
        intercept_up = ops.where(unstable, -slope_up * lower, 0.0)
        slope_low = ops.where(unstable, ops.cast(upper > -lower, lower.dtype), active)
        return unstable, slope_low, slope_up, intercept_up

    def _relaxation_backward(self, k, node, lam, slopes=None):
        ops = keras.ops
        lower, upper = self._pre_bounds(node.inputs[0])
        if node.kind == "maxpool":
            return self._maxpool_backward(k, node, lam, slopes)
        if node.kind == "relu":
            unstable, slope_low, slope_up, intercept_up = self.relu_relaxation(k)
            intercept_low = ops.zeros_like(lower)
        else:  # softplus: convex; chord above, tangent at the midpoint below
            alpha = node.alpha
            width = upper - lower
            f_l, f_u = softplus(lower, alpha), softplus(upper, alpha)
            slope_up = ops.where(width > 1e-9, (f_u - f_l) / ops.maximum(width, 1e-9), ops.sigmoid(alpha * lower))
            intercept_up = f_l - slope_up * lower
            middle = (lower + upper) / 2
            slope_low = ops.sigmoid(alpha * middle)
            intercept_low = softplus(middle, alpha) - slope_low * middle
        slope_low = slope_low[:, None]
        if slopes is not None:  # optimized lower slopes of the unstable ReLUs, per spec row
            slope_low = ops.where(unstable[:, None], slopes, slope_low)
        positive = ops.maximum(lam, 0.0)
        negative = ops.minimum(lam, 0.0)
        # for a lower bound: positive coefficients take the lower line, negative the upper
        new = positive * slope_low + negative * slope_up[:, None]
        batch, size = ops.shape(lam)[0], lam.shape[1]
        offset = ops.sum(ops.reshape(positive * intercept_low[:, None] + negative * intercept_up[:, None], (batch, size, -1)), axis=2)
        return [new], offset

    def pool_lines(self, index):
        """The linear bounds of max-pool node ``index`` from its input's bounds, as DeepPoly
        and auto_LiRPA: below, the window's input with the largest lower bound (``chosen``,
        1 there, 0 elsewhere; None where windows overlap); above, that same input where its
        lower bound is at least every other input's upper bound (``exact``: the max is that
        input), else the window's largest upper bound, a constant (``out_upper``)."""
        ops = keras.ops
        if index in self.pools:
            return self.pools[index]
        pool = self._pool(self.nodes[index].layer)
        lower, upper = self._pre_bounds(self.nodes[index].inputs[0])
        out_lower, out_upper = pool(lower), pool(upper)
        chosen = None
        exact = ops.zeros_like(out_lower)
        if self.pool_windows_disjoint(index):
            chosen, _ = backend.grad(lambda z: (ops.sum(pool(z)), None), lower, self.differentiable)
            others = pool(ops.where(chosen > 0.5, -1e30, upper))
            exact = ops.cast(out_lower >= others, lower.dtype)
        self.pools[index] = (chosen, exact, out_upper)
        return self.pools[index]

    def pool_windows_disjoint(self, index) -> bool:
        """Whether max-pool node ``index``'s windows do not overlap (stride = pool size)."""
        layer = self.nodes[index].layer
        return tuple(layer.strides) == tuple(layer.pool_size)

    def pool_weights_apply(self, index) -> bool:
        """Whether max-pool node ``index`` takes optimized lower lines (alpha-CROWN): disjoint
        windows that tile the input from its corner (``valid`` padding, or sizes divisible
        by the pool)."""
        layer = self.nodes[index].layer
        height, width = self._shape(self.nodes[index].inputs[0])[:2]
        pool_h, pool_w = layer.pool_size
        return self.pool_windows_disjoint(index) and (
            layer.padding == "valid" or (height % pool_h == 0 and width % pool_w == 0))

    @staticmethod
    def _pool(layer):
        return lambda z: keras.ops.max_pool(z, layer.pool_size, layer.strides, layer.padding, data_format="channels_last")

    def _spread(self, index, t):
        """Each window's value (..., out_h, out_w, c) copied onto its inputs (..., h, w, c),
        0 on inputs in no window; for :meth:`pool_weights_apply` nodes."""
        ops = keras.ops
        pool_h, pool_w = self.nodes[index].layer.pool_size
        height, width = self._shape(self.nodes[index].inputs[0])[:2]
        t = ops.repeat(ops.repeat(t, pool_h, axis=-3), pool_w, axis=-2)
        pad = [(0, 0)] * (len(t.shape) - 3) + [(0, height - t.shape[-3]), (0, width - t.shape[-2]), (0, 0)]
        return ops.pad(t, pad)

    def pool_simplex(self, index, raw):
        """Lower-line weights of max-pool node ``index`` from nonnegative ``raw`` weights
        (B, S, *input shape): normalized to sum 1 over each window (any such weights give a
        sound lower line: max(z) >= sum_i w_i z_i); uniform where a window's weights are all 0."""
        ops = keras.ops
        layer = self.nodes[index].layer
        shape = self._shape(self.nodes[index].inputs[0])
        area = layer.pool_size[0] * layer.pool_size[1]
        flat = ops.reshape(raw, (-1,) + shape)
        sums = ops.average_pool(flat, layer.pool_size, layer.strides, "valid", data_format="channels_last") * area
        total = ops.reshape(self._spread(index, sums), ops.shape(raw))
        positive = total > 0
        # the divisor is 1 where the window is all 0: a tiny one would make the gradient NaN
        return ops.where(positive, raw / ops.where(positive, total, 1.0), 1.0 / area)

    def _maxpool_backward(self, k, node, lam, weights=None):
        """Back through max-pool node ``k`` with :meth:`pool_lines`; ``weights`` (alpha-CROWN):
        raw lower-line weights for the positive coefficients (see :meth:`pool_simplex`)."""
        ops = keras.ops
        chosen, exact, out_upper = self.pool_lines(k)
        batch, size = ops.shape(lam)[0], lam.shape[1]
        positive = ops.maximum(lam, 0.0)
        negative = ops.minimum(lam, 0.0)
        exact = exact[:, None]
        if weights is not None:  # windows tile the input: each window's coefficient copied onto its inputs, weighted
            new = self._spread(k, positive) * self.pool_simplex(k, weights) + self._spread(k, negative * exact) * chosen[:, None]
        else:  # the coefficients routed to the chosen inputs: the gradient of max-pool at `lower`
            pool = self._pool(node.layer)
            lower = self._pre_bounds(node.inputs[0])[0]
            folded = ops.reshape(positive + negative * exact, (-1,) + tuple(out_upper.shape[1:]))
            tiled = ops.repeat(lower, size, axis=0)
            back, _ = backend.grad(lambda z: (ops.sum(pool(z) * folded), None), tiled, self.differentiable)
            new = ops.reshape(back, (batch, size) + tuple(lower.shape[1:]))
        offset = ops.sum(ops.reshape(negative * (1 - exact) * out_upper[:, None], (batch, size, -1)), axis=2)
        return [new], offset

    def _input_bound(self, lam):
        """min over the input set of lam . z, set = (ball around x) intersected with [0, 1]."""
        ops = keras.ops
        x, eps, norm = self.x, self.eps, self.norm
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


class AlphaCrown(Crown):
    """alpha-CROWN (Xu et al. 2021): CROWN whose margins' backward pass uses optimized lower
    lines, one per example, margin and neuron, by projected gradient ascent (Adam) on the
    margins' lower bounds: the slopes of the unstable ReLUs, and (as auto_LiRPA) the
    max-pool windows' convex weights of their inputs (with a smaller step,
    ``pool_learning_rate``); the intermediate layers keep CROWN's
    bounds (as auto_LiRPA's default, ``fix_interm_bounds``).

    Every slope in [0, 1] and every convex weighting gives a sound bound, so each margin
    keeps the best of its iterates; the first iterate is CROWN's own choice, so the result
    is never looser than CROWN.  The ascent stops early once every example's margins are all positive."""

    def __init__(self, nodes, max_neurons: int = 2048, iterations: int = 20, learning_rate: float = 0.5,
                 decay: float = 0.98, pool_learning_rate: float = 0.05):
        # differentiable: the slopes' gradient passes the transposes and max-pool routings
        super().__init__(nodes, max_neurons, differentiable=True)
        self.iterations, self.learning_rate, self.decay = iterations, learning_rate, decay
        self.pool_learning_rate = pool_learning_rate

    def margins(self, x, C, eps, norm):
        ops = keras.ops
        self.prepare(x, C, eps, norm)
        final = len(self.nodes) - 1
        rows = (ops.shape(x)[0], C.shape[1])
        start = {}  # CROWN's choices: ReLU lower slopes, max-pool windows' chosen inputs
        for k, node in enumerate(self.nodes):  # every intermediate bound now, outside the loop: fixed from here on
            if node.kind in ("relu", "softplus", "maxpool"):
                self._pre_bounds(node.inputs[0])
            if node.kind == "relu":
                start[k] = self.relu_relaxation(k)[1]
            elif node.kind == "maxpool" and self.pool_learning_rate > 0 and self.pool_weights_apply(k):
                start[k] = self.pool_lines(k)[0]
        if not start:  # nothing to optimize: CROWN
            return self.lower_bound(final, C)
        optimized = list(start)
        scales = [self.pool_learning_rate / self.learning_rate if self.nodes[k].kind == "maxpool" else 1.0 for k in optimized]
        start = [ops.broadcast_to(start[k][:, None], rows + tuple(start[k].shape[1:])) for k in optimized]

        def bound(slopes):
            margins = self.lower_bound(final, C, dict(zip(optimized, slopes)))
            return ops.sum(margins), margins

        def body(i, slopes, first, second, best):
            grads, margins = backend.grad(bound, list(slopes))
            best = ops.maximum(best, margins)
            rate = self.learning_rate * ops.power(self.decay, ops.cast(i, x.dtype))
            steps = [adam_direction(g, m, v, ops.cast(i + 1, x.dtype)) for g, m, v in zip(grads, first, second)]
            slopes = [ops.clip(a + rate * scale * d, 0.0, 1.0) for a, scale, (d, _, _) in zip(slopes, scales, steps)]
            first, second = [m for _, m, _ in steps], [v for _, _, v in steps]
            return i + 1, slopes, first, second, best

        def going(i, slopes, first, second, best):
            return ops.logical_and(i < self.iterations, ops.any(ops.min(best, axis=1) <= 0))

        zeros = [ops.zeros_like(a) for a in start]
        init = (0, start, zeros, zeros, ops.full(rows, -np.inf))
        return backend.while_loop(going, body, init)[-1]


def node_sizes(nodes) -> dict[int, int]:
    """Neurons in each node's output (-1: the input)."""
    first = nodes[0].layer
    sizes = {-1: int(np.prod((first.input[0] if isinstance(first.input, (list, tuple)) else first.input).shape[1:]))}
    for k, node in enumerate(nodes):
        if node.layer is not None and hasattr(node.layer, "output"):
            sizes[k] = int(np.prod(node.layer.output.shape[1:]))
        else:  # an activation fused into the layer before it
            sizes[k] = sizes[node.inputs[0]]
    return sizes


# Working tensors alive at once per element of the widest backward pass (the coefficients,
# their positive and negative parts, the relaxed ones, a transpose's probe and gradient,
# and what the framework keeps between operations): measured on TensorFlow, the most
# demanding backend (a CNN on 8x8 inputs: 18 per element), with a margin.
LIVE_COPIES = 24


def bytes_per_example(nodes, classes: int, crown_neurons: int | None, optimized: bool = False) -> int:
    """Memory one example needs in a bound computation: IBP (``crown_neurons=None``) folds
    the classes' margins into the widest layer; CROWN propagates 2n rows back through
    every layer before each of its CROWN-bounded nodes (n neurons each), and the margins
    through all layers; optimized slopes (``optimized``, alpha-CROWN) keep every layer's
    coefficients of the margins' pass for the gradient."""
    sizes = node_sizes(nodes)
    widest = max(sizes.values())
    if crown_neurons is None:  # boxes of every layer, and the margins' weights on the logits layer's input
        return 4 * (8 * widest + 3 * classes * sizes[nodes[-1].inputs[0]])
    passes = [classes * (sum(sizes.values()) if optimized else widest)]
    crown = Crown(nodes, crown_neurons)
    for k in range(len(nodes) - 1):
        if crown.crown_bounded(k):
            passes.append(2 * sizes[k] * max(size for index, size in sizes.items() if index <= k))
    return 4 * LIVE_COPIES * max(passes)
