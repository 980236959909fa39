"""A shortest-ish string matching a regular expression (best effort).

Walks the parse tree of Python's own regex parser (``re._parser``, a private
module: any surprise there makes :func:`sample` return ``None``, and the caller
falls back to fixed candidates). Repeats take their minimum count, branches
their first alternative, classes their first member.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["sample"]

_CATEGORY = {
    "CATEGORY_DIGIT": "0",
    "CATEGORY_NOT_DIGIT": "a",
    "CATEGORY_WORD": "a",
    "CATEGORY_NOT_WORD": "-",
    "CATEGORY_SPACE": " ",
    "CATEGORY_NOT_SPACE": "a",
}


def sample(pattern: str) -> str | None:
    """A string that ``pattern`` matches in full, or ``None`` if unsure."""
    try:
        parser: Any = importlib.import_module("re._parser")
        return _walk(parser.parse(pattern))
    except Exception:
        return None


def _walk(items: Any) -> str:
    return "".join(_one(str(op), av) for op, av in items)


def _one(op: str, av: Any) -> str:
    if op == "LITERAL":
        return chr(av)
    if op == "NOT_LITERAL":
        return "a" if chr(av) != "a" else "b"
    if op == "ANY":
        return "a"
    if op == "IN":
        return _in(av)
    if op in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
        low, _high, sub = av
        return _walk(sub) * int(low)
    if op == "SUBPATTERN":
        return _walk(av[-1])
    if op == "ATOMIC_GROUP":
        return _walk(av)
    if op == "BRANCH":
        return _walk(av[1][0])
    if op == "CATEGORY":
        return _CATEGORY.get(str(av), "a")
    if op in ("AT", "ASSERT", "ASSERT_NOT", "GROUPREF", "GROUPREF_EXISTS"):
        return ""
    raise ValueError(f"unsupported regex node {op}")


def _in(items: Any) -> str:
    members = [(str(op), av) for op, av in items]
    if members and members[0][0] == "NEGATE":
        banned = set()
        for op, av in members[1:]:
            if op == "LITERAL":
                banned.add(chr(av))
            elif op == "RANGE":
                banned.update(chr(c) for c in range(av[0], av[1] + 1))
        return next(c for c in "aA0_- x" if c not in banned)
    op, av = members[0]
    if op == "LITERAL":
        return chr(av)
    if op == "RANGE":
        return chr(av[0])
    if op == "CATEGORY":
        return _CATEGORY.get(str(av), "a")
    raise ValueError(f"unsupported class member {op}")
