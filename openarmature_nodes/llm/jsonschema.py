"""A small JSON Schema validator for the subset LLM tooling uses.

Why our own: tool parameters and structured-output schemas are checked on
every call, so the validator is *compiled* once per schema into a tree of
closures and then costs a few function calls per value. Supported keywords:

- ``type`` (a name or a list), ``enum``, ``const``
- objects: ``properties``, ``required``, ``additionalProperties`` (bool or
  schema), ``patternProperties``, ``minProperties``, ``maxProperties``
- arrays: ``items`` (schema, or a list = positional), ``prefixItems``,
  ``minItems``, ``maxItems``, ``uniqueItems``
- numbers: ``minimum``, ``maximum``, ``exclusiveMinimum``,
  ``exclusiveMaximum`` (number or the draft-4 boolean form), ``multipleOf``
- strings: ``minLength``, ``maxLength``, ``pattern``
- combinators: ``allOf``, ``anyOf``, ``oneOf``, ``not``
- ``$ref`` to any JSON Pointer in the same document (``#/$defs/X``,
  ``#/definitions/X``, ``#``), recursion included.

Annotations (``title``, ``description``, ``format``, ``default`` ...) are
ignored. Values compare with JSON semantics (:func:`json_equal`): ``1 == 1.0``
but ``true != 1``.

Errors name the failing location, e.g. ``$.age: missing required property``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["SchemaError", "Validator", "compile_schema", "json_equal", "validator_for"]

Check = Callable[[Any, str], str | None]
"""``check(value, path) -> error message or None``."""


class SchemaError(ValueError):
    """The schema itself is malformed (a keyword with a value of the wrong shape)."""


class Validator:
    """A compiled schema. ``validator.error(value)`` returns ``None`` when the
    value is valid, otherwise a message naming the first failing location."""

    __slots__ = ("_check", "schema")

    def __init__(self, schema: Any, check: Check) -> None:
        self.schema = schema
        self._check = check

    def error(self, value: Any) -> str | None:
        return self._check(value, "$")

    def is_valid(self, value: Any) -> bool:
        return self._check(value, "$") is None


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


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


_TYPE_TESTS: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list | tuple),
    "string": lambda v: isinstance(v, str),
    "integer": _is_integer,
    "number": _is_number,
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _ok(value: Any, path: str) -> None:
    return None


def _fail(value: Any, path: str) -> str:
    return f"{path}: no value is allowed here (schema is false)"


class _Compiler:
    def __init__(self, root: Any) -> None:
        self.root = root
        self.refs: dict[str, Check] = {}

    # -- references ---------------------------------------------------------------
    def ref(self, pointer: str) -> Check:
        if pointer in self.refs:
            return self.refs[pointer]
        slot: list[Check] = []

        def deferred(value: Any, path: str) -> str | None:
            return slot[0](value, path)

        self.refs[pointer] = deferred
        slot.append(self.compile(self.resolve(pointer)))
        return deferred

    def resolve(self, pointer: str) -> Any:
        if not pointer.startswith("#"):
            raise SchemaError(f"only local $ref is supported, got {pointer!r}")
        node = self.root
        for raw in pointer[1:].split("/")[1:] if pointer != "#" else []:
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise SchemaError(f"$ref {pointer!r} does not resolve")
        return node

    # -- schemas ------------------------------------------------------------------
    def compile(self, schema: Any) -> Check:
        if schema is True:
            return _ok
        if schema is False:
            return _fail
        if not isinstance(schema, Mapping):
            raise SchemaError(
                f"a schema must be an object or a boolean, got {type(schema).__name__}"
            )
        checks: list[Check] = []
        if "$ref" in schema:
            ref = schema["$ref"]
            if not isinstance(ref, str):
                raise SchemaError("$ref must be a string")
            checks.append(self.ref(ref))
        if "type" in schema:
            checks.append(self._type(schema["type"]))
        if "enum" in schema:
            checks.append(self._enum(schema["enum"]))
        if "const" in schema:
            checks.append(self._const(schema["const"]))
        for make in (self._object, self._array, self._number, self._string, self._combinators):
            check = make(schema)
            if check is not None:
                checks.append(check)
        if not checks:
            return _ok
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

    def _type(self, spec: Any) -> Check:
        names = [spec] if isinstance(spec, str) else spec
        if not isinstance(names, list) or not names or not all(n in _TYPE_TESTS for n in names):
            raise SchemaError(f"invalid type {spec!r}")
        tests = tuple(_TYPE_TESTS[n] for n in names)
        label = " or ".join(names)

        def check(value: Any, path: str) -> str | None:
            for test in tests:
                if test(value):
                    return None
            return f"{path}: expected {label}, got {_describe(value)}"

        return check

    def _enum(self, options: Any) -> Check:
        if not isinstance(options, list):
            raise SchemaError("enum must be an array")
        opts = tuple(options)

        def check(value: Any, path: str) -> str | None:
            if any(json_equal(value, o) for o in opts):
                return None
            return f"{path}: {_short(value)} is not one of {list(opts)!r}"

        return check

    def _const(self, expected: Any) -> Check:
        def check(value: Any, path: str) -> str | None:
            if json_equal(value, expected):
                return None
            return f"{path}: expected the constant {expected!r}, got {_short(value)}"

        return check

    def _object(self, schema: Mapping[str, Any]) -> Check | None:
        props_spec = schema.get("properties", {})
        required = schema.get("required", [])
        additional = schema.get("additionalProperties", True)
        pattern_spec = schema.get("patternProperties", {})
        min_p, max_p = schema.get("minProperties"), schema.get("maxProperties")
        if not isinstance(props_spec, Mapping) or not isinstance(pattern_spec, Mapping):
            raise SchemaError("properties and patternProperties must be objects")
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise SchemaError("required must be an array of strings")
        _check_count(min_p, "minProperties")
        _check_count(max_p, "maxProperties")
        if not (props_spec or required or pattern_spec or additional is not True or min_p or max_p):
            return None
        props = {name: self.compile(sub) for name, sub in props_spec.items()}
        patterns = tuple((_regex(p), self.compile(sub)) for p, sub in pattern_spec.items())
        extra = None if additional is True else self.compile(additional)
        req = tuple(required)

        def check(value: Any, path: str) -> str | None:
            if not isinstance(value, dict):
                return None
            for name in req:
                if name not in value:
                    return f"{path}: missing required property {name!r}"
            if min_p is not None and len(value) < min_p:
                return f"{path}: expected at least {min_p} properties"
            if max_p is not None and len(value) > max_p:
                return f"{path}: expected at most {max_p} properties"
            for key, item in value.items():
                sub = props.get(key)
                matched = sub is not None
                if sub is not None:
                    err = sub(item, f"{path}.{key}")
                    if err is not None:
                        return err
                for rx, pcheck in patterns:
                    if rx.search(key):
                        matched = True
                        err = pcheck(item, f"{path}.{key}")
                        if err is not None:
                            return err
                if not matched and extra is not None:
                    if extra is _fail:
                        return f"{path}: property {key!r} is not allowed"
                    err = extra(item, f"{path}.{key}")
                    if err is not None:
                        return err
            return None

        return check

    def _array(self, schema: Mapping[str, Any]) -> Check | None:
        items = schema.get("items")
        prefix = schema.get("prefixItems")
        min_i, max_i = schema.get("minItems"), schema.get("maxItems")
        unique = schema.get("uniqueItems", False)
        _check_count(min_i, "minItems")
        _check_count(max_i, "maxItems")
        if items is None and prefix is None and min_i is None and max_i is None and not unique:
            return None
        if isinstance(items, list):  # draft-4 tuple form
            prefix, items = items, schema.get("additionalItems")
        positional = tuple(self.compile(s) for s in (prefix or []))
        rest = None if items is None else self.compile(items)

        def check(value: Any, path: str) -> str | None:
            if not isinstance(value, list | tuple):
                return None
            n = len(value)
            if min_i is not None and n < min_i:
                return f"{path}: expected at least {min_i} items, got {n}"
            if max_i is not None and n > max_i:
                return f"{path}: expected at most {max_i} items, got {n}"
            for i, item in enumerate(value):
                sub = positional[i] if i < len(positional) else rest
                if sub is not None:
                    err = sub(item, f"{path}[{i}]")
                    if err is not None:
                        return err
            if unique:
                for i in range(n):
                    for j in range(i + 1, n):
                        if json_equal(value[i], value[j]):
                            return f"{path}: items {i} and {j} are equal (uniqueItems)"
            return None

        return check

    def _number(self, schema: Mapping[str, Any]) -> Check | None:
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
        if not all(b is None or _is_number(b) for b in bounds) or (mult is not None and mult <= 0):
            raise SchemaError("numeric bounds must be numbers (multipleOf > 0)")

        def check(value: Any, path: str) -> str | None:
            if not _is_number(value):
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

    def _string(self, schema: Mapping[str, Any]) -> Check | None:
        min_l, max_l, pattern = (
            schema.get("minLength"),
            schema.get("maxLength"),
            schema.get("pattern"),
        )
        _check_count(min_l, "minLength")
        _check_count(max_l, "maxLength")
        if min_l is None and max_l is None and pattern is None:
            return None
        rx = None if pattern is None else _regex(pattern)

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

    def _combinators(self, schema: Mapping[str, Any]) -> Check | None:
        parts: list[Check] = []
        for key in ("allOf", "anyOf", "oneOf"):
            if key in schema:
                subs = schema[key]
                if not isinstance(subs, list) or not subs:
                    raise SchemaError(f"{key} must be a non-empty array")
                parts.append(_combine(key, tuple(self.compile(s) for s in subs)))
        if "not" in schema:
            inner = self.compile(schema["not"])

            def negate(value: Any, path: str) -> str | None:
                return (
                    f"{path}: must not match the 'not' schema"
                    if inner(value, path) is None
                    else None
                )

            parts.append(negate)
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        all_parts = tuple(parts)

        def check(value: Any, path: str) -> str | None:
            for part in all_parts:
                err = part(value, path)
                if err is not None:
                    return err
            return None

        return check


def _combine(kind: str, subs: Sequence[Check]) -> Check:
    if kind == "allOf":

        def all_of(value: Any, path: str) -> str | None:
            for sub in subs:
                err = sub(value, path)
                if err is not None:
                    return err
            return None

        return all_of
    if kind == "anyOf":

        def any_of(value: Any, path: str) -> str | None:
            errors = []
            for sub in subs:
                err = sub(value, path)
                if err is None:
                    return None
                errors.append(err)
            return f"{path}: matches none of the anyOf alternatives ({'; '.join(errors)})"

        return any_of

    def one_of(value: Any, path: str) -> str | None:
        matches = sum(1 for sub in subs if sub(value, path) is None)
        if matches == 1:
            return None
        return f"{path}: matches {matches} of the oneOf alternatives, expected exactly 1"

    return one_of


def _check_count(value: Any, name: str) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise SchemaError(f"{name} must be a non-negative integer")


def _regex(pattern: Any) -> re.Pattern[str]:
    if not isinstance(pattern, str):
        raise SchemaError("pattern must be a string")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise SchemaError(f"invalid pattern {pattern!r}: {exc}") from exc


def _describe(value: Any) -> str:
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
    return "number" if _is_number(value) else type(value).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def compile_schema(schema: Any) -> Validator:
    """Compile ``schema`` (a JSON Schema object or boolean); raises
    :class:`SchemaError` when the schema is malformed."""
    return Validator(schema, _Compiler(schema).compile(schema))


_CACHE: dict[int, Validator] = {}
_CACHE_MAX = 512


def validator_for(schema: Any) -> Validator:
    """The compiled validator for ``schema``, memoized by object identity.

    Most programs pass the same schema object (a module constant, a tool's
    ``parameters``) on every call, so this makes repeated validation cost only
    a dict lookup. Treat schemas as immutable once used: a schema dict mutated
    in place keeps its old compiled form.
    """
    hit = _CACHE.get(id(schema))
    if hit is not None and hit.schema is schema:
        return hit
    validator = compile_schema(schema)
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[id(schema)] = validator
    return validator
