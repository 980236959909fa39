"""Deterministic example values from a JSON Schema.

The embedded server answers ``response_format`` requests and tool calls with JSON
that must satisfy a schema the client supplied. :func:`example_from_schema`
builds one such value, always the same for the same schema, by walking the
schema and picking the simplest value each keyword allows:

* ``const`` wins, then the first ``enum`` member, then the first ``examples`` entry;
* ``anyOf`` / ``oneOf`` take their first branch; ``allOf`` branches are merged;
* ``$ref`` to ``#/$defs/...`` or ``#/definitions/...`` is followed (msgspec and
  pydantic both emit those);
* objects get every listed property (required or not; properties past the
  recursion limit are dropped unless required);
* arrays get ``max(minItems, 1)`` items (at most ``maxItems``), honouring
  ``prefixItems``;
* strings are the property name (``"text"`` outside an object), padded or cut to
  ``minLength`` / ``maxLength``, with stock values for common ``format`` s; a
  ``pattern`` gets a string generated from the regex when the name does not match;
* numbers are 0 moved into ``minimum`` / ``maximum`` (exclusive bounds and
  ``multipleOf`` respected for integers).

It is a test aid, not a validator: schemas it cannot satisfy (a ``pattern`` none
of its candidates match, contradictory bounds) still get a best-effort value.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ._regex import sample

__all__ = ["example_from_schema"]

_MAX_DEPTH = 8

_FORMATS = {
    "date": "2024-01-01",
    "date-time": "2024-01-01T00:00:00Z",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "hostname": "example.com",
}

_PATTERN_CANDIDATES = ("a", "A", "0", "abc", "a1", "user@example.com", "2024-01-01", "x-1", "")


def example_from_schema(schema: Any) -> Any:
    """Return a JSON-compatible value (dicts, lists, str, int, float, bool, None)
    that satisfies ``schema``, derived deterministically from it.

    ``True`` / ``{}`` (anything goes) give ``{}``; ``False`` has no valid value
    and gives ``None``.
    """
    return _Walker(schema).value(schema, "text", 0)


class _Walker:
    def __init__(self, root: Any) -> None:
        self._root = root

    def value(self, schema: Any, name: str, depth: int) -> Any:
        if schema is True:
            return {}
        if not isinstance(schema, dict):
            return None
        schema = self._resolve(schema, depth)
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return enum[0]
        examples = schema.get("examples")
        if isinstance(examples, list) and examples:
            return examples[0]
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                return self.value(_pick_branch(branches), name, depth + 1)
        kind = _pick_type(schema)
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, name, depth)
        if kind == "string":
            return _string(schema, name)
        if kind == "integer":
            return _integer(schema)
        if kind == "number":
            return _number(schema)
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        return {}

    def _resolve(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        """Follow ``$ref`` and fold ``allOf`` into one dict (shallow merge)."""
        seen = 0
        while isinstance(schema.get("$ref"), str) and seen < _MAX_DEPTH:
            target = self._lookup(schema["$ref"])
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **rest} if isinstance(target, dict) else rest
            seen += 1
        parts = schema.get("allOf")
        if isinstance(parts, list) and parts:
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for part in parts:
                if not isinstance(part, dict):
                    continue
                part = self._resolve(part, depth + 1)
                for key, val in part.items():
                    if key == "properties" and isinstance(val, dict):
                        merged["properties"] = {**merged.get("properties", {}), **val}
                    elif key == "required" and isinstance(val, list):
                        merged["required"] = [*merged.get("required", []), *val]
                    else:
                        merged.setdefault(key, val)
            schema = merged
        return schema

    def _lookup(self, ref: str) -> Any:
        if not ref.startswith("#"):
            return {}
        node: Any = self._root
        for raw in ref[1:].split("/"):
            if not raw:
                continue
            part = raw.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                return {}
            node = node[part]
        return node

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        props = schema.get("properties")
        required = schema.get("required")
        required_set = set(required) if isinstance(required, list) else set()
        out: dict[str, Any] = {}
        if isinstance(props, dict):
            for key, sub in props.items():
                if depth >= _MAX_DEPTH and key not in required_set:
                    continue
                out[key] = self.value(sub, key, depth + 1)
        for key in sorted(required_set - out.keys()):
            extra = schema.get("additionalProperties")
            out[key] = self.value(extra if isinstance(extra, dict) else {}, key, depth + 1)
        return out

    def _array(self, schema: dict[str, Any], name: str, depth: int) -> list[Any]:
        min_items = _int_kw(schema, "minItems", 0)
        max_items = _int_kw(schema, "maxItems", None)
        count = max(min_items, 1)
        if max_items is not None:
            count = min(count, max_items)
        if depth >= _MAX_DEPTH:
            count = min_items
        prefix = schema.get("prefixItems")
        prefix = prefix if isinstance(prefix, list) else []
        items = schema.get("items", {})
        out: list[Any] = []
        for i in range(count):
            sub = prefix[i] if i < len(prefix) else items
            out.append(self.value(sub, name, depth + 1))
        if schema.get("uniqueItems") and len(out) > 1:
            out = _make_unique(out)
        return out


def _pick_branch(branches: list[Any]) -> Any:
    """The first branch that is not just ``{"type": "null"}`` (else the first)."""
    for branch in branches:
        if not (isinstance(branch, dict) and branch.get("type") == "null"):
            return branch
    return branches[0]


def _pick_type(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        non_null = [k for k in kind if k != "null"]
        kind = non_null[0] if non_null else (kind[0] if kind else None)
    if isinstance(kind, str):
        return kind
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    if any(k in schema for k in ("minLength", "maxLength", "pattern", "format")):
        return "string"
    if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
        return "number"
    return None


def _int_kw(schema: dict[str, Any], key: str, default: int | None) -> Any:
    val = schema.get(key)
    return val if isinstance(val, int) and not isinstance(val, bool) else default


def _fit_length(text: str, schema: dict[str, Any]) -> str:
    lo = _int_kw(schema, "minLength", 0)
    hi = _int_kw(schema, "maxLength", None)
    if len(text) < lo:
        text = text + "x" * (lo - len(text))
    if hi is not None and len(text) > hi:
        text = text[:hi]
    return str(text)


def _string(schema: dict[str, Any], name: str) -> str:
    fmt = schema.get("format")
    base = _FORMATS.get(fmt, name) if isinstance(fmt, str) else name
    pattern = schema.get("pattern")
    if not isinstance(pattern, str):
        return _fit_length(base, schema)
    try:
        compiled = re.compile(pattern)
    except re.error:
        return _fit_length(base, schema)
    generated = sample(pattern)
    extra = () if generated is None else (generated,)
    for candidate in (base, *extra, *_PATTERN_CANDIDATES):
        fitted = _fit_length(candidate, schema)
        if compiled.search(fitted):
            return fitted
    return _fit_length(base, schema)


def _bounds(schema: dict[str, Any]) -> tuple[float | None, float | None, bool, bool]:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    ex_lo, ex_hi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    lo_excl = hi_excl = False
    # Draft 4 spelled exclusive bounds as booleans next to minimum/maximum.
    if isinstance(ex_lo, bool):
        lo_excl = ex_lo
    elif isinstance(ex_lo, int | float) and (lo is None or ex_lo >= lo):
        lo, lo_excl = ex_lo, True
    if isinstance(ex_hi, bool):
        hi_excl = ex_hi
    elif isinstance(ex_hi, int | float) and (hi is None or ex_hi <= hi):
        hi, hi_excl = ex_hi, True
    lo = lo if isinstance(lo, int | float) else None
    hi = hi if isinstance(hi, int | float) else None
    return lo, hi, lo_excl, hi_excl


def _integer(schema: dict[str, Any]) -> int:
    lo, hi, lo_excl, hi_excl = _bounds(schema)
    step = _int_kw(schema, "multipleOf", 1) or 1
    low = None if lo is None else (math.floor(lo) + 1 if lo_excl else math.ceil(lo))
    high = None if hi is None else (math.ceil(hi) - 1 if hi_excl else math.floor(hi))
    value = 0
    if low is not None and value < low:
        value = low
    if high is not None and value > high:
        value = high
    if value % step:
        up = value + (step - value % step)
        value = up if high is None or up <= high else value - value % step
    return int(value)


def _number(schema: dict[str, Any]) -> float:
    if isinstance(schema.get("multipleOf"), int):
        return float(_integer(schema))
    lo, hi, lo_excl, hi_excl = _bounds(schema)
    value = 0.0
    if lo is not None and (value < lo or (lo_excl and value <= lo)):
        value = float(lo) + (1.0 if lo_excl else 0.0)
    if hi is not None and (value > hi or (hi_excl and value >= hi)):
        value = float(hi) - (1.0 if hi_excl else 0.0)
        if lo is not None and value <= lo:
            value = (float(lo) + float(hi)) / 2
    return value


def _make_unique(items: list[Any]) -> list[Any]:
    out: list[Any] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            item = f"{item}{i}" if i else item
        elif isinstance(item, int) and not isinstance(item, bool):
            item = item + i
        out.append(item)
    return out
