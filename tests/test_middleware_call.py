"""Call-level layers against the embedded server: the §7.1 loop
(per_attempt_override, reask), the structured-output layer and the span layer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from openarmature_nodes.llm import (
    CompletionRequest,
    OpenAIProvider,
    ProviderInvalidRequest,
    ProviderUnavailable,
    RuntimeConfig,
    StructuredOutputInvalid,
    UserMessage,
)
from openarmature_nodes.llm.call_retry import complete_with_retry, override_config
from openarmature_nodes.middleware import (
    RetryMiddleware,
    SpanMiddleware,
    StructuredOutputMiddleware,
    compose,
)
from openarmature_nodes.retrying import RetryConfig, constant_backoff
from openarmature_nodes.testing import CHAT_PATH, EmbeddedServer, Reply, completion_body
from tests.embedded_fixtures import MODEL

pytestmark = pytest.mark.anyio

SECRET = "sk-test-secret-0123456789"
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


class Person(msgspec.Struct):
    name: str
    age: int


def sent(server: EmbeddedServer) -> list[dict[str, Any]]:
    return [r.json for r in server.requests if r.path == CHAT_PATH]


def no_wait(**kw: Any) -> RetryConfig:
    return RetryConfig(backoff=constant_backoff(0.0), **kw)


def fix(err: StructuredOutputInvalid) -> str:
    return f"Fix {err.output_content}"


# --- per_attempt_override ---------------------------------------------------------


def test_override_merge_rules() -> None:
    base = RuntimeConfig(temperature=0.0, max_tokens=50, extras={"top_k": 5})
    schedule = [{"temperature": 0.3}, RuntimeConfig(temperature=0.6, extras={"min_p": 0.1})]
    assert override_config(base, schedule, 0) == RuntimeConfig(
        temperature=0.3, max_tokens=50, extras={"top_k": 5}
    )
    third = override_config(base, schedule, 5)  # the last entry carries forward
    assert third == RuntimeConfig(temperature=0.6, max_tokens=50, extras={"top_k": 5, "min_p": 0.1})
    assert override_config(None, schedule, 0) == RuntimeConfig(temperature=0.3)
    assert override_config(base, (), 3) is base


async def test_override_schedule_applies_to_retries_only(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    server.fail_5xx(2)
    config = RuntimeConfig(temperature=0.0, max_tokens=20)
    req = CompletionRequest(messages=[UserMessage(content="go")], config=config)
    cfg = no_wait(per_attempt_override=[{"temperature": 0.3}, {"temperature": 0.6}])
    await complete_with_retry(provider.call, req, cfg)
    bodies = sent(server)
    assert [b["temperature"] for b in bodies] == [0.0, 0.3, 0.6]
    assert all(b["max_tokens"] == 20 for b in bodies)
    assert req.config is config and config.temperature == 0.0


# --- reask ----------------------------------------------------------------------------


async def test_reask_appends_exactly_the_spec_pairs(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    server.enqueue(
        completion_body('{"name":"Dan"}'),
        completion_body('{"name":"Dan","age":"forty"}'),
        completion_body('{"name":"Dan","age":40}'),
    )
    messages = [UserMessage(content="Generate a person record.")]
    req = CompletionRequest(messages=messages, response_schema=PERSON)
    response = await complete_with_retry(provider.call, req, no_wait(reask=fix))
    assert response.parsed == {"name": "Dan", "age": 40}
    bodies = sent(server)
    assert [b["messages"] for b in bodies] == [
        [{"role": "user", "content": "Generate a person record."}],
        [
            {"role": "user", "content": "Generate a person record."},
            {"role": "assistant", "content": '{"name":"Dan"}'},
            {"role": "user", "content": 'Fix {"name":"Dan"}'},
        ],
        [
            {"role": "user", "content": "Generate a person record."},
            {"role": "assistant", "content": '{"name":"Dan"}'},
            {"role": "user", "content": 'Fix {"name":"Dan"}'},
            {"role": "assistant", "content": '{"name":"Dan","age":"forty"}'},
            {"role": "user", "content": 'Fix {"name":"Dan","age":"forty"}'},
        ],
    ]
    assert len(messages) == 1  # the caller's list is untouched


async def test_reask_builder_not_called_on_the_terminal_attempt(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    server.enqueue(completion_body('{"name":"Bob"}'), completion_body('{"name":"Bob"}'))
    calls: list[StructuredOutputInvalid] = []

    def builder(err: StructuredOutputInvalid) -> str:
        calls.append(err)
        return "again"

    req = CompletionRequest(messages=[UserMessage(content="p")], response_schema=PERSON)
    with pytest.raises(StructuredOutputInvalid) as info:
        await complete_with_retry(provider.call, req, no_wait(max_attempts=2, reask=builder))
    assert len(calls) == 1 and len(sent(server)) == 2
    err = info.value
    assert err.output_content == '{"name":"Bob"}' and "age" in err.error_message
    assert err.finish_reason == "stop" and err.schema is PERSON and err.usage is not None


async def test_without_reask_structured_failure_is_not_retried(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    server.enqueue(completion_body('{"name":"Cara"}'), completion_body('{"name":"Cara","age":9}'))
    req = CompletionRequest(messages=[UserMessage(content="p")], response_schema=PERSON)
    with pytest.raises(StructuredOutputInvalid):
        await complete_with_retry(provider.call, req, no_wait(max_attempts=2))
    assert len(sent(server)) == 1


async def test_transient_retry_in_a_reask_loop_resends_the_transcript(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    server.enqueue(
        completion_body('{"name":"Eve"}'),
        Reply(503, {"error": {"message": "down", "type": "service_unavailable"}}),
        completion_body('{"name":"Eve","age":50}'),
    )
    req = CompletionRequest(messages=[UserMessage(content="p")], response_schema=PERSON)
    response = await complete_with_retry(provider.call, req, no_wait(reask=fix))
    assert response.parsed == {"name": "Eve", "age": 50}
    bodies = sent(server)
    assert len(bodies) == 3 and bodies[1]["messages"] == bodies[2]["messages"]
    assert len(bodies[1]["messages"]) == 3


async def test_retry_middleware_at_call_level_runs_the_call_loop(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    server.enqueue(completion_body('{"name":"Al"}'), completion_body('{"name":"Al","age":3}'))
    call = compose([RetryMiddleware(no_wait(reask=fix))], provider.call)
    req = CompletionRequest(messages=[UserMessage(content="p")], response_schema=PERSON)
    assert (await call(req)).parsed == {"name": "Al", "age": 3}
    assert sent(server)[1]["messages"][-1] == {"role": "user", "content": 'Fix {"name":"Al"}'}


# --- structured-output layer ------------------------------------------------------


async def test_structured_layer_sends_schema_and_reasks(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    server.enqueue(completion_body('{"name":"Zed"}'), completion_body('{"name":"Zed","age":7}'))
    call = compose([StructuredOutputMiddleware(Person, reask=fix, max_reasks=1)], provider.call)
    response = await call(CompletionRequest(messages=[UserMessage(content="p")]))
    assert response.parsed == Person(name="Zed", age=7)
    bodies = sent(server)
    assert bodies[0]["response_format"]["type"] == "json_schema"
    assert [m["role"] for m in bodies[1]["messages"]] == ["user", "assistant", "user"]


async def test_structured_layer_budget_is_bounded(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    server.enqueue(*(completion_body("not json") for _ in range(4)))
    call = compose([StructuredOutputMiddleware(PERSON, reask=fix, max_reasks=2)], provider.call)
    with pytest.raises(StructuredOutputInvalid) as info:
        await call(CompletionRequest(messages=[UserMessage(content="p")]))
    assert len(sent(server)) == 3 and info.value.output_content == "not json"


async def test_structured_layer_validates_text_itself_when_not_sending(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    server.enqueue(completion_body('{"name":"Q","age":1}'), completion_body('{"name":"Q"}'))
    call = compose([StructuredOutputMiddleware(PERSON, send_schema=False)], provider.call)
    req = CompletionRequest(messages=[UserMessage(content="p")])
    assert (await call(req)).parsed == {"name": "Q", "age": 1}
    assert "response_format" not in sent(server)[0]
    with pytest.raises(StructuredOutputInvalid) as info:
        await call(req)
    assert info.value.finish_reason == "stop" and "age" in info.value.error_message


async def test_structured_layer_passes_plain_requests(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    call = compose([StructuredOutputMiddleware()], provider.call)
    response = await call(CompletionRequest(messages=[UserMessage(content="hi")]))
    assert response.parsed is None and response.message.content == "echo: hi"


# --- spans ----------------------------------------------------------------------------


@pytest.fixture
def tracing() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    yield tp, exporter
    tp.shutdown()


def _all_text(span: ReadableSpan) -> str:
    parts = [span.name, repr(dict(span.attributes or {}))]
    for event in span.events:
        parts.append(event.name)
        parts.append(repr(dict(event.attributes or {})))
    return " ".join(parts)


async def test_span_carries_semconv_attributes_and_no_key(
    server: EmbeddedServer, tracing: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    tp, exporter = tracing
    async with OpenAIProvider(server.base_url, MODEL, api_key=SECRET, genai_system="vllm") as p:
        call = compose([SpanMiddleware(p, tracer_provider=tp)], p.call)
        config = RuntimeConfig(temperature=0.2, max_tokens=30, top_p=0.9, seed=7,
                               stop_sequences=["END"])
        parent_tracer = tp.get_tracer("test")
        with parent_tracer.start_as_current_span("node") as node_span:
            await call(CompletionRequest(messages=[UserMessage(content="hi there")], config=config))
    spans = {s.name: s for s in exporter.get_finished_spans()}
    span = spans["openarmature.llm.complete"]
    attrs: dict[str, Any] = dict(span.attributes or {})
    assert "gen_ai.operation.name" not in attrs  # peripheral: only the "latest" convention
    assert attrs["gen_ai.system"] == attrs["gen_ai.provider.name"] == "vllm"
    assert attrs["gen_ai.request.model"] == MODEL
    assert attrs["gen_ai.request.temperature"] == 0.2
    assert attrs["gen_ai.request.max_tokens"] == 30
    assert attrs["gen_ai.request.top_p"] == 0.9 and attrs["gen_ai.request.seed"] == 7
    assert tuple(attrs["gen_ai.request.stop_sequences"]) == ("END",)
    assert isinstance(attrs["gen_ai.response.id"], str) and attrs["gen_ai.response.id"]
    assert attrs["gen_ai.response.model"] == MODEL
    assert tuple(attrs["gen_ai.response.finish_reasons"]) == ("stop",)
    assert attrs["gen_ai.usage.input_tokens"] >= 1 and attrs["gen_ai.usage.output_tokens"] >= 1
    assert attrs["server.address"] == "127.0.0.1" and attrs["server.port"] == server.port
    assert attrs["openarmature.llm.attempt_index"] == 0
    assert "openarmature.llm.retry_reason" not in attrs
    assert "openarmature.llm.input.messages" not in attrs  # no payloads by default
    assert "hi there" not in _all_text(span)
    assert span.parent is not None and span.parent.span_id == node_span.get_span_context().span_id
    for s in exporter.get_finished_spans():
        assert SECRET not in _all_text(s)


async def test_span_records_error_type_and_one_span_per_attempt(
    server: EmbeddedServer,
    provider: OpenAIProvider,
    tracing: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    tp, exporter = tracing
    server.fail_5xx(2)
    call = compose([RetryMiddleware(no_wait()), SpanMiddleware(provider, tracer_provider=tp)],
                   provider.call)
    await call(CompletionRequest(messages=[UserMessage(content="x")]))
    spans = sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0)
    assert len(spans) == 3
    idx = [dict(s.attributes or {}) for s in spans]
    assert [a["openarmature.llm.attempt_index"] for a in idx] == [0, 1, 2]
    assert [a.get("openarmature.llm.retry_reason") for a in idx] == [None, "transient", "transient"]
    assert [a.get("error.type") for a in idx] == ["provider_unavailable"] * 2 + [None]
    assert spans[0].status.status_code is StatusCode.ERROR
    assert spans[0].events and spans[0].events[0].name == "exception"


async def test_span_payloads_are_opt_in(
    server: EmbeddedServer,
    provider: OpenAIProvider,
    tracing: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    tp, exporter = tracing
    call = compose([SpanMiddleware(provider, tracer_provider=tp, record_payloads=True)],
                   provider.call)
    await call(CompletionRequest(messages=[UserMessage(content="payload please")]))
    (span,) = exporter.get_finished_spans()
    attrs: dict[str, Any] = dict(span.attributes or {})
    assert msgspec.json.decode(attrs["openarmature.llm.input.messages"]) == [
        {"content": "payload please", "role": "user"}
    ]
    assert attrs["openarmature.llm.output.content"] == "echo: payload please"


async def test_exhausted_call_raises_last_error(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    server.fail_5xx(3)
    with pytest.raises(ProviderUnavailable):
        await complete_with_retry(
            provider.call, CompletionRequest(messages=[UserMessage(content="x")]),
            no_wait(max_attempts=3),
        )
    assert len(sent(server)) == 3


async def test_provider_complete_retry_runs_the_loop(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    server.fail_5xx(1)
    server.enqueue(completion_body('{"name":"Kim"}'), completion_body('{"name":"Kim","age":5}'))
    response = await provider.complete(
        [UserMessage(content="p")],
        config={"temperature": 0.0},
        response_schema=PERSON,
        retry=no_wait(reask=fix, per_attempt_override=[{"temperature": 0.5}]),
    )
    assert response.parsed == {"name": "Kim", "age": 5}
    bodies = sent(server)
    assert [b["temperature"] for b in bodies] == [0.0, 0.5, 0.5]
    assert len(bodies[2]["messages"]) == 3 and bodies[1]["messages"] == bodies[0]["messages"]
    with pytest.raises(ProviderInvalidRequest):  # a bad argument: the invalid-request category
        await provider.complete([UserMessage(content="p")], retry={"max_attempts": 2})
