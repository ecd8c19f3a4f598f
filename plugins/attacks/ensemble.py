"""`ensemble`: a cascade in the spirit of AutoAttack (Croce & Hein 2020): APGD-CE, then
targeted APGD-DLR, then the Square attack, each run only on the examples the previous
ones left unbroken; every example records which attack broke it."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from advbench import Attack, Params, hookimpl
from advbench_plugins.attacks.apgd import APGD
from advbench_plugins.attacks.square import Square


class EnsembleParams(Params):
    steps: int = Field(100, ge=2, description="APGD iterations (each run, each target).")
    targets: int = Field(9, ge=1, description="Target classes of the targeted APGD-DLR.")
    queries: int = Field(1000, ge=1, description="Query budget of the Square attack.")
    restarts: int = Field(1, ge=1, description="APGD-CE restarts.")


class Ensemble(Attack):
    """AutoAttack-style cascade: APGD-CE, APGD-T (DLR), Square; each on the examples still unbroken."""

    Params = EnsembleParams

    def members(self):
        p = self.params
        return [
            ("apgd-ce", APGD(steps=p.steps, restarts=p.restarts, loss="ce")),
            ("apgd-t", APGD(steps=p.steps, targeted=True, targets=p.targets)),
            ("square", Square(queries=p.queries)),
        ]

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        self._members = self.members()

    def perturb(self, target, x, y, eps, norm, seed):
        x, y, eps = np.asarray(x), np.asarray(y), np.asarray(eps, np.float32)
        result = x.copy()
        found_by = np.full(len(x), None, dtype=object)
        for k, (label, attack) in enumerate(self._members):
            active = np.flatnonzero(found_by == None)  # noqa: E711 (element-wise)
            if not len(active):
                break
            candidate = np.asarray(attack.perturb(target, x[active], y[active], eps[active], norm, seed + k))
            broken = target.predict(candidate) != y[active]
            result[active] = candidate
            found_by[active[broken]] = label
        return result, found_by


@hookimpl
def advbench_register_attacks(register):
    register("ensemble", Ensemble)
