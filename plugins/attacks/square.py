"""The Square attack (Andriushchenko et al. 2020): query-based random search, no gradients.

linf: start from vertical stripes of +-eps; each iteration draws a square window at a
random position (its side shrinks on the paper's schedule, from ``p_init`` of the image
area) and sets it to +-eps per channel; the change is kept when the margin
``f_y - max_{j != y} f_j`` drops.  l2: a simplified version of the paper's l2 update: the
window receives a fresh Gaussian pattern and the perturbation is rescaled onto the eps
sphere (the paper also moves mass between two windows).  Stops per example at the first
adversarial point or when its query budget is spent.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from advbench import Attack, Params, hookimpl
from advbench.kit import backend, lp, rng
from advbench.kit.losses import true_and_best_other
from advbench.lazy import keras

CHUNK = 50
"""Iterations compiled into one call; the batch is compacted to unbroken examples between calls."""

SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256))


def window_share(iteration, queries, p_init):
    """The share of the image a window covers at this iteration (the paper's schedule, for 10,000 queries)."""
    scaled = int(iteration / queries * 10000)
    divisor = 512
    for bound, value in SCHEDULE:
        if scaled <= bound:
            divisor = value
            break
    return p_init / divisor


class SquareParams(Params):
    queries: int = Field(1000, ge=1, description="Query budget per example.")
    p_init: float = Field(0.8, gt=0, le=1, description="Initial share of the image covered by the square window.")


class Square(Attack):
    """Square attack: score-based random search over square windows (black-box, no gradients)."""

    Params = SquareParams
    uses_gradients = False

    def _chunk(self, target, norm):
        def build():
            ops = keras.ops

            def margin(point, y):
                own, other = true_and_best_other(target.logits(point), y)
                return own - other

            def run(x, y, eps, delta, current, sides, seed):
                shape = ops.shape(x)
                height, width, channels = x.shape[1], x.shape[2], x.shape[3]
                rows, cols = ops.arange(height), ops.arange(width)

                def body(i, delta, current):
                    side = ops.take(sides, i)
                    step_seed = rng.fold_in(seed, i)
                    corner = rng.uniform((shape[0], 2), rng.fold_in(step_seed, 0))
                    top = ops.cast(corner[:, 0] * ops.cast(height - side + 1, "float32"), "int32")
                    left = ops.cast(corner[:, 1] * ops.cast(width - side + 1, "float32"), "int32")
                    in_rows = (rows[None, :] >= top[:, None]) & (rows[None, :] < top[:, None] + side)
                    in_cols = (cols[None, :] >= left[:, None]) & (cols[None, :] < left[:, None] + side)
                    window = ops.cast(in_rows[:, :, None, None] & in_cols[:, None, :, None], x.dtype)
                    if norm == "linf":
                        signs = ops.sign(rng.uniform((shape[0], 1, 1, channels), rng.fold_in(step_seed, 1), -1.0, 1.0))
                        proposal = delta * (1 - window) + window * signs * lp.broadcast(eps, x)
                    else:
                        pattern = rng.normal(shape, rng.fold_in(step_seed, 2)) * window
                        outside = delta * (1 - window)
                        room = ops.sqrt(ops.maximum(ops.square(eps) - ops.square(lp.norm(outside, "l2")), 0.0))
                        pattern = pattern * lp.broadcast(room / ops.maximum(lp.norm(pattern, "l2"), 1e-12), x)
                        proposal = lp.project(outside + pattern, eps, "l2")
                    proposal = lp.clip_to_box(x, proposal)
                    value = margin(x + proposal, y)
                    better = (value < current) & (current >= 0)
                    return i + 1, ops.where(lp.broadcast(better, x), proposal, delta), ops.where(better, value, current)

                count = ops.shape(sides)[0]
                _, delta, current = backend.while_loop(lambda i, *_: i < count, body, (0, delta, current))
                return delta, current

            def start(x, y, eps, seed):
                shape = ops.shape(x)
                if norm == "linf":
                    stripes = ops.sign(rng.uniform((shape[0], 1, shape[2], shape[3]), seed, -1.0, 1.0))
                    delta = stripes * lp.broadcast(eps, x) * ops.ones_like(x)
                else:
                    delta = lp.project(rng.normal(shape, seed) * 1e3, eps, "l2")
                delta = lp.clip_to_box(x, delta)
                return delta, margin(x + delta, y)

            return (target.compile(run, batch_args=(0, 1, 2, 3, 4)), target.compile(start, batch_args=(0, 1, 2)))

        return self.per_target(target, norm, build)

    def perturb(self, target, x, y, eps, norm, seed):
        run, start = self._chunk(target, norm)
        x, y, eps = np.asarray(x, np.float32), np.asarray(y), np.asarray(eps, np.float32)
        height, width = x.shape[1:3]
        delta, current = (backend.to_numpy(t) for t in start(x, y, eps, rng.seed(seed, 0)))
        active = np.flatnonzero(current >= 0)
        queries = self.params.queries - 1  # the start used one
        done = 0
        while done < queries and len(active):
            count = min(CHUNK, queries - done)
            sides = [
                int(
                    min(
                        max(round(np.sqrt(window_share(done + k, self.params.queries, self.params.p_init) * height * width)), 1),
                        height - 1,
                    )
                )
                for k in range(count)
            ]
            step_seed = rng.seed(seed, done + 1)
            new_delta, new_current = (
                backend.to_numpy(t)
                for t in run(
                    x[active], y[active], eps[active], delta[active], current[active], np.asarray(sides, np.int32), step_seed
                )
            )
            delta[active], current[active] = new_delta, new_current
            done += count
            active = active[new_current >= 0]
        return np.clip(x + delta, 0, 1).astype(np.float32)


@hookimpl
def advbench_register_attacks(register):
    register("square", Square)
