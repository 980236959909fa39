"""Structured output: schemas in, validated values out (spec llm-provider §5, §8.1.5).

A ``response_schema`` is either

- a JSON Schema ``dict`` whose root is ``type: "object"``: the reply is
  decoded to plain data and checked with our compiled validator
  (:mod:`openarmature_nodes.llm.wire.jsonschema`); ``parsed`` is that data; or
- a ``msgspec.Struct`` type: the reply is decoded straight into it
  (``msgspec.json.decode(content, type=T)``), which is the validation;
  ``parsed`` is the instance. Its JSON Schema for the wire comes from
  ``msgspec.json.schema(T)``.

:func:`validate_structured` is the one validation function: the provider
calls it, and so does the structured-output middleware, so a reply is judged
the same way wherever it is checked.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from openarmature_nodes.llm.errors import StructuredOutputInvalid
from openarmature_nodes.llm.messages import Message, SystemMessage

from .jsonschema import validator_for

__all__ = [
    "DIRECTIVE_PREFIX",
    "SchemaInfo",
    "inject_schema_directive",
    "is_struct_type",
    "schema_info",
    "validate_structured",
]

_decode_any = msgspec.json.Decoder()
_canonical = msgspec.json.Encoder(order="sorted")


def is_struct_type(schema: Any) -> bool:
    """True for a ``msgspec.Struct`` subclass (as opposed to a schema dict)."""
    return isinstance(schema, type) and issubclass(schema, msgspec.Struct)


def validate_structured(
    content: str | None,
    schema: Any,
    *,
    finish_reason: str | None = None,
    usage: Any = None,
) -> Any:
    """Parse ``content`` as JSON and validate it against ``schema``.

    Returns the parsed value (plain data, or a ``Struct`` instance for a
    Struct type). Raises :class:`StructuredOutputInvalid` carrying the
    verbatim ``output_content``, the reason in ``error_message`` (naming the
    failing location), and the reply's ``finish_reason`` and ``usage``.
    """
    if content is None:
        raise _invalid(content, "the reply has no content to parse", schema, finish_reason, usage)
    if is_struct_type(schema):
        try:
            return msgspec.json.decode(content, type=schema)
        except msgspec.ValidationError as exc:
            raise _invalid(
                content, f"does not match the schema: {exc}", schema, finish_reason, usage
            ) from exc
        except msgspec.DecodeError as exc:
            raise _invalid(content, f"not valid JSON: {exc}", schema, finish_reason, usage) from exc
    try:
        value = _decode_any.decode(content)
    except msgspec.DecodeError as exc:
        raise _invalid(content, f"not valid JSON: {exc}", schema, finish_reason, usage) from exc
    error = validator_for(schema).error(value)
    if error is not None:
        raise _invalid(content, f"does not match the schema: {error}", schema, finish_reason, usage)
    return value


def _invalid(
    content: str | None, reason: str, schema: Any, finish_reason: str | None, usage: Any
) -> StructuredOutputInvalid:
    hint = " (the reply was cut off at max_tokens)" if finish_reason == "length" else ""
    return StructuredOutputInvalid(
        f"structured output invalid: {reason}{hint}",
        output_content=content,
        error_message=reason,
        finish_reason=finish_reason,
        usage=usage,
        schema=schema,
    )


class SchemaInfo(msgspec.Struct, frozen=True):
    """What the wire needs to know about a response schema, computed once."""

    wire_schema: dict[str, Any]
    name: str
    strict: bool
    json_text: str


_INFO_CACHE: dict[int, tuple[Any, SchemaInfo]] = {}


def schema_info(schema: Any) -> SchemaInfo:
    """The JSON Schema to send, a stable ``name`` for it, whether it meets
    OpenAI's strict-mode rules, and its canonical JSON text (for the fallback
    directive). Memoized by schema identity. Raises ``ValueError`` for a
    schema that is not an object schema."""
    hit = _INFO_CACHE.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    wire = _struct_json_schema(schema) if is_struct_type(schema) else schema
    if not isinstance(wire, Mapping) or wire.get("type") != "object":
        raise ValueError(
            "response_schema must be a JSON Schema object with type 'object' at the root"
        )
    if not is_struct_type(schema):
        validator_for(schema)  # raises SchemaError (a ValueError) for a malformed schema
    text = _canonical.encode(wire).decode()
    title = wire.get("title")
    if isinstance(title, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", title):
        name = title
    else:
        name = "response_" + hashlib.sha256(text.encode()).hexdigest()[:16]
    info = SchemaInfo(dict(wire), name, _strict_ok(wire), text)
    if len(_INFO_CACHE) > 512:
        _INFO_CACHE.clear()
    _INFO_CACHE[id(schema)] = (schema, info)
    return info


def _struct_json_schema(tp: type[msgspec.Struct]) -> dict[str, Any]:
    """``msgspec.json.schema`` puts the Struct behind a root ``$ref``; OpenAI
    wants the object at the root, so the referenced definition is inlined."""
    generated: dict[str, Any] = msgspec.json.schema(tp)
    ref = generated.get("$ref")
    defs: dict[str, Any] = dict(generated.get("$defs", {}))
    if not isinstance(ref, str) or not ref.startswith("#/$defs/"):
        return generated
    root = dict(defs[ref.removeprefix("#/$defs/")])
    if b'"$ref"' in _canonical.encode(root):  # nested Structs: keep their definitions
        root["$defs"] = defs
    return root


def _strict_ok(schema: Any) -> bool:
    """OpenAI strict mode: every object closes ``additionalProperties`` and
    lists all its properties in ``required``."""
    if isinstance(schema, Mapping):
        if schema.get("type") == "object" or "properties" in schema:
            props = schema.get("properties", {})
            if schema.get("additionalProperties") is not False:
                return False
            if isinstance(props, Mapping) and set(schema.get("required", [])) != set(props):
                return False
        return all(
            _strict_ok(v) for k, v in schema.items() if k not in ("enum", "const", "default")
        )
    if isinstance(schema, list):
        return all(_strict_ok(v) for v in schema)
    return True


DIRECTIVE_PREFIX = (
    "Reply with a single JSON value and nothing else: no prose, no code fences. "
    "The value must conform to this JSON Schema:\n"
)


def inject_schema_directive(messages: Sequence[Message], schema_json: str) -> list[Message]:
    """The prompt-augmentation fallback (§8.1.5.1): a *copy* of ``messages``
    whose system message carries an instruction to answer with JSON matching
    the schema (appended to an existing leading system message, or prepended
    as a new one). The caller's list is never modified."""
    directive = DIRECTIVE_PREFIX + schema_json
    out = list(messages)
    if out and isinstance(out[0], SystemMessage) and isinstance(out[0].content, str):
        out[0] = SystemMessage(content=f"{out[0].content}\n\n{directive}")
    else:
        out.insert(0, SystemMessage(content=directive))
    return out
