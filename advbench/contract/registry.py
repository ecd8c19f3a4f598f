"""Typed registries of components, filled by the registration hooks."""

from __future__ import annotations

import re
from dataclasses import dataclass

from advbench.contract.components import KINDS, NAME_PATTERN, Component
from advbench.errors import PluginError
from advbench.text import close_matches


class UnknownComponentError(LookupError):
    """A name that no plugin registered; the message lists the known names."""


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    cls: type[Component]
    plugin: str


class Registry:
    """One namespace per component kind.  Rejects duplicate names and classes that do
    not subclass the kind's base class; answers unknown names with a suggestion."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}

    def register(self, kind: str, name: str, cls: type, plugin: str) -> None:
        base = KINDS[kind]
        if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
            raise PluginError(
                f"plugin {plugin!r} registered a {kind} with the invalid name {name!r}: a name is 1 to 64 letters, digits, "
                "'_', '.' or '-', not starting with '.', '_' or '-' (it becomes a file name and appears in every table)"
            )
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise PluginError(
                f"plugin {plugin!r} registered {kind} {name!r} as {cls!r}, which is not a subclass of advbench.{base.__name__}"
            )
        existing = self._entries[kind].get(name)
        if existing is not None:
            raise PluginError(
                f"plugin {plugin!r} registered {kind} {name!r}, which plugin {existing.plugin!r} already registered"
            )
        # A per-registration subclass carries the registered name without touching the
        # plugin's class (the same class may be registered under two names).
        named = type(cls.__name__, (cls,), {"name": name, "__doc__": cls.__doc__, "__module__": cls.__module__})
        self._entries[kind][name] = Entry(kind, name, named, plugin)

    def get(self, kind: str, name: str) -> type[Component]:
        """Return the class registered as ``name``; raise :class:`UnknownComponentError` otherwise."""
        try:
            return self._entries[kind][name].cls
        except KeyError:
            raise UnknownComponentError(self.unknown_message(kind, name)) from None

    def plugin_of(self, kind: str, name: str) -> str:
        """The name of the plugin that registered ``name``."""
        return self._entries[kind][name].plugin

    def unknown_message(self, kind: str, name: str) -> str:
        known = sorted(self._entries[kind])
        message = f"unknown {kind} {name!r}"
        close = close_matches(name, known)
        if close:
            message += f"; did you mean {close[0]!r}?"
        return message + f" (known: {', '.join(known) or 'none'})"

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def entries(self, kind: str | None = None) -> list[Entry]:
        kinds = [kind] if kind else list(KINDS)
        return [entry for k in kinds for _, entry in sorted(self._entries[k].items())]
