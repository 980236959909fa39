"""Detached trace mode (observability §4.4) beyond the shared fixtures: nested detached
subgraphs, a retried node inside a detached subgraph, an unnamed subgraph detached by
its node, detached fan-out inside a detached subgraph, and the compiled subgraph's name
on spans (§5.3) and on node events."""

from __future__ import annotations

from itertools import pairwise
from typing import Annotated, Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from openarmature_nodes.graph import END, GraphBuilder, GraphRuntimeError, NodeEvent, State
from openarmature_nodes.graph.reducers import append
from openarmature_nodes.llm import OpenAIProvider, UserMessage
from openarmature_nodes.llm.transport import HttpxTransport
from openarmature_nodes.metadata import set_invocation_metadata
from openarmature_nodes.middleware import RetryMiddleware
from openarmature_nodes.observability.otel import OTelObserver
from openarmature_nodes.retrying import RetryConfig, constant_backoff

pytestmark = pytest.mark.anyio

INVOCATION = "openarmature.invocation"


class S(State):
    x: int = 0


class Items(State):
    items: list[int] = []
    results: Annotated[list[int], append] = []


class One(State):
    item: int = 0
    out: int = 0


async def bump(state: Any) -> dict[str, Any]:
    return {"x": state.x + 1}


def chain(name: str, *nodes: tuple[str, Any], state: type[State] = S) -> Any:
    """A graph running ``nodes`` in order, compiled under ``name``."""
    builder: GraphBuilder[Any] = GraphBuilder(state, name=name)
    for node, fn in nodes:
        if isinstance(fn, tuple):  # (graph, "fan") -> a fan-out node
            builder.add_fan_out_node(node, fn[0], items_field="items", item_field="item",
                                     collect_field="out", target_field="results")
        else:
            builder.add_node(node, fn)
    names = [n for n, _ in nodes]
    for a, b in pairwise(names):
        builder.add_edge(a, b)
    builder.add_edge(names[-1], END)
    return builder.set_entry(names[0]).compile()


async def run(graph: Any, state: Any, **kw: Any) -> tuple[list[ReadableSpan], Any]:
    exporter = InMemorySpanExporter()
    otel = OTelObserver(span_processors=[SimpleSpanProcessor(exporter)], **kw)
    error: Any = None
    try:
        await graph.invoke(state, observers=[otel], correlation_id="corr-det")
    except GraphRuntimeError as exc:
        error = exc
    otel.shutdown()
    return list(exporter.get_finished_spans()), error


def traces(spans: list[ReadableSpan]) -> dict[int, list[ReadableSpan]]:
    out: dict[int, list[ReadableSpan]] = {}
    for s in sorted(spans, key=lambda s: s.start_time or 0):
        out.setdefault(s.context.trace_id, []).append(s)
    return out


def root_of(spans: list[ReadableSpan]) -> ReadableSpan:
    (root,) = [s for s in spans if s.parent is None]
    return root


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    (span,) = [s for s in spans if s.name == name]
    return span


def parent_of(spans: list[ReadableSpan], span: ReadableSpan) -> ReadableSpan:
    assert span.parent is not None
    (found,) = [s for s in spans if s.context.span_id == span.parent.span_id]
    return found


def links_to(span: ReadableSpan, target: ReadableSpan) -> bool:
    return [(lk.context.trace_id, lk.context.span_id) for lk in span.links] == [
        (target.context.trace_id, target.context.span_id)]


def nested_graph() -> Any:
    inner = chain("inner_flow", ("step", bump))
    middle = GraphBuilder(S, name="outer_flow").add_node("prep", bump)
    middle = middle.add_subgraph("run_inner", inner).add_edge("prep", "run_inner")
    middle_graph = middle.add_edge("run_inner", END).set_entry("prep").compile()
    return (GraphBuilder(S).add_subgraph("run_outer", middle_graph).add_node("after", bump)
            .add_edge("run_outer", "after").add_edge("after", END).set_entry("run_outer")
            .compile())


