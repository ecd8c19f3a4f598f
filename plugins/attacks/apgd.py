"""Auto-PGD (Croce & Hein 2020): step-size-free PGD with momentum, for linf and l2.

The step starts at 2 eps and is halved at checkpoints ``w_j = ceil(p_j N)``
(``p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``) when fewer
than ``rho`` of the steps since the last checkpoint raised the loss, or when the step
was not reduced at the last checkpoint and the best loss did not improve; after a
halving the iterate restarts from the best point.  Momentum ``alpha = 0.75``.

Losses: cross-entropy (``ce``), the scale-invariant difference of logits ratio (``dlr``)
and, for targeted attacks, its targeted form, run against the ``targets`` classes with the
highest clean logits.  Restarts and targets run only on the examples still unbroken.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field

from advbench import Attack, Params, hookimpl
from advbench.kit import backend, lp, rng, search
from advbench.kit.losses import cross_entropy, true_and_best_other
from advbench.lazy import keras

ALPHA = 0.75
RHO = 0.75
TAIL = 10
"""The last steps over which a still-rising loss means the optimization was incomplete."""


def checkpoints(steps: int) -> list[int]:
    """The iterations at which APGD may halve its step."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(q * steps) for q in p[1:] if math.ceil(q * steps) < steps})


def dlr(logits, y):
    """-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3): scale-invariant, maximized by the attack."""
    ops = keras.ops
    sorted_logits = ops.flip(ops.sort(logits, axis=1), axis=1)
    z_y, other = true_and_best_other(logits, y)
    return -(z_y - other) / (sorted_logits[:, 0] - sorted_logits[:, 2] + 1e-12)


def targeted_dlr(target_class):
    """-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2): the targeted DLR loss towards ``target_class``."""

    def loss(logits, y):
        ops = keras.ops
        sorted_logits = ops.flip(ops.sort(logits, axis=1), axis=1)
        classes = ops.shape(logits)[1]
        z_y = ops.sum(logits * ops.one_hot(ops.cast(y, "int32"), classes), axis=1)
        z_t = ops.sum(logits * ops.one_hot(ops.cast(target_class, "int32"), classes), axis=1)
        return -(z_y - z_t) / (sorted_logits[:, 0] - (sorted_logits[:, 2] + sorted_logits[:, 3]) / 2 + 1e-12)

    return loss


def apgd_search(loss_and_gradient, x, y, eps, norm, seed, *, steps, random_start=True, target_class=None, stop_early=True):
    """One APGD run (compilable).  Returns per example the smallest adversarial iterate
    seen (and its norm, inf if none), the point of highest loss, and whether the best loss
    still rose by more than 5% of its range over the last :data:`TAIL` steps (Pintor et
    al.'s incomplete optimization; False with fewer steps).  With
    ``target_class``, an iterate counts as adversarial only when it is classified as that
    class (a targeted success).  ``stop_early`` leaves the loop once every example has
    an adversarial iterate (off against randomized models, where one draw decides little)."""
    ops = keras.ops
    batch = ops.shape(x)[0]
    marks = np.zeros(steps + 1, bool)
    marks[checkpoints(steps)] = True
    previous_mark = np.zeros(steps + 1, np.float32)
    last = 0
    for k in range(steps + 1):
        previous_mark[k] = last
        if marks[k]:
            last = k
    marks, previous_mark = ops.convert_to_tensor(marks), ops.convert_to_tensor(previous_mark)

    def rows(v):
        return lp.broadcast(v, x)

    def project(point):
        return ops.clip(x + lp.project(point - x, eps, norm), 0.0, 1.0)

    def direction(grad):
        return lp.steepest_ascent(grad, norm)

    def adversarial(point, logits, found_norm, found):
        predicted = ops.cast(ops.argmax(logits, axis=1), "int32")
        if target_class is None:
            wrong = predicted != ops.cast(y, "int32")
        else:
            wrong = predicted == ops.cast(target_class, "int32")
        return search.keep_smaller(wrong, lp.norm(point - x, norm), point, found_norm, found)

    start = x + lp.random_in_ball(ops.shape(x), eps, norm, seed) if random_start else x
    start = ops.clip(start, 0.0, 1.0)
    loss, grad, logits = loss_and_gradient(start, y)
    found_norm, found = adversarial(start, logits, ops.full((batch,), float("inf")), x)
    step = 2.0 * eps
    current = project(start + rows(step) * direction(grad))
    state = dict(
        previous=start,
        current=current,
        step=step,
        best_loss=loss,
        best=start,
        best_grad=grad,
        last_loss=loss,
        successes=ops.zeros((batch,)),
        checkpoint_best=loss,
        reduced=ops.zeros((batch,), "bool"),
        found_norm=found_norm,
        found=found,
        tail_best=loss,
        lowest=loss,
    )

    def body(i, s):
        loss, grad, logits = loss_and_gradient(s["current"], y)
        found_norm, found = adversarial(s["current"], logits, s["found_norm"], s["found"])
        improved = loss > s["best_loss"]
        best_loss = ops.where(improved, loss, s["best_loss"])
        best = ops.where(rows(improved), s["current"], s["best"])
        best_grad = ops.where(rows(improved), grad, s["best_grad"])
        successes = s["successes"] + ops.cast(loss > s["last_loss"], "float32")
        at_mark = ops.take(marks, i)
        interval = ops.cast(i, "float32") - ops.take(previous_mark, i)
        stalled = successes < RHO * interval
        stuck = ops.logical_not(s["reduced"]) & (s["checkpoint_best"] >= best_loss)
        halve = at_mark & (stalled | stuck)
        step = ops.where(halve, s["step"] / 2, s["step"])
        here = ops.where(rows(halve), best, s["current"])
        grad_here = ops.where(rows(halve), best_grad, grad)
        previous = ops.where(rows(halve), best, s["previous"])
        z = project(here + rows(step) * direction(grad_here))
        following = project(here + ALPHA * (z - here) + (1 - ALPHA) * (here - previous))
        return i + 1, dict(
            previous=here,
            current=following,
            step=step,
            best_loss=best_loss,
            best=best,
            best_grad=best_grad,
            last_loss=loss,
            successes=ops.where(at_mark, 0.0, successes),
            checkpoint_best=ops.where(at_mark, best_loss, s["checkpoint_best"]),
            reduced=ops.where(at_mark, halve, s["reduced"]),
            found_norm=found_norm,
            found=found,
            tail_best=ops.where(i <= steps - TAIL, best_loss, s["tail_best"]),
            lowest=ops.minimum(s["lowest"], loss),
        )

    def keep_going(i, s):
        if not stop_early:
            return i < steps
        return (i < steps) & ops.logical_not(ops.all(ops.isfinite(s["found_norm"])))

    _, final = backend.while_loop(keep_going, body, (1, state))
    loss, _, logits = loss_and_gradient(final["current"], y)
    found_norm, found = adversarial(final["current"], logits, final["found_norm"], final["found"])
    rising = search.still_rising(final["best_loss"], final["tail_best"], final["lowest"], xp=ops)
    return found_norm, found, final["best"], rising


