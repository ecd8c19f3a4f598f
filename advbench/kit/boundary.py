"""Helpers around the decision boundary, shared by attacks and defenses: moving an
adversarial example back to the boundary along its ray, and the input gradients of
the cross-entropy (for heatmaps and gradient checks)."""

from __future__ import annotations

import numpy as np

from advbench.kit import backend, search


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


OVERSHOOTS = (2.0**-12, 2.0**-8, 2.0**-4)
"""How far past the attack's point shrink_to_boundary looks along the ray when the point sits
on the decision boundary (misclassified, but without the verified margin)."""


def shrink_to_boundary(target, x: np.ndarray, y: np.ndarray, adversarial: np.ndarray, steps: int = 12) -> np.ndarray:
    """Move each adversarial example back along its ray from ``x`` towards the decision
    boundary: the smallest scale t (to 2^-steps) with ``x + t (adv - x)`` (clipped to the
    box) still adversarial as :meth:`~advbench.kit.target.Target.adversarial` verifies it
    (a margin that survives float32 reordering, checked in a batch of its own); a point on
    the boundary itself is first moved a little past it (t slightly above 1, see
    :data:`OVERSHOOTS`).  The point returned is exactly the last one that passed.  Examples
    with no verified point are returned unchanged."""
    delta = adversarial - x
    best = adversarial.copy()
    broken = target.adversarial(adversarial, y)
    high = np.ones(len(x))
    for overshoot in OVERSHOOTS:
        todo = np.flatnonzero(~broken)
        if not len(todo):
            break
        candidate = np.clip(x[todo] + (1 + overshoot) * delta[todo], 0, 1).astype(np.float32)
        hit = target.adversarial(candidate, y[todo])
        best[todo[hit]], high[todo[hit]], broken[todo[hit]] = candidate[hit], 1 + overshoot, True
    low = np.zeros(len(x))
    for _ in range(steps):
        middle = search.midpoint(low, high, geometric=False)
        candidate = np.clip(x + middle[:, None, None, None] * delta, 0, 1).astype(np.float32)
        success = broken & target.adversarial(candidate, y)
        best[success] = candidate[success]
        low, high = search.narrow(middle, success, low, high)
    return best
