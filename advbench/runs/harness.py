"""From attacks and certifiers to per-example radii.

* A fixed-budget attack runs at every eps of the threat model; its **empirical radius**
  per example is the norm of the smallest adversarial example it found, sharpened by a
  bisection over eps (per example, batched) until the bracket [eps where it failed,
  norm of the adversarial example] is tighter than the relative tolerance.  Examples
  not broken at the largest eps are tried at doubling budgets up to the box diameter.
* A minimal-norm attack's result gives the radius directly.
* A fixed-budget attack with a minimal-norm stage (``Attack.minimal_stage``, the
  ``ensemble``) is scheduled as AutoAttack runs its cascade: the minimal-norm stage once;
  then at each eps of the spec, from the largest down, only on the examples not yet broken
  at that eps, and below the largest only on those a larger budget broke (the attack itself
  runs each member only on what the earlier ones left); then the bisection only inside each
  example's bracket [largest eps it resisted, smallest adversarial norm found], and the
  budget grows beyond the largest eps only where nothing at all was found.  Its radius is thus the smallest any member found, sharpened inside
  the bracket; no work is spent on examples an earlier stage already settled.
* An adversarial example counts only when :meth:`~advbench.kit.target.Target.adversarial`
  verifies it anew (a margin that survives float32 reordering, in a batch of its own), and
  the radius is the norm of that very point.
* A certifier's radius is taken as returned.

Misclassified clean examples have radius 0 on both sides and are not attacked.
Every attack output is checked against its budget (allowing for the rounding of its float32
coordinates, :func:`~advbench.contract.components.budget_allowance`) and the [0, 1] box; a
violation is an error of the attack, never silently repaired.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from advbench.contract.components import BUDGET_RTOL, budget_allowance
from advbench.errors import AdvbenchError
from advbench.kit import lp, search

KEEP_ADVERSARIAL = 16
"""Adversarial examples kept per job (the first examples), for figures."""


class AttackContractError(AdvbenchError):
    """An attack returned a point outside its budget or outside [0, 1]."""


@dataclass
class AttackOutcome:
    radius: np.ndarray  # (n,) float64, inf where nothing adversarial was found
    success: np.ndarray  # (len(eps), n) bool: an adversarial example within eps exists
    fixed_budget_success: np.ndarray  # (len(eps), n) bool: the run *at* eps succeeded
    adversarial: np.ndarray  # the smallest adversarial example found per example (x where none)
    attack_calls: int  # batched calls of the attack, bisection included
    found_by: list | None = None  # per example: which part of a composite attack found it
    evidence: dict[str, np.ndarray] | None = None  # per example, what the attack saw at the largest eps (Attack.evidence)


def attack_radii(
    attack,
    target,
    x: np.ndarray,
    y: np.ndarray,
    predicted: np.ndarray,
    norm: str,
    eps_list: list[float],
    tolerance: float,
    seed: int,
    batch_size: int,
    advance: Callable[[int], None] = lambda n: None,
    context=None,
) -> AttackOutcome:
    """Run ``attack`` on all examples in batches and return per-example outcomes.
    ``context``: what the attack's ``prepare`` gets (:mod:`advbench.runs.context`; by
    default the installed attacks and no other models)."""
    from advbench.runs.context import Components

    n = len(x)
    attack.prepare(target, x, y, Components() if context is None else context)
    radius = np.where(predicted == y, np.inf, 0.0)
    fixed = np.zeros((len(eps_list), n), dtype=bool)
    fixed[:, predicted != y] = True
    adversarial = x.copy()
    found_by = np.full(n, None, dtype=object)
    evidence: dict[str, np.ndarray] = {}
    calls = 0
    for start in range(0, n, batch_size):
        index = np.arange(start, min(n, start + batch_size))
        index = index[predicted[index] == y[index]]
        if len(index):
            radii = _RadiusSearch(attack, target, x[index], y[index], norm, seed + start)
            if attack.minimal_norm or attack.minimal_stage:
                radii.minimal()
            if not attack.minimal_norm:
                fixed[:, index] = radii.fixed_budget(eps_list, tolerance)
            radius[index] = radii.best_norm
            adversarial[index] = radii.best_adv
            found_by[index] = radii.found_by
            for name, values in radii.evidence.items():
                evidence.setdefault(name, np.zeros(n, dtype=bool))[index] = values
            calls += radii.calls
        advance(min(n, start + batch_size) - start)
    success = radius[None, :] <= np.asarray(eps_list)[:, None] * (1 + BUDGET_RTOL)
    labels = found_by.tolist() if any(f is not None for f in found_by) else None
    return AttackOutcome(radius, success, fixed, adversarial, calls, labels, evidence)


class _RadiusSearch:
    """Per-example search for the smallest adversarial example of one batch."""

    def __init__(self, attack, target, x, y, norm, seed):
        self.attack, self.target, self.x, self.y, self.norm = attack, target, x, y, norm
        self.seed = seed
        self.best_norm = np.full(len(x), np.inf)
        self.best_adv = x.copy()
        self.found_by = np.full(len(x), None, dtype=object)
        self.calls = 0
        self.cap = lp.box_diameter(x.shape[1:], norm)
        self.evidence: dict[str, np.ndarray] = {}  # per example, from the call at the largest eps (or the minimal stage)

    def minimal(self) -> None:
        everyone = np.arange(len(self.x))
        self._record(everyone, *self._call(everyone, None))
        self._keep_evidence(everyone)

    def _keep_evidence(self, index) -> None:
        for name, values in self.attack.evidence().items():
            self.evidence.setdefault(name, np.zeros(len(self.x), dtype=bool))[index] = np.asarray(values, dtype=bool)

    def fixed_budget(self, eps_list, tolerance) -> np.ndarray:
        n = len(self.x)
        lower = np.zeros(n)  # largest eps at which the attack failed (below the best norm)
        fixed = np.zeros((len(eps_list), n), dtype=bool)
        everyone = np.arange(n)
        if self.attack.minimal_stage:
            self._cascade(eps_list, fixed, lower)
        else:
            for k, eps in enumerate(eps_list):
                fixed[k] = self._attempt(everyone, np.full(n, eps), lower)
                if k == len(eps_list) - 1:
                    self._keep_evidence(everyone)
        # Grow the budget for examples still unbroken, up to the box diameter.
        search.grow(
            lambda index, eps: self._attempt(index, eps, lower), lambda: np.isinf(self.best_norm), max(eps_list), self.cap
        )

        # Bisect each finite bracket [lower, best_norm] to the relative tolerance, or until
        # float32 (what attacks receive) cannot split it, or a step does not shrink it.
        def step(index, eps):
            success = self._attempt(index, eps, lower)
            return success, lower[index], self.best_norm[index]

        todo = search.still_open(lower, self.best_norm, tolerance, geometric=False)
        search.bisect(step, lower, self.best_norm, todo, tolerance=tolerance, geometric=False)
        return fixed

    def _cascade(self, eps_list, fixed, lower) -> None:
        """AutoAttack's schedule for an attack with a minimal-norm stage (which ran already):
        from the largest eps down, the attack runs only on the examples not yet broken at
        that eps; below the largest, only on those the larger budgets broke (the ball of a
        smaller eps lies inside the larger one, so an example the attack could not break
        within the largest eps counts as unbroken within the smaller ones)."""
        everyone = np.arange(len(self.x))
        resisted = np.zeros(len(self.x), dtype=bool)  # unbroken at a larger eps
        for k in range(len(eps_list) - 1, -1, -1):
            eps = eps_list[k]
            fixed[k] = self.best_norm <= eps * (1 + BUDGET_RTOL)
            todo = everyone[~fixed[k] & ~resisted]
            if len(todo):
                fixed[k, todo] = self._attempt(todo, np.full(len(todo), eps), lower)
                if k == len(eps_list) - 1:
                    self._keep_evidence(todo)
            resisted |= ~fixed[k]
            lower[resisted] = np.maximum(lower[resisted], eps)  # resisted within eps: the bracket starts there

    def _attempt(self, index, eps, lower) -> np.ndarray:
        success = self._record(index, *self._call(index, eps))
        failed = index[~success]
        lower[failed] = np.maximum(lower[failed], eps[~success])
        return success

    def _call(self, index, eps):
        x, y = self.x[index], self.y[index]
        seed = (self.seed * 1_000_003 + self.calls) % (2**31 - 1)
        self.calls += 1
        if eps is None:
            result = self.attack.minimize(self.target, x, y, self.norm, seed)
        else:
            result = self.attack.perturb(self.target, x, y, np.asarray(eps, np.float32), self.norm, seed)
        adv, found_by = result if isinstance(result, tuple) else (result, None)
        adv = np.asarray(adv, dtype=np.float32)
        self._check(index, adv, eps)
        return adv, found_by

    def _check(self, index, adv, eps) -> None:
        name = self.attack.name or type(self.attack).__name__
        if adv.shape != self.x[index].shape:
            raise AttackContractError(f"attack {name!r} returned shape {adv.shape}, expected {self.x[index].shape}")
        if not np.all(np.isfinite(adv)) or adv.min() < 0 or adv.max() > 1:
            raise AttackContractError(f"attack {name!r} returned points outside the [0, 1] box")
        if eps is not None:
            size = _distance(adv, self.x[index], self.norm)
            over = size > budget_allowance(adv, eps, self.norm)
            if np.any(over):
                k = np.flatnonzero(over)[0]
                raise AttackContractError(f"attack {name!r} left its budget: {self.norm} norm {size[k]:.6g} > eps {eps[k]:.6g}")

    def _record(self, index, adv, found_by=None) -> np.ndarray:
        # verified anew (not in the attack's batch): only a point that holds up counts
        success = self.target.adversarial(adv, self.y[index])
        size = _distance(adv, self.x[index], self.norm)
        better = search.keep_smaller_rows(index, success, size, adv, self.best_norm, self.best_adv)
        if found_by is not None:
            self.found_by[index[better]] = np.asarray(found_by, dtype=object)[better]
        return success


def _distance(adv, x, p: str) -> np.ndarray:
    """Per example, the p-distance between two float32 batches, the difference taken in
    float64 (exact), not rounded to float32 first."""
    return lp.numpy_norm(np.asarray(adv, np.float64) - np.asarray(x, np.float64), p)


def certified_radii(
    certifier,
    target,
    x: np.ndarray,
    y: np.ndarray,
    predicted: np.ndarray,
    norm: str,
    batch_size: int,
    advance: Callable[[int], None] = lambda n: None,
) -> tuple[np.ndarray, dict]:
    """Run ``certifier`` in batches; misclassified examples get radius 0.  Returns the
    radii and any per-example details the certifier reported."""
    radius = np.zeros(len(x))
    details: dict[str, list] = {}
    for start in range(0, len(x), batch_size):
        stop = min(len(x), start + batch_size)
        result = certifier.certify(target, x[start:stop], y[start:stop], norm)
        if isinstance(result, tuple):
            result, extra = result
            for key, values in extra.items():
                details.setdefault(key, []).extend(np.asarray(values).tolist())
        result = np.asarray(result, dtype=np.float64)
        if result.shape != (stop - start,):
            raise AdvbenchError(f"certifier {certifier.name!r} returned shape {result.shape}, expected ({stop - start},)")
        if np.any(np.isnan(result)) or np.any(result < 0):
            raise AdvbenchError(f"certifier {certifier.name!r} returned a negative or NaN radius")
        radius[start:stop] = result
        advance(stop - start)
    if not certifier.certifies_smoothed:
        radius[predicted != y] = 0.0  # a smoothed classifier's prediction may differ from the model's
    return radius, details
