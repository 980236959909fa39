"""Value matchers (conformance-adapter §5.10), shared by every adapter.

Where an ``expected:`` mapping holds a literal, these forms match by rule:

- inline format tokens: ``<uuid>`` (a canonical UUIDv4), ``<uuid-hex>`` and its
  labelled spellings ``<uuid-hex-1>`` / ``<uuid-hex-5-a>`` (32 lowercase hex
  characters; the label asserts no cross-equality), ``<any-string>`` (a
  non-empty string);
- first-occurrence bindings ``<name_X>`` (any other ``<word>`` token): bound to
  the value at its first occurrence within a case, every later occurrence of the
  exact same token must equal it (:class:`Bindings`, one per case);
- assertion sub-keys, as the whole expected mapping of a field:
  ``{non_empty_string: true}`` and ``{harness_parameterized: <name>}`` (equal to
  the harness-injected parameter ``<name>``, see :data:`HARNESS_PARAMETERS`).

Everything else compares by value (``1 == 1.0``; ``True`` is not ``1``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextvars import ContextVar
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from . import vocabulary as _vocab
from .fixtures import FixtureSchemaInvalid

__all__ = ["HARNESS_PARAMETERS", "Bindings", "bindings", "fresh_bindings", "matches",
           "reset_bindings", "value_matches"]

_UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_UUID_HEX = re.compile(r"^<uuid-hex(?:-[A-Za-z0-9-]+)?>$")
_BINDING = re.compile(r"^<[A-Za-z][A-Za-z0-9_]*>$")


def _implementation_version() -> str:
    try:
        return version("openarmature-nodes")
    except PackageNotFoundError:  # pragma: no cover - the package is installed for the tests
        return "0"


HARNESS_PARAMETERS: dict[str, Any] = {
    "implementation_name": "openarmature-nodes",
    "implementation_version": _implementation_version(),
}
"""Values ``{harness_parameterized: <name>}`` compares against."""


class Bindings(dict[str, Any]):
    """First-occurrence bindings of one case (token -> bound value)."""


_current: ContextVar[Bindings | None] = ContextVar("conformance_bindings", default=None)


def bindings() -> Bindings:
    """The current case's bindings (a fresh set when none is installed)."""
    got = _current.get()
    if got is None:
        got = Bindings()
        _current.set(got)
    return got


def fresh_bindings() -> Any:
    """Install an empty binding table for a new case; returns the token for :func:`reset`."""
    return _current.set(Bindings())


def reset_bindings(token: Any) -> None:
    _current.reset(token)


def _is_uuid4(value: Any) -> bool:
    return isinstance(value, str) and _UUID4.match(value) is not None


def value_matches(expected: Any, actual: Any, where: str, table: Bindings | None = None) -> None:
    """Assert ``actual`` matches ``expected`` under the §5.10 rules (``where`` names it)."""
    table = bindings() if table is None else table
    if isinstance(expected, str) and expected.startswith("<") and expected.endswith(">"):
        if expected == "<uuid>":
            assert _is_uuid4(actual), f"{where}: {actual!r} is not a UUIDv4"
            return
        if _UUID_HEX.match(expected):
            ok = isinstance(actual, str) and _HEX32.match(actual) is not None
            assert ok, f"{where}: {actual!r} is not 32 lowercase hex characters"
            return
        if expected == "<any-string>":
            ok = isinstance(actual, str) and bool(actual)
            assert ok, f"{where}: {actual!r} is not a non-empty string"
            return
        if _BINDING.match(expected):
            if expected not in table:
                table[expected] = actual
                return
            assert actual == table[expected], (
                f"{where}: {actual!r} != {table[expected]!r} bound to {expected}")
            return
    if isinstance(expected, Mapping) and len(expected) == 1:
        ((key, want),) = expected.items()
        if key == "non_empty_string":
            ok = isinstance(actual, str) and bool(actual)
            assert ok == bool(want), f"{where}: non_empty_string is {ok} for {actual!r}"
            return
        if key == "harness_parameterized":
            if want not in HARNESS_PARAMETERS:
                raise FixtureSchemaInvalid(
                    f"fixture_schema_invalid: {where}: no harness parameter {want!r} "
                    f"(known: {sorted(HARNESS_PARAMETERS)})")
            assert actual == HARNESS_PARAMETERS[want], (
                f"{where}: {actual!r} != harness parameter {want}={HARNESS_PARAMETERS[want]!r}")
            return
    if isinstance(expected, Mapping):
        assert isinstance(actual, Mapping), f"{where}: expected a mapping, got {actual!r}"
        assert set(expected) == set(actual), (
            f"{where}: keys {sorted(actual)} != expected {sorted(expected)}")
        for key, want in expected.items():
            value_matches(want, actual[key], f"{where}.{key}", table)
        return
    if isinstance(expected, list):
        ok = isinstance(actual, (list, tuple)) and len(actual) == len(expected)
        assert ok, f"{where}: expected {expected!r}, got {actual!r}"
        for i, (want, got) in enumerate(zip(expected, actual, strict=True)):
            value_matches(want, got, f"{where}[{i}]", table)
        return
    assert _same(expected, actual), f"{where}: expected {expected!r}, got {actual!r}"


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    return bool(expected == actual)


def matches(expected: Any, actual: Any) -> bool:
    """:func:`value_matches` as a predicate (bindings are not changed on a mismatch)."""
    table = Bindings(bindings())
    try:
        value_matches(expected, actual, "value", table)
    except AssertionError:
        return False
    bindings().update(table)
    return True


_vocab.register("value-matchers", {"<uuid>", "<uuid-hex>", "<any-string>", "non_empty_string",
                                   "harness_parameterized"})
_vocab.register_resolver("value-matchers", lambda name: bool(_UUID_HEX.match(name)))
