"""Caller invocation metadata (observability §3.4 / §5.6) on spans and typed events."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from openarmature_nodes.graph import END, GraphBuilder, State, append
from openarmature_nodes.metadata import get_invocation_metadata, set_invocation_metadata
from openarmature_nodes.observability.otel import OTelObserver

pytestmark = pytest.mark.anyio


class Item(State):
    item: str = ""
    out: str = ""


class Outer(State):
    items: list[str] = []
    results: Annotated[list[str], append] = []
    seen: dict[str, Any] = {}


async def per_item(state: Item) -> dict[str, Any]:
    set_invocation_metadata(productId=state.item)
    return {"out": state.item}


async def first(state: Outer) -> dict[str, Any]:
    set_invocation_metadata(stage="started")
    return {}


async def last(state: Outer) -> dict[str, Any]:
    return {"seen": dict(get_invocation_metadata())}


def graph() -> Any:
    inner = GraphBuilder(Item).add_node("score", per_item).add_edge("score", END)
    inner = inner.set_entry("score").compile()
    return (
        GraphBuilder(Outer)
        .add_node("first", first)
        .add_fan_out_node("fan", inner, items_field="items", item_field="item",
                          collect_field="out", target_field="results")
        .add_node("last", last)
        .add_edge("first", "fan").add_edge("fan", "last").add_edge("last", END)
        .set_entry("first").compile()
    )


async def test_metadata_reaches_spans_scoped_by_context() -> None:
    exporter = InMemorySpanExporter()
    otel = OTelObserver(span_processors=[SimpleSpanProcessor(exporter)])
    final = await graph().invoke(Outer(items=["A", "B"]), observers=[otel],
                                 metadata={"tenantId": "acme"})
    assert final.seen == {"tenantId": "acme", "stage": "started"}  # per-instance adds stay inside
    spans = exporter.get_finished_spans()
    assert all(s.attributes["openarmature.user.tenantId"] == "acme" for s in spans)
    (root,) = [s for s in spans if s.name == "openarmature.invocation"]
    assert root.attributes["openarmature.user.stage"] == "started"  # open span updated
    assert "openarmature.user.productId" not in root.attributes  # shared parent untouched
    scores = [s for s in spans if s.name == "score"]
    assert sorted(s.attributes["openarmature.user.productId"] for s in scores) == ["A", "B"]
    instances = [s for s in spans if "openarmature.fan_out.parent_node_name" in s.attributes]
    for inst in instances:  # each instance span carries its own product only
        assert inst.attributes["openarmature.user.productId"] in ("A", "B")
    (fan,) = [s for s in spans if s.name == "fan" and "openarmature.fan_out.item_count"
              in s.attributes]
    assert "openarmature.user.productId" not in fan.attributes
    (done,) = [s for s in spans if s.name == "last"]
    assert done.attributes["openarmature.user.stage"] == "started"
    assert "openarmature.user.productId" not in done.attributes


@pytest.mark.parametrize("bad", [{"openarmature.x": 1}, {"gen_ai.system": "x"}, {"step": 1},
                                 {"ok": {"nested": 1}}, {"ok": [1, "a"]}, {"ok": None}])
async def test_invalid_metadata_is_rejected_before_any_work(bad: dict[str, Any]) -> None:
    ran: list[str] = []

    async def node(state: Outer) -> None:
        ran.append("node")
        return None

    g = GraphBuilder(Outer).add_node("n", node).add_edge("n", END).set_entry("n").compile()
    with pytest.raises((ValueError, TypeError)):
        await g.invoke(Outer(), metadata=bad)
    assert not ran


async def test_outside_an_invocation_the_mapping_is_empty_and_read_only() -> None:
    value = get_invocation_metadata()
    assert dict(value) == {}
    with pytest.raises(TypeError):
        value["x"] = 1  # type: ignore[index]
