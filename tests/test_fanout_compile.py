"""Compile-time checks of fan-out (§9, §9.8) and parallel branches (§11.9):
each misconfiguration fails ``compile()`` with the spec's category and a
message naming the field; round-trips warn."""

from __future__ import annotations

import warnings
from typing import Annotated, Any

import msgspec
import pytest

from openarmature_nodes.graph import (
    END,
    Branch,
    CompiledGraph,
    GraphBuilder,
    GraphCompileError,
    GraphCompileWarning,
    State,
    append,
    concat_flatten,
    merge,
)
from openarmature_nodes.middleware import FailureIsolationMiddleware


class Item(State):
    x: int = 0
    result: int = 0
    acc: Annotated[list[int], append] = msgspec.field(default_factory=list)


class Parent(State):
    items: list[int] = msgspec.field(default_factory=list)
    results: Annotated[list[int], append] = msgspec.field(default_factory=list)
    flat: Annotated[list[int], concat_flatten] = msgspec.field(default_factory=list)
    meta: Annotated[dict[str, int], merge] = msgspec.field(default_factory=dict)
    label: str = ""
    n: int = 0
    errs_plain: list[dict[str, str]] = msgspec.field(default_factory=list)
    errs: Annotated[list[dict[str, str]], append] = msgspec.field(default_factory=list)


async def body(s: Item) -> dict[str, Any]:
    return {"result": s.x}


LEAF: CompiledGraph[Item] = (
    GraphBuilder(Item).add_node("w", body).add_edge("w", END).set_entry("w").compile()
)

BASE: dict[str, Any] = {
    "items_field": "items", "item_field": "x", "collect_field": "result", "target_field": "results",
}


def compile_fan_out(**override: Any) -> CompiledGraph[Parent]:
    config = {**BASE, **override}
    config = {k: v for k, v in config.items() if v is not None}
    return (
        GraphBuilder(Parent).add_fan_out_node("fan", LEAF, **config)
        .add_edge("fan", END).set_entry("fan").compile()
    )


@pytest.mark.parametrize(
    ("override", "category", "named"),
    [
        ({"items_field": None}, "fan_out_count_mode_ambiguous", "items_field"),
        ({"count": 3}, "fan_out_count_mode_ambiguous", "count"),
        ({"items_field": None, "count": 2}, "fan_out_count_mode_ambiguous", "item_field"),
        ({"item_field": None}, "fan_out_count_mode_ambiguous", "item_field"),
        ({"items_field": "label"}, "fan_out_field_not_list", "items_field"),
        ({"items_field": "nope"}, "mapping_references_undeclared_field", "items_field"),
        ({"item_field": "nope"}, "mapping_references_undeclared_field", "item_field"),
        ({"collect_field": "nope"}, "mapping_references_undeclared_field", "collect_field"),
        ({"target_field": "nope"}, "mapping_references_undeclared_field", "target_field"),
        ({"inputs": {"x": "nope"}}, "mapping_references_undeclared_field", "inputs"),
        ({"inputs": {"nope": "n"}}, "mapping_references_undeclared_field", "inputs"),
        ({"extra_outputs": {"nope": "x"}}, "mapping_references_undeclared_field", "extra_outputs"),
        ({"extra_outputs": {"n": "nope"}}, "mapping_references_undeclared_field", "extra_outputs"),
        ({"count_field": "label"}, "mapping_references_undeclared_field", "count_field"),
        ({"errors_field": "label"}, "fan_out_field_not_list", "errors_field"),
        ({"errors_field": "errs_plain"}, "concurrent_node_config_invalid", "errors_field"),
        ({"on_empty": "skip"}, "concurrent_node_config_invalid", "on_empty"),
        ({"error_policy": "ignore"}, "concurrent_node_config_invalid", "error_policy"),
        ({"concurrency": 0}, "fan_out_invalid_concurrency", "concurrency"),
        ({"items_field": None, "item_field": None, "count": -1}, "fan_out_invalid_count", "count"),
        ({"extra_outputs": {"results": "x"}}, "concurrent_node_config_invalid", "target_field"),
    ],
)
def test_fan_out_compile_errors(override: dict[str, Any], category: str, named: str) -> None:
    with pytest.raises(GraphCompileError) as info:
        compile_fan_out(**override)
    assert info.value.category == category
    assert named in str(info.value) and "'fan'" in str(info.value)


