"""Can this evaluation be trusted?  Every check of advbench's in one place (as AutoAttack's
``checks.py``): near-chance accuracy (inputs scaled differently from training),
probabilities where logits are expected, declared against observed randomness, zero or
non-finite input gradients, the signs of gradient masking read off the finished records
(a black-box attack beating the white-box ones, success falling as the budget grows,
examples no budget breaks), and the six indicators of attack failure of Pintor et al.
(2022) per attack and example (:func:`attack_indicators`).  The pipeline calls them where
the evidence is made; the leaderboard shows what they found as flags.
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
    signs of gradient masking (or of saturated softmax, which also blinds CE attacks); and
    which examples (``unavailable``: the positions of either, Pintor et al.'s unavailable
    gradients)."""
    from advbench.kit.boundary import input_gradients

    zero, nonfinite = [], []
    for grad in input_gradients(target, x, y):
        flat = grad.reshape(len(grad), -1)
        finite = np.isfinite(flat).all(axis=1)
        nonfinite.append(~finite)
        zero.append(finite & (np.abs(flat).max(axis=1) == 0))
    zero = np.concatenate(zero) if zero else np.zeros(0, bool)
    nonfinite = np.concatenate(nonfinite) if nonfinite else np.zeros(0, bool)
    return {
        "zero": float(zero.sum()) / max(1, len(x)),
        "nonfinite": float(nonfinite.sum()) / max(1, len(x)),
        "unavailable": np.flatnonzero(zero | nonfinite).tolist(),
    }


UNSTABLE_DRAWS = 8
UNSTABLE_RADIUS = 4 / 255
UNSTABLE_CHANGE = 0.5
"""Unstable predictions (Pintor et al.): the margin changes by more than ``UNSTABLE_CHANGE``
of itself, on average over ``UNSTABLE_DRAWS`` uniform perturbations of up to
``UNSTABLE_RADIUS`` per pixel (their setting: 8/255 wide, centred)."""


def unstable_predictions(target, x: np.ndarray, y: np.ndarray, seed: int = 0) -> list[int]:
    """The examples whose margin (true logit minus the largest other) moves by more than
    :data:`UNSTABLE_CHANGE` of itself, on average, under small random perturbations: a
    noisy or random loss landscape, where gradient steps mislead (Pintor et al.'s unstable
    predictions indicator, on the margin rather than the loss: the cross-entropy of a
    confident example is near 0 and relatively unstable for any model).  One draw per query
    of a randomized model, so its randomness shows."""
    from advbench.kit.target import adversarial_margin

    generator = np.random.default_rng(seed)
    reference = -adversarial_margin(target.logits_numpy(x).astype(np.float64), y)
    change = np.zeros(len(x))
    for _ in range(UNSTABLE_DRAWS):
        noise = generator.uniform(-UNSTABLE_RADIUS, UNSTABLE_RADIUS, size=x.shape).astype(np.float32)
        margin = -adversarial_margin(target.logits_numpy(np.clip(x + noise, 0, 1)).astype(np.float64), y)
        change += np.abs(margin - reference) / np.maximum(np.abs(reference), 1e-12)
    return np.flatnonzero(change / UNSTABLE_DRAWS > UNSTABLE_CHANGE).tolist()


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


INDICATORS = (
    "silent_success",
    "incomplete_optimization",
    "transfer_failure",
    "unconstrained_failure",
    "unavailable_gradients",
    "unstable_predictions",
)
"""Pintor et al.'s (2022) six indicators of attack failure, as advbench measures them:

* ``silent_success``: at a budget of the spec the attack's run returned no adversarial
  example, though it found one within that budget in another of its runs (a restart, the
  bisection): the attack's own search had it and let it go (fixed-budget attacks);
* ``incomplete_optimization``: at the largest budget, the example resisted while the attack
  loss was still rising over the last ten steps (attacks that report it: PGD, APGD);
* ``transfer_failure``: the point fooled the model it was crafted on, not the target
  (transfer attacks);
* ``unconstrained_failure``: nothing adversarial found even where the budget covers the
  whole input box (advbench grows every fixed budget to the box's diameter; a minimal-norm
  attack has no budget): every classifier can be broken there, so the attack failed;
* ``unavailable_gradients``: zero or non-finite input gradients of the cross-entropy at the
  example (attacks that use gradients);
* ``unstable_predictions``: the margin moves by more than half itself under tiny random
  perturbations (:func:`unstable_predictions`).

Each is the share of the correctly classified examples it affects, or ``None`` where it does
not apply to the attack (or the record predates it)."""


def attack_indicators(b, clean: dict) -> dict[str, dict[str, float | None]]:
    """Per attack of ``b`` (:class:`advbench.results.Bounds`), each of :data:`INDICATORS`:
    the share of the correctly classified examples it affects, ``None`` where it does not apply."""
    correct = b.correct
    count = max(1, int(correct.sum()))
    unavailable = _mask(clean.get("gradients", {}).get("unavailable"), len(correct))
    unstable = _mask(clean.get("unstable_predictions"), len(correct))
    found = {}
    for label, record in b.attack_records.items():
        radius = np.asarray(record["radius"], dtype=np.float64)
        evidence = record.get("evidence") or {}
        indicators: dict[str, float | None] = dict.fromkeys(INDICATORS)
        if not record.get("minimal_norm") and record.get("success") and record.get("fixed_budget_success"):
            silent = np.any(np.asarray(record["success"], bool) & ~np.asarray(record["fixed_budget_success"], bool), axis=0)
            indicators["silent_success"] = _share(silent, correct, count)
        for name in ("incomplete_optimization", "transfer_failure"):
            if name in evidence:
                indicators[name] = _share(np.asarray(evidence[name], bool), correct, count)
        indicators["unconstrained_failure"] = _share(np.isinf(radius), correct, count)
        if record.get("uses_gradients", True) and unavailable is not None:
            indicators["unavailable_gradients"] = _share(unavailable, correct, count)
        if unstable is not None:
            indicators["unstable_predictions"] = _share(unstable, correct, count)
        found[label] = indicators
    return found


