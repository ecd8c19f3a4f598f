"""Projected gradient descent (Madry et al. 2018) for linf and l2: the one PGD in advbench.

The `pgd` attack is :class:`PGD` as it is; `fgsm` is its one-step case, `masked_pgd`
restricts it to a pixel mask, `transfer` runs it on another model, and PGD adversarial
training runs :func:`pgd_steps` inside its training step.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from advbench.contract import Attack, Params
from advbench.kit import backend, lp, rng, search
from advbench.kit.losses import LOSSES, misclassified
from advbench.lazy import keras


def pgd_steps(loss_and_gradient, x, y, eps, norm, delta, *, steps, step_size, stop_when_adversarial=False):
    """Run ``steps`` PGD steps from ``delta`` (compilable; the loop is a
    :func:`advbench.kit.backend.while_loop`).

    :param loss_and_gradient: ``f(x, y) -> (loss, gradient, logits)`` per example.
    :param step_size: step length as a fraction of ``eps`` (per example).
    :param stop_when_adversarial: leave the loop early once every example has had an
        adversarial iterate.
    :return: ``(delta, adversarial_norm, adversarial)``: the last iterate, and per example
        the norm of the smallest adversarial iterate seen (inf if none) and that point.
        Every iterate lies in the ball and the box.
    """
    ops = keras.ops
    found_norm = ops.full((ops.shape(x)[0],), float("inf"))
    found = x

    def keep_smaller_adversarial(delta, logits, found_norm, found):
        point = ops.clip(x + delta, 0.0, 1.0)  # guards against float rounding only
        return search.keep_smaller(misclassified(logits, y), lp.norm(delta, norm), point, found_norm, found)

    def step(i, delta, found_norm, found):
        _, grad, logits = loss_and_gradient(x + delta, y)
        found_norm, found = keep_smaller_adversarial(delta, logits, found_norm, found)
        delta = delta + lp.broadcast(step_size * eps, x) * lp.steepest_ascent(grad, norm)
        delta = lp.clip_to_box(x, lp.project(delta, eps, norm))
        return i + 1, delta, found_norm, found

    def keep_going(i, delta, found_norm, found):
        if stop_when_adversarial:
            return (i < steps) & ops.logical_not(ops.all(ops.isfinite(found_norm)))
        return i < steps

    _, delta, found_norm, found = backend.while_loop(keep_going, step, (0, delta, found_norm, found))
    return delta, found_norm, found


def pgd_start(x, eps, norm, random_start, seed):
    """The starting perturbation: uniform in the ball (then clipped to the box), or zero."""
    if not random_start:
        return keras.ops.zeros_like(x)
    return lp.clip_to_box(x, lp.random_in_ball(keras.ops.shape(x), eps, norm, seed))


class PGDParams(Params):
    steps: int = Field(40, ge=1, description="Gradient steps per restart.")
    restarts: int = Field(1, ge=1, description="Random restarts, each on the examples still unbroken.")
    step_size: float | None = Field(None, gt=0, description="Step length as a fraction of eps; default 2.5 / steps.")
    loss: Literal["ce", "cw"] = Field("ce", description="Cross-entropy or the Carlini-Wagner margin.")
    random_start: bool = Field(True, description="Start from a uniform random point in the ball.")
    early_stop: bool = Field(
        True, description="Stop attacking an example once an adversarial iterate is found (off: every example runs every step)."
    )


CHUNK = 10
"""Steps between two compactions of the batch to the examples still unbroken."""


class PGD(Attack):
    """Projected gradient descent with random restarts (Madry et al. 2018)."""

    Params = PGDParams

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        self.pixel_mask = None  # (H, W, 1) of 0/1: perturb only these pixels (masked PGD)

    def search_settings(self) -> dict:
        p = self.params
        return {
            "steps": p.steps,
            "step_size": p.step_size if p.step_size is not None else 2.5 / p.steps,
            "random_start": p.random_start,
            "restarts": p.restarts,
            "early_stop": p.early_stop,
        }

    def _functions(self, target, norm):
        def build():
            loss = LOSSES[self.params.loss]
            settings = self.search_settings()
            mask = 1.0 if self.pixel_mask is None else keras.ops.convert_to_tensor(self.pixel_mask, "float32")

            def loss_and_gradient(x, y):
                value, grad, logits = target.loss_and_gradient(loss, x, y)
                return value, grad * mask, logits

            def run(x, y, eps, delta, steps):
                return pgd_steps(
                    loss_and_gradient,
                    x,
                    y,
                    eps,
                    norm,
                    delta,
                    steps=steps,
                    step_size=settings["step_size"],
                    stop_when_adversarial=settings["early_stop"],
                )

            def start(x, eps, seed):
                return pgd_start(x, eps, norm, settings["random_start"], seed) * mask

            def fooled(x, y):
                return misclassified(target.logits(x), y)

            def objective(x, y):
                return loss(target.logits(x), y)

            return (
                target.compile(run, batch_args=(0, 1, 2, 3)),
                target.compile(start, batch_args=(0, 1)),
                target.compile(fooled, batch_args=(0, 1)),
                target.compile(objective, batch_args=(0, 1)),
            )

        return self.per_target(target, norm, build)

    def perturb(self, target, x, y, eps, norm, seed):
        """Restarts run only on the examples still unbroken; with ``early_stop`` the batch
        is also compacted every few steps to the examples still unbroken.  Against a
        randomized model one draw says little about the majority verdict, so every step
        runs and the last iterate is returned (EOT-PGD).  The steps run in chunks of
        :data:`CHUNK`; the loss at the end of each chunk tells whether the last chunk still
        raised it (:meth:`evidence`, ``incomplete_optimization``)."""
        if target.randomized:
            return self._perturb_randomized(target, x, y, eps, norm, seed)
        run, start, fooled, objective = self._functions(target, norm)
        settings = self.search_settings()
        x, y, eps = np.asarray(x, np.float32), np.asarray(y), np.asarray(eps, np.float32)
        result = x.copy()
        broken = np.zeros(len(x), dtype=bool)
        progress = _Progress(len(x), settings["steps"])
        for restart in range(settings["restarts"]):
            active = np.flatnonzero(~broken)
            if not len(active):
                break
            delta = backend.to_numpy(start(x[active], eps[active], rng.seed(seed, restart)))
            progress.start(active, backend.to_numpy(objective(np.clip(x[active] + delta, 0.0, 1.0), y[active])))
            smallest = np.full(len(x), np.inf)  # without early stop: the smallest adversarial iterate of the restart
            done = 0
            while done < settings["steps"] and len(active):
                n = min(CHUNK, settings["steps"] - done)
                delta, found_norm, found = (
                    backend.to_numpy(t) for t in run(x[active], y[active], eps[active], delta, np.int32(n))
                )
                done += n
                hit = np.isfinite(found_norm)
                search.keep_smaller_rows(active, hit, found_norm, found, smallest, result)
                broken[active[hit]] = True
                if settings["early_stop"]:
                    active, delta = active[~hit], delta[~hit]
                if len(active):
                    progress.after_chunk(active, backend.to_numpy(objective(np.clip(x[active] + delta, 0.0, 1.0), y[active])))
            # The last iterate is checked too; examples still unbroken keep it.
            if len(active):
                last = np.clip(x[active] + delta, 0.0, 1.0)
                hit = backend.to_numpy(fooled(last, y[active]))
                unbroken = ~broken[active]
                result[active[unbroken]] = last[unbroken]
                broken[active[hit]] = True
        self._evidence = {"incomplete_optimization": progress.still_rising() & ~broken} if progress.measured else {}
        return result

    def _perturb_randomized(self, target, x, y, eps, norm, seed):
        run, start, _, objective = self._functions(target, norm)
        settings = self.search_settings()
        x, y, eps = np.asarray(x, np.float32), np.asarray(y), np.asarray(eps, np.float32)
        everyone = np.arange(len(x))
        progress = _Progress(len(x), settings["steps"])
        restarts = []
        for restart in range(settings["restarts"]):
            delta = backend.to_numpy(start(x, eps, rng.seed(seed, restart)))
            progress.start(everyone, backend.to_numpy(objective(np.clip(x + delta, 0.0, 1.0), y)))
            done = 0
            while done < settings["steps"]:
                n = min(CHUNK, settings["steps"] - done)
                delta = backend.to_numpy(run(x, y, eps, delta, np.int32(n))[0])
                done += n
                progress.after_chunk(everyone, backend.to_numpy(objective(np.clip(x + delta, 0.0, 1.0), y)))
            restarts.append(np.clip(x + delta, 0.0, 1.0))
        # keep, per example, the restart the majority verdict calls adversarial, if any
        result = restarts[-1].copy()
        broken = np.zeros(len(x), dtype=bool)
        for candidate in restarts if len(restarts) > 1 else []:
            hit = target.adversarial(candidate, y)
            result[hit] = candidate[hit]
            broken |= hit
        self._evidence = {"incomplete_optimization": progress.still_rising() & ~broken} if progress.measured else {}
        return result

    def evidence(self) -> dict[str, np.ndarray]:
        return dict(getattr(self, "_evidence", {}))


class _Progress:
    """Per example, the attack loss at the start of a restart and after each chunk of steps:
    whether its running best still rose by more than :data:`advbench.kit.search.STILL_RISING` of its range over
    the last chunk (the last ten steps), Pintor et al.'s incomplete optimization.  Measured
    only with more than one chunk of steps."""

    def __init__(self, n: int, steps: int):
        self.measured = steps > CHUNK
        self.best = np.full(n, -np.inf)
        self.before_last = np.full(n, -np.inf)
        self.lowest = np.full(n, np.inf)

    def start(self, index, loss) -> None:
        self.best[index] = self.before_last[index] = self.lowest[index] = loss

    def after_chunk(self, index, loss) -> None:
        self.before_last[index] = self.best[index]
        self.best[index] = np.maximum(self.best[index], loss)
        self.lowest[index] = np.minimum(self.lowest[index], loss)

    def still_rising(self) -> np.ndarray:
        return search.still_rising(self.best, self.before_last, self.lowest)
