"""Status mapping rows of observability §4.2 the shared fixtures leave out: an invalid
initial state errors the invocation span (no node ran); an edge / routing failure errors
the preceding node's span; each ERROR span carries its category and an exception event."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from openarmature_nodes.graph import END, GraphBuilder, GraphRuntimeError, State
from openarmature_nodes.graph.errors import StateValidationError
from openarmature_nodes.graph.reducers import append
from openarmature_nodes.observability.otel import OTelObserver

pytestmark = pytest.mark.anyio


class S(State):
    x: int = 0


async def ok(state: Any) -> dict[str, Any]:
    return {"x": 1}


def boom_route(state: Any) -> str:
    raise RuntimeError("edge boom")


async def traced(graph: Any, state: Any) -> tuple[list[ReadableSpan], BaseException]:
    exporter = InMemorySpanExporter()
    otel = OTelObserver(span_processors=[SimpleSpanProcessor(exporter)])
    with pytest.raises((GraphRuntimeError, StateValidationError)) as raised:
        await graph.invoke(state, observers=[otel], correlation_id="c-1")
    otel.shutdown()
    return list(exporter.get_finished_spans()), raised.value


def assert_error(span: ReadableSpan, category: str) -> None:
    assert span.status.status_code is StatusCode.ERROR, span.name
    assert span.status.description == category
    assert (span.attributes or {})["openarmature.error.category"] == category
    assert any(e.name == "exception" for e in span.events)


async def test_an_invalid_initial_state_errors_the_invocation_span() -> None:
    graph = GraphBuilder(S).add_node("a", ok).add_edge("a", END).set_entry("a").compile()
    spans, error = await traced(graph, {"x": "not an int"})
    assert isinstance(error, StateValidationError)
    (root,) = spans  # no node ran: the invocation span alone
    assert root.name == "openarmature.invocation"
    assert (root.attributes or {})["openarmature.correlation_id"] == "c-1"
    assert_error(root, "state_validation_error")


async def test_an_invalid_initial_state_unobserved_raises_the_same() -> None:
    graph = GraphBuilder(S).add_node("a", ok).add_edge("a", END).set_entry("a").compile()
    with pytest.raises(StateValidationError):
        await graph.invoke({"x": "not an int"})
    seen: list[Any] = []
    with pytest.raises(StateValidationError):  # a default-phase observer sees no event
        await graph.invoke({"x": "not an int"}, observers=[seen.append])
    assert seen == []


@pytest.mark.parametrize(("route", "category"), [(boom_route, "edge_exception"),
                                                 (lambda s: "nowhere", "routing_error")])
async def test_an_edge_failure_errors_the_preceding_node_span(route: Any, category: str) -> None:
    graph = (GraphBuilder(S).add_node("a", ok).add_node("b", ok).add_conditional_edge("a", route)
             .add_edge("b", END).set_entry("a").compile())
    spans, _ = await traced(graph, S())
    by_name = {s.name: s for s in spans}
    assert set(by_name) == {"openarmature.invocation", "a"}
    assert_error(by_name["a"], category)
    assert by_name["openarmature.invocation"].status.status_code is StatusCode.ERROR


async def test_a_failed_branch_of_a_collecting_node_errors_its_dispatch_span() -> None:
    class P(State):
        x: int = 0
        errors: Annotated[list[Any], append] = []

    async def fails(state: Any) -> dict[str, Any]:
        raise RuntimeError("branch boom")

    good = GraphBuilder(S).add_node("work", ok).add_edge("work", END).set_entry("work").compile()
    bad = GraphBuilder(S).add_node("work", fails).add_edge("work", END).set_entry("work")
    graph = (GraphBuilder(P)
             .add_parallel_branches_node("both", {"good": good, "bad": bad.compile()},
                                         error_policy="collect", errors_field="errors")
             .add_edge("both", END).set_entry("both").compile())
    exporter = InMemorySpanExporter()
    otel = OTelObserver(span_processors=[SimpleSpanProcessor(exporter)])
    final = await graph.invoke(P(), observers=[otel])
    otel.shutdown()
    assert len(final.errors) == 1
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["both"].status.status_code is StatusCode.OK  # the node collected it
    assert spans["good"].status.status_code is StatusCode.OK
    assert_error(spans["bad"], "node_exception")  # the branch itself failed
