"""The bound rules of every layer kind, one class per operator (as auto_LiRPA's
``operators/``): how its output is computed from its inputs (:meth:`Operator.forward`,
for affine operators), how interval bounds pass through it (:meth:`Operator.interval`)
and how CROWN's linear bounds pass back through it (:meth:`Operator.backward`).  The
graph walkers (:mod:`.interval`, :mod:`.crown`) know nothing of any operator; adding a
layer kind is one class (here, or in a plugin) and one :func:`.graph.register_bound_rule`.
"""

from __future__ import annotations

from advbench.kit import backend
from advbench.kit.bounds.sets import l2_norm
from advbench.lazy import keras


class Operator:
    """A node of the bound-propagation graph: ``layer`` (``None`` for an activation fused
    into the layer before it) applied to the outputs of the nodes ``inputs`` (-1: the
    model input)."""

    affine = False  # an affine map of its inputs (CROWN passes through it exactly)
    mixing = False  # an affine map whose outputs mix several inputs: CROWN bounds them (the others are exact in intervals)

    def __init__(self, layer, inputs: list[int]):
        self.layer = layer
        self.inputs = inputs

    def interval(self, parts, eps, norm, raw, k):
        """Interval bounds (lower, upper) of this node's output from its inputs' (``parts``).
        ``raw``: the nodes whose output is the model input itself, reshaped (index -1: x);
        this node ``k`` adds itself when it only reshapes."""
        raise NotImplementedError

    def backward(self, crown, k, lam, slopes=None):
        """Pass the linear bound ``lam . output`` of node ``k`` back to its inputs: returns
        the coefficients on each input and the constant, a lower bound's (``lam`` (B, S,
        *shape); ``slopes``: alpha-CROWN's optimized lower lines, see :class:`ReLU`)."""
        raise NotImplementedError


# -- affine operators ---------------------------------------------------------------------


class Affine(Operator):
    """An affine map of its inputs: CROWN passes back through it exactly, ``lam . (W z + b)
    = (W^T lam) . z + lam . b``, the transpose from the gradient of :meth:`forward` (so an
    affine operator needs no backward rule of its own)."""

    affine = True

    def forward(self, inputs, with_bias=True):
        """The layer's affine map of ``inputs``; ``with_bias=False`` drops the constant term."""
        return self.layer(inputs[0], training=False) if len(inputs) == 1 else self.layer(inputs, training=False)

    def interval(self, parts, eps, norm, raw, k):
        # a non-decreasing linear map (flatten, reshape, averages, padding, dropout)
        return self.forward([parts[0][0]]), self.forward([parts[0][1]])

    def backward(self, crown, k, lam, slopes=None):
        ops = keras.ops
        batch, size = ops.shape(lam)[0], lam.shape[1]
        out_shape = tuple(lam.shape[2:])
        folded = ops.reshape(lam, (-1,) + out_shape)
        in_shapes = [crown.shape(i) for i in self.inputs]
        zeros = [ops.zeros((1,) + s) for s in in_shapes]
        offset_out = self.forward(zeros)  # the layer's constant term, (1, *out)
        offset = ops.sum(ops.reshape(lam, (batch, size, -1)) * ops.reshape(offset_out, (1, 1, -1)), axis=2)
        probes = [ops.zeros((ops.shape(folded)[0],) + s) for s in in_shapes]
        grads, _ = backend.grad(
            lambda p: (ops.sum(self.forward(p, with_bias=False) * folded), None), probes, crown.differentiable
        )
        contributions = [ops.reshape(g, (batch, size) + s) for g, s in zip(grads, in_shapes)]
        return contributions, offset


class Reshape(Affine):
    """Flatten, Reshape and Dropout (the identity at inference): they move values only, so
    an l2 ball around x stays one around the reshaped x (``raw``)."""

    def forward(self, inputs, with_bias=True):
        if type(self.layer).__name__ == "Dropout":  # the identity at inference
            return inputs[0]
        return super().forward(inputs, with_bias)

    def interval(self, parts, eps, norm, raw, k):
        if self.inputs[0] in raw:
            raw[k] = self.forward([raw[self.inputs[0]]])
        return super().interval(parts, eps, norm, raw, k)


class Pooling(Affine):
    """Average pooling (local or global) and zero padding: non-decreasing linear maps;
    averages mix their inputs."""

    @property
    def mixing(self):
        return not isinstance(self.layer, keras.layers.ZeroPadding2D)


