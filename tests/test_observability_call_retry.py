"""Call-level retry through the OpenTelemetry observer (observability §5.5, §11; llm-provider
§7.1): one ``openarmature.llm.complete`` span per attempt, siblings under the calling node,
each with its own ``openarmature.llm.attempt_index`` / ``retry_reason`` and, for a failed
attempt, its own category; one duration sample per attempt; still ONE terminal typed event
per call (it lists the attempts), and no credential in any of it."""

from __future__ import annotations

from collections import deque
from itertools import pairwise
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from openarmature_nodes.events import LlmAttempt, LlmCompletionEvent, LlmFailedEvent
from openarmature_nodes.graph import END, GraphBuilder, GraphRuntimeError, State
from openarmature_nodes.llm import OpenAIProvider, UserMessage
from openarmature_nodes.llm.transport import HttpxTransport
from openarmature_nodes.observability.otel import OTelObserver
from openarmature_nodes.retrying import RetryConfig, constant_backoff

pytestmark = pytest.mark.anyio

SECRET = "sk-retry-SECRET-0123456789"
LLM = "openarmature.llm.complete"
OK_BODY = {"id": "cc-1", "object": "chat.completion", "model": "m-1",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                        "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


class S(State):
    out: str = ""


def provider_with(*statuses: int) -> OpenAIProvider:
    """A provider whose server answers ``statuses`` in order (a 5xx body quotes the key)."""
    replies = deque(statuses)

    def handler(request: httpx.Request) -> httpx.Response:
        status = replies.popleft()
        if status == 200:
            return httpx.Response(200, json=OK_BODY)
        auth = request.headers.get("authorization", "")
        return httpx.Response(status, json={"error": {"message": f"overloaded; you sent {auth}"}})

    return OpenAIProvider("http://mock.test", "m-1", api_key=SECRET, genai_system="vllm",
                          transport=HttpxTransport(transport=httpx.MockTransport(handler)))


async def run(provider: OpenAIProvider, attempts: int, **observer: Any) -> tuple[
        list[ReadableSpan], list[Any], list[tuple[str, dict[str, Any]]], BaseException | None]:
    async def ask(state: S) -> dict[str, Any]:
        response = await provider.complete(
            [UserMessage(content="hello")],
            retry=RetryConfig(max_attempts=attempts, backoff=constant_backoff(0.0)))
        return {"out": str(response.message.content)}

    graph = GraphBuilder(S).add_node("ask", ask).add_edge("ask", END).set_entry("ask").compile()
    exporter = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    otel = OTelObserver(span_processors=[SimpleSpanProcessor(exporter)], enable_metrics=True,
                        metric_readers=[reader], **observer)
    events: list[Any] = []

    async def collect(event: Any) -> None:
        events.append(event)

    error: BaseException | None = None
    try:
        await graph.invoke(S(), observers=[otel, collect])
    except GraphRuntimeError as exc:
        error = exc
    await graph.drain()
    data = reader.get_metrics_data()
    durations = [(m.name, dict(p.attributes or {}))
                 for rm in (data.resource_metrics if data else ())
                 for sm in rm.scope_metrics for m in sm.metrics
                 if m.name.endswith("operation.duration")
                 for p in m.data.data_points for _ in range(p.count)]
    otel.shutdown()
    await provider.aclose()
    return list(exporter.get_finished_spans()), events, durations, error


def llm_spans(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.name == LLM),
                  key=lambda s: (s.attributes or {})["openarmature.llm.attempt_index"])


def strings(spans: list[ReadableSpan]) -> str:
    out = []
    for s in spans:
        out.extend(str(v) for v in (s.attributes or {}).values())
        out.extend(str(v) for e in s.events for v in (e.attributes or {}).values())
        out.append(str(s.status.description))
    return "\n".join(out)


