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
ignored, as the 2020-12 draft says (``format`` asserts nothing by default).
Values compare with JSON semantics (:func:`json_equal`): ``1 == 1.0`` but
``true != 1``.

It never silently accepts. A schema that uses any other keyword
(``dependentRequired``, ``if``/``then``/``else``, ``contains``,
``propertyNames``, ``unevaluatedProperties``, ``$anchor``, a nested ``$id``, a
vendor ``x-...`` key, ...) is not compiled here: :func:`compile_schema` hands it
whole to the ``jsonschema`` package (draft 2020-12 unless ``$schema`` names
another), which implements every keyword; :attr:`Validator.engine` says which
one validates. Malformed schemas raise :class:`SchemaError` either way. Two
tests keep this true: a hypothesis differential test against ``jsonschema``
on generated schemas and values, and the official JSON-Schema-Test-Suite cases
(``tests/test_llm_jsonschema_suite.py``).

Errors name the failing location, e.g. ``$.age: missing required property``.

The keywords without subschemas (``type``, ``enum``, ``const``, numeric and
string bounds) and the JSON value semantics are compiled by
:mod:`._schema_keywords`; this module holds the compiler that recurses
through subschemas and the public API.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin

from ._schema_keywords import (
    Check,
    SchemaError,
    check_count,
    const_check,
    enum_check,
    first_error,
    json_equal,
    number_check,
    regex,
    string_check,
    type_check,
)

__all__ = [
    "ANNOTATIONS",
    "KEYWORDS",
    "SchemaError",
    "Validator",
    "compile_schema",
    "json_equal",
    "validator_for",
]

KEYWORDS: frozenset[str] = frozenset({
    "$ref", "type", "enum", "const",
    "properties", "required", "additionalProperties", "patternProperties",
    "minProperties", "maxProperties",
    "items", "prefixItems", "additionalItems", "minItems", "maxItems", "uniqueItems",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "minLength", "maxLength", "pattern",
    "allOf", "anyOf", "oneOf", "not",
})
"""The keywords the compiled validator implements."""

ANNOTATIONS: frozenset[str] = frozenset({
    "$schema", "$comment", "$defs", "definitions", "title", "description", "default",
    "examples", "format", "deprecated", "readOnly", "writeOnly", "contentMediaType",
    "contentEncoding", "contentSchema",
})
"""Keywords that assert nothing (``$defs`` / ``definitions`` only hold schemas that
``$ref`` reaches, and those are compiled when referenced)."""

_OLD_DRAFTS = ("draft-03", "draft-04", "draft-06", "draft-07")


class _Unsupported(Exception):
    """The schema needs a keyword the compiled validator does not implement."""


class Validator:
    """A compiled schema. ``validator.error(value)`` returns ``None`` when the
    value is valid, otherwise a message naming the first failing location."""

    __slots__ = ("_check", "engine", "schema")

    def __init__(self, schema: Any, check: Check, engine: str = "compiled") -> None:
        self.schema = schema
        self._check = check
        self.engine = engine
        """``"compiled"`` (ours) or ``"jsonschema"`` (the fallback for other keywords)."""

    def error(self, value: Any) -> str | None:
        """``None`` for a valid ``value``, else the first failure (``$.a[2]: ...``)."""
        return self._check(value, "$")

    def is_valid(self, value: Any) -> bool:
        """Whether ``value`` satisfies the schema."""
        return self._check(value, "$") is None


def _ok(value: Any, path: str) -> None:
    return None


def _fail(value: Any, path: str) -> str:
    return f"{path}: no value is allowed here (schema is false)"


