"""Can this evaluation be trusted?  Every check of advbench's in one place (as AutoAttack's
``checks.py``): near-chance accuracy (inputs scaled differently from training),
probabilities where logits are expected, declared against observed randomness, zero or
non-finite input gradients, and the signs of gradient masking read off the finished
records (a black-box attack beating the white-box ones, success falling as the budget
grows, examples no budget breaks).  The pipeline calls them where the evidence is made;
the leaderboard shows what they found as flags.
"""

from __future__ import annotations

import numpy as np

CHANCE_MARGIN = 1.5
"""A clean accuracy below ``CHANCE_MARGIN / classes`` is flagged as near chance."""

RANDOMNESS_PROBE = 32
"""Examples used to check whether two identical calls of a model differ."""


def near_chance(accuracy: float, classes: int) -> bool:
    """Whether a clean accuracy is close to guessing (usually: inputs scaled differently
    from what the model was trained on)."""
    return accuracy < CHANCE_MARGIN / max(classes, 2)


def final_activation(model) -> str | None:
    """``softmax`` or ``sigmoid`` where the model's last layer applies one (it outputs
    probabilities, not logits), else ``None``."""
    from advbench.kit.structure import activation_name

    layer = model.layers[-1]
    if type(layer).__name__ == "Softmax":
        return "softmax"
    name = activation_name(layer)
    return name if name in ("softmax", "sigmoid") else None


def outputs_probabilities(model, x: np.ndarray) -> bool:
    """Whether the model's outputs on ``x`` look like probabilities (non-negative rows
    summing to 1) rather than logits."""
    from advbench.kit import backend

    outputs = backend.to_numpy(model(x, training=False)).astype(np.float64)
    return bool(np.all(outputs >= 0) and np.allclose(outputs.sum(axis=1), 1.0, atol=1e-3))


def observed_randomness(target, x: np.ndarray) -> bool:
    """Whether identical calls of the target's model on (up to :data:`RANDOMNESS_PROBE` of)
    ``x`` give different logits."""
    return target.differs_between_calls(x[:RANDOMNESS_PROBE])


def gradient_check(target, x: np.ndarray, y: np.ndarray) -> dict:
    """Shares of examples whose cross-entropy input gradient is all zero, or not finite:
    signs of gradient masking (or of saturated softmax, which also blinds CE attacks)."""
    from advbench.kit.boundary import input_gradients

    zero = nonfinite = 0
    for grad in input_gradients(target, x, y):
        flat = grad.reshape(len(grad), -1)
        finite = np.isfinite(flat).all(axis=1)
        nonfinite += int((~finite).sum())
        zero += int((finite & (np.abs(flat).max(axis=1) == 0)).sum())
    return {"zero": zero / max(1, len(x)), "nonfinite": nonfinite / max(1, len(x))}


def clean_flags(b, clean: dict) -> list[str]:
    """What a model's clean record says about its evaluation: near chance, randomized
    (and whether EOT was off), randomness that was not declared or not observed.
    ``b``: its bounds (:class:`advbench.results.Bounds`)."""
    flags = []
    if near_chance(b.clean_accuracy(), clean.get("classes", len(np.unique(b.label)))):
        flags.append("near-chance clean accuracy (input scaling?)")
    randomness = clean.get("randomness", {})
    eot = clean.get("eot", {})
    if eot.get("randomized"):
        flags.append("randomized")
        if not eot.get("eot_enabled", True):
            flags.append("EOT disabled: invalid evaluation")
    if randomness.get("observed") and not randomness.get("declared"):
        flags.append("undeclared randomness")
    if randomness.get("declared") and not randomness.get("observed"):
        flags.append("declared randomized, but two calls agreed")
    return flags


def masking_flags(b, clean: dict) -> list[str]:
    """Signs of gradient masking (AutoAttack, ART, Carlini et al. 2019), from the records.
    ``b``: the model's bounds under one threat model (:class:`advbench.results.Bounds`)."""
    flags = []
    gradients = clean.get("gradients", {})
    if gradients.get("nonfinite"):
        flags.append(f"NaN/inf gradients on {100 * gradients['nonfinite']:.0f}%")
    if gradients.get("zero"):
        flags.append(f"zero gradients on {100 * gradients['zero']:.0f}%")
    correct = b.correct
    white = {k: r for k, r in b.attack_records.items() if r.get("uses_gradients", True)}
    black = {k: r for k, r in b.attack_records.items() if not r.get("uses_gradients", True)}
    if white and black:
        for eps in b.eps:
            white_acc = min(b.empirical_accuracy(eps, k) for k in white)
            for label in black:
                if b.empirical_accuracy(eps, label) < white_acc - 0.5 / len(correct):
                    flags.append(f"black-box {label} beats the white-box attacks at ε={eps:g}")
                    break
    for label, record in b.attack_records.items():
        rates = (
            np.asarray(record.get("fixed_budget_success", []), dtype=float).mean(axis=1)
            if record.get("fixed_budget_success")
            else []
        )
        if len(rates) > 1 and np.any(np.diff(rates) < -1.5 / len(correct)):
            flags.append(f"{label}: success falls as ε grows")
    if b.empirical and correct.any():
        never = np.mean(correct & np.isinf(b.empirical_radius))
        classes = max(len(np.unique(b.label)), 2)
        if never > 1.0 / classes:
            flags.append(f"{100 * never:.0f}% unbroken at ε covering the whole input range")
    return flags