def _mask(positions, n: int) -> np.ndarray | None:
    if positions is None:
        return None
    mask = np.zeros(n, bool)
    mask[np.asarray(positions, dtype=int)] = True
    return mask


def _share(flags: np.ndarray, correct: np.ndarray, count: int) -> float:
    return float(np.sum(flags & correct)) / count


ATTACK_LEVEL = ("silent_success", "incomplete_optimization", "transfer_failure", "unconstrained_failure")
"""The indicators that depend on the attack; the other two depend on the model alone (and
the gradient one is in :func:`masking_flags` already)."""


def indicator_flags(indicators: dict[str, dict[str, float | None]]) -> list[str]:
    """The leaderboard's flags for triggered indicators: per attack, those that depend on it,
    with their shares; unstable predictions once (it is the model's)."""
    flags = []
    for label, found in indicators.items():
        triggered = [f"{name.replace('_', ' ')} {_percent(found[name])}" for name in ATTACK_LEVEL if found.get(name)]
        if triggered:
            flags.append(f"{label}: {', '.join(triggered)}")
    unstable = max((found.get("unstable_predictions") or 0.0 for found in indicators.values()), default=0.0)
    if unstable:
        flags.append(f"unstable predictions on {_percent(unstable)}")
    return flags


def triggered(found: dict[str, float | None]) -> list[str]:
    """The attack-level indicators an attack's evaluation triggered (its number is then suspect)."""
    return [name for name in ATTACK_LEVEL if found.get(name)]


def _percent(share: float) -> str:
    return f"{100 * share:.0f}%" if share >= 0.01 else f"{100 * share:.1f}%"


FLAG_MEANINGS = (
    (
        "near-chance clean accuracy",
        "The clean accuracy is close to guessing: the inputs are usually scaled differently from what the model was trained on.",
    ),
    (
        "EOT disabled",
        "The model is randomized and was attacked without Expectation over Transformation: its empirical "
        "numbers are not a valid evaluation.",
    ),
    (
        "randomized",
        "The model's outputs are random; attacks average gradients over draws (EOT) and a point counts "
        "adversarial only if it fools the model on repeated draws.",
    ),
    (
        "undeclared randomness",
        "Two identical calls of the model gave different outputs, though it does not declare "
        "itself randomized: attacks were not run with EOT.",
    ),
    ("declared randomized, but two calls agreed", "The model says it is randomized, yet two identical calls agreed."),
    ("NaN/inf gradients", "Input gradients that are not finite: a sign of gradient masking; gradient attacks are blind there."),
    ("zero gradients", "Input gradients that are exactly zero: a sign of gradient masking (or a saturated softmax)."),
    ("black-box", "A black-box attack broke more examples than the white-box ones: the gradients mislead (masking)."),
    ("success falls as ε grows", "The attack broke fewer examples at a larger budget: its search failed, not the model."),
    (
        "unbroken at ε covering",
        "Examples no attack broke even with a budget covering the whole input range, where "
        "every classifier can be broken: the attacks failed.",
    ),
    (
        "unstable predictions",
        "The margin moves by more than half itself under tiny random perturbations: a noisy loss "
        "landscape where gradient steps mislead (Pintor et al. 2022).",
    ),
    (
        "silent success",
        "The attack found an adversarial example within the budget in one of its runs and returned none (Pintor et al. 2022).",
    ),
    (
        "incomplete optimization",
        "The attack loss was still rising at the last steps: more steps would break more (Pintor et al. 2022).",
    ),
    ("transfer failure", "The transfer attack's points fooled the model they were crafted on, not this one."),
    (
        "unconstrained failure",
        "Nothing adversarial found even with no budget limit: every classifier can be broken "
        "there, so the attack failed (Pintor et al. 2022).",
    ),
    (
        "unavailable gradients",
        "Input gradients zero or not finite at the example: gradient attacks are blind there (Pintor et al. 2022).",
    ),
    ("ERROR", "A job failed or a certifier claimed a radius above an adversarial example found: see the errors."),
)
"""What each flag means, for the leaderboard's legends: (a phrase the flag contains, its
meaning); the first matching phrase wins."""


def explain_flag(flag: str) -> list[str]:
    """The meanings of what ``flag`` names (an attack's indicator flag can name several)."""
    meanings = [meaning for phrase, meaning in FLAG_MEANINGS if phrase in flag]
    if "randomized" in flag and len(meanings) > 1:
        meanings = [m for m in meanings if not m.startswith("The model's outputs are random")]
    return meanings or ["See the notes of this model."]


def checks_page() -> str:
    """docs/checks.md: every flag a leaderboard can raise and what it means, from
    :data:`FLAG_MEANINGS` (``python -m advbench.core.checks > docs/checks.md``; a test
    checks that the page is current)."""
    lines = [
        "# The leaderboard's flags",
        "",
        "<!-- generated from advbench/core/checks.py (FLAG_MEANINGS): python -m advbench.core.checks > docs/checks.md -->",
        "",
        "A flag says why an evaluation may not be believed as it stands. Each is raised where its",
        "evidence is made (a job) or read (the results), and shown beside the model it concerns.",
        "",
        "| flag (contains) | what it means |",
        "| --- | --- |",
    ]
    lines += [f"| {phrase} | {meaning} |" for phrase, meaning in FLAG_MEANINGS]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(checks_page(), end="")
