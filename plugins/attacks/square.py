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
from advbench import lp
from advbench.lazy import tf

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

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        self._compiled = {}

    def _chunk(self, target, norm):
        key = (id(target), norm)
        if key not in self._compiled:

            def margin(point, y):
                logits = target.logits(point)
                true = tf.one_hot(tf.cast(y, tf.int32), tf.shape(logits)[1]) > 0.5
                own = tf.reduce_max(tf.where(true, logits, -float("inf")), axis=1)
                other = tf.reduce_max(tf.where(true, -float("inf"), logits), axis=1)
                return own - other

            def run(x, y, eps, delta, current, sides, seed):
                shape = tf.shape(x)
                height, width, channels = x.shape[1], x.shape[2], x.shape[3]
                expand = [-1, 1, 1, 1]

                def body(i, delta, current):
                    side = sides[i]
                    seeds = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(seed, i), 3)
                    corner = tf.random.stateless_uniform([shape[0], 2], seeds[0], 0, 1)
                    top = tf.cast(corner[:, 0] * tf.cast(height - side + 1, tf.float32), tf.int32)
                    left = tf.cast(corner[:, 1] * tf.cast(width - side + 1, tf.float32), tf.int32)
                    rows, cols = tf.range(height), tf.range(width)
                    in_rows = (rows[None, :] >= top[:, None]) & (rows[None, :] < top[:, None] + side)
                    in_cols = (cols[None, :] >= left[:, None]) & (cols[None, :] < left[:, None] + side)
                    window = tf.cast(in_rows[:, :, None, None] & in_cols[:, None, :, None], x.dtype)
                    if norm == "linf":
                        signs = tf.sign(tf.random.stateless_uniform([shape[0], 1, 1, channels], seeds[1], -1, 1))
                        proposal = delta * (1 - window) + window * signs * tf.reshape(eps, expand)
                    else:
                        pattern = tf.random.stateless_normal(shape, seeds[2]) * window
                        outside = delta * (1 - window)
                        room = tf.sqrt(tf.maximum(tf.square(eps) - tf.square(lp.norm(outside, "l2")), 0.0))
                        pattern = pattern * tf.reshape(room / tf.maximum(lp.norm(pattern, "l2"), 1e-12), expand)
                        proposal = lp.project(outside + pattern, eps, "l2")
                    proposal = lp.clip_to_box(x, proposal)
                    value = margin(x + proposal, y)
                    better = (value < current) & (current >= 0)
                    return (
                        i + 1,
                        tf.where(tf.reshape(better, expand), proposal, delta),
                        tf.where(better, value, current),
                    )

                _, delta, current = tf.while_loop(lambda i, *_: i < tf.shape(sides)[0], body, [tf.constant(0), delta, current])
                return delta, current

            def start(x, y, eps, seed):
                shape = tf.shape(x)
                if norm == "linf":
                    stripes = tf.sign(tf.random.stateless_uniform([shape[0], 1, shape[2], shape[3]], seed, -1, 1))
                    delta = stripes * tf.reshape(eps, [-1, 1, 1, 1]) * tf.ones_like(x)
                else:
                    delta = lp.project(tf.random.stateless_normal(shape, seed) * 1e3, eps, "l2")
                delta = lp.clip_to_box(x, delta)
                return delta, margin(x + delta, y)

            self._compiled[key] = (tf.function(run, reduce_retracing=True), tf.function(start, reduce_retracing=True))
        return self._compiled[key]

    def perturb(self, target, x, y, eps, norm, seed):
        run, start = self._chunk(target, norm)
        x, y, eps = np.asarray(x), np.asarray(y), np.asarray(eps, np.float32)
        height, width = x.shape[1:3]
        delta, current = (t.numpy() for t in start(x, y, eps, tf.constant([seed, 0], tf.int64)))
        active = np.flatnonzero(current >= 0)
        queries = self.params.queries - 1  # the start used one
        done = 0
        while done < queries and len(active):
            count = min(CHUNK, queries - done)
            sides = [
                int(min(max(round(np.sqrt(window_share(done + k, self.params.queries, self.params.p_init) * height * width)), 1), height - 1))
                for k in range(count)
            ]
            step_seed = tf.constant([seed, done + 1], tf.int64)
            new_delta, new_current = (
                t.numpy() for t in run(x[active], y[active], eps[active], delta[active], current[active], tf.constant(sides), step_seed)
            )
            delta[active], current[active] = new_delta, new_current
            done += count
            active = active[new_current >= 0]
        return np.clip(x + delta, 0, 1).astype(np.float32)


@hookimpl
def advbench_register_attacks(register):
    register("square", Square)
