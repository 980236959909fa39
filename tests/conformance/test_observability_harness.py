"""The observability adapter's own directives, on made-up cases: detached-trace
expectations (``traces``, ``parent_trace``, ``detached_trace_count``, Links) fail when
what they describe is not what ran, and the harness operations of
``update_pure_from_state`` / ``augment_metadata_from_field`` do what the adapter spec
says."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from .fixtures import Case, UnknownDirective
from .matchers import fresh_bindings, reset_bindings
from .test_conformance import run_named

pytestmark = pytest.mark.anyio

DETACHED: dict[str, Any] = {
    "subgraphs": {"flow": {
        "state": {"fields": {"x": {"type": "int", "default": 0}}},
        "entry": "step",
        "nodes": {"step": {"update_pure": {"x": 1}}},
        "edges": [{"from": "step", "to": "END"}],
    }},
    "state": {"fields": {"ran": {"type": "bool", "default": False}}},
    "entry": "dispatch",
    "nodes": {"dispatch": {"subgraph": "flow"}, "after": {"update": {"ran": True}}},
    "edges": [{"from": "dispatch", "to": "after"}, {"from": "after", "to": "END"}],
    "initial_state": {},
    "detached_subgraphs": ["flow"],
}

TRACES: list[Any] = [
    {"trace_id": "<trace_id_parent>", "span_tree": [{
        "name": "openarmature.invocation", "status": "OK",
        "children": [
            {"name": "dispatch", "links": [{"target_trace_id": "<trace_id_detached>"}],
             "children": []},
            {"name": "after", "children": []},
        ]}]},
    {"trace_id": "<trace_id_detached>", "span_tree": [{
        "name": "openarmature.invocation",
        "children": [{"name": "flow", "children": [{"name": "step", "children": []}]}]}]},
]


def case(data: dict[str, Any]) -> Case:
    return Case("observability", "900-made-up", "main", data, data, Path("made-up.yaml"))


async def run(data: dict[str, Any]) -> None:
    table = fresh_bindings()
    try:
        await run_named(case(data))
    finally:
        reset_bindings(table)


def with_expected(**expected: Any) -> dict[str, Any]:
    return {**copy.deepcopy(DETACHED), "expected": expected}


async def test_the_detached_expectations_pass_on_what_ran() -> None:
    await run(with_expected(traces=TRACES, detached_trace_count=1, invariants={
        "distinct_trace_ids": True, "dispatch_span_link_count": 1,
        "detached_invocation_id_equals_parent": True,
        "attribution_attrs_on_detached_child_invocation_span": True}))


@pytest.mark.parametrize("expected", [
    {"detached_trace_count": 2},
    {"traces": TRACES[:1]},  # a trace the run produced is left out
    {"invariants": {"dispatch_span_link_count": 2}},
    {"parent_trace": {"span_tree": [{"name": "openarmature.invocation",
                                     "children": [{"name": "dispatch", "link_count": 0}]}]}},
    {"parent_trace": {"span_tree": [{"name": "openarmature.invocation", "children": []}]}},
])
async def test_a_wrong_detached_expectation_fails(expected: dict[str, Any]) -> None:
    with pytest.raises(AssertionError):
        await run(with_expected(**expected))


async def test_a_detached_span_in_the_wrong_trace_fails() -> None:
    wrong = copy.deepcopy(TRACES)
    wrong[1]["span_tree"][0]["children"][0]["name"] = "dispatch"  # not the subgraph's name
    with pytest.raises(AssertionError):
        await run(with_expected(traces=wrong))


async def test_a_plain_span_tree_still_lists_every_child() -> None:
    data = {**copy.deepcopy(DETACHED), "detached_subgraphs": []}
    data["expected"] = {"span_tree": [{"name": "openarmature.invocation",
                                       "children": [{"name": "dispatch"}]}]}
    with pytest.raises(AssertionError):  # `after` is a child too
        await run(data)


def harness_case(nodes: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    return {
        "state": {"fields": {"input": {"type": "int", "default": 7},
                             "out": {"type": "int", "default": 0},
                             "tenant": {"type": "string", "default": "t-9"}}},
        "entry": "a", "nodes": nodes, "edges": [{"from": "a", "to": "END"}],
        "initial_state": {}, "expected": expected,
    }


async def test_update_pure_from_state_applies_the_named_operation() -> None:
    await run(harness_case({"a": {"update_pure_from_state": {"out": "input_times_two"}}},
                           {"final_state": {"out": 14}}))
    await run(harness_case({"a": {"update_pure_from_state": {"out": "input_plus_3"}}},
                           {"final_state": {"out": 10}}))
    with pytest.raises(AssertionError):
        await run(harness_case({"a": {"update_pure_from_state": {"out": "input_times_two"}}},
                               {"final_state": {"out": 7}}))


async def test_an_unknown_harness_operation_fails_naming_it() -> None:
    with pytest.raises(UnknownDirective, match="input_squared"):
        await run(harness_case({"a": {"update_pure_from_state": {"out": "input_squared"}}},
                               {}))


async def test_augment_metadata_from_field_reads_the_state() -> None:
    await run(harness_case({"a": {"augment_metadata_from_field": {"tenantId": "tenant"}}},
                           {"span_tree": [{"name": "openarmature.invocation",
                                           "attributes": {"openarmature.user.tenantId": "t-9"},
                                           "children": [{"name": "a", "attributes": {
                                               "openarmature.user.tenantId": "t-9"}}]}]}))
