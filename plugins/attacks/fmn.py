"""The Fast Minimum-Norm attack (FMN; Pintor, Roli, Brendel & Biggio, NeurIPS 2021), l2 and
linf: a minimal-norm attack.

Gradient steps on the logit difference ``max_{j != y} f_j - f_y`` of length ``alpha`` (the
gradient normalized in l2), each followed by the projection onto the intersection of the
p-ball of an adaptive radius ``eps`` with the [0, 1] box (exact, :func:`advbench.kit.lp.project_in_box`;
the paper projects onto the ball, then clips).  While no adversarial point has been found, eps
is the linear estimate of the distance to the boundary; the paper's ``||delta||_p + |loss|
/ ||grad||_q`` ignores the box and, where pixels sit at 0 or 1, stalls below the boundary,
so here it is ``||delta + d||_p`` with ``d`` the exactly minimal step inside the box that
the linearization says reaches the boundary (:data:`advbench.kit.lp.BOX_STEPS`), times ``(1 +
gamma)``: on a locally linear model an exact estimate is approached from below and never
crossed.  Once one has, eps shrinks by ``(1 - gamma)`` (at most to the best norm found)
while the iterate is adversarial and grows by ``(1 + gamma)`` while it is not.  alpha and
gamma follow cosine annealing from their initial to their final values.  The smallest
adversarial iterate is kept, then moved back along its ray to the decision boundary.

Defaults are the paper's: ``alpha`` from 1 to 1/100 of it, ``gamma`` from 0.05 to 0.001;
100 steps (the authors' code runs 10 by default, their comparisons up to 1,000).
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from advbench import Attack, Params, hookimpl
from advbench.kit import backend, lp, search
from advbench.kit.losses import cw_margin, misclassified
from advbench.lazy import keras


class FMNParams(Params):
    steps: int = Field(100, ge=1, description="Gradient steps.")
    alpha_init: float = Field(1.0, gt=0, description="First step length (l2 length of the normalized gradient step).")
    alpha_final: float | None = Field(None, gt=0, description="Last step length; default alpha_init / 100.")
    gamma_init: float = Field(0.05, gt=0, lt=1, description="First factor of the radius updates (eps (1 -/+ gamma)).")
    gamma_final: float = Field(0.001, gt=0, lt=1, description="Last factor of the radius updates.")


def fmn_search(loss_and_gradient, x, y, norm, *, steps, alpha_init, alpha_final, gamma_init, gamma_final):
    """One FMN run (compilable).  Returns per example the norm of the smallest adversarial
    iterate (inf if none) and that point (``x`` if none)."""
    ops = keras.ops
    batch = ops.shape(x)[0]
    farthest = lp.norm(ops.maximum(x, 1.0 - x), norm)  # no budget needs to exceed the box's far corner

    def body(i, delta, eps, best_norm, best, found_any):
        size = lp.norm(delta, norm)
        loss, grad, logits = loss_and_gradient(x + delta, y)
        adversarial = misclassified(logits, y)
        best_norm, best = search.keep_smaller(adversarial, size, x + delta, best_norm, best)
        found_any = found_any | adversarial
        cosine = (1 + ops.cos(math.pi * ops.cast(i, "float32") / steps)) / 2
        alpha = alpha_final + (alpha_init - alpha_final) * cosine
        gamma = gamma_final + (gamma_init - gamma_final) * cosine
        step, reachable = lp.BOX_STEPS[norm](-grad, ops.abs(loss), x + delta)
        estimate = ops.where(reachable, lp.norm(delta + ops.where(lp.broadcast(reachable, x), step, 0.0), norm), farthest)
        eps = ops.where(
            adversarial,
            ops.minimum(eps * (1 - gamma), best_norm),
            ops.where(found_any, eps * (1 + gamma), estimate * (1 + gamma)),
        )
        eps = ops.minimum(eps, farthest)
        delta = delta + alpha * grad / lp.broadcast(ops.maximum(lp.norm(grad, "l2"), 1e-12), grad)
        delta = lp.project_in_box(x, delta, eps, norm)
        return i + 1, delta, eps, best_norm, best, found_any

    start = (
        0,
        ops.zeros_like(x),
        ops.full((batch,), float("inf")),
        ops.full((batch,), float("inf")),
        x,
        ops.zeros((batch,), "bool"),
    )
    _, _, _, best_norm, best, _ = backend.while_loop(lambda i, *_: i < steps, body, start)
    return best_norm, best


class FMN(Attack):
    """Fast Minimum-Norm attack (Pintor et al. 2021): adaptive-radius projected gradient steps; l2, linf; minimal norm."""

    Params = FMNParams
    minimal_norm = True

    def _run(self, target, norm):
        p = self.params
        settings = dict(
            steps=p.steps,
            alpha_init=p.alpha_init,
            alpha_final=p.alpha_final or p.alpha_init / 100,
            gamma_init=p.gamma_init,
            gamma_final=p.gamma_final,
        )

        def run(x, y):
            return fmn_search(lambda a, b: target.loss_and_gradient(cw_margin, a, b), x, y, norm, **settings)

        return self.per_target(target, norm, lambda: target.compile(run, batch_args=(0, 1)))

    def minimize(self, target, x, y, norm, seed):
        from advbench.kit.boundary import shrink_to_boundary

        x, y = np.asarray(x, np.float32), np.asarray(y)
        _, best = (backend.to_numpy(t) for t in self._run(target, norm)(x, y))
        return shrink_to_boundary(target, x, y, best.astype(np.float32))


@hookimpl
def advbench_register_attacks(register):
    register("fmn", FMN)
