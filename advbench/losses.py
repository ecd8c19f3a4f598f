"""Per-example losses that attacks maximize and defenses train against."""

from __future__ import annotations

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
