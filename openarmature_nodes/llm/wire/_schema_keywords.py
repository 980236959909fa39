"""The leaf keywords of :mod:`.jsonschema`, and the JSON value semantics they use.

A *leaf* keyword constrains a value without a subschema: ``type``, ``enum``,
``const``, the numeric bounds and the string bounds. Each ``*_check`` function
here checks the keyword's own shape (raising :class:`SchemaError` for a
malformed one) and returns a compiled :data:`Check`, or ``None`` when the
schema does not use it. The keywords that hold subschemas (``properties``,
``items``, the combinators, ``$ref``) recurse through the compiler and live in
:mod:`.jsonschema`, the public face of both modules.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "Check",
    "SchemaError",
    "check_count",
    "const_check",
    "describe",
    "enum_check",
    "first_error",
    "is_number",
    "json_equal",
    "number_check",
    "regex",
    "short",
    "string_check",
    "type_check",
]

Check = Callable[[Any, str], str | None]
"""``check(value, path) -> error message or None``."""


class SchemaError(ValueError):
    """The schema itself is malformed (a keyword with a value of the wrong shape)."""

    __module__ = "openarmature_nodes.llm.wire.jsonschema"  # where it is documented and imported


# --- JSON value semantics -----------------------------------------------------------


def json_equal(a: Any, b: Any) -> bool:
    """Equality of decoded JSON values: objects member-wise (order-free),
    arrays element-wise, numbers numerically, booleans only equal booleans."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is not type(b):
        return False
    return bool(a == b)


def _is_integer(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    return isinstance(v, int) or (isinstance(v, float) and v.is_integer())


def is_number(v: Any) -> bool:
    """A JSON number: an ``int`` or ``float`` that is not a ``bool``."""
    return isinstance(v, int | float) and not isinstance(v, bool)


_TYPE_TESTS: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list | tuple),
    "string": lambda v: isinstance(v, str),
    "integer": _is_integer,
    "number": is_number,
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def describe(value: Any) -> str:
    """The JSON type name of ``value``, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, str):
        return "string"
    return "number" if is_number(value) else type(value).__name__


def short(value: Any) -> str:
    """``repr(value)``, cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --- keyword shapes -------------------------------------------------------------------


def check_count(value: Any, name: str) -> None:
    """Raise :class:`SchemaError` unless ``value`` is ``None`` or an integer >= 0
    (``2.0`` counts: JSON Schema integers are numbers with no fraction)."""
    if value is None:
        return
    integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral or value < 0:
        raise SchemaError(f"{name} must be a non-negative integer")


def regex(pattern: Any) -> re.Pattern[str]:
    """``pattern`` compiled; :class:`SchemaError` when it is not a valid regex string."""
    if not isinstance(pattern, str):
        raise SchemaError("pattern must be a string")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise SchemaError(f"invalid pattern {pattern!r}: {exc}") from exc


# --- composing checks -----------------------------------------------------------------


def first_error(checks: Sequence[Check]) -> Check:
    """One check running ``checks`` in order and reporting the first error
    (all of them must pass). A single check is returned as it is."""
    if len(checks) == 1:
        return checks[0]
    all_checks = tuple(checks)

    def run_all(value: Any, path: str) -> str | None:
        for check in all_checks:
            err = check(value, path)
            if err is not None:
                return err
        return None

    return run_all


# --- the leaf keywords ----------------------------------------------------------------


def type_check(spec: Any) -> Check:
    """``type``: a type name or a non-empty list of them."""
    names = [spec] if isinstance(spec, str) else spec
    if not isinstance(names, list) or not names or not all(n in _TYPE_TESTS for n in names):
        raise SchemaError(f"invalid type {spec!r}")
    tests = tuple(_TYPE_TESTS[n] for n in names)
    label = " or ".join(names)

    def check(value: Any, path: str) -> str | None:
        for test in tests:
            if test(value):
                return None
        return f"{path}: expected {label}, got {describe(value)}"

    return check


def enum_check(options: Any) -> Check:
    """``enum``: the value equals one of the options (JSON equality)."""
    if not isinstance(options, list):
        raise SchemaError("enum must be an array")
    opts = tuple(options)

    def check(value: Any, path: str) -> str | None:
        if any(json_equal(value, o) for o in opts):
            return None
        return f"{path}: {short(value)} is not one of {list(opts)!r}"

    return check


def const_check(expected: Any) -> Check:
    """``const``: the value equals ``expected`` (JSON equality)."""

    def check(value: Any, path: str) -> str | None:
        if json_equal(value, expected):
            return None
        return f"{path}: expected the constant {expected!r}, got {short(value)}"

    return check


def number_check(schema: Mapping[str, Any]) -> Check | None:
    """``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum`` (number or
    the draft-4 boolean form) and ``multipleOf``; non-numbers pass."""
    lo, hi = schema.get("minimum"), schema.get("maximum")
    xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    mult = schema.get("multipleOf")
    if isinstance(xlo, bool):  # draft-4: a flag on minimum
        xlo, lo = (lo if xlo else None), (None if xlo else lo)
    if isinstance(xhi, bool):
        xhi, hi = (hi if xhi else None), (None if xhi else hi)
    bounds = (lo, hi, xlo, xhi, mult)
    if all(b is None for b in bounds):
        return None
    if not all(b is None or is_number(b) for b in bounds) or (mult is not None and mult <= 0):
        raise SchemaError("numeric bounds must be numbers (multipleOf > 0)")

    def check(value: Any, path: str) -> str | None:
        if not is_number(value):
            return None
        if lo is not None and value < lo:
            return f"{path}: {value} is less than the minimum {lo}"
        if hi is not None and value > hi:
            return f"{path}: {value} is greater than the maximum {hi}"
        if xlo is not None and value <= xlo:
            return f"{path}: {value} is not greater than {xlo}"
        if xhi is not None and value >= xhi:
            return f"{path}: {value} is not less than {xhi}"
        if mult is not None:
            q = value / mult
            if not (math.isfinite(q) and abs(q - round(q)) < 1e-9):
                return f"{path}: {value} is not a multiple of {mult}"
        return None

    return check


def string_check(schema: Mapping[str, Any]) -> Check | None:
    """``minLength``, ``maxLength`` and ``pattern`` (a search, not a full match);
    non-strings pass."""
    min_l, max_l, pattern = (
        schema.get("minLength"),
        schema.get("maxLength"),
        schema.get("pattern"),
    )
    check_count(min_l, "minLength")
    check_count(max_l, "maxLength")
    if min_l is None and max_l is None and pattern is None:
        return None
    rx = None if pattern is None else regex(pattern)

    def check(value: Any, path: str) -> str | None:
        if not isinstance(value, str):
            return None
        if min_l is not None and len(value) < min_l:
            return f"{path}: string shorter than {min_l} characters"
        if max_l is not None and len(value) > max_l:
            return f"{path}: string longer than {max_l} characters"
        if rx is not None and rx.search(value) is None:
            return f"{path}: string does not match the pattern {rx.pattern!r}"
        return None

    return check