def test_count_callable_annotated_with_a_non_int_return_is_rejected() -> None:
    def count(state: Parent) -> str:
        return "3"

    with pytest.raises(GraphCompileError) as info:
        compile_fan_out(items_field=None, item_field=None, count=count)
    assert info.value.category == "fan_out_invalid_count"


def test_static_degrade_must_cover_collect_field() -> None:
    bad = FailureIsolationMiddleware(degraded_update={"acc": []}, event_name="iso")
    with pytest.raises(GraphCompileError) as info:
        compile_fan_out(instance_middleware=[bad])
    assert info.value.category == "fan_out_degraded_update_missing_collect_field"
    assert "result" in str(info.value)
    good = FailureIsolationMiddleware(degraded_update={"result": 0}, event_name="iso")
    callable_form = FailureIsolationMiddleware(degraded_update=lambda s: {}, event_name="iso")
    compile_fan_out(instance_middleware=[good])
    compile_fan_out(instance_middleware=[callable_form])  # not knowable: no check


def categories(**override: Any) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compile_fan_out(**override)
    return [w.message.category for w in caught if isinstance(w.message, GraphCompileWarning)
            and w.message.category != "no_outgoing_edge"]


def test_round_trip_warnings() -> None:
    assert categories() == []
    # inputs -> extra_outputs through the same subgraph field, into append
    assert categories(inputs={"acc": "results"}, target_field="flat",
                      extra_outputs={"results": "acc"}) == ["projection_reducer_round_trip"]
    # collect channel seeded through inputs
    assert categories(inputs={"acc": "flat"}, collect_field="acc", target_field="flat") == [
        "projection_reducer_round_trip"
    ]
    # collect channel seeded per item (items_field == target_field, item_field == collect_field)
    assert categories(items_field="results", item_field="result") == [
        "projection_reducer_round_trip"
    ]
    # seeded but collecting another field: no round trip
    assert categories(items_field="results", item_field="x") == []


def test_configuration_warnings() -> None:
    assert categories(errors_field="errs") == ["fan_out_errors_field_unused"]
    assert categories(errors_field="errs", error_policy="collect") == []
    assert categories(extra_outputs={"n": "x"}) == ["fan_out_extra_output_last_write_wins"]


def compile_branches(branches: Any, **config: Any) -> CompiledGraph[Parent]:
    return (
        GraphBuilder(Parent).add_parallel_branches_node("pb", branches, **config)
        .add_edge("pb", END).set_entry("pb").compile()
    )


async def call(state: Parent) -> dict[str, Any]:
    return {}


@pytest.mark.parametrize(
    ("branches", "config", "category", "named"),
    [
        ({}, {}, "parallel_branches_no_branches", "pb"),
        ({"b": Branch()}, {}, "parallel_branches_invalid_branch_spec", "'b'"),
        ({"b": Branch(subgraph=LEAF, call=call)}, {}, "parallel_branches_invalid_branch_spec",
         "'b'"),
        ({"b": Branch(call=call, outputs={"n": "x"})}, {}, "parallel_branches_invalid_branch_spec",
         "outputs"),
        ({"b": Branch(subgraph=LEAF, inputs={"x": "nope"})}, {},
         "mapping_references_undeclared_field", "inputs"),
        ({"b": Branch(subgraph=LEAF, outputs={"n": "nope"})}, {},
         "mapping_references_undeclared_field", "outputs"),
        ({"b": call}, {"error_policy": "all"}, "concurrent_node_config_invalid", "error_policy"),
        ({"b": call}, {"errors_field": "n"}, "parallel_branches_errors_field_not_list",
         "errors_field"),
    ],
)
def test_parallel_branches_compile_errors(branches: Any, config: dict[str, Any], category: str,
                                          named: str) -> None:
    with pytest.raises(GraphCompileError) as info:
        compile_branches(branches, **config)
    assert info.value.category == category and named in str(info.value)


def test_sync_call_branch_is_rejected() -> None:
    def sync(state: Parent) -> dict[str, Any]:
        return {}

    with pytest.raises(GraphCompileError) as info:
        compile_branches({"b": Branch(call=sync)})  # type: ignore[arg-type]
    assert "async" in str(info.value)


def test_branch_round_trip_warns() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compile_branches({"b": Branch(subgraph=LEAF, inputs={"acc": "results"},
                                      outputs={"results": "acc"})})
    got = [w.message.category for w in caught if isinstance(w.message, GraphCompileWarning)]
    assert "projection_reducer_round_trip" in got