async def test_nested_detached_subgraphs_make_three_traces_and_two_links() -> None:
    spans, error = await run(nested_graph(), S(),
                             detached_subgraphs={"outer_flow", "inner_flow"})
    assert error is None
    groups = traces(spans)
    assert len(groups) == 3
    roots = [root_of(g) for g in groups.values()]
    assert all(r.name == INVOCATION for r in roots)
    ids = {(r.attributes or {})["openarmature.invocation_id"] for r in roots}
    assert len(ids) == 1  # one run identity across the three traces (§4.3)
    assert {(s.attributes or {})["openarmature.correlation_id"] for s in spans} == {"corr-det"}
    # the three traces, told apart by the entry node each invocation span names (§5.1)
    by_entry = {(root_of(g).attributes or {})["openarmature.graph.entry_node"]: g
                for g in groups.values()}
    assert set(by_entry) == {"run_outer", "prep", "step"}
    parent, outer, inner = by_entry["run_outer"], by_entry["prep"], by_entry["step"]
    assert sorted(s.name for s in parent) == sorted([INVOCATION, "run_outer", "after"])
    assert sorted(s.name for s in outer) == sorted([INVOCATION, "outer_flow", "prep",
                                                    "run_inner"])
    assert sorted(s.name for s in inner) == sorted([INVOCATION, "inner_flow", "step"])
    # parent dispatch -> outer detached root; outer's dispatch -> inner detached root
    assert links_to(one(parent, "run_outer"), root_of(outer))
    assert links_to(one(outer, "run_inner"), root_of(inner))
    assert sum(len(s.links) for s in spans) == 2
    # inside each detached trace: invocation -> subgraph span -> inner nodes
    assert parent_of(outer, one(outer, "outer_flow")) is root_of(outer)
    assert parent_of(outer, one(outer, "prep")).name == "outer_flow"
    assert parent_of(outer, one(outer, "run_inner")).name == "outer_flow"
    assert parent_of(inner, one(inner, "inner_flow")) is root_of(inner)
    assert parent_of(inner, one(inner, "step")).name == "inner_flow"
    # a detached invocation span's window is its unit's, inside the parent's (§4.1)
    for detached, wrapper in ((outer, "outer_flow"), (inner, "inner_flow")):
        root, unit = root_of(detached), one(detached, wrapper)
        assert root.start_time is not None and unit.start_time is not None
        assert root.end_time is not None and unit.end_time is not None
        assert root.start_time <= unit.start_time and unit.end_time <= root.end_time
    assert all(s.status.status_code is StatusCode.OK for s in spans)


async def test_detached_outer_keeps_a_plain_inner_subgraph_nested() -> None:
    spans, _ = await run(nested_graph(), S(), detached_subgraphs={"outer_flow"})
    groups = traces(spans)
    assert len(groups) == 2
    (outer,) = [g for g in groups.values() if any(s.name == "outer_flow" for s in g)]
    inner_span = one(outer, "run_inner")  # the plain subgraph span: the node's name (§4.5)
    assert not inner_span.links
    assert parent_of(outer, inner_span).name == "outer_flow"
    assert (inner_span.attributes or {})["openarmature.subgraph.name"] == "inner_flow"
    assert parent_of(outer, one(outer, "step")) is inner_span


async def test_nested_detached_failure_marks_every_dispatch_and_detached_root() -> None:
    async def boom(state: Any) -> dict[str, Any]:
        raise RuntimeError("inner boom")

    inner = chain("inner_flow", ("step", boom))
    middle = GraphBuilder(S, name="outer_flow").add_subgraph("run_inner", inner)
    middle_graph = middle.add_edge("run_inner", END).set_entry("run_inner").compile()
    graph = (GraphBuilder(S).add_subgraph("run_outer", middle_graph)
             .add_edge("run_outer", END).set_entry("run_outer").compile())
    spans, error = await run(graph, S(), detached_subgraphs={"outer_flow", "inner_flow"})
    assert error is not None
    assert len(traces(spans)) == 3
    carriers = [s for s in spans if s.links] + [s for s in spans if s.name == INVOCATION]
    assert len(carriers) == 5  # two dispatch spans, three invocation spans
    for span in carriers:  # §4.2: ERROR, the §4 category, an exception event
        assert span.status.status_code is StatusCode.ERROR, span.name
        assert span.status.description == "node_exception"
        assert (span.attributes or {})["openarmature.error.category"] == "node_exception"
        assert any(e.name == "exception" for e in span.events), span.name


