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

from advbench.lazy import keras, tf
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
    name = type(layer).__name__
    if name == "Dense":
        out = tf.tensordot(inputs[0], layer.kernel, axes=[[-1], [0]])
        return out + layer.bias if with_bias and layer.use_bias else out
    if name == "Conv2D":
        out = tf.nn.conv2d(inputs[0], layer.kernel, strides=layer.strides, padding=layer.padding.upper(), dilations=layer.dilation_rate)
        return out + layer.bias if with_bias and layer.use_bias else out
    if name == "BatchNormalization":
        scale = layer.gamma / tf.sqrt(layer.moving_variance + layer.epsilon) if layer.scale else 1.0 / tf.sqrt(layer.moving_variance + layer.epsilon)
        out = inputs[0] * scale
        if with_bias:
            out = out - layer.moving_mean * scale + (layer.beta if layer.center else 0.0)
        return out
    if name == "Add":
        return tf.add_n(inputs)
    if name in ("Dropout",):
        return inputs[0]
    if name == "Rescaling":
        out = inputs[0] * layer.scale
        return out + layer.offset if with_bias else out
    return layer(inputs[0], training=False) if len(inputs) == 1 else layer(inputs, training=False)


def softplus(z, alpha):
    return tf.nn.softplus(alpha * z) / alpha


# -- interval bound propagation -------------------------------------------------------------


def input_box(x, eps, norm):
    """The box [x - eps, x + eps] intersected with [0, 1] (for l2 the ball's bounding box)."""
    e = tf.reshape(eps, [-1] + [1] * (len(x.shape) - 1))
    return tf.maximum(x - e, 0.0), tf.minimum(x + e, 1.0)


def ibp(nodes, x, eps, norm, until=None):
    """Interval bounds (lower, upper) of every node's output; stops after node ``until``.

    For an l2 ball, the first affine layer is bounded over the ball as well as over its
    bounding box, and the intervals intersected (both contain the true set)."""
    lower_in, upper_in = input_box(x, eps, norm)
    bounds: list = []
    raw = {-1: x}  # the input itself at nodes that only reshape it

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
                lower, upper = tf.maximum(lower, ball_mid - ball_spread), tf.minimum(upper, ball_mid + ball_spread)
            bounds.append((lower, upper))
        elif node.kind == "linear" and name == "BatchNormalization":
            lo, up = parts[0]
            a, b = linear_apply(node.layer, [lo]), linear_apply(node.layer, [up])
            bounds.append((tf.minimum(a, b), tf.maximum(a, b)))
        elif node.kind == "linear" and name == "Add":
            bounds.append((tf.add_n([p[0] for p in parts]), tf.add_n([p[1] for p in parts])))
        elif node.kind == "linear":  # non-decreasing linear maps: flatten, reshape, averages, padding, dropout
            bounds.append((linear_apply(node.layer, [parts[0][0]]), linear_apply(node.layer, [parts[0][1]])))
            if name in ("Flatten", "Reshape", "Dropout") and node.inputs[0] in raw:
                raw[k] = linear_apply(node.layer, [raw[node.inputs[0]]])
        elif node.kind == "relu":
            bounds.append((tf.nn.relu(parts[0][0]), tf.nn.relu(parts[0][1])))
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
        return tf.tensordot(radius[0], tf.abs(layer.kernel), axes=[[-1], [0]])
    if name == "Conv2D":
        return tf.nn.conv2d(radius[0], tf.abs(layer.kernel), strides=layer.strides, padding=layer.padding.upper(), dilations=layer.dilation_rate)
    return radius[0] * abs(layer.scale)  # Rescaling


def _l2_spread(layer, x, eps):
    """Over an l2 ball of radius eps: eps times the l2 norm of each output's weights (for a
    convolution, of the whole kernel: an upper bound at the borders)."""
    name = type(layer).__name__
    e = tf.reshape(eps, [-1] + [1] * (len(x.shape) - 1))
    if name == "Dense":
        return tf.sqrt(tf.reduce_sum(tf.square(layer.kernel), axis=0)) * e
    if name == "Conv2D":
        return tf.sqrt(tf.reduce_sum(tf.square(layer.kernel), axis=[0, 1, 2])) * e
    return abs(layer.scale) * e


def margin_matrix(labels, classes):
    """C with rows e_y - e_j for j != y: (batch, classes - 1, classes)."""
    eye = np.eye(classes, dtype=np.float32)
    labels = np.asarray(labels)
    full = eye[labels][:, None, :] - eye[None, :, :]  # (B, K, K): row j is e_y - e_j
    keep = eye[labels] == 0
    return tf.constant(full[keep].reshape(len(labels), classes - 1, classes))


