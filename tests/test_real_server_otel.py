"""The traced agent example against the real llama.cpp server (``-m real_server``).

The LLM spans carry the configured ``genai_system`` as ``gen_ai.provider.name`` and
``gen_ai.system``, the request model, and token usage equal to each response's
``usage``; the token-usage and duration metrics are recorded; a streamed call
yields more than one token event.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from openarmature_nodes.events import LlmCompletionEvent, LlmTokenEvent
from openarmature_nodes.graph import END, GraphBuilder, State
from openarmature_nodes.llm import CompletionRequest, OpenAIProvider, RuntimeConfig, UserMessage
from openarmature_nodes.nodes import LLMNode
from tests.real_server import MODEL, URL, requires_real_server

pytestmark = [pytest.mark.anyio, *requires_real_server()]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "graphs"
SYSTEM_NAME = "llama.cpp"


class Collect:
    def __init__(self) -> None:
        self.events: list[Any] = []

    async def __call__(self, event: Any) -> None:
        self.events.append(event)


async def test_agent_example_trace_and_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    for name in ("otel_agent", "agent", "_common"):
        sys.modules.pop(name, None)
    import otel_agent

    exporter = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    observer = otel_agent.make_observer(exporter, reader, batch=False)
    collect = Collect()
    async with OpenAIProvider(URL, MODEL, genai_system=SYSTEM_NAME) as provider:
        await otel_agent.run_agent(provider, observer, question="Weather in Paris?",
                                   max_turns=2, max_tokens=48,
                                   force_first_tool="get_weather", also=[collect])
    done = [e for e in collect.events if isinstance(e, LlmCompletionEvent)]
    spans = [s for s in exporter.get_finished_spans() if s.name == "openarmature.llm.complete"]
    assert done and len(spans) == len(done)
    by_response = {e.response_id: e for e in done}
    for span in spans:
        a = dict(span.attributes or {})
        assert a["gen_ai.provider.name"] == a["gen_ai.system"] == SYSTEM_NAME
        assert a["gen_ai.request.model"] == MODEL
        event = by_response.get(a.get("gen_ai.response.id")) or done[spans.index(span)]
        assert a["gen_ai.usage.input_tokens"] == event.usage.prompt_tokens
        assert a["gen_ai.usage.output_tokens"] == event.usage.completion_tokens
    data = reader.get_metrics_data()
    points = [(m.name, dict(p.attributes or {}))
              for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
              for p in m.data.data_points]
    usage = [d for n, d in points if n == "openarmature.gen_ai.client.token.usage"]
    assert {d["openarmature.gen_ai.token.type"] for d in usage} == {"input", "output"}
    assert all(d["gen_ai.system"] == SYSTEM_NAME for d in usage)
    assert any(n == "openarmature.gen_ai.client.operation.duration" for n, _ in points)
    observer.shutdown()


async def test_streamed_call_yields_token_events() -> None:
    class S(State):
        answer: str = ""

    collect = Collect()
    async with OpenAIProvider(URL, MODEL, genai_system=SYSTEM_NAME) as provider:
        node: LLMNode[S] = LLMNode(
            provider,
            lambda s: CompletionRequest(
                messages=(UserMessage(content="Q: What is 2+2?\nA:"),),
                config=RuntimeConfig(max_tokens=24, temperature=0.0, seed=7), stream=True),
            lambda r: {"answer": r.message.content or ""})
        graph = GraphBuilder(S).add_node("ask", node).add_edge("ask", END).set_entry("ask")
        final = await graph.compile().invoke(S(), observers=[collect])
    tokens = [e for e in collect.events if isinstance(e, LlmTokenEvent)]
    assert len(tokens) > 1
    # the warm-up gate's one-token probe is a completion too (not streamed): skip it
    (done,) = [e for e in collect.events if isinstance(e, LlmCompletionEvent)
               and e.request_params.get("max_tokens") != 1]
    assert {t.call_id for t in tokens} == {done.call_id}
    assert "".join(t.delta for t in tokens if t.delta_kind == "content") == final.answer
