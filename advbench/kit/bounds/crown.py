"""CROWN (Zhang et al. 2018) and alpha-CROWN (Xu et al. 2021): backward linear bound
propagation through the operators' relaxations (:mod:`.operators`)."""

from __future__ import annotations

import numpy as np

from advbench.kit import backend
from advbench.kit.adam import adam_direction
from advbench.kit.bounds.graph import node_sizes
from advbench.kit.bounds.interval import fold_head, ibp
from advbench.kit.bounds.operators import MaxPooling2D, Relaxed, ReLU
from advbench.kit.bounds.sets import input_bound, input_box
from advbench.lazy import keras


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
            if node.affine and all(i == -1 or i in self.affine_in_input for i in node.inputs):
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
        self.pools = {}  # max-pool nodes' relaxations, computed once per bound (MaxPooling2D.lines)
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
        weights of each window's inputs (see :meth:`MaxPooling2D.simplex`); CROWN's choice elsewhere."""
        specs = {node_index: spec}
        constant = keras.ops.zeros(keras.ops.shape(spec)[:2])
        for k in range(node_index, -1, -1):
            if k not in specs:
                continue
            lam = specs.pop(k)
            node = self.nodes[k]
            contributions, offset = self.backward_step(k, lam, slopes)
            if offset is not None:
                constant = constant + offset
            for source, contribution in zip(node.inputs, contributions):
                specs[source] = specs[source] + contribution if source in specs else contribution
        return constant + self.input_bound(specs[-1])

    def input_bound(self, lam):
        """min over the input set of ``lam . x`` (branch and bound also reads ``lam`` here)."""
        return input_bound(lam, self.x, self.eps, self.norm)

    def backward_step(self, k, lam, slopes):
        """Node ``k``'s backward rule applied to ``lam`` (branch and bound adds its split
        constraints' terms here)."""
        return self.nodes[k].backward(self, k, lam, None if slopes is None else slopes.get(k))

    def shape(self, index) -> tuple[int, ...]:
        """The shape of node ``index``'s output, without the batch (-1: the input's)."""
        if index == -1:
            return tuple(self.x.shape[1:])
        return tuple(self.ibp[index][0].shape[1:])

    def crown_bounded(self, index) -> bool:
        """Whether node ``index`` gets CROWN bounds of its own: a layer that mixes its inputs
        (elementwise and shape-only layers take their input's bounds through interval
        arithmetic, which is exact for them), with no nonlinearity before it, and small enough."""
        if index == -1 or index in self.affine_in_input:
            return False
        return self.nodes[index].mixing and self.sizes[index] <= self.max_neurons

    def pre_bounds(self, index):
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
        parts = [self.pre_bounds(i) for i in node.inputs]
        if any(i in self.tightened for i in node.inputs):  # else interval arithmetic gives IBP's bounds again
            tight_lower, tight_upper = node.interval(parts, self.eps, self.norm, {}, index)
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

    def __init__(
        self,
        nodes,
        max_neurons: int = 2048,
        iterations: int = 20,
        learning_rate: float = 0.5,
        decay: float = 0.98,
        pool_learning_rate: float = 0.05,
        intermediate_iterations: int = 0,
    ):
        # differentiable: the slopes' gradient passes the transposes and max-pool routings
        super().__init__(nodes, max_neurons, differentiable=True)
        self.iterations, self.learning_rate, self.decay = iterations, learning_rate, decay
        self.pool_learning_rate = pool_learning_rate
        self.intermediate_iterations = intermediate_iterations

    def margins(self, x, C, eps, norm):
        self.prepare(x, C, eps, norm)
        self.optimize_intermediate()
        start = self.start_slopes()
        if not start:  # nothing to optimize: CROWN
            return self.lower_bound(len(self.nodes) - 1, C)
        return self.ascend(start, self.slope_scales(start), {k: 1.0 for k in start})[0]

    def slope_scales(self, start: dict) -> dict:
        """Each slope's step scale: max-pool weights take ``pool_learning_rate``'s share."""
        return {
            k: self.pool_learning_rate / self.learning_rate if isinstance(self.nodes[k], MaxPooling2D) else 1.0 for k in start
        }

    def start_slopes(self) -> dict:
        """CROWN's choices, per margin row: the ReLUs' lower slopes and the max-pool windows'
        chosen inputs; computes every intermediate bound first (fixed from here on)."""
        ops = keras.ops
        rows = (ops.shape(self.x)[0], self.C.shape[1])
        start = {}
        for k, node in enumerate(self.nodes):
            if isinstance(node, (Relaxed, MaxPooling2D)):
                self.pre_bounds(node.inputs[0])
            if isinstance(node, ReLU):
                start[k] = node.relaxation(self, k)[1]
            elif isinstance(node, MaxPooling2D) and self.pool_learning_rate > 0 and node.weights_apply(self):
                start[k] = node.lines(self, k)[0]
        return {k: ops.broadcast_to(a[:, None], rows + tuple(a.shape[1:])) for k, a in start.items()}

    def optimize_intermediate(self) -> None:
        """alpha-CROWN on the intermediate bounds too (auto_LiRPA without
        ``fix_interm_bounds``): layer by layer, the pre-activation bounds of each ReLU whose
        input gets CROWN bounds are tightened by optimizing the earlier ReLUs' lower slopes,
        one set per neuron and side, for ``intermediate_iterations`` steps, keeping the best
        iterate and never looser than CROWN's.  Later layers' bounds then start from the
        tightened ones; branch and bound's children reuse them all."""
        if not self.intermediate_iterations:
            return
        ops = keras.ops
        batch = ops.shape(self.x)[0]
        earlier = []
        for k, node in enumerate(self.nodes):
            if not isinstance(node, ReLU):
                continue
            source = node.inputs[0]
            lower, upper = self.pre_bounds(source)  # CROWN's, from the tightened earlier layers
            if earlier and self.crown_bounded(source):
                shape = self.shape(source)
                n = self.sizes[source]
                eye = np.eye(n, dtype=np.float32).reshape((1, n) + shape)
                spec = ops.broadcast_to(ops.convert_to_tensor(np.concatenate([eye, -eye], axis=1)), (batch, 2 * n) + shape)
                start = {}
                for j in earlier:
                    slope = self.nodes[j].relaxation(self, j)[1]
                    start[j] = ops.broadcast_to(slope[:, None], (batch, 2 * n) + tuple(slope.shape[1:]))
                best, _ = self.ascend(
                    start,
                    {j: 1.0 for j in start},
                    {j: 1.0 for j in start},
                    node=source,
                    spec=spec,
                    iterations=self.intermediate_iterations,
                )
                lower = ops.maximum(lower, ops.reshape(best[:, :n], ops.shape(lower)))
                upper = ops.minimum(upper, -ops.reshape(best[:, n:], ops.shape(upper)))
                self.bounds[source] = (lower, upper)
                self.tightened.add(source)
            earlier.append(k)

    def ascend(self, start: dict, scales: dict, ceilings: dict, node=None, spec=None, iterations=None):
        """Projected gradient ascent (Adam) of the lower bounds of ``spec`` (default: the
        margins) over the output of ``node`` (default: the last) over the variables
        ``start`` (keys as :meth:`lower_bound`'s ``slopes``), each with its step scale and
        kept in [0, ceiling] (``None``: no ceiling), for ``iterations`` steps (default
        :attr:`iterations`; the margins' ascent stops early once all are positive).  Returns
        the best bounds of all iterates (each is a sound bound) and the last iterate."""
        ops = keras.ops
        keys = list(start)
        margins_wanted = node is None
        final = len(self.nodes) - 1 if node is None else node
        spec = self.C if spec is None else spec
        steps = self.iterations if iterations is None else iterations
        rows = (ops.shape(self.x)[0], spec.shape[1])
        dtype = self.x.dtype

        def bound(values):
            margins = self.lower_bound(final, spec, dict(zip(keys, values)))
            return ops.sum(margins), margins

        def body(i, values, first, second, best):
            grads, margins = backend.grad(bound, list(values))
            best = ops.maximum(best, margins)
            rate = self.learning_rate * ops.power(self.decay, ops.cast(i, dtype))
            steps = [adam_direction(g, m, v, ops.cast(i + 1, dtype)) for g, m, v in zip(grads, first, second)]
            values = [
                ops.clip(a + rate * scales[k] * d, 0.0, ceilings[k])
                if ceilings[k] is not None
                else ops.maximum(a + rate * scales[k] * d, 0.0)
                for k, a, (d, _, _) in zip(keys, values, steps)
            ]
            first, second = [m for _, m, _ in steps], [v for _, _, v in steps]
            return i + 1, values, first, second, best

        def going(i, values, first, second, best):
            if not margins_wanted:
                return i < steps
            return ops.logical_and(i < steps, ops.any(ops.min(best, axis=1) <= 0))

        values = [start[k] for k in keys]
        zeros = [ops.zeros_like(a) for a in values]
        _, values, _, _, best = backend.while_loop(going, body, (0, values, zeros, zeros, ops.full(rows, -np.inf)))
        return best, dict(zip(keys, values))