async def test_retried_node_inside_a_detached_subgraph_has_sibling_attempt_spans() -> None:
    calls = [0]

    async def flaky(state: Any) -> dict[str, Any]:
        calls[0] += 1
        if calls[0] == 1:
            raise ConnectionError("transient")
        return {"x": 1}

    retry = RetryMiddleware(RetryConfig(max_attempts=3, backoff=constant_backoff(0.0),
                                        classifier=lambda exc: True))
    inner = (GraphBuilder(S, name="long_running").add_node("step", flaky, middleware=[retry])
             .add_edge("step", END).set_entry("step").compile())
    graph = (GraphBuilder(S).add_subgraph("dispatch", inner).add_edge("dispatch", END)
             .set_entry("dispatch").compile())
    spans, error = await run(graph, S(), detached_subgraphs={"long_running"})
    assert error is None and calls[0] == 2
    groups = traces(spans)
    assert len(groups) == 2
    (detached,) = [g for g in groups.values() if any(s.name == "long_running" for s in g)]
    attempts = sorted((s for s in detached if s.name == "step"),
                      key=lambda s: (s.attributes or {})["openarmature.node.attempt_index"])
    # §4.4 composition with attempt_index: the attempts stay in the detached trace, siblings
    assert [(s.attributes or {})["openarmature.node.attempt_index"] for s in attempts] == [0, 1]
    assert {parent_of(detached, s).name for s in attempts} == {"long_running"}
    assert [s.status.status_code for s in attempts] == [StatusCode.ERROR, StatusCode.OK]
    assert root_of(detached).status.status_code is StatusCode.OK
    assert one(spans, "dispatch").status.status_code is StatusCode.OK


async def test_an_unnamed_subgraph_is_detached_by_its_node_name() -> None:
    inner = GraphBuilder(S).add_node("step", bump).add_edge("step", END).set_entry("step")
    graph = (GraphBuilder(S).add_subgraph("dispatch", inner.compile())
             .add_edge("dispatch", END).set_entry("dispatch").compile())
    spans, _ = await run(graph, S(), detached_subgraphs=["dispatch"])
    groups = traces(spans)
    assert len(groups) == 2
    (detached,) = [g for g in groups.values()
                   if (root_of(g).attributes or {})["openarmature.graph.entry_node"] == "step"]
    (dispatch,) = [s for s in spans if s.links]
    assert dispatch.name == "dispatch" and links_to(dispatch, root_of(detached))
    unit = parent_of(detached, one(detached, "step"))
    assert unit.name == "dispatch"  # no compiled name: the node's name
    assert (unit.attributes or {})["openarmature.subgraph.name"] == ""


async def test_a_named_subgraph_not_listed_stays_in_the_parent_trace() -> None:
    spans, _ = await run(nested_graph(), S(), detached_subgraphs={"some_other_flow"})
    assert len(traces(spans)) == 1
    assert not [s for s in spans if s.links]
    outer = one(spans, "run_outer")
    assert (outer.attributes or {})["openarmature.subgraph.name"] == "outer_flow"
    assert (outer.attributes or {})["openarmature.node.name"] == "run_outer"


