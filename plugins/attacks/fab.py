"""FAB, the Fast Adaptive Boundary attack (Croce & Hein, ICML 2020), l2 and linf: the
minimal-norm member of AutoAttack.

At each iterate ``x_i`` the logits are linearized (all K input gradients) and the class s
whose linearized boundary is nearest is chosen.  Its hyperplane is projected on twice,
each time with the exactly minimal step inside the [0, 1] box
(:func:`advbench.kit.lp.box_constrained_l2_step`, :func:`~advbench.kit.lp.box_constrained_linf_step`):
from ``x_i`` (``delta_i``) and from the original point (``delta_0``).  The next iterate is
``(1 - a)(x_i + eta delta_i) + a (x_0 + eta delta_0)`` with ``a = min(|delta_i| / (|delta_i| +
|delta_0|), alpha_max)``: a step towards the boundary, biased towards staying close to x_0,
extrapolated by ``eta``.  An adversarial iterate is kept if it is the smallest so far and
pulled back towards x_0, ``x_0 + beta (x - x_0)``.  Restarts begin at a random point of
the ball of half the best norm found.  The smallest adversarial point is finally moved
back along its ray to the decision boundary.

Defaults are the paper's: 100 iterations, ``alpha_max`` 0.1, ``eta`` 1.05, ``beta`` 0.9,
one run (AutoAttack's FAB uses 5 restarts; its targeted version, FAB-T, 9 target classes).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from advbench import Attack, Params, hookimpl
from advbench.kit import backend, lp, rng, search
from advbench.kit.losses import misclassified
from advbench.lazy import keras


class FABParams(Params):
    steps: int = Field(100, ge=1, description="Iterations per run.")
    restarts: int = Field(
        1, ge=1, description="Runs; the first starts at x, the others at random points within half the best norm found."
    )
    alpha_max: float = Field(0.1, ge=0, le=1, description="Largest weight of the step from the original point.")
    eta: float = Field(1.05, ge=1, description="Extrapolation of the projection steps.")
    beta: float = Field(0.9, gt=0, le=1, description="Pull-back of an adversarial iterate towards the original point.")


def hyperplane_step(v, level, z, norm):
    """The minimal step inside the box from ``z`` onto ``{z': level + <v, z' - z> = 0}``,
    whichever side z is on; ``(delta, feasible)``."""
    ops = keras.ops
    flip = level < 0
    v = ops.where(lp.broadcast(flip, v), -v, v)
    return lp.BOX_STEPS[norm](v, ops.abs(level), z)


def fab_search(linearize, logits_of, x, y, start, norm, *, steps, alpha_max, eta, beta):
    """One FAB run from ``start`` (compilable).  ``linearize(point) -> (jacobian, logits)``,
    ``logits_of(point) -> logits``.  Returns per example the norm of the smallest
    adversarial iterate (inf if none) and that point (``x`` if none)."""
    ops = keras.ops
    batch = ops.shape(x)[0]
    labels = ops.cast(y, "int32")

    def body(i, current, best_norm, best):
        jacobian, logits = linearize(current)
        classes = logits.shape[1]
        true = ops.one_hot(labels, classes) > 0.5
        per_class = (-1, classes) + (1,) * (len(x.shape) - 1)  # broadcasts a (B, K) array against the jacobian
        f_y = ops.sum(ops.where(true, logits, 0.0), axis=1, keepdims=True)
        g_y = ops.sum(ops.where(ops.reshape(true, per_class), jacobian, 0.0), axis=1, keepdims=True)
        level = f_y - logits  # (B, K): f_y - f_s at the iterate, > 0 while it is classified right
        v = g_y - jacobian  # (B, K, ...): grad (f_y - f_s)
        scale = ops.reshape(lp.norm(ops.reshape(v, (-1,) + tuple(x.shape[1:])), lp.DUAL[norm]), (-1, classes))
        distance = ops.where(true, float("inf"), ops.abs(level) / ops.maximum(scale, 1e-12))
        nearest = ops.reshape(ops.argmin(distance, axis=1), (-1, 1))
        v_s = ops.take_along_axis(v, ops.reshape(nearest, (-1, 1) + (1,) * (len(x.shape) - 1)), axis=1)[:, 0]
        level_s = ops.take_along_axis(level, nearest, axis=1)[:, 0]
        delta_here, _ = hyperplane_step(v_s, level_s, current, norm)
        level_origin = level_s + ops.sum(lp.flat(v_s) * lp.flat(x - current), axis=1)  # the same hyperplane, from x
        delta_origin, _ = hyperplane_step(v_s, level_origin, x, norm)
        size_here, size_origin = lp.norm(delta_here, norm), lp.norm(delta_origin, norm)
        weight = ops.minimum(size_here / ops.maximum(size_here + size_origin, 1e-12), alpha_max)
        weight = lp.broadcast(weight, x)
        following = ops.clip((1 - weight) * (current + eta * delta_here) + weight * (x + eta * delta_origin), 0.0, 1.0)
        adversarial = misclassified(logits_of(following), labels)
        best_norm, best = search.keep_smaller(adversarial, lp.norm(following - x, norm), following, best_norm, best)
        following = ops.where(lp.broadcast(adversarial, x), x + beta * (following - x), following)
        return i + 1, following, best_norm, best

    init = (0, start, ops.full((batch,), float("inf")), x)
    _, _, best_norm, best = backend.while_loop(lambda i, *_: i < steps, body, init)
    return best_norm, best


class FAB(Attack):
    """Fast Adaptive Boundary attack (Croce & Hein 2020): box-exact projections onto the nearest linearized boundary; l2, linf; minimal norm."""

    Params = FABParams
    minimal_norm = True

    def _run(self, target, norm):
        p = self.params

        def run(x, y, start):
            return fab_search(
                target.logit_jacobian,
                target.logits,
                x,
                y,
                start,
                norm,
                steps=p.steps,
                alpha_max=p.alpha_max,
                eta=p.eta,
                beta=p.beta,
            )

        return self.per_target(target, norm, lambda: target.compile(run, batch_args=(0, 1, 2)))

    def minimize(self, target, x, y, norm, seed):
        from advbench.kit.boundary import shrink_to_boundary

        x, y = np.asarray(x, np.float32), np.asarray(y)
        run = self._run(target, norm)
        best, best_norm = x.copy(), np.full(len(x), np.inf)
        for restart in range(self.params.restarts):
            if restart == 0:
                start = x
            else:  # a random point within half the best norm found (a quarter of the box's size where none was)
                radius = np.where(np.isfinite(best_norm), best_norm / 2, lp.box_diameter(x.shape[1:], norm) / 4).astype(
                    np.float32
                )
                offset = backend.to_numpy(lp.random_in_ball(x.shape, backend.to_tensor(radius), norm, rng.seed(seed, restart)))
                start = np.clip(x + offset, 0.0, 1.0).astype(np.float32)
            norms, points = (backend.to_numpy(t) for t in run(x, y, start))
            search.keep_smaller_rows(np.arange(len(x)), np.isfinite(norms), norms, points, best_norm, best)
        return shrink_to_boundary(target, x, y, best.astype(np.float32))


@hookimpl
def advbench_register_attacks(register):
    register("fab", FAB)
