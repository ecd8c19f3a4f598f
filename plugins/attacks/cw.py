"""Carlini-Wagner L2 (Carlini & Wagner 2017), a minimal-norm attack.

Minimizes ``||x' - x||_2^2 + c * max(f_y(x') - max_{j != y} f_j(x') + kappa, 0)`` with
Adam and binary-searches the constant c per example.  The box is kept by projecting x'
onto [0, 1] after each step rather than by the paper's ``x' = (tanh(w) + 1) / 2``: the
tanh change of variables stalls on pixels at 0 or 1 (its derivative vanishes there),
which can leave the result several percent above the minimum.  The smallest adversarial point found is moved back along its
ray to the decision boundary.  Gradients come from the target (EOT for randomized models).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from advbench import Attack, Params, backend, hookimpl
from advbench import lp
from advbench.lazy import keras
from advbench.losses import cw_margin, misclassified


class CWParams(Params):
    steps: int = Field(100, ge=1, description="Adam steps per value of the constant c.")
    search_steps: int = Field(6, ge=1, description="Binary-search steps over c.")
    learning_rate: float = Field(0.01, gt=0, description="Adam step size (in pixel units).")
    initial_const: float = Field(1.0, gt=0, description="First value of c.")
    confidence: float = Field(0.0, ge=0, description="kappa: required margin of the wrong class.")


class CarliniWagnerL2(Attack):
    """Carlini-Wagner L2: Adam on the CW objective with box projection, binary search over c; minimal norm."""

    Params = CWParams
    norms = ("l2",)
    minimal_norm = True

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        self._compiled = {}

    def _optimize(self, target):
        if id(target) not in self._compiled:
            p = self.params

            def run(x, y, const):
                ops = keras.ops

                def body(i, x_prime, m, v, best_norm, best):
                    margin, grad_margin, logits = target.loss_and_gradient(lambda z, t: -cw_margin(z, t), x_prime, y)
                    size = lp.norm(x_prime - x, "l2")
                    better = misclassified(logits, y) & (size < best_norm)
                    best = ops.where(lp.broadcast(better, x), x_prime, best)
                    active = ops.cast(margin > -p.confidence, x.dtype)  # hinge: max(margin + kappa, 0)
                    grad = 2 * (x_prime - x) + lp.broadcast(const * active, x) * grad_margin
                    m = 0.9 * m + 0.1 * grad
                    v = 0.999 * v + 0.001 * ops.square(grad)
                    t = ops.cast(i + 1, x.dtype)
                    x_prime = x_prime - p.learning_rate * (m / (1 - 0.9**t)) / (ops.sqrt(v / (1 - 0.999**t)) + 1e-8)
                    return i + 1, ops.clip(x_prime, 0.0, 1.0), m, v, ops.where(better, size, best_norm), best

                zeros = ops.zeros_like(x)
                start = (0, x, zeros, zeros, ops.full((ops.shape(x)[0],), float("inf")), x)
                _, _, _, _, best_norm, best = backend.while_loop(lambda i, *_: i < p.steps, body, start)
                return best_norm, best

            self._compiled[id(target)] = target.compile(run, batch_args=(0, 1, 2))
        return self._compiled[id(target)]

    def minimize(self, target, x, y, norm, seed):
        from advbench.evaluation import shrink_to_boundary

        run = self._optimize(target)
        x, y = np.asarray(x, np.float32), np.asarray(y)
        const = np.full(len(x), self.params.initial_const, np.float32)
        lower, upper = np.zeros(len(x)), np.full(len(x), np.inf)
        best, best_norm = x.copy(), np.full(len(x), np.inf)
        for _ in range(self.params.search_steps):
            norms, points = (backend.to_numpy(t) for t in run(x, y, const))
            found = np.isfinite(norms)
            better = found & (norms < best_norm)
            best[better], best_norm[better] = points[better], norms[better]
            upper = np.where(found, np.minimum(upper, const), upper)
            lower = np.where(found, lower, np.maximum(lower, const))
            const = np.where(np.isinf(upper), const * 10, (lower + upper) / 2).astype(np.float32)
        return shrink_to_boundary(target, x, y, best.astype(np.float32))


@hookimpl
def advbench_register_attacks(register):
    register("cw", CarliniWagnerL2)