class _Compiler:
    def __init__(self, root: Any) -> None:
        self.root = root
        self.refs: dict[str, Check] = {}
        dialect = root.get("$schema") if isinstance(root, Mapping) else None
        # Before 2019-09, keywords beside $ref are ignored; ours would apply them.
        self.old_ref = isinstance(dialect, str) and any(d in dialect for d in _OLD_DRAFTS)

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
        if not pointer.startswith("#/") and pointer != "#":
            raise _Unsupported(f"$ref to another document or an anchor ({pointer!r})")
        node = self.root
        for raw in pointer[1:].split("/")[1:] if pointer != "#" else []:
            part = unquote(raw).replace("~1", "/").replace("~0", "~")
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
        self.screen(schema)
        checks: list[Check] = []
        if "$ref" in schema:
            ref = schema["$ref"]
            if not isinstance(ref, str):
                raise SchemaError("$ref must be a string")
            checks.append(self.ref(ref))
        if "type" in schema:
            checks.append(type_check(schema["type"]))
        if "enum" in schema:
            checks.append(enum_check(schema["enum"]))
        if "const" in schema:
            checks.append(const_check(schema["const"]))
        for make in (self._object, self._array, number_check, string_check, self._combinators):
            check = make(schema)
            if check is not None:
                checks.append(check)
        return first_error(checks) if checks else _ok

    def screen(self, schema: Mapping[str, Any]) -> None:
        """Raise :class:`_Unsupported` unless every keyword of ``schema`` is ours."""
        for key in schema:
            if key not in KEYWORDS and key not in ANNOTATIONS:
                if key == "$id" and schema is self.root:
                    continue  # the root's own id: local refs resolve in this document
                raise _Unsupported(f"keyword {key!r}")
        if self.old_ref and "$ref" in schema and any(
            k in KEYWORDS and k != "$ref" for k in schema
        ):
            raise _Unsupported("keywords beside $ref in a pre-2019 draft")

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
        check_count(min_p, "minProperties")
        check_count(max_p, "maxProperties")
        if not (
            props_spec or required or pattern_spec or additional is not True
            or min_p is not None or max_p is not None
        ):
            return None
        props = {name: self.compile(sub) for name, sub in props_spec.items()}
        patterns = tuple((regex(p), self.compile(sub)) for p, sub in pattern_spec.items())
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
        check_count(min_i, "minItems")
        check_count(max_i, "maxItems")
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
        return first_error(parts) if parts else None


def _combine(kind: str, subs: Sequence[Check]) -> Check:
    if kind == "allOf":
        return first_error(subs)
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


def compile_schema(schema: Any) -> Validator:
    """Compile ``schema`` (a JSON Schema object or boolean); raises
    :class:`SchemaError` when the schema is malformed.

    A schema using a keyword outside :data:`KEYWORDS` and :data:`ANNOTATIONS`
    is validated by the ``jsonschema`` package instead (see the module doc).
    """
    try:
        return Validator(schema, _Compiler(schema).compile(schema))
    except _Unsupported:
        return _fallback(schema)


def _check_refs(schema: Any) -> None:
    """Reject, at compile time, a ``$ref`` to a document that is neither this one
    (or a part of it named by an ``$id``) nor a JSON Schema meta-schema: nothing is
    ever fetched over the network."""
    from jsonschema_specifications import REGISTRY

    ids: set[str] = set()
    refs: list[str] = []

    def walk(node: Any, base: str) -> None:
        if isinstance(node, Mapping):
            own = node.get("$id")
            if isinstance(own, str):
                base = urljoin(base, own)
                ids.add(urldefrag(base).url)
            for key in ("$ref", "$dynamicRef"):
                ref = node.get(key)
                if isinstance(ref, str):
                    refs.append(urldefrag(urljoin(base, ref)).url)
            for key, value in node.items():
                if key not in ("enum", "const", "default", "examples"):
                    walk(value, base)
        elif isinstance(node, list):
            for item in node:
                walk(item, base)

    root_id = schema.get("$id") if isinstance(schema, Mapping) else None
    root = urldefrag(root_id).url if isinstance(root_id, str) else ""
    walk(schema, root)
    known = ids | {"", root}
    for target in refs:
        if target in known:
            continue
        try:
            REGISTRY.contents(target)
        except LookupError:
            raise SchemaError(
                f"$ref to {target!r}: only references inside the schema (or to a "
                "JSON Schema meta-schema) are supported; nothing is fetched"
            ) from None


def _fallback(schema: Any) -> Validator:
    # Imported here: only schemas that need it pay for it.
    import jsonschema
    from jsonschema.exceptions import best_match
    from referencing.exceptions import Unresolvable

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise SchemaError(f"invalid schema: {exc.message}") from None
    _check_refs(schema)
    validator = cls(schema)
    is_valid = validator.is_valid

    def check(value: Any, path: str) -> str | None:
        try:
            if is_valid(value):
                return None
            error = best_match(validator.iter_errors(value))
        except Unresolvable as exc:  # a $ref to a document nobody fetches for us
            raise SchemaError(f"invalid schema: cannot resolve $ref: {exc}") from None
        if error is None:  # pragma: no cover - is_valid said there is one
            return f"{path}: invalid"
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        return f"{path}{where}: {error.message}"

    return Validator(schema, check, "jsonschema")


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
