"""A plugin whose parameter validator raises a TypeError (pydantic reports only ValueError)."""

from pydantic import field_validator

from advbench import Params, hookimpl
from advbench.kit.pgd import PGD


class FussyParams(Params):
    steps: int = 4

    @field_validator("steps")
    @classmethod
    def _even(cls, steps):
        if steps % 2:
            raise TypeError("steps must be even")
        return steps


class Fussy(PGD):
    """PGD with an even number of steps."""

    Params = FussyParams


class Picky(PGD):
    """PGD whose spec check raises instead of returning a message."""

    @classmethod
    def check_spec(cls, params, spec):
        raise KeyError("no such thing")


@hookimpl
def advbench_register_attacks(register):
    register("fussy", Fussy)
    register("picky", Picky)
