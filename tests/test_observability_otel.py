"""The typed call events and the OpenTelemetry observer, end to end on the agent graph."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from openarmature_nodes.events import (
    LlmCompletionEvent,
    LlmFailedEvent,
    LlmTokenEvent,
    ToolCallEvent,
    ToolCallFailedEvent,
)
from openarmature_nodes.graph import END, GraphBuilder, State
from openarmature_nodes.llm import CompletionRequest, OpenAIProvider, RuntimeConfig, UserMessage
from openarmature_nodes.middleware import RetryMiddleware, WarmupGate
from openarmature_nodes.nodes import LLMNode, build_agent, default_onion, tool
from openarmature_nodes.nodes.observe import tool_call
from openarmature_nodes.observability.otel import OTelObserver
from openarmature_nodes.retrying import constant_backoff

pytestmark = pytest.mark.anyio


class City(msgspec.Struct):
    city: str


@tool(args=City)
async def get_weather(args: City) -> dict[str, Any]:
    """Current weather in a city."""
    if args.city == "Atlantis":
        raise LookupError("no such city")
    return {"city": args.city, "sky": "clear"}


def fast(provider: OpenAIProvider, **kw: Any) -> list[Any]:
    return default_onion(
        provider,
        retry=RetryMiddleware(backoff=constant_backoff(0.0)),
        warmup=WarmupGate(provider, backoff=constant_backoff(0.0)),
        **kw,
    )


class Collect:
    def __init__(self) -> None:
        self.events: list[Any] = []

    async def __call__(self, event: Any) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def traced(**kw: Any) -> tuple[OTelObserver, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return OTelObserver(span_processors=[SimpleSpanProcessor(exporter)], **kw), exporter


def by_name(spans: tuple[ReadableSpan, ...] | list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def test_agent_run_emits_typed_events_in_order(provider: OpenAIProvider) -> None:
    collect = Collect()
    graph = build_agent(provider, [get_weather], config=RuntimeConfig(max_tokens=64, seed=7),
                        middleware=fast(provider))
    await graph.invoke({"messages": [UserMessage(content="weather?")]}, observers=[collect])
    every = collect.of(LlmCompletionEvent)
    # the warm-up gate's one-token probe (a real complete() call) is observed too
    warmups = [e for e in every if e.request_params.get("max_tokens") == 1]
    assert len(warmups) == 1
    done = [e for e in every if e not in warmups]
    assert len(done) == 2 and not collect.of(LlmFailedEvent)
    first = done[0]
    assert first.provider == "openai" and first.model == provider.model
    assert first.request_params == {"max_tokens": 64, "seed": 7}
    assert first.output_tool_calls is not None
    assert first.output_tool_calls[0]["name"] == "get_weather"
    assert first.input_messages[-1] == {"role": "user", "content": "weather?"}
    assert first.call_id != done[1].call_id
    assert first.namespace == ("llm",) and first.node_name == "llm"
    assert first.usage.prompt_tokens is not None
    tools = collect.of(ToolCallEvent)
    assert len(tools) == 1
    assert tools[0].tool_call_id == first.output_tool_calls[0]["id"]
    assert tools[0].result  # the tool's output, as the tool produced it
    assert first.correlation_id and first.correlation_id == tools[0].correlation_id


async def test_streamed_call_emits_one_token_event_per_delta_before_completion(
    provider: OpenAIProvider,
) -> None:
    collect = Collect()
    class S(State):
        answer: str = ""

    node: LLMNode[S] = LLMNode(
        provider,
        lambda s: CompletionRequest(messages=(UserMessage(content="tell me"),), stream=True),
        lambda r: {"answer": r.message.content}, middleware=fast(provider))
    graph = GraphBuilder(S).add_node("ask", node).add_edge("ask", END).set_entry("ask").compile()
    await graph.invoke(S(), observers=[collect])
    tokens = collect.of(LlmTokenEvent)
    assert len(tokens) > 1
    last_done = collect.of(LlmCompletionEvent)[-1]
    mine = [t for t in tokens if t.call_id == last_done.call_id]
    assert [t.chunk_index for t in mine] == list(range(len(mine)))
    assert "".join(t.delta for t in mine) == last_done.output_content
    position = collect.events.index(last_done)
    assert all(collect.events.index(t) < position for t in mine)


async def test_failed_tool_emits_tool_call_failed_event() -> None:
    collect = Collect()

    async def run() -> Any:
        return await get_weather.invoke({"city": "Atlantis"})

    async def body(state: Any) -> None:
        with pytest.raises(LookupError):
            await tool_call("get_weather", run, arguments={"city": "Atlantis"})
        return None

    class S(State):
        x: int = 0

    graph = GraphBuilder(S).add_node("t", body).add_edge("t", END).set_entry("t").compile()
    await graph.invoke(S(), observers=[collect])
    failed = collect.of(ToolCallFailedEvent)
    assert len(failed) == 1 and not collect.of(ToolCallEvent)
    assert failed[0].error_type == "LookupError" and failed[0].tool_call_id is None
    assert failed[0].namespace == ("t",)


async def test_otel_trace_of_the_agent(provider: OpenAIProvider) -> None:
    reader = InMemoryMetricReader()
    otel, exporter = traced(enable_metrics=True, metric_readers=[reader])
    provider_v = OpenAIProvider(provider.base_url, provider.model, genai_system="vllm")
    async with provider_v:
        graph = build_agent(provider_v, [get_weather], config=RuntimeConfig(max_tokens=64),
                            middleware=fast(provider_v))
        final = await graph.invoke({"messages": [UserMessage(content="weather?")]},
                                   observers=[otel])
    spans = exporter.get_finished_spans()
    (root,) = by_name(spans, "openarmature.invocation")
    assert root.attributes["openarmature.graph.entry_node"] == "llm"
    assert root.status.status_code is StatusCode.OK
    llm_nodes = by_name(spans, "llm")
    assert len(llm_nodes) == 2
    assert all(s.parent.span_id == root.context.span_id for s in llm_nodes)
    calls = [s for s in by_name(spans, "openarmature.llm.complete")
             if s.attributes.get("gen_ai.request.max_tokens") != 1]  # not the warm-up probe
    assert len(calls) == 2
    node_ids = {s.context.span_id for s in llm_nodes}
    for call in calls:
        assert call.parent.span_id in node_ids
        a = call.attributes
        assert a["gen_ai.system"] == a["gen_ai.provider.name"] == "vllm"
        assert a["gen_ai.request.model"] == provider.model
        assert a["gen_ai.request.max_tokens"] == 64
        assert "openarmature.llm.input.messages" not in a  # payload off by default
    assert final.stop_reason == "answer"
    (tool_span,) = by_name(spans, "openarmature.tool.call")
    assert tool_span.attributes["openarmature.tool.name"] == "get_weather"
    assert "openarmature.tool.call.result" not in tool_span.attributes
    corr = root.attributes["openarmature.correlation_id"]
    assert all(s.attributes["openarmature.correlation_id"] == corr for s in spans)
    metrics = reader.get_metrics_data()
    names = {m.name for rm in metrics.resource_metrics for sm in rm.scope_metrics
             for m in sm.metrics}
    assert {"openarmature.gen_ai.client.token.usage",
            "openarmature.gen_ai.client.operation.duration"} <= names


async def test_payload_opt_in_is_truncated(provider: OpenAIProvider) -> None:
    otel, exporter = traced(disable_provider_payload=False, payload_cap=256)
    graph = build_agent(provider, [get_weather], middleware=fast(provider))
    await graph.invoke({"messages": [UserMessage(content="x" * 1000)]}, observers=[otel])
    first = next(s for s in by_name(exporter.get_finished_spans(), "openarmature.llm.complete")
                 if s.attributes.get("gen_ai.request.max_tokens") != 1)  # not the warm-up
    text = first.attributes["openarmature.llm.input.messages"]
    assert len(text.encode()) <= 256 and "…[truncated, " in text


def test_payload_cap_minimum() -> None:
    with pytest.raises(ValueError, match="256"):
        OTelObserver(payload_cap=255)


async def test_direct_complete_in_a_node_emits_events_and_feeds_on_token(
    provider: OpenAIProvider,
) -> None:
    collect = Collect()
    seen: list[str] = []

    class S(State):
        answer: str = ""

    async def ask(state: S) -> dict[str, Any]:
        reply = await provider.complete([UserMessage(content="tell me a story")], stream=True,
                                        on_token=lambda d: seen.append(d.text))
        return {"answer": reply.message.content or ""}

    graph = GraphBuilder(S).add_node("ask", ask).add_edge("ask", END).set_entry("ask").compile()
    final = await graph.invoke(S(), observers=[collect])
    tokens = collect.of(LlmTokenEvent)
    (done,) = collect.of(LlmCompletionEvent)
    assert [t.delta for t in tokens] == seen and "".join(seen) == final.answer
    assert {t.call_id for t in tokens} == {done.call_id}
    assert done.namespace == ("ask",)
    # outside a graph run the same call emits nothing and still works
    reply = await provider.complete([UserMessage(content="again")])
    assert reply.message.content
