"""Projected gradient descent (Madry et al. 2018) for linf and l2, and the losses it
maximizes.  This is the one PGD in advbench: FGSM is its one-step case and PGD
adversarial training calls :func:`pgd_search` too.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from advbench import Attack, Params, hookimpl
from advbench import lp
from advbench.lazy import tf


def cross_entropy(logits, y):
    """Per-example cross-entropy of the true class (maximized by untargeted attacks)."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(y, tf.int32), logits=logits)


def cw_margin(logits, y):
    """Carlini-Wagner margin ``max_{j != y} f_j - f_y``: positive exactly when misclassified."""
    true_mask = tf.one_hot(tf.cast(y, tf.int32), tf.shape(logits)[1]) > 0.5
    true_logit = tf.reduce_max(tf.where(true_mask, logits, -float("inf")), axis=1)
    other_logit = tf.reduce_max(tf.where(true_mask, -float("inf"), logits), axis=1)
    return other_logit - true_logit


LOSSES = {"ce": cross_entropy, "cw": cw_margin}


def pgd_search(loss_and_gradient, x, y, eps, norm, *, steps, step_size, random_start, restarts, seed):
    """Maximize a loss over the p-ball of radius ``eps`` (per example) intersected with [0, 1].

    :param loss_and_gradient: ``f(x, y) -> (loss, gradient, logits)`` per example.
    :param step_size: step length as a fraction of ``eps``.
    :param seed: a ``[2]`` int tensor; restarts and random starts derive from it.
    :return: per example, the smallest adversarial iterate seen over all steps and
        restarts, or, where none was adversarial, the last iterate of the restart with
        the highest loss.  Always inside the ball and the box.
    """
    batch = tf.shape(x)[0]
    best_adv_norm = tf.fill([batch], float("inf"))
    best_adv = x
    best_loss = tf.fill([batch], -float("inf"))
    best_other = x

    def keep_smaller_adversarial(delta, logits, best_adv_norm, best_adv):
        is_adv = tf.not_equal(tf.argmax(logits, axis=1, output_type=tf.int64), tf.cast(y, tf.int64))
        size = lp.norm(delta, norm)
        better = tf.logical_and(is_adv, size < best_adv_norm)
        return tf.where(better, size, best_adv_norm), tf.where(lp.broadcast(better, x), x + delta, best_adv)

    for restart in range(restarts):
        restart_seed = tf.random.experimental.stateless_fold_in(seed, restart)
        if random_start:
            delta = lp.clip_to_box(x, lp.random_in_ball(tf.shape(x), eps, norm, restart_seed))
        else:
            delta = tf.zeros_like(x)

        def step(i, delta, best_adv_norm, best_adv):
            _, grad, logits = loss_and_gradient(x + delta, y)
            best_adv_norm, best_adv = keep_smaller_adversarial(delta, logits, best_adv_norm, best_adv)
            delta = delta + lp.broadcast(step_size * eps, x) * lp.steepest_ascent(grad, norm)
            delta = lp.clip_to_box(x, lp.project(delta, eps, norm))
            return i + 1, delta, best_adv_norm, best_adv

        _, delta, best_adv_norm, best_adv = tf.while_loop(
            lambda i, *_: i < steps, step, [tf.constant(0), delta, best_adv_norm, best_adv]
        )
        loss, _, logits = loss_and_gradient(x + delta, y)
        best_adv_norm, best_adv = keep_smaller_adversarial(delta, logits, best_adv_norm, best_adv)
        higher = loss > best_loss
        best_loss = tf.where(higher, loss, best_loss)
        best_other = tf.where(lp.broadcast(higher, x), x + delta, best_other)

    found = lp.broadcast(tf.math.is_finite(best_adv_norm), x)
    return tf.where(found, best_adv, best_other)


class PGDParams(Params):
    steps: int = Field(40, ge=1, description="Gradient steps per restart.")
    restarts: int = Field(1, ge=1, description="Random restarts; the best per example is kept.")
    step_size: float | None = Field(None, gt=0, description="Step length as a fraction of eps; default 2.5 / steps.")
    loss: Literal["ce", "cw"] = Field("ce", description="Cross-entropy or the Carlini-Wagner margin.")
    random_start: bool = Field(True, description="Start from a uniform random point in the ball.")


class PGD(Attack):
    """Projected gradient descent with random restarts (Madry et al. 2018)."""

    Params = PGDParams

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        self._compiled = {}

    def search_settings(self) -> dict:
        p = self.params
        return {
            "steps": p.steps,
            "step_size": p.step_size if p.step_size is not None else 2.5 / p.steps,
            "random_start": p.random_start,
            "restarts": p.restarts,
        }

    def perturb(self, target, x, y, eps, norm, seed):
        key = (id(target), norm)
        if key not in self._compiled:
            loss = LOSSES[self.params.loss]
            settings = self.search_settings()

            def run(x, y, eps, seed):
                return pgd_search(
                    lambda x, y: target.loss_and_gradient(loss, x, y), x, y, eps, norm, seed=seed, **settings
                )

            self._compiled[key] = tf.function(run, reduce_retracing=True)
        return self._compiled[key](x, y, eps, tf.constant([seed, 0], tf.int64))


@hookimpl
def advbench_register_attacks(register):
    register("pgd", PGD)