def ibp_margins(nodes, x, C, eps, norm):
    """Lower bounds of f_y - f_j (rows of ``C``), the last layer folded into the margins."""
    bounds = ibp(nodes, x, eps, norm, until=len(nodes) - 2)
    head = nodes[-1].layer
    lo, up = bounds[nodes[-1].inputs[0]] if nodes[-1].inputs[0] != -1 else input_box(x, eps, norm)
    W = tf.einsum("bsk,dk->bsd", C, head.kernel)
    bias = tf.einsum("bsk,k->bs", C, head.bias) if head.use_bias else 0.0
    center, radius = (lo + up) / 2, (up - lo) / 2
    flat_c = tf.reshape(center, [tf.shape(x)[0], -1])
    flat_r = tf.reshape(radius, [tf.shape(x)[0], -1])
    return tf.einsum("bsd,bd->bs", W, flat_c) - tf.einsum("bsd,bd->bs", tf.abs(W), flat_r) + bias


# -- CROWN -------------------------------------------------------------------------------


class Crown:
    """Backward linear bound propagation with ReLU/softplus relaxations; intermediate
    bounds by CROWN where a layer has at most ``max_neurons`` neurons, IBP otherwise
    (both intersected)."""

    def __init__(self, nodes, max_neurons: int = 2048):
        self.nodes = nodes
        self.max_neurons = max_neurons
        # Nodes with no nonlinearity between them and the input: IBP is exact there already.
        self.affine_in_input = set()
        for k, node in enumerate(nodes):
            if node.kind in ("linear", "identity") and all(i == -1 or i in self.affine_in_input for i in node.inputs):
                self.affine_in_input.add(k)

    def margins(self, x, C, eps, norm):
        """Lower bounds of f_y - f_j (rows of ``C``), shape (batch, classes - 1)."""
        self.x, self.eps, self.norm = x, eps, norm
        self.bounds = {}
        self.ibp = ibp(self.nodes, x, eps, norm, until=len(self.nodes) - 2)
        return self.lower_bound(len(self.nodes) - 1, C)

    def lower_bound(self, node_index, spec):
        """Lower bound of spec . (output of node ``node_index``); spec (B, S, *shape)."""
        batch = tf.shape(self.x)[0]
        specs = {node_index: spec}
        constant = tf.zeros(tf.shape(spec)[:2])
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
        layer = node.layer
        shape = tf.shape(lam)
        batch, size = shape[0], shape[1]
        folded = tf.reshape(lam, tf.concat([[batch * size], shape[2:]], 0))
        inputs = node.inputs
        in_shapes = [self._shape(i) for i in inputs]
        zeros = [tf.zeros(tf.concat([[1], s], 0)) for s in in_shapes]
        offset_out = linear_apply(layer, zeros)  # the layer's constant term, (1, *out)
        offset = tf.reduce_sum(tf.reshape(lam, [batch, size, -1]) * tf.reshape(offset_out, [1, 1, -1]), axis=2)
        probes = [tf.zeros(tf.concat([[batch * size], s], 0)) for s in in_shapes]
        with tf.GradientTape() as tape:
            for p in probes:
                tape.watch(p)
            out = linear_apply(layer, probes, with_bias=False)
        grads = tape.gradient(out, probes, output_gradients=folded)
        grads = [tf.zeros_like(p) if g is None else g for g, p in zip(grads, probes)]
        contributions = [tf.reshape(g, tf.concat([[batch, size], s], 0)) for g, s in zip(grads, in_shapes)]
        return contributions, offset

    def _shape(self, index):
        if index == -1:
            return tf.shape(self.x)[1:]
        return tf.shape(self.ibp[index][0])[1:]

    def _pre_bounds(self, index):
        """Bounds of node ``index``'s output: IBP intersected with CROWN when small enough."""
        if index in self.bounds:
            return self.bounds[index]
        lower, upper = self.ibp[index] if index != -1 else input_box(self.x, self.eps, self.norm)
        neurons = int(np.prod(lower.shape[1:]))
        if index != -1 and index not in self.affine_in_input and neurons <= self.max_neurons:
            batch = tf.shape(self.x)[0]
            eye = tf.reshape(tf.eye(neurons), [1, neurons] + list(lower.shape[1:]))
            spec = tf.tile(tf.concat([eye, -eye], axis=1), [batch] + [1] * (len(lower.shape) ))
            both = self.lower_bound(index, spec)
            crown_lower = tf.reshape(both[:, :neurons], tf.shape(lower))
            crown_upper = -tf.reshape(both[:, neurons:], tf.shape(upper))
            lower, upper = tf.maximum(lower, crown_lower), tf.minimum(upper, crown_upper)
        self.bounds[index] = (lower, upper)
        return lower, upper

    def _relaxation_backward(self, k, node, lam):
        lower, upper = self._pre_bounds(node.inputs[0])
        if node.kind == "maxpool":
            return self._maxpool_backward(node, lam, lower, upper)
        if node.kind == "relu":
            unstable = (lower < 0) & (upper > 0)
            slope_up = tf.where(unstable, upper / tf.maximum(upper - lower, 1e-12), tf.cast(lower >= 0, lower.dtype))
            intercept_up = tf.where(unstable, -slope_up * lower, 0.0)
            slope_low = tf.where(unstable, tf.cast(upper > -lower, lower.dtype), tf.cast(lower >= 0, lower.dtype))
            intercept_low = tf.zeros_like(lower)
        else:  # softplus: convex; chord above, tangent at the midpoint below
            alpha = node.alpha
            width = upper - lower
            f_l, f_u = softplus(lower, alpha), softplus(upper, alpha)
            slope_up = tf.where(width > 1e-9, (f_u - f_l) / tf.maximum(width, 1e-9), tf.sigmoid(alpha * lower))
            intercept_up = f_l - slope_up * lower
            middle = (lower + upper) / 2
            slope_low = tf.sigmoid(alpha * middle)
            intercept_low = softplus(middle, alpha) - slope_low * middle
        positive = tf.maximum(lam, 0.0)
        negative = tf.minimum(lam, 0.0)
        # for a lower bound: positive coefficients take the lower line, negative the upper
        new = positive * slope_low[:, None] + negative * slope_up[:, None]
        batch, size = tf.shape(lam)[0], tf.shape(lam)[1]
        offset = tf.reduce_sum(tf.reshape(positive * intercept_low[:, None] + negative * intercept_up[:, None], [batch, size, -1]), axis=2)
        return [new], offset

    def _maxpool_backward(self, node, lam, lower, upper):
        """Sound linear bounds of max-pooling: below by the window's input with the
        largest lower bound, above by the constant largest upper bound of the window."""
        layer = node.layer
        pool, strides, padding = layer.pool_size, layer.strides, layer.padding.upper()
        batch, size = tf.shape(lam)[0], tf.shape(lam)[1]
        out_upper = tf.nn.max_pool2d(upper, pool, strides, padding)
        positive = tf.maximum(lam, 0.0)
        negative = tf.minimum(lam, 0.0)
        # the input attaining each window's largest lower bound: the gradient of max-pool at `lower`
        folded = tf.reshape(positive, tf.concat([[batch * size], tf.shape(out_upper)[1:]], 0))
        tiled = tf.repeat(lower, size, axis=0)
        with tf.GradientTape() as tape:
            tape.watch(tiled)
            pooled_tiled = tf.nn.max_pool2d(tiled, pool, strides, padding)
        back = tape.gradient(pooled_tiled, tiled, output_gradients=folded)
        new = tf.reshape(back, tf.concat([[batch, size], tf.shape(lower)[1:]], 0))
        offset = tf.reduce_sum(tf.reshape(negative * out_upper[:, None], [batch, size, -1]), axis=2)
        return [new], offset

    def _input_bound(self, lam):
        """min over the input set of lam . z, set = (ball around x) intersected with [0, 1]."""
        x, eps, norm = self.x, self.eps, self.norm
        batch, size = tf.shape(lam)[0], tf.shape(lam)[1]
        flat = tf.reshape(lam, [batch, size, -1])
        lo, up = input_box(x, eps, norm)
        lo, up = tf.reshape(lo, [batch, 1, -1]), tf.reshape(up, [batch, 1, -1])
        box = tf.reduce_sum(tf.minimum(flat * lo, flat * up), axis=2)
        if norm == "linf":
            return box
        center = tf.reduce_sum(flat * tf.reshape(x, [batch, 1, -1]), axis=2)
        ball = center - tf.reshape(eps, [-1, 1]) * tf.sqrt(tf.reduce_sum(tf.square(flat), axis=2))
        return tf.maximum(box, ball)


def largest_layer(nodes, x_shape) -> int:
    """Neurons in the largest layer output (for sizing batches to memory)."""
    sizes = [int(np.prod(x_shape))]
    for node in nodes:
        if node.layer is not None and hasattr(node.layer, "output"):
            sizes.append(int(np.prod(node.layer.output.shape[1:])))
    return max(sizes)
