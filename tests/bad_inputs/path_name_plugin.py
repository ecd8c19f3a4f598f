"""A plugin registering an attack whose name climbs out of the run directory: refused."""

from advbench import Attack, hookimpl


class Escape(Attack):
    """An attack named like a path."""


@hookimpl
def advbench_register_attacks(register):
    register("../../../escape", Escape)
