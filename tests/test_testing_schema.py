"""example_from_schema: the deterministic JSON the embedded server answers with."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
import pytest

from openarmature_nodes.testing import example_from_schema
from openarmature_nodes.testing.replies import find_schema_in_text


class Item(msgspec.Struct):
    sku: Annotated[str, msgspec.Meta(min_length=3, max_length=5)]
    qty: Annotated[int, msgspec.Meta(ge=1, le=9)]


class Order(msgspec.Struct):
    id: Annotated[str, msgspec.Meta(pattern=r"^ord-[0-9]+$")]
    kind: Literal["retail", "wholesale"]
    items: Annotated[list[Item], msgspec.Meta(min_length=2)]
    price: Annotated[float, msgspec.Meta(gt=0)]
    note: str | None = None
    child: Order | None = None


def test_msgspec_struct_schemas_round_trip() -> None:
    value = example_from_schema(msgspec.json.schema(Order))
    order = msgspec.convert(value, Order)  # raises if any constraint is broken
    assert order.kind == "retail"
    assert len(order.items) == 2
    assert order.price > 0


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"const": 7}, 7),
        ({"enum": ["b", "a"]}, "b"),
        ({"type": "integer", "minimum": 5}, 5),
        ({"type": "integer", "exclusiveMinimum": 5}, 6),
        ({"type": "integer", "maximum": -3}, -3),
        ({"type": "integer", "minimum": 1, "multipleOf": 5}, 5),
        ({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.5}, 0.25),
        ({"type": "boolean"}, True),
        ({"type": "null"}, None),
        ({"type": ["null", "string"]}, "text"),
        ({"type": "string", "minLength": 6}, "textxx"),
        ({"type": "string", "maxLength": 2}, "te"),
        ({"type": "string", "format": "date"}, "2024-01-01"),
        ({"type": "string", "pattern": "^[0-9]+$"}, "0"),
        ({"type": "array", "items": {"type": "integer"}, "maxItems": 0}, []),
        (
            {"type": "array", "items": {"type": "integer"}, "minItems": 3, "uniqueItems": True},
            [0, 1, 2],
        ),
        ({"anyOf": [{"type": "null"}, {"type": "integer"}]}, 0),
        (
            {"allOf": [{"properties": {"a": {"type": "integer"}}}, {"required": ["b"]}]},
            {"a": 0, "b": {}},
        ),
        ({"type": "object", "properties": {"city": {"type": "string"}}}, {"city": "city"}),
        (True, {}),
        (False, None),
    ],
)
def test_keywords(schema: Any, expected: Any) -> None:
    assert example_from_schema(schema) == expected


def test_definitions_refs_and_recursion_terminate() -> None:
    schema = {
        "$ref": "#/definitions/Node",
        "definitions": {
            "Node": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "next": {"$ref": "#/definitions/Node"}},
                "required": ["name"],
            }
        },
    }
    value = example_from_schema(schema)
    depth = 0
    while isinstance(value, dict) and "next" in value:
        value, depth = value["next"], depth + 1
    assert 1 <= depth <= 10
    assert value["name"] == "name"


def test_pattern_best_effort_matches_when_a_candidate_fits() -> None:
    value = example_from_schema({"type": "string", "pattern": "^[A-Z]$"})
    assert re.search("^[A-Z]$", value)


def test_find_schema_in_text() -> None:
    text = 'Answer as JSON. Schema: {"type": "object", "properties": {"a": {"const": "}"}}} thanks'
    assert find_schema_in_text(text) == {"type": "object", "properties": {"a": {"const": "}"}}}
    assert find_schema_in_text('no schema here {"just": "data"}') is None
    assert find_schema_in_text("unbalanced { text") is None
