"""Transfer (black-box) attacks (Madry et al. 2018, Table 1/2): adversarial examples
crafted with PGD (or FGSM: ``steps: 1``) on a *source* model of the same spec (an
independently trained copy, a naturally trained model, another architecture) and
evaluated on the target."""

from __future__ import annotations

from pydantic import Field

from advbench import hookimpl
from advbench.kit.pgd import PGD, PGDParams


class TransferParams(PGDParams):
    source: str = Field(description="Name of the spec's model the adversarial examples are crafted on.")
    early_stop: bool = Field(False, description="Stop once the *source* is fooled (off: run every step, which transfers better).")


class Transfer(PGD):
    """PGD (or FGSM) crafted on another model of the spec, evaluated on the target (black-box)."""

    Params = TransferParams
    uses_gradients = False  # no gradients of the target are used

    @classmethod
    def check_spec(cls, params, spec):
        names = [m.name for m in spec.models]
        if params.source not in names:
            return f"source model {params.source!r} is not a model of this spec (models: {', '.join(names)})"
        return None

    @classmethod
    def models_needed(cls, params):
        return [params.source]

    def prepare(self, target, x, y, context):
        self.source = context.target(self.params.source)

    def perturb(self, target, x, y, eps, norm, seed):
        crafted = super().perturb(self.source, x, y, eps, norm, seed)
        # the points that fool the source: where they do not fool the target, the transfer failed
        self._evidence = {"transfer_failure": self.source.adversarial(crafted, y) & ~target.adversarial(crafted, y)}
        return crafted


@hookimpl
def advbench_register_attacks(register):
    register("transfer", Transfer)
