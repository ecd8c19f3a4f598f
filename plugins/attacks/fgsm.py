"""The fast gradient sign method (Goodfellow et al. 2015): one full-size gradient step.

It is PGD with one step of size eps and no random start, so it reuses PGD's code.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from advbench import Params, hookimpl
from advbench.kit.pgd import PGD


class FGSMParams(Params):
    loss: Literal["ce", "cw"] = Field("ce", description="Cross-entropy or the Carlini-Wagner margin.")


class FGSM(PGD):
    """Fast gradient (sign) method: x + eps * sign(grad) for linf, x + eps * grad / ||grad||_2 for l2."""

    Params = FGSMParams

    def search_settings(self) -> dict:
        return {"steps": 1, "step_size": 1.0, "random_start": False, "restarts": 1, "early_stop": False}


@hookimpl
def advbench_register_attacks(register):
    register("fgsm", FGSM)
