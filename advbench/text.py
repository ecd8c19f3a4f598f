"""Text advbench shows to people: messages shortened for tables and warnings."""

from __future__ import annotations

MESSAGE_CHARACTERS = 300
"""How much of a failed job's error message tables and warnings show (the record keeps all of it)."""


def close_matches(name, known, count: int = 1) -> list[str]:
    """Up to ``count`` of ``known`` that ``name`` may misspell, the likeliest first (for a did-you-mean)."""
    from difflib import get_close_matches

    return get_close_matches(str(name), [str(k) for k in known], n=count)


def plural(count: int, noun: str) -> str:
    """``1 model``, ``2 models``: a count with its noun in the right number."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


def short_message(message: str) -> str:
    """A failed job's message as tables show it: its first line, at most
    :data:`MESSAGE_CHARACTERS` long (an exception can carry whole arrays)."""
    lines = str(message).strip().splitlines() or [""]
    first = lines[0]
    if len(first) > MESSAGE_CHARACTERS:
        return first[: MESSAGE_CHARACTERS - 1] + "…"
    return first + (" …" if len(lines) > 1 else "")


def markdown(text) -> str:
    """``text`` safe inside markdown (a table cell, a list item, a heading): on one line, with
    table pipes, HTML (its opening angle bracket), code spans and links escaped, so that a string
    advbench did not write (a plugin's name or error) can neither split a row, start a
    heading nor leave markup in the page."""
    flat = " ".join(str(text).split())
    return "".join(_MARKDOWN.get(character, character) for character in flat)


_MARKDOWN = {"&": "&amp;", "<": "&lt;", "|": "\\|", "`": "\\`", "[": "\\[", "]": "\\]", "\\": "\\\\"}
"""What could split a table row, open a code span or a link, or become HTML (emphasis is cosmetic, left alone)."""


def markdown_code(text) -> str:
    """``text`` as inline code in markdown (identifiers, settings): on one line, its backticks
    and pipes escaped, HTML's angle brackets too (inline code shows them literally)."""
    flat = " ".join(str(text).split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    return f"``{flat.replace('`', '´')}``" if "`" in flat else f"`{flat}`"


def terminal(text) -> str:
    """``text`` safe for a terminal: control characters (escape sequences, carriage returns)
    shown as their codes, so that a string from a plugin cannot move the cursor or recolour
    the screen."""
    return "".join(
        character if character.isprintable() or character == "\n" else f"\\x{ord(character):02x}" for character in str(text)
    )
