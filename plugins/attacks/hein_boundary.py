"""The box-constrained linearized attack of Hein & Andriushchenko (2017), l2.

At x, for every target class t, linearize ``g_t = f_c - f_t`` and solve exactly

    min ||delta||_2  s.t.  <grad g_t(x), delta> = -s * g_t(x),  0 <= x + delta <= 1

(:func:`advbench.kit.lp.box_constrained_l2_step`, sorted breakpoints).  The margin scale
``s`` is searched on the true network: doubled from 1 until the prediction changes, then
bisected down to the decision boundary, so the result has no overshoot.  The smallest
successful perturbation over all targets is kept (or only the runner-up class, as the
paper's adversarial training does).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from advbench import Attack, Params, hookimpl
from advbench.kit import backend, lp, search


class HeinBoundaryParams(Params):
    targets: int | None = Field(None, ge=1, description="Try the classes with the highest logits first, this many; default all.")
    growth_steps: int = Field(
        6, ge=0, description="Doublings of the margin scale when the linear step does not cross the boundary."
    )
    bisection_steps: int = Field(14, ge=1, description="Bisection steps on the margin scale towards the boundary.")


def linearize(target, x, y):
    """Logits and, for every class t, grad (f_y - f_t) at x (EOT-averaged for randomized models)."""
    jacobian, logits = target.logit_jacobian(backend.to_tensor(x))
    jacobian, logits = backend.to_numpy(jacobian), backend.to_numpy(logits)
    rows = np.arange(len(x))
    return logits, jacobian[rows, y][:, None] - jacobian


class HeinBoundary(Attack):
    """Hein & Andriushchenko's box-constrained linearized attack (exact per target, boundary search); l2, minimal norm."""

    Params = HeinBoundaryParams
    norms = ("l2",)
    minimal_norm = True

    def minimize(self, target, x, y, norm, seed):
        x, y = np.asarray(x, np.float32), np.asarray(y)
        logits, gradients = linearize(target, x, y)
        margins = logits[np.arange(len(x)), y][:, None] - logits
        order = np.argsort(-logits, axis=1)
        limit = self.params.targets or logits.shape[1]
        best = x.copy()
        best_norm = np.full(len(x), np.inf)
        for rank in range(logits.shape[1]):
            t = order[:, rank]
            use = (t != y) & (np.sum(order[:, : rank + 1] != y[:, None], axis=1) <= limit)
            if not use.any():
                continue
            index = np.flatnonzero(use)
            rows = index
            delta = self.boundary_point(target, x[index], y[index], gradients[rows, t[index]], margins[rows, t[index]])
            size = lp.numpy_norm(delta, "l2")
            search.keep_smaller_rows(index, np.isfinite(size), size, np.clip(x[index] + delta, 0, 1), best_norm, best)
        return best

    def boundary_point(self, target, x, y, v, margin):
        """Per example, the perturbation on the decision boundary along the exact box step
        (inf-norm rows where no scale crossed it)."""

        def candidate(scale):
            delta, feasible = lp.box_constrained_l2_step(
                backend.to_tensor(v), backend.to_tensor(scale * margin), backend.to_tensor(x)
            )
            return backend.to_numpy(delta), backend.to_numpy(feasible)

        def crosses(scale):
            delta, feasible = candidate(scale)
            return target.adversarial(np.clip(x + delta, 0, 1).astype(np.float32), y), delta

        p = self.params
        success, _, high = search.grow_then_bisect(
            lambda scale: crosses(scale)[0], np.zeros(len(x)), np.ones(len(x)), p.growth_steps, p.bisection_steps
        )
        hit, delta = crosses(high)
        delta[~(success & hit)] = np.inf
        return delta


@hookimpl
def advbench_register_attacks(register):
    register("hein_boundary", HeinBoundary)