async def test_a_retried_call_renders_one_span_per_attempt() -> None:
    spans, events, durations, error = await run(provider_with(503, 503, 200), attempts=3)
    assert error is None
    (node,) = [s for s in spans if s.name == "ask"]
    attempts = llm_spans(spans)
    assert [(s.attributes or {})["openarmature.llm.attempt_index"] for s in attempts] == [0, 1, 2]
    assert all(s.parent is not None and s.parent.span_id == node.context.span_id
               for s in attempts)  # siblings under the calling node
    assert "openarmature.llm.retry_reason" not in (attempts[0].attributes or {})
    assert [(s.attributes or {}).get("openarmature.llm.retry_reason") for s in attempts[1:]] == [
        "transient", "transient"]
    for failed in attempts[:2]:
        assert failed.status.status_code is StatusCode.ERROR
        assert failed.status.description == "provider_unavailable"
        assert (failed.attributes or {})["openarmature.error.category"] == "provider_unavailable"
        assert "gen_ai.usage.input_tokens" not in (failed.attributes or {})
        assert any(e.name == "exception" for e in failed.events)
    last = attempts[2]
    assert last.status.status_code is StatusCode.OK
    assert (last.attributes or {})["gen_ai.usage.input_tokens"] == 3
    assert (last.attributes or {})["gen_ai.system"] == "vllm"
    # each attempt's own window, in order, not overlapping
    for a, b in pairwise(attempts):
        assert a.end_time is not None and b.start_time is not None and a.end_time <= b.start_time
    # ONE terminal typed event per call; it lists the three attempts
    (done,) = [e for e in events if isinstance(e, LlmCompletionEvent)]
    assert not [e for e in events if isinstance(e, LlmFailedEvent)]
    assert [a.attempt_index for a in done.attempts] == [0, 1, 2]
    assert [a.error_category for a in done.attempts] == [
        "provider_unavailable", "provider_unavailable", None]
    # §11: one duration sample per attempt, the failed ones with error.type
    assert sorted(d.get("error.type", "") for _, d in durations) == [
        "", "provider_unavailable", "provider_unavailable"]
    assert SECRET not in strings(spans)
    assert all(SECRET not in (a.error_message or "") for a in done.attempts)


async def test_an_exhausted_retry_puts_the_final_category_on_the_last_attempt() -> None:
    spans, events, durations, error = await run(provider_with(503, 503), attempts=2)
    assert error is not None
    attempts = llm_spans(spans)
    assert len(attempts) == 2
    assert all(s.status.status_code is StatusCode.ERROR for s in attempts)
    assert (attempts[1].attributes or {})["openarmature.llm.retry_reason"] == "transient"
    (failed,) = [e for e in events if isinstance(e, LlmFailedEvent)]
    assert len(failed.attempts) == 2 and failed.attempts[-1].error_category == (
        failed.error_category)
    assert len(durations) == 2
    assert SECRET not in strings(spans)


async def test_a_call_that_succeeds_first_time_keeps_one_span() -> None:
    spans, events, durations, error = await run(provider_with(200), attempts=3)
    assert error is None
    (span,) = llm_spans(spans)
    assert (span.attributes or {})["openarmature.llm.attempt_index"] == 0
    (done,) = [e for e in events if isinstance(e, LlmCompletionEvent)]
    assert done.attempts == ()
    assert len(durations) == 1


async def test_opted_in_payload_reaches_every_attempt_span_never_the_key() -> None:
    spans, _, _, error = await run(provider_with(503, 200), attempts=2,
                                   disable_provider_payload=False)
    assert error is None
    attempts = llm_spans(spans)
    assert len(attempts) == 2
    for span in attempts:  # each attempt sent the same messages
        assert "hello" in str((span.attributes or {})["openarmature.llm.input.messages"])
    assert "openarmature.llm.output.content" not in (attempts[0].attributes or {})
    assert (attempts[1].attributes or {})["openarmature.llm.output.content"] == "hi"
    assert SECRET not in strings(spans)


def test_an_attempt_record_is_plain_data() -> None:
    a = LlmAttempt(attempt_index=1, retry_reason="transient", start_ns=1, end_ns=2,
                   error_category="provider_timeout")
    assert a.error_type is None and a.error_message is None
