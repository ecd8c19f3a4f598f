"""`ensemble`: a cascade in the spirit of AutoAttack (Croce & Hein 2020): APGD-CE, then
targeted APGD-DLR, then the Square attack, each run only on the examples the previous
ones left unbroken; every example records which attack broke it.

Before the cascade, a minimal-norm stage (FMN and FAB by default) gives each example the
smallest adversarial example those attacks find; the per-example bisection of the cascade
then starts from that radius.  The ensemble's radius is thus the smallest any member found,
and the record says which member found it.  The members are the registered `apgd`,
`square`, `fmn` and `fab` attacks (``context.attack`` in :meth:`Ensemble.prepare`)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from advbench import Attack, Params, hookimpl


class EnsembleParams(Params):
    steps: int = Field(100, ge=2, description="APGD iterations (each run, each target).")
    targets: int = Field(9, ge=1, description="Target classes of the targeted APGD-DLR.")
    queries: int = Field(1000, ge=1, description="Query budget of the Square attack.")
    restarts: int = Field(1, ge=1, description="APGD-CE restarts.")
    minimal: list[Literal["fmn", "fab"]] = Field(["fmn", "fab"], description="Minimal-norm attacks run first ([] for none).")
    minimal_steps: int = Field(100, ge=1, description="Iterations of each minimal-norm attack.")


class Ensemble(Attack):
    """AutoAttack-style cascade: APGD-CE, APGD-T (DLR), Square; each on the examples still unbroken; FMN and FAB first for the radius."""

    Params = EnsembleParams
    minimal_stage = True

    def prepare(self, target, x, y, context):
        """The members, as registered (``context.attack``): the cascade and the minimal-norm stage."""
        self._members = self.members(context)
        self._minimal = [(name, context.attack(name, steps=self.params.minimal_steps)) for name in self.params.minimal]

    def members(self, context):
        """The cascade: (label, attack) in the order they run."""
        p = self.params
        return [
            ("apgd-ce", context.attack("apgd", steps=p.steps, restarts=p.restarts, loss="ce")),
            ("apgd-t", context.attack("apgd", steps=p.steps, targeted=True, targets=p.targets)),
            ("square", context.attack("square", queries=p.queries)),
        ]

    def minimize(self, target, x, y, norm, seed):
        """The minimal-norm stage: per example, the smallest adversarial example any of the
        minimal-norm members found, and which one (``None`` where none did)."""
        from advbench.kit import lp, search

        x, y = np.asarray(x, np.float32), np.asarray(y)
        best, size = x.copy(), np.full(len(x), np.inf)
        found_by = np.full(len(x), None, dtype=object)
        for k, (label, attack) in enumerate(self._minimal):
            if norm not in attack.norms:
                continue
            candidate = np.asarray(attack.minimize(target, x, y, norm, seed + 100 + k), np.float32)
            everyone = np.arange(len(x))
            better = search.keep_smaller_rows(
                everyone, target.adversarial(candidate, y), lp.numpy_norm(candidate - x, norm), candidate, size, best
            )
            found_by[better] = label
        return best, found_by

    def perturb(self, target, x, y, eps, norm, seed):
        x, y, eps = np.asarray(x), np.asarray(y), np.asarray(eps, np.float32)
        result = x.copy()
        found_by = np.full(len(x), None, dtype=object)
        for k, (label, attack) in enumerate(self._members):
            active = np.flatnonzero(found_by == None)  # noqa: E711 (element-wise)
            if not len(active):
                break
            candidate = np.asarray(attack.perturb(target, x[active], y[active], eps[active], norm, seed + k))
            broken = target.adversarial(candidate, y[active])
            result[active] = candidate
            found_by[active[broken]] = label
        return result, found_by


@hookimpl
def advbench_register_attacks(register):
    register("ensemble", Ensemble)
