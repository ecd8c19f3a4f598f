"""Per-example losses that attacks maximize and defenses train against (``keras.ops``)."""

from __future__ import annotations

from advbench.lazy import keras


def cross_entropy(logits, y):
    """Per-example cross-entropy of the true class (maximized by untargeted attacks)."""
    return keras.ops.sparse_categorical_crossentropy(keras.ops.cast(y, "int32"), logits, from_logits=True)


def true_mask(logits, y):
    """Boolean (batch, classes): True at each example's label."""
    return keras.ops.one_hot(keras.ops.cast(y, "int32"), keras.ops.shape(logits)[1]) > 0.5


def true_and_best_other(logits, y):
    """Per example, the label's logit and the largest other logit."""
    ops = keras.ops
    mask = true_mask(logits, y)
    true_logit = ops.max(ops.where(mask, logits, -float("inf")), axis=1)
    other_logit = ops.max(ops.where(mask, -float("inf"), logits), axis=1)
    return true_logit, other_logit


def cw_margin(logits, y):
    """Carlini-Wagner margin ``max_{j != y} f_j - f_y``: positive exactly when misclassified."""
    true_logit, other_logit = true_and_best_other(logits, y)
    return other_logit - true_logit


def misclassified(logits, y):
    """Boolean per example: the top logit is not the label's."""
    return keras.ops.argmax(logits, axis=1) != keras.ops.cast(y, "int32")


LOSSES = {"ce": cross_entropy, "cw": cw_margin}