async def test_detached_fan_out_inside_a_detached_subgraph() -> None:
    async def double(state: Any) -> dict[str, Any]:
        return {"out": state.item * 2}

    per_item = chain("per_item", ("score", double), state=One)
    flow = chain("flow", ("fan", (per_item, "fan")), state=Items)
    graph = (GraphBuilder(Items).add_subgraph("dispatch", flow, inputs={"items": "items"})
             .add_edge("dispatch", END)
             .set_entry("dispatch").compile())
    spans, error = await run(graph, Items(items=[1, 2]), detached_subgraphs={"flow"},
                             detached_fan_outs={"fan"})
    assert error is None
    groups = traces(spans)
    assert len(groups) == 4  # parent, the detached subgraph, one per instance
    fan_node = [s for s in spans if s.name == "fan" and len(s.links) == 2]
    assert len(fan_node) == 1
    flow_trace = groups[fan_node[0].context.trace_id]
    assert parent_of(flow_trace, fan_node[0]).name == "flow"
    for link in fan_node[0].links:
        instance_trace = groups[link.context.trace_id]
        root = root_of(instance_trace)
        assert root.name == INVOCATION and root.context.span_id == link.context.span_id
        assert (root.attributes or {})["openarmature.graph.entry_node"] == "score"


async def test_node_events_carry_the_subgraph_name_chain() -> None:
    seen: list[NodeEvent] = []

    async def collect(event: Any) -> None:
        if isinstance(event, NodeEvent) and event.phase == "started":
            seen.append(event)

    await nested_graph().invoke(S(), observers=[collect])
    chains = {e.namespace: e.subgraph_name_chain for e in seen}
    assert chains == {
        ("run_outer", "prep"): ("outer_flow",),
        ("run_outer", "run_inner", "step"): ("outer_flow", "inner_flow"),
        ("after",): (),
    }


def test_graph_name_is_a_keyword_only_string() -> None:
    assert chain("flow", ("a", bump)).name == "flow"
    unnamed = GraphBuilder(S).add_node("a", bump).add_edge("a", END).set_entry("a")
    assert unnamed.compile().name == ""
    with pytest.raises(TypeError):
        GraphBuilder(S, name=3)  # type: ignore[arg-type]


async def test_detached_invocation_spans_carry_the_caller_metadata_in_scope() -> None:
    async def tag(state: Any) -> dict[str, Any]:
        set_invocation_metadata(stage="inner")
        return {"x": 1}

    inner = chain("long_running", ("step", tag))
    graph = (GraphBuilder(S).add_subgraph("dispatch", inner).add_edge("dispatch", END)
             .set_entry("dispatch").compile())
    exporter = InMemorySpanExporter()
    otel = OTelObserver(span_processors=[SimpleSpanProcessor(exporter)],
                        detached_subgraphs={"long_running"})
    await graph.invoke(S(), observers=[otel], metadata={"tenant": "t1"})
    otel.shutdown()
    spans = list(exporter.get_finished_spans())
    roots = [s for s in spans if s.name == INVOCATION]
    assert len(roots) == 2
    # §5.6: every span of the invocation carries the caller's metadata, detached ones too
    assert all((s.attributes or {}).get("openarmature.user.tenant") == "t1" for s in spans)
    (detached_root,) = [r for r in roots
                        if (r.attributes or {})["openarmature.graph.entry_node"] == "step"]
    # an addition made inside the detached unit reaches its (still open) invocation span
    assert (detached_root.attributes or {}).get("openarmature.user.stage") == "inner"


def test_detached_options_take_collections_of_names() -> None:
    with pytest.raises(TypeError):
        OTelObserver(detached_subgraphs="long_running")
    with pytest.raises(TypeError):
        OTelObserver(detached_fan_outs="fan")


