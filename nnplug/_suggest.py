"""Suggestions for a mistyped name: the nearest of the choices (difflib), else the choices."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

#: Names a message lists before it says how many more there are.
MAX_LISTED = 12


def nearest(name: str, choices: Sequence[str], *, first: Sequence[str] = ()) -> str | None:
    """The choice ``name`` most likely misspells, or ``None``; one of ``first`` (such as the
    required fields left out) wins over the others when it is close enough."""
    for pool in (first, choices):
        near = difflib.get_close_matches(name, list(pool), n=1, cutoff=0.6) if len(pool) <= 1000 else []
        if near:
            return near[0]
    return None


def listed(choices: Sequence[str], limit: int = MAX_LISTED) -> str:
    """``a, b, c``, cut short past ``limit`` names with how many there are in all."""
    shown = ", ".join(choices[:limit])
    return shown + (f", ... ({len(choices)} in all)" if len(choices) > limit else "")


def unknown_node(ref: str, own: str, known: list[str], detailed: bool) -> str:
    """``unknown node 'x' (did you mean 'y'?); nodes: ...``, the list cut short past 20 names;
    just ``unknown node 'x'`` when not ``detailed`` (past the first few, in a huge file)."""
    if not detailed:
        return f"unknown node {ref!r}"
    choices = [n for n in known if n != own]
    near = nearest(ref, choices)
    hint = f" (did you mean {near!r}?)" if near else ""
    return f"unknown node {ref!r}{hint}; nodes: {listed(choices, 20)}"
