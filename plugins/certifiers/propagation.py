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
from advbench.lazy import keras
from advbench.structure import UnsupportedModel, activation_name

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
        parts = [get(i) for i in node.inputs]
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
            bounds.append((lower, upper))
        elif node.kind == "linear" and name == "BatchNormalization":
            lo, up = parts[0]
            a, b = linear_apply(node.layer, [lo]), linear_apply(node.layer, [up])
            bounds.append((keras.ops.minimum(a, b), keras.ops.maximum(a, b)))
        elif node.kind == "linear" and name == "Add":
            bounds.append((_sum([p[0] for p in parts]), _sum([p[1] for p in parts])))
        elif node.kind == "linear":  # non-decreasing linear maps: flatten, reshape, averages, padding, dropout
            bounds.append((linear_apply(node.layer, [parts[0][0]]), linear_apply(node.layer, [parts[0][1]])))
            if name in ("Flatten", "Reshape", "Dropout") and node.inputs[0] in raw:
                raw[k] = linear_apply(node.layer, [raw[node.inputs[0]]])
        elif node.kind == "relu":
            bounds.append((keras.ops.relu(parts[0][0]), keras.ops.relu(parts[0][1])))
        elif node.kind == "softplus":
            bounds.append((softplus(parts[0][0], node.alpha), softplus(parts[0][1], node.alpha)))
        elif node.kind == "identity":
            bounds.append(parts[0])
        elif node.kind == "maxpool":
            bounds.append((node.layer(parts[0][0]), node.layer(parts[0][1])))
        if until is not None and k == until:
            break
    return bounds


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
        # Nodes with no nonlinearity between them and the input: IBP is exact there already.
        self.affine_in_input = set()
        for k, node in enumerate(nodes):
            if node.kind in ("linear", "identity") and all(i == -1 or i in self.affine_in_input for i in node.inputs):
                self.affine_in_input.add(k)

    def margins(self, x, C, eps, norm):
        """Lower bounds of f_y - f_j (rows of ``C``), shape (batch, classes - 1)."""
        self.x, self.eps, self.norm, self.C = x, eps, norm, C
        self.bounds = {}
        self.raw = {}
        self.ibp = ibp(self.nodes, x, eps, norm, until=len(self.nodes) - 2, raw=self.raw)
        return self.lower_bound(len(self.nodes) - 1, C)

    def ibp_margins(self):
        """IBP's lower bounds of the margins of the last :meth:`margins` call, from the
        interval bounds it computed already (CROWN-IBP training blends the two)."""
        return fold_head(self.nodes, self.x, self.C, self.eps, self.norm, self.ibp, self.raw)

    def lower_bound(self, node_index, spec):
        """Lower bound of spec . (output of node ``node_index``); spec (B, S, *shape)."""
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
                contributions, offset = self._relaxation_backward(k, node, lam)
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

    def _pre_bounds(self, index):
        """Bounds of node ``index``'s output: IBP intersected with CROWN when small enough."""
        ops = keras.ops
        if index in self.bounds:
            return self.bounds[index]
        lower, upper = self.ibp[index] if index != -1 else input_box(self.x, self.eps, self.norm)
        shape = tuple(lower.shape[1:])
        neurons = int(np.prod(shape))
        if index != -1 and index not in self.affine_in_input and neurons <= self.max_neurons:
            batch = ops.shape(self.x)[0]
            eye = np.eye(neurons, dtype=np.float32).reshape((1, neurons) + shape)
            spec = ops.broadcast_to(ops.convert_to_tensor(np.concatenate([eye, -eye], axis=1)), (batch, 2 * neurons) + shape)
            both = self.lower_bound(index, spec)
            crown_lower = ops.reshape(both[:, :neurons], ops.shape(lower))
            crown_upper = -ops.reshape(both[:, neurons:], ops.shape(upper))
            lower, upper = ops.maximum(lower, crown_lower), ops.minimum(upper, crown_upper)
        self.bounds[index] = (lower, upper)
        return lower, upper

    def _relaxation_backward(self, k, node, lam):
        ops = keras.ops
        lower, upper = self._pre_bounds(node.inputs[0])
        if node.kind == "maxpool":
            return self._maxpool_backward(node, lam, lower, upper)
        if node.kind == "relu":
            unstable = (lower < 0) & (upper > 0)
            active = ops.cast(lower >= 0, lower.dtype)
            slope_up = ops.where(unstable, upper / ops.maximum(upper - lower, 1e-12), active)
            intercept_up = ops.where(unstable, -slope_up * lower, 0.0)
            slope_low = ops.where(unstable, ops.cast(upper > -lower, lower.dtype), active)
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
        positive = ops.maximum(lam, 0.0)
        negative = ops.minimum(lam, 0.0)
        # for a lower bound: positive coefficients take the lower line, negative the upper
        new = positive * slope_low[:, None] + negative * slope_up[:, None]
        batch, size = ops.shape(lam)[0], lam.shape[1]
        offset = ops.sum(ops.reshape(positive * intercept_low[:, None] + negative * intercept_up[:, None], (batch, size, -1)), axis=2)
        return [new], offset

    def _maxpool_backward(self, node, lam, lower, upper):
        """Sound linear bounds of max-pooling: below by the window's input with the
        largest lower bound, above by the constant largest upper bound of the window."""
        ops = keras.ops
        layer = node.layer

        def pool(z):
            return ops.max_pool(z, layer.pool_size, layer.strides, layer.padding, data_format="channels_last")

        batch, size = ops.shape(lam)[0], lam.shape[1]
        out_upper = pool(upper)
        positive = ops.maximum(lam, 0.0)
        negative = ops.minimum(lam, 0.0)
        # the input attaining each window's largest lower bound: the gradient of max-pool at `lower`
        folded = ops.reshape(positive, (-1,) + tuple(out_upper.shape[1:]))
        tiled = ops.repeat(lower, size, axis=0)
        back, _ = backend.grad(lambda z: (ops.sum(pool(z) * folded), None), tiled, self.differentiable)
        new = ops.reshape(back, (batch, size) + tuple(lower.shape[1:]))
        offset = ops.sum(ops.reshape(negative * out_upper[:, None], (batch, size, -1)), axis=2)
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


def node_sizes(nodes, x_shape) -> dict[int, int]:
    """Neurons in each node's output (-1: the input)."""
    sizes = {-1: int(np.prod(x_shape))}
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


def bytes_per_example(nodes, x_shape, classes: int, crown_neurons: int | None) -> int:
    """Memory one example needs in a bound computation: IBP (``crown_neurons=None``) folds
    the classes' margins into the widest layer; CROWN propagates 2n rows back through
    every layer before each of its CROWN-bounded nodes (n neurons each), and the margins
    through all layers."""
    sizes = node_sizes(nodes, x_shape)
    widest = max(sizes.values())
    if crown_neurons is None:  # boxes of every layer, and the margins' weights on the logits layer's input
        return 4 * (8 * widest + 3 * classes * sizes[nodes[-1].inputs[0]])
    passes = [classes * widest]
    affine = Crown(nodes).affine_in_input
    for node in nodes:
        if node.kind in ("relu", "softplus", "maxpool"):
            source = node.inputs[0]
            if source != -1 and source not in affine and sizes[source] <= crown_neurons:
                passes.append(2 * sizes[source] * max(size for index, size in sizes.items() if index <= source))
    return 4 * LIVE_COPIES * max(passes)