class _Weighted(Affine):
    """An affine map ``W z + b`` whose intervals come from the centre and radius of the input
    box (``W c +- |W| r``), and over an l2 ball around x from the ball itself (``W x +- eps
    ||W_i||_2``), the two intersected where the input is x itself."""

    def interval(self, parts, eps, norm, raw, k):
        center = [(lo + up) / 2 for lo, up in parts]
        radius = [(up - lo) / 2 for lo, up in parts]
        mid = self.forward(center)
        spread = self.absolute(radius)
        lower, upper = mid - spread, mid + spread
        if norm == "l2" and self.inputs[0] in raw:
            ball_mid = self.forward([raw[self.inputs[0]]])
            ball_spread = self.l2_spread(raw[self.inputs[0]], eps)
            lower, upper = keras.ops.maximum(lower, ball_mid - ball_spread), keras.ops.minimum(upper, ball_mid + ball_spread)
        return lower, upper

    def absolute(self, radius):
        """|W| applied to the radius (no constant term)."""
        raise NotImplementedError

    def l2_spread(self, x, eps):
        """Over an l2 ball of radius eps: eps times the l2 norm of each output's weights."""
        raise NotImplementedError


class Dense(_Weighted):
    mixing = True

    def forward(self, inputs, with_bias=True):
        out = keras.ops.tensordot(inputs[0], self.layer.kernel, axes=[[-1], [0]])
        return out + self.layer.bias if with_bias and self.layer.use_bias else out

    def absolute(self, radius):
        return keras.ops.tensordot(radius[0], keras.ops.abs(self.layer.kernel), axes=[[-1], [0]])

    def l2_spread(self, x, eps):
        e = keras.ops.reshape(eps, (-1,) + (1,) * (len(x.shape) - 1))
        return l2_norm(self.layer.kernel, axis=0) * e


class Conv2D(_Weighted):
    mixing = True

    def forward(self, inputs, with_bias=True):
        out = self._conv(inputs[0], self.layer.kernel)
        return out + self.layer.bias if with_bias and self.layer.use_bias else out

    def _conv(self, inputs, kernel):
        layer = self.layer
        return keras.ops.conv(
            inputs,
            kernel,
            strides=layer.strides,
            padding=layer.padding,
            data_format="channels_last",
            dilation_rate=layer.dilation_rate,
        )

    def absolute(self, radius):
        return self._conv(radius[0], keras.ops.abs(self.layer.kernel))

    def l2_spread(self, x, eps):
        # of the whole kernel: an upper bound at the borders
        e = keras.ops.reshape(eps, (-1,) + (1,) * (len(x.shape) - 1))
        return l2_norm(self.layer.kernel, axis=(0, 1, 2)) * e


class Rescaling(_Weighted):
    def forward(self, inputs, with_bias=True):
        out = inputs[0] * self.layer.scale
        return out + self.layer.offset if with_bias else out

    def absolute(self, radius):
        return radius[0] * abs(self.layer.scale)

    def l2_spread(self, x, eps):
        e = keras.ops.reshape(eps, (-1,) + (1,) * (len(x.shape) - 1))
        return abs(self.layer.scale) * e


class BatchNormalization(Affine):
    """Batch normalization in inference mode: a per-channel affine map."""

    def forward(self, inputs, with_bias=True):
        ops = keras.ops
        layer = self.layer
        scale = 1.0 / ops.sqrt(layer.moving_variance + layer.epsilon)
        if layer.scale:
            scale = layer.gamma * scale
        out = inputs[0] * scale
        if with_bias:
            out = out - layer.moving_mean * scale + (layer.beta if layer.center else 0.0)
        return out

    def interval(self, parts, eps, norm, raw, k):
        lo, up = parts[0]
        a, b = self.forward([lo]), self.forward([up])
        return keras.ops.minimum(a, b), keras.ops.maximum(a, b)


class Add(Affine):
    """The sum of its inputs (a residual connection)."""

    mixing = True

    def forward(self, inputs, with_bias=True):
        return _sum(inputs)

    def interval(self, parts, eps, norm, raw, k):
        return _sum([p[0] for p in parts]), _sum([p[1] for p in parts])


def _sum(tensors):
    total = tensors[0]
    for tensor in tensors[1:]:
        total = total + tensor
    return total


class Identity(Affine):
    """A linear activation: passes bounds through unchanged."""

    def interval(self, parts, eps, norm, raw, k):
        return parts[0]

    def backward(self, crown, k, lam, slopes=None):
        return [lam], None


# -- nonlinear operators -------------------------------------------------------------------


