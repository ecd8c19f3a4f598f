"""Text advbench shows to people: messages shortened for tables and warnings."""

from __future__ import annotations

MESSAGE_CHARACTERS = 300
"""How much of a failed job's error message tables and warnings show (the record keeps all of it)."""


def short_message(message: str) -> str:
    """A failed job's message as tables show it: its first line, at most
    :data:`MESSAGE_CHARACTERS` long (an exception can carry whole arrays)."""
    lines = str(message).strip().splitlines() or [""]
    first = lines[0]
    if len(first) > MESSAGE_CHARACTERS:
        return first[: MESSAGE_CHARACTERS - 1] + "…"
    return first + (" …" if len(lines) > 1 else "")
