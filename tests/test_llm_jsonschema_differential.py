"""Differential test: our compiled JSON Schema validator agrees with ``jsonschema``.

Hypothesis generates draft 2020-12 schemas from every keyword our validator
compiles (nested through ``properties``, ``items``, the combinators and
``$ref``), and JSON values to check against them; each verdict must equal
``jsonschema.Draft202012Validator``'s. It runs in the ordinary test run (CI
included) with 2,000 examples, derandomized so a run is reproducible, and a
few values per schema.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openarmature_nodes.llm.wire.jsonschema import KEYWORDS, compile_schema

EXAMPLES = 2000
KEYS = ["a", "b", "c", "ab"]
PATTERNS = ["^a", "b$", "^[0-9]+$", "x|y", "^$"]
TYPES = ["null", "boolean", "integer", "number", "string", "array", "object"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 12)
    | st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, -2.5, 3.0, 1e300, 0.1, 0.3])
    | st.text(alphabet="abxy09", max_size=5),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
    max_leaves=8,
)
small_int = st.integers(0, 4)
number = st.sampled_from([-3, 0, 1, 2, 2.5, 5, 10, 0.5])


def leaf_keywords() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(TYPES) | st.lists(st.sampled_from(TYPES), min_size=1,
                                                       max_size=3, unique=True),
            "enum": st.lists(json_values, min_size=1, max_size=4),
            "const": json_values,
            "minimum": number,
            "maximum": number,
            "exclusiveMinimum": number,
            "exclusiveMaximum": number,
            "multipleOf": st.sampled_from([1, 2, 0.5, 3, 0.25, 1.5]),
            "minLength": small_int,
            "maxLength": small_int,
            "pattern": st.sampled_from(PATTERNS),
            "minItems": small_int,
            "maxItems": small_int,
            "uniqueItems": st.booleans(),
            "minProperties": small_int,
            "maxProperties": small_int,
            "required": st.lists(st.sampled_from(KEYS), max_size=3, unique=True),
            "title": st.just("annotations assert nothing"),
            "format": st.sampled_from(["email", "date-time"]),
        },
    )


def with_children(children: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    nested = st.fixed_dictionaries(
        {},
        optional={
            "properties": st.dictionaries(st.sampled_from(KEYS), children, max_size=3),
            "patternProperties": st.dictionaries(st.sampled_from(PATTERNS[:2]), children,
                                                 max_size=2),
            "additionalProperties": children,
            "items": children,
            "prefixItems": st.lists(children, min_size=1, max_size=3),
            "allOf": st.lists(children, min_size=1, max_size=3),
            "anyOf": st.lists(children, min_size=1, max_size=3),
            "oneOf": st.lists(children, min_size=1, max_size=3),
            "not": children,
            "$ref": st.just("#/$defs/d"),
        },
    )
    return st.builds(lambda a, b: {**a, **b}, leaf_keywords(), nested)


schemas = st.recursive(
    st.booleans() | leaf_keywords(), with_children, max_leaves=6
).map(
    lambda s: {"$defs": {"d": {"type": ["integer", "string"], "minimum": 1}}, "allOf": [s]}
)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(schema=schemas, values=st.lists(json_values, min_size=1, max_size=4))
def test_agrees_with_jsonschema(schema: dict[str, Any], values: list[Any]) -> None:
    ours = compile_schema(schema)
    assert ours.engine == "compiled"
    reference = jsonschema.Draft202012Validator(schema)
    for value in values:
        expected = reference.is_valid(value)
        assert ours.is_valid(value) is expected, (schema, value)
        assert (ours.error(value) is None) is expected


def test_the_generator_covers_every_compiled_keyword() -> None:
    generated: set[str] = set()

    def keys(node: Any) -> None:
        if isinstance(node, dict):
            generated.update(node)
            for v in node.values():
                keys(v)
        elif isinstance(node, list):
            for v in node:
                keys(v)

    @settings(max_examples=300, derandomize=True, database=None, deadline=None)
    @given(schemas)
    def collect(schema: dict[str, Any]) -> None:
        keys(schema)

    collect()
    missing = KEYWORDS - generated - {"additionalItems"}  # draft-4 tuple form only
    assert missing == set()


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        ({"type": "object", "dependentRequired": {"a": ["b"]}}, {"a": 1}),
        ({"if": {"type": "integer"}, "then": {"minimum": 10}}, 3),
        ({"type": "array", "contains": {"const": 1}}, [2, 3]),
        ({"type": "object", "propertyNames": {"pattern": "^a"}}, {"b": 1}),
        ({"properties": {"a": {}}, "unevaluatedProperties": False}, {"a": 1, "z": 2}),
        ({"type": "string", "x-vendor": True, "maxLength": 1}, "long"),
        ({"$defs": {"s": {"$anchor": "s", "type": "string"}}, "$ref": "#s"}, 5),
    ],
)
def test_keywords_we_do_not_compile_are_never_silently_accepted(schema: Any, value: Any) -> None:
    validator = compile_schema(schema)
    assert validator.engine == "jsonschema"
    assert not validator.is_valid(value)
    assert validator.error(value) is not None
