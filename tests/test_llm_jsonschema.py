"""The compiled JSON Schema validator."""

from __future__ import annotations

from typing import Any

import pytest

from openarmature_nodes.llm.wire.jsonschema import (
    SchemaError,
    compile_schema,
    json_equal,
    validator_for,
)


@pytest.mark.parametrize(
    ("schema", "good", "bad"),
    [
        ({"type": "integer"}, [1, 2.0, -5], [1.5, True, "1", None]),
        ({"type": "number"}, [1, 1.5], [True, "x"]),
        ({"type": ["string", "null"]}, ["a", None], [1]),
        ({"type": "boolean"}, [True, False], [0, 1]),
        ({"enum": [1, "a", None]}, [1, 1.0, "a", None], [True, "b"]),
        ({"const": {"a": [1, 2]}}, [{"a": [1, 2.0]}], [{"a": [2, 1]}, {"a": [1, 2], "b": 0}]),
        ({"minimum": 1, "exclusiveMaximum": 3}, [1, 2.9, "not a number"], [0, 3]),
        ({"minimum": 1, "exclusiveMinimum": True}, [1.1], [1]),
        ({"multipleOf": 0.5}, [1.5, 2], [1.2]),
        ({"minLength": 2, "maxLength": 3, "pattern": "^a"}, ["ab", "abc"], ["a", "abcd", "ba"]),
        (
            {"items": {"type": "integer"}, "minItems": 1, "maxItems": 2},
            [[1], [1, 2]],
            [[], [1, 2, 3], ["x"]],
        ),
        (
            {"prefixItems": [{"type": "string"}], "items": {"type": "integer"}},
            [["a", 1]],
            [[1], ["a", "b"]],
        ),
        ({"uniqueItems": True}, [[1, 2], [{"a": 1}, {"a": 2}]], [[1, 1.0], [{"a": 1}, {"a": 1}]]),
        ({"anyOf": [{"type": "string"}, {"type": "integer"}]}, ["a", 1], [1.5]),
        ({"oneOf": [{"type": "integer"}, {"minimum": 0}]}, [-1, 0.5], [1]),
        ({"allOf": [{"minimum": 0}, {"maximum": 1}]}, [0, 1], [2]),
        ({"not": {"type": "string"}}, [1], ["a"]),
        ({"minProperties": 1, "maxProperties": 1}, [{"a": 1}], [{}, {"a": 1, "b": 2}]),
        (
            {"patternProperties": {"^x": {"type": "integer"}}, "additionalProperties": False},
            [{"x1": 1}],
            [{"x1": "a"}, {"y": 1}],
        ),
        (True, [1, None], []),
        (False, [], [1]),
    ],
)
def test_keywords(schema: Any, good: list[Any], bad: list[Any]) -> None:
    v = compile_schema(schema)
    for value in good:
        assert v.error(value) is None, value
    for value in bad:
        assert v.error(value) is not None, value


def test_object_errors_name_the_location() -> None:
    v = compile_schema(
        {
            "type": "object",
            "properties": {
                "person": {
                    "type": "object",
                    "properties": {"age": {"type": "integer"}},
                    "required": ["age"],
                    "additionalProperties": False,
                }
            },
        }
    )
    assert v.error({"person": {}}) == "$.person: missing required property 'age'"
    assert "$.person.age" in (v.error({"person": {"age": "x"}}) or "")
    assert "'zip' is not allowed" in (v.error({"person": {"age": 1, "zip": 1}}) or "")


def test_refs_and_recursion() -> None:
    schema = {
        "$ref": "#/$defs/Node",
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "next": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]},
                    "v": {"type": "integer"},
                },
                "required": ["v"],
            }
        },
    }
    v = compile_schema(schema)
    assert v.is_valid({"v": 1, "next": {"v": 2, "next": None}})
    assert not v.is_valid({"v": 1, "next": {"next": None}})
    assert compile_schema(
        {"definitions": {"a": {"type": "string"}}, "$ref": "#/definitions/a"}
    ).is_valid("x")


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "strings"},
        {"required": "a"},
        {"enum": 1},
        {"pattern": "("},
        {"minItems": -1},
        {"$ref": "#/$defs/missing"},
        {"$ref": "http://x"},
        {"anyOf": []},
        {"minimum": "1"},
        5,
    ],
)
def test_malformed_schemas(schema: Any) -> None:
    with pytest.raises(SchemaError):
        compile_schema(schema)


def test_validator_for_is_memoized_by_identity() -> None:
    schema = {"type": "string"}
    assert validator_for(schema) is validator_for(schema)
    assert validator_for(dict(schema)) is not validator_for(schema)


def test_json_equal() -> None:
    assert json_equal(1, 1.0) and not json_equal(True, 1) and not json_equal(0, False)
    assert json_equal({"a": [1, {"b": None}]}, {"a": [1.0, {"b": None}]})
    assert not json_equal([1, 2], [2, 1]) and not json_equal({"a": 1}, {"a": 1, "b": 2})
    assert not json_equal("1", 1) and not json_equal(None, 0)
