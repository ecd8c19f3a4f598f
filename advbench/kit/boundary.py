"""Helpers around the decision boundary, shared by attacks and defenses: moving an
adversarial example back to the boundary along its ray, and the input gradients of
the cross-entropy (for heatmaps and gradient checks)."""

from __future__ import annotations

import numpy as np

from advbench.kit import backend


def input_gradients(target, x: np.ndarray, y: np.ndarray):
    """The cross-entropy's input gradient of every example (EOT-averaged), batch by batch:
    yields NumPy arrays of one batch each."""
    from advbench.kit.losses import cross_entropy

    gradient = target.compile(lambda a, b: target.loss_and_gradient(cross_entropy, a, b)[1], batch_args=(0, 1))
    for start in range(0, len(x), target.batch_size):
        stop = start + target.batch_size
        yield backend.to_numpy(gradient(np.asarray(x[start:stop], np.float32), np.asarray(y[start:stop])))


def gradient_heatmap(target, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean absolute input gradient of the cross-entropy over examples and channels, (H, W)."""
    total = np.zeros(x.shape[1:3])
    for grad in input_gradients(target, x, y):
        total += np.abs(grad).sum(axis=(0, 3))
    return total / (len(x) * x.shape[3])


def shrink_to_boundary(target, x: np.ndarray, y: np.ndarray, adversarial: np.ndarray, steps: int = 12) -> np.ndarray:
    """Move each adversarial example back along its ray from ``x`` to the decision
    boundary: the smallest scale t in (0, 1] (to 2^-steps) with ``x + t (adv - x)``
    still misclassified.  Points stay in the box (it is convex and contains ``x``).
    Examples that are not adversarial are returned unchanged."""
    delta = adversarial - x
    broken = target.predict(adversarial) != y
    low, high = np.zeros(len(x)), np.ones(len(x))
    for _ in range(steps):
        middle = (low + high) / 2
        candidate = (x + middle[:, None, None, None] * delta).astype(np.float32)
        success = target.predict(candidate) != y
        high = np.where(success, middle, high)
        low = np.where(success, low, middle)
    result = (x + high[:, None, None, None] * delta).astype(np.float32)
    return np.where(broken[:, None, None, None], np.clip(result, 0, 1), adversarial)
