"""`ibp`, `crown` and `alpha_crown`: certified radii from interval bound propagation (Gowal
et al. 2018), from CROWN's linear relaxations (Zhang et al. 2018) and with CROWN's ReLU
slopes optimized (alpha-CROWN, Xu et al. 2021), for linf and l2 balls
intersected with [0, 1].  The radius is the largest eps at which every margin's lower
bound is positive, found by bisection (:class:`advbench.BisectionCertifier`).  Work is
split into sub-batches that fit the memory budget."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from advbench import BisectionCertifier, Params, hookimpl
from advbench.kit import backend
from advbench.kit.structure import UnsupportedModel


class BoundParams(Params):
    tolerance: float = Field(
        1e-3, ge=1e-6, lt=1, description="Relative precision of the radius bisection (float32 resolves about 1e-7)."
    )
    memory_mb: int = Field(
        1024,
        ge=16,
        description="Memory budget of one sub-batch of bound computations (its working tensors; the framework's fixed overhead, a few hundred MB, comes on top). A single example that needs more runs alone.",
    )


class CrownParams(BoundParams):
    max_neurons: int = Field(
        2048, ge=1, description="Layers with at most this many neurons get CROWN intermediate bounds; larger ones IBP."
    )


class AlphaCrownParams(CrownParams):
    iterations: int = Field(20, ge=1, description="Adam steps on the ReLU slopes per bound (auto_LiRPA's default: 20).")
    learning_rate: float = Field(0.5, gt=0, description="Adam step size on the slopes (auto_LiRPA's default: 0.5).")
    pool_learning_rate: float = Field(
        0.05,
        ge=0,
        description="Adam step size on the max-pool windows' weights of their inputs (0: CROWN's choice, "
        "the input with the largest lower bound). Smaller than the slopes': a step moves every window at once, and "
        "at 0.5 on a trained digits CNN no step beat CROWN's choice; 0.05 gained most over linf and l2 budgets.",
    )
    lr_decay: float = Field(0.98, gt=0, le=1, description="Step size factor per step (auto_LiRPA's default: 0.98).")


class _Propagation(BisectionCertifier):
    optimized = False  # the bounds keep a backward pass for the gradient (sizes the sub-batches)

    def check(self, target):
        from advbench.kit.bounds import read_graph

        try:
            read_graph(target.model)
        except UnsupportedModel as exc:
            return str(exc)
        return None

    def _function(self, target, norm):
        def build():
            from advbench.kit.bounds import bytes_per_example, margin_matrix, read_graph

            nodes = read_graph(target.model)
            margins = self.lower_margins(nodes, norm)
            classes = target.num_classes

            def compute(x, y, eps):
                return margins(x, margin_matrix(y, classes), eps)

            per_example = bytes_per_example(nodes, target.num_classes, self.crown_neurons(), self.optimized)
            fits = max(1, int(self.params.memory_mb * 2**20 // max(1, per_example)))
            sub_batch = 2 ** (fits.bit_length() - 1)
            # JAX pads a batch to a power of two, by default to at least 64 rows: not here,
            # where the sub-batch is what fits the memory budget
            return (target.compile(compute, batch_args=(0, 1, 2), smallest_batch=1), sub_batch)

        return self.per_target(target, norm, build)

    def crown_neurons(self) -> int | None:
        """Layers up to this size get CROWN bounds (None: IBP only); sizes the sub-batches."""
        return None

    def certified(self, target, x, y, norm, eps):
        compute, sub_batch = self._function(target, norm)
        result = np.zeros(len(x), dtype=bool)
        for start in range(0, len(x), sub_batch):
            part = slice(start, start + sub_batch)
            labels = np.asarray(y[part], np.int32)
            lower = backend.to_numpy(compute(np.asarray(x[part], np.float32), labels, np.asarray(eps[part], np.float32)))
            result[part] = np.all(lower > 0, axis=1)
        return result


class IBP(_Propagation):
    """Interval bound propagation: boxes through every layer, margins folded into the last layer."""

    Params = BoundParams

    def lower_margins(self, nodes, norm):
        from advbench.kit.bounds import ibp_margins

        return lambda x, C, eps: ibp_margins(nodes, x, C, eps, norm)


class CROWN(_Propagation):
    """CROWN: backward linear relaxation (adaptive ReLU, convex softplus), intermediate bounds by CROWN or IBP."""

    Params = CrownParams

    def lower_margins(self, nodes, norm):
        from advbench.kit.bounds import Crown

        crown = Crown(nodes, self.params.max_neurons)
        return lambda x, C, eps: crown.margins(x, C, eps, norm)

    def crown_neurons(self) -> int | None:
        return self.params.max_neurons


class AlphaCROWN(CROWN):
    """alpha-CROWN: CROWN with the unstable ReLUs' lower slopes optimized per example and margin (never looser than CROWN)."""

    Params = AlphaCrownParams
    optimized = True

    def lower_margins(self, nodes, norm):
        from advbench.kit.bounds import AlphaCrown

        p = self.params
        crown = AlphaCrown(nodes, p.max_neurons, p.iterations, p.learning_rate, p.lr_decay, p.pool_learning_rate)
        return lambda x, C, eps: crown.margins(x, C, eps, norm)


@hookimpl
def advbench_register_certifiers(register):
    register("ibp", IBP)
    register("crown", CROWN)
    register("alpha_crown", AlphaCROWN)