class Relaxed(Operator):
    """An elementwise nonlinearity bounded by two lines per neuron, from its input's bounds:
    a lower bound takes the lower line where its coefficient is positive, the upper line
    where it is negative."""

    def lines(self, crown, k):
        """(unstable, lower slope, lower intercept, upper slope, upper intercept) of node ``k``;
        ``unstable``: where alpha-CROWN may choose the lower slope (None: nowhere)."""
        raise NotImplementedError

    def backward(self, crown, k, lam, slopes=None):
        ops = keras.ops
        unstable, slope_low, intercept_low, slope_up, intercept_up = self.lines(crown, k)
        slope_low = slope_low[:, None]
        if slopes is not None:  # optimized lower slopes of the unstable ReLUs, per spec row
            slope_low = ops.where(unstable[:, None], slopes, slope_low)
        positive = ops.maximum(lam, 0.0)
        negative = ops.minimum(lam, 0.0)
        # for a lower bound: positive coefficients take the lower line, negative the upper
        new = positive * slope_low + negative * slope_up[:, None]
        batch, size = ops.shape(lam)[0], lam.shape[1]
        offset = ops.sum(
            ops.reshape(positive * intercept_low[:, None] + negative * intercept_up[:, None], (batch, size, -1)), axis=2
        )
        return [new], offset


class ReLU(Relaxed):
    """max(z, 0): CROWN's relaxation of each unstable neuron (lower bound < 0 < upper):
    above, the chord; below, a line through the origin of slope in [0, 1], CROWN's adaptive
    choice (1 where the upper bound outweighs the lower, else 0) or alpha-CROWN's optimized one."""

    def interval(self, parts, eps, norm, raw, k):
        return keras.ops.relu(parts[0][0]), keras.ops.relu(parts[0][1])

    def relaxation(self, crown, k):
        """(unstable, lower slope, upper slope, upper intercept) of node ``k`` from its
        input's bounds (the lower intercept is 0)."""
        ops = keras.ops
        lower, upper = crown.pre_bounds(self.inputs[0])
        unstable = (lower < 0) & (upper > 0)
        active = ops.cast(lower >= 0, lower.dtype)
        slope_up = ops.where(unstable, upper / ops.maximum(upper - lower, 1e-12), active)
        intercept_up = ops.where(unstable, -slope_up * lower, 0.0)
        slope_low = ops.where(unstable, ops.cast(upper > -lower, lower.dtype), active)
        return unstable, slope_low, slope_up, intercept_up

    def lines(self, crown, k):
        lower, _ = crown.pre_bounds(self.inputs[0])
        unstable, slope_low, slope_up, intercept_up = self.relaxation(crown, k)
        return unstable, slope_low, keras.ops.zeros_like(lower), slope_up, intercept_up


class Softplus(Relaxed):
    """log(1 + exp(alpha z)) / alpha, convex: the chord above, the tangent at the midpoint below."""

    def __init__(self, layer, inputs, alpha: float = 1.0):
        super().__init__(layer, inputs)
        self.alpha = alpha

    def interval(self, parts, eps, norm, raw, k):
        return softplus(parts[0][0], self.alpha), softplus(parts[0][1], self.alpha)

    def lines(self, crown, k):
        ops = keras.ops
        lower, upper = crown.pre_bounds(self.inputs[0])
        alpha = self.alpha
        width = upper - lower
        f_l, f_u = softplus(lower, alpha), softplus(upper, alpha)
        slope_up = ops.where(width > 1e-9, (f_u - f_l) / ops.maximum(width, 1e-9), ops.sigmoid(alpha * lower))
        intercept_up = f_l - slope_up * lower
        middle = (lower + upper) / 2
        slope_low = ops.sigmoid(alpha * middle)
        intercept_low = softplus(middle, alpha) - slope_low * middle
        return None, slope_low, intercept_low, slope_up, intercept_up


def softplus(z, alpha):
    return keras.ops.softplus(alpha * z) / alpha


