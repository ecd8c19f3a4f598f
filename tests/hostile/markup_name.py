"""A plugin registering a defense whose name splits a table row and leaves HTML in the page: refused."""

from advbench import Defense, hookimpl


class Markup(Defense):
    """A defense named like markup."""


@hookimpl
def advbench_register_defenses(register):
    register("d|<img src=x onerror=alert(1)>", Markup)
