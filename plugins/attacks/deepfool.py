"""DeepFool (Moosavi-Dezfooli et al. 2016), a minimal-norm attack for l2 and linf.

Each iteration linearizes the logits at the current point and steps to the nearest
linearized decision boundary (all K logit gradients from one batched Jacobian).  It runs
twice and keeps, per example, the smaller result: once with the exactly minimal step
*inside the [0, 1] box* (:func:`advbench.kit.lp.box_constrained_l2_step` and
:func:`~advbench.kit.lp.box_constrained_linf_step`: exact on a linear model even where the
box binds, and never "nothing found" where the linearization has a point in the box),
and once with the classic unconstrained step followed by clipping (often better on
networks, where the linearization is only local).  Each result is moved back along
its ray to the decision boundary (:func:`advbench.kit.boundary.shrink_to_boundary`),
removing the overshoot.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from advbench import Attack, Params, hookimpl
from advbench.kit import backend, lp
from advbench.lazy import keras


class DeepFoolParams(Params):
    steps: int = Field(50, ge=1, description="Maximum linearization steps.")
    overshoot: float = Field(
        0.02, ge=0, description="Relative overshoot past the linearized boundary (removed afterwards by a line search)."
    )


class DeepFool(Attack):
    """DeepFool: repeated steps to the nearest linearized boundary (box-exact and classic); minimal norm."""

    Params = DeepFoolParams
    minimal_norm = True

    def _step(self, target, norm, box_exact):
        def build():
            def step(x_now, y):
                ops = keras.ops
                jacobian, logits = target.logit_jacobian(x_now)
                classes = logits.shape[1]
                batch = ops.shape(x_now)[0]
                true = ops.one_hot(ops.cast(y, "int32"), classes) > 0.5
                f_true = ops.sum(ops.where(true, logits, 0.0), axis=1, keepdims=True)
                g_true = ops.sum(ops.where(true[:, :, None, None, None], jacobian, 0.0), axis=1, keepdims=True)
                margin = f_true - logits  # (B, K): f_y - f_k, > 0 while correct
                v = g_true - jacobian  # (B, K, ...): grad of f_y - f_k
                flat_v = ops.reshape(v, (-1,) + (int(np.prod(x_now.shape[1:])),))
                if norm == "l2" and not box_exact:
                    squared = ops.reshape(ops.sum(ops.square(flat_v), axis=1), (batch, classes))
                    distance = ops.maximum(margin, 0.0) / ops.sqrt(ops.maximum(squared, 1e-24))
                    scale = ops.maximum(margin, 0.0) / ops.maximum(squared, 1e-24)
                    steps = -v * scale[:, :, None, None, None]
                elif box_exact:
                    x_rep = ops.repeat(x_now, classes, axis=0)
                    steps, feasible = lp.BOX_STEPS[norm](flat_v, ops.maximum(ops.reshape(margin, (-1,)), 0.0), x_rep)
                    distance = ops.where(feasible, lp.norm(steps, norm), float("inf"))
                    distance = ops.reshape(distance, (batch, classes))
                    steps = ops.reshape(steps, ops.shape(v))
                else:
                    dual = ops.reshape(lp.norm(flat_v, "l1"), (batch, classes))
                    distance = ops.maximum(margin, 0.0) / ops.maximum(dual, 1e-12)
                    steps = -ops.sign(v) * distance[:, :, None, None, None]
                distance = ops.where(true, float("inf"), distance)
                nearest = ops.argmin(distance, axis=1)
                chosen = ops.take_along_axis(steps, ops.reshape(nearest, (-1, 1, 1, 1, 1)), axis=1)[:, 0]
                return chosen, logits

            return target.compile(step, batch_args=(0, 1))

        return self.per_target(target, (norm, box_exact), build)

    def minimize(self, target, x, y, norm, seed):
        x, y = np.asarray(x, np.float32), np.asarray(y)
        boxed = self._run(target, x, y, norm, box_exact=True)
        classic = self._run(target, x, y, norm, box_exact=False)
        sizes = []
        for candidate in (boxed, classic):
            size = lp.numpy_norm(candidate - x, norm)
            size[~target.adversarial(candidate, y)] = np.inf
            sizes.append(size)
        return np.where((sizes[1] < sizes[0])[:, None, None, None], classic, boxed)

    def _run(self, target, x, y, norm, box_exact):
        from advbench.kit.boundary import shrink_to_boundary

        step = self._step(target, norm, box_exact)
        total = np.zeros_like(x)
        current = x.copy()
        active = np.arange(len(x))
        for _ in range(self.params.steps):
            if not len(active):
                break
            delta, logits = (backend.to_numpy(t) for t in step(current[active], y[active]))
            still_correct = logits.argmax(1) == y[active]
            active = active[still_correct]
            delta = delta[still_correct]
            total[active] += delta
            current[active] = np.clip(x[active] + (1 + self.params.overshoot) * total[active], 0, 1)
        return shrink_to_boundary(target, x, y, current.astype(np.float32))


@hookimpl
def advbench_register_attacks(register):
    register("deepfool", DeepFool)