async def test_an_orphan_llm_call_opening_a_named_detached_subgraph_is_detached() -> None:
    """The first event of the subgraph is the LLM call of its first node's middleware
    (before the node's span opens): it carries the subgraph's name too, so the subgraph
    still renders detached, the call's span under the detached subgraph span."""
    body = {"id": "cc-1", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    provider = OpenAIProvider("http://mock.test", "m", transport=HttpxTransport(
        transport=httpx.MockTransport(lambda request: httpx.Response(200, json=body))))

    async def guard(state: Any, nxt: Any) -> Any:
        await provider.complete([UserMessage(content="is this ok?")])
        return await nxt(state)

    inner = (GraphBuilder(S, name="long_running").add_node("step", bump, middleware=[guard])
             .add_edge("step", END).set_entry("step").compile())
    graph = (GraphBuilder(S).add_subgraph("dispatch", inner).add_edge("dispatch", END)
             .set_entry("dispatch").compile())
    spans, error = await run(graph, S(), detached_subgraphs={"long_running"})
    await provider.aclose()
    assert error is None
    groups = traces(spans)
    assert len(groups) == 2
    (detached,) = [g for g in groups.values() if any(s.name == "long_running" for s in g)]
    llm = one(detached, "openarmature.llm.complete")
    assert parent_of(detached, llm).name == "long_running"  # the orphan fallback (§5.5)
    assert parent_of(detached, one(detached, "step")).name == "long_running"


async def test_a_failed_instance_of_a_collecting_detached_fan_out_errors_its_own_trace() -> None:
    class Collected(State):
        items: list[int] = []
        results: Annotated[list[int], append] = []
        errors: Annotated[list[Any], append] = []

    async def score(state: Any) -> dict[str, Any]:
        if state.item == 2:
            raise RuntimeError("bad item")
        return {"out": state.item}

    per_item = chain("per_item", ("score", score), state=One)
    graph = (GraphBuilder(Collected)
             .add_fan_out_node("fan", per_item, items_field="items", item_field="item",
                               collect_field="out", target_field="results",
                               error_policy="collect", errors_field="errors")
             .add_edge("fan", END).set_entry("fan").compile())
    spans, error = await run(graph, Collected(items=[1, 2]), detached_fan_outs={"fan"})
    assert error is None  # the fan-out node collects the failure and carries on
    (fan,) = [s for s in spans if s.name == "fan" and s.links]
    assert fan.status.status_code is StatusCode.OK and len(fan.links) == 2
    groups = traces(spans)
    by_index = {}
    for link in fan.links:
        instance_trace = groups[link.context.trace_id]
        instance = one(instance_trace, "fan")
        by_index[(instance.attributes or {})["openarmature.node.fan_out_index"]] = instance_trace
    ok_root, failed_root = root_of(by_index[0]), root_of(by_index[1])
    assert ok_root.status.status_code is StatusCode.OK
    # §4.2: the detached invocation span carries its own unit's outcome
    assert failed_root.status.status_code is StatusCode.ERROR
    assert failed_root.status.description == "node_exception"
    assert any(e.name == "exception" for e in failed_root.events)
    assert one(by_index[1], "fan").status.status_code is StatusCode.ERROR


async def test_each_detached_instance_trace_closes_with_its_own_instance() -> None:
    async def double(state: Any) -> dict[str, Any]:
        return {"out": state.item * 2}

    per_item = chain("per_item", ("score", double), state=One)
    graph = (GraphBuilder(Items)
             .add_fan_out_node("fan", per_item, items_field="items", item_field="item",
                               collect_field="out", target_field="results", concurrency=1)
             .add_edge("fan", END).set_entry("fan").compile())
    spans, error = await run(graph, Items(items=[1, 2]), detached_fan_outs={"fan"})
    assert error is None
    (fan,) = [s for s in spans if s.name == "fan" and s.links]
    groups = traces(spans)
    per_index = {}
    for link in fan.links:
        group = groups[link.context.trace_id]
        index = (one(group, "fan").attributes or {})["openarmature.node.fan_out_index"]
        per_index[index] = group
    first_root, first_instance = root_of(per_index[0]), one(per_index[0], "fan")
    second_score = one(per_index[1], "score")
    # §4.1: a detached instance's invocation span spans its own instance's window:
    # with one instance at a time, the first has closed before the second starts
    assert first_root.end_time is not None and second_score.start_time is not None
    assert first_root.end_time <= second_score.start_time
    assert first_instance.end_time is not None and first_instance.end_time <= first_root.end_time
    assert fan.end_time is not None and first_root.end_time <= fan.end_time
