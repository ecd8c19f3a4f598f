"""The hooks a plugin can implement.

Every hook is a *registration* hook: advbench calls it once per plugin with a
``register`` callback, and the plugin calls ``register(name, cls)`` for each component
it provides.  ``cls`` must subclass the base class named below (importable from
``advbench``); its nested ``Params`` pydantic model declares the parameters a spec may
set.  Hooks are called per plugin, so one plugin raising does not stop the others.
An implementation may accept fewer arguments than the spec lists, so hooks can grow
arguments without breaking plugins.

Example::

    from advbench import hookimpl, Defense

    class Noise(Defense):
        ...

    @hookimpl
    def advbench_register_defenses(register):
        register("noise", Noise)
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("advbench")

hookimpl = pluggy.HookimplMarker("advbench")
"""Marker for plugin hook implementations: ``@hookimpl def advbench_register_attacks(register): ...``
(``from advbench import hookimpl``)."""


# -- Stage 1: registration (called when plugins load, before any spec is read) --------


@hookspec
def advbench_register_datasets(register):
    """Register datasets.

    :param register: ``register(name, cls)`` with ``cls`` a subclass of
        :class:`advbench.Dataset`.
    :return: ignored.
    """


@hookspec
def advbench_register_architectures(register):
    """Register model architectures (Keras models that output logits).

    :param register: ``register(name, cls)`` with ``cls`` a subclass of
        :class:`advbench.Architecture`.
    :return: ignored.
    """


@hookspec
def advbench_register_defenses(register):
    """Register defenses (changes to the training loss, the training inputs or the
    model used at inference).

    :param register: ``register(name, cls)`` with ``cls`` a subclass of
        :class:`advbench.Defense`.
    :return: ignored.
    """


@hookspec
def advbench_register_attacks(register):
    """Register attacks (fixed-budget or minimal-norm; they give empirical upper bounds).

    :param register: ``register(name, cls)`` with ``cls`` a subclass of
        :class:`advbench.Attack`.
    :return: ignored.
    """


@hookspec
def advbench_register_certifiers(register):
    """Register certifiers (they give certified lower bounds on the robust radius).

    :param register: ``register(name, cls)`` with ``cls`` a subclass of
        :class:`advbench.Certifier`.
    :return: ignored.
    """