class MaxPooling2D(Operator):
    """Max-pooling, as DeepPoly and auto_LiRPA relax it: below, the window's input with the
    largest lower bound (or, alpha-CROWN, optimized convex weights of the window's inputs);
    above, that same input where its lower bound is at least every other input's upper
    bound (the max is that input), else the window's largest upper bound, a constant."""

    def interval(self, parts, eps, norm, raw, k):
        return self.layer(parts[0][0]), self.layer(parts[0][1])

    def pool(self, z):
        layer = self.layer
        return keras.ops.max_pool(z, layer.pool_size, layer.strides, layer.padding, data_format="channels_last")

    def lines(self, crown, k):
        """(chosen, exact, out_upper): ``chosen`` 1 at each window's input with the largest
        lower bound, 0 elsewhere (None where windows overlap); ``exact`` where that input is
        the max; ``out_upper`` the windows' largest upper bounds.  Computed once per bound."""
        ops = keras.ops
        if k in crown.pools:
            return crown.pools[k]
        lower, upper = crown.pre_bounds(self.inputs[0])
        out_lower, out_upper = self.pool(lower), self.pool(upper)
        chosen = None
        exact = ops.zeros_like(out_lower)
        if self.windows_disjoint():
            chosen, _ = backend.grad(lambda z: (ops.sum(self.pool(z)), None), lower, crown.differentiable)
            others = self.pool(ops.where(chosen > 0.5, -1e30, upper))
            exact = ops.cast(out_lower >= others, lower.dtype)
        crown.pools[k] = (chosen, exact, out_upper)
        return crown.pools[k]

    def windows_disjoint(self) -> bool:
        """Whether the windows do not overlap (stride = pool size)."""
        return tuple(self.layer.strides) == tuple(self.layer.pool_size)

    def weights_apply(self, crown) -> bool:
        """Whether the node takes optimized lower lines (alpha-CROWN): disjoint windows that
        tile the input from its corner (``valid`` padding, or sizes divisible by the pool)."""
        layer = self.layer
        height, width = crown.shape(self.inputs[0])[:2]
        pool_h, pool_w = layer.pool_size
        return self.windows_disjoint() and (layer.padding == "valid" or (height % pool_h == 0 and width % pool_w == 0))

    def spread(self, crown, t):
        """Each window's value (..., out_h, out_w, c) copied onto its inputs (..., h, w, c),
        0 on inputs in no window; for :meth:`weights_apply` nodes."""
        ops = keras.ops
        pool_h, pool_w = self.layer.pool_size
        height, width = crown.shape(self.inputs[0])[:2]
        t = ops.repeat(ops.repeat(t, pool_h, axis=-3), pool_w, axis=-2)
        pad = [(0, 0)] * (len(t.shape) - 3) + [(0, height - t.shape[-3]), (0, width - t.shape[-2]), (0, 0)]
        return ops.pad(t, pad)

    def simplex(self, crown, raw):
        """Lower-line weights from nonnegative ``raw`` weights (B, S, *input shape):
        normalized to sum 1 over each window (any such weights give a sound lower line:
        max(z) >= sum_i w_i z_i); uniform where a window's weights are all 0."""
        ops = keras.ops
        layer = self.layer
        shape = crown.shape(self.inputs[0])
        area = layer.pool_size[0] * layer.pool_size[1]
        flat = ops.reshape(raw, (-1,) + shape)
        sums = ops.average_pool(flat, layer.pool_size, layer.strides, "valid", data_format="channels_last") * area
        total = ops.reshape(self.spread(crown, sums), ops.shape(raw))
        positive = total > 0
        # the divisor is 1 where the window is all 0: a tiny one would make the gradient NaN
        return ops.where(positive, raw / ops.where(positive, total, 1.0), 1.0 / area)

    def backward(self, crown, k, lam, slopes=None):
        """With ``slopes`` (alpha-CROWN): raw lower-line weights for the positive
        coefficients (see :meth:`simplex`)."""
        ops = keras.ops
        crown.pre_bounds(self.inputs[0])
        chosen, exact, out_upper = self.lines(crown, k)
        batch, size = ops.shape(lam)[0], lam.shape[1]
        positive = ops.maximum(lam, 0.0)
        negative = ops.minimum(lam, 0.0)
        exact = exact[:, None]
        if slopes is not None:  # windows tile the input: each window's coefficient copied onto its inputs, weighted
            new = (
                self.spread(crown, positive) * self.simplex(crown, slopes)
                + self.spread(crown, negative * exact) * chosen[:, None]
            )
        else:  # the coefficients routed to the chosen inputs: the gradient of max-pool at `lower`
            lower = crown.pre_bounds(self.inputs[0])[0]
            folded = ops.reshape(positive + negative * exact, (-1,) + tuple(out_upper.shape[1:]))
            tiled = ops.repeat(lower, size, axis=0)
            back, _ = backend.grad(lambda z: (ops.sum(self.pool(z) * folded), None), tiled, crown.differentiable)
            new = ops.reshape(back, (batch, size) + tuple(lower.shape[1:]))
        offset = ops.sum(ops.reshape(negative * (1 - exact) * out_upper[:, None], (batch, size, -1)), axis=2)
        return [new], offset