class APGDParams(Params):
    steps: int = Field(100, ge=2, description="Iterations per restart (and per target).")
    restarts: int = Field(1, ge=1, description="Random restarts, each on the examples still unbroken.")
    loss: Literal["ce", "dlr"] = Field("ce", description="Cross-entropy or the difference of logits ratio.")
    targeted: bool = Field(False, description="Targeted DLR towards each of the top `targets` classes in turn.")
    targets: int = Field(9, ge=1, description="Targeted: how many target classes (highest clean logits first).")
    random_start: bool = Field(True, description="Start from a random point in the ball.")


class APGD(Attack):
    """Auto-PGD (Croce & Hein 2020): adaptive step, momentum; CE or DLR, untargeted or targeted."""

    Params = APGDParams

    def _run(self, target, norm, loss_name):
        def build():
            steps, random_start = self.params.steps, self.params.random_start

            def run(x, y, eps, seed, target_class):
                loss = {"ce": cross_entropy, "dlr": dlr, "targeted": targeted_dlr(target_class)}[loss_name]
                return apgd_search(
                    lambda a, b: target.loss_and_gradient(loss, a, b),
                    x,
                    y,
                    eps,
                    norm,
                    seed,
                    steps=steps,
                    random_start=random_start,
                    target_class=target_class if loss_name == "targeted" else None,
                    stop_early=not target.randomized,
                )

            return target.compile(run, batch_args=(0, 1, 2, 4))

        return self.per_target(target, (norm, loss_name), build)

    def perturb(self, target, x, y, eps, norm, seed):
        x, y, eps = np.asarray(x, np.float32), np.asarray(y), np.asarray(eps, np.float32)
        result = x.copy()
        broken = np.zeros(len(x), bool)
        rising = np.zeros(len(x), bool)
        if self.params.targeted:
            order = np.argsort(-target.logits_numpy(x), axis=1)
            # the top classes other than the label, best first
            others = np.array([row[row != label] for row, label in zip(order, y)])
            candidates = [others[:, k] for k in range(min(self.params.targets, others.shape[1]))]
            runs = [("targeted", c) for c in candidates]
        else:
            runs = [(self.params.loss, np.full_like(y, -1))]  # no target class
        for run_index, (loss_name, classes) in enumerate(runs):
            for restart in range(self.params.restarts):
                active = np.flatnonzero(~broken & (classes != y))
                if not len(active):
                    continue
                run = self._run(target, norm, loss_name)
                seed_pair = rng.seed(seed, run_index, restart)
                found_norm, found, best, still = (
                    backend.to_numpy(t) for t in run(x[active], y[active], eps[active], seed_pair, classes[active])
                )
                rising[active] = still
                if target.randomized:  # judge by the majority over draws, at the highest-loss point
                    found = best
                    hit = target.adversarial(best, y[active])
                else:
                    hit = np.isfinite(found_norm)
                result[active] = np.where(
                    hit[:, None, None, None], found, np.where(broken[active, None, None, None], result[active], best)
                )
                broken[active[hit]] = True
        self._evidence = {"incomplete_optimization": rising & ~broken} if self.params.steps > TAIL else {}
        return result

    def evidence(self):
        return dict(getattr(self, "_evidence", {}))


@hookimpl
def advbench_register_attacks(register):
    register("apgd", APGD)
