"""Adam's update (Kingma & Ba 2015) on tensors inside a compiled loop (``keras.ops``), for
attacks and certifiers that optimize one variable per example: ``keras.optimizers.Adam``
updates model variables, not the loop's state."""

from __future__ import annotations

from advbench.lazy import keras

BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-8


def adam_direction(grad, first, second, step):
    """The bias-corrected Adam direction at ``step`` (1, 2, ...) for ``grad``, and the
    updated first and second moments: ``x - rate * direction`` descends, ``+`` ascends."""
    ops = keras.ops
    first = BETA_1 * first + (1 - BETA_1) * grad
    second = BETA_2 * second + (1 - BETA_2) * ops.square(grad)
    direction = (first / (1 - BETA_1**step)) / (ops.sqrt(second / (1 - BETA_2**step)) + EPSILON)
    return direction, first, second
