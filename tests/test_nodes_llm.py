"""LLMNode against the embedded server: the default onion, its order, and the
node's prompt/update plumbing. Runs on asyncio and trio."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Any

import msgspec
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from openarmature_nodes.graph import END, GraphBuilder, NodeException, State, append
from openarmature_nodes.llm import (
    CompletionRequest,
    Message,
    OpenAIProvider,
    Response,
    RuntimeConfig,
    StructuredOutputInvalid,
    SystemMessage,
    Tool,
    ToolChoiceForce,
    UserMessage,
)
from openarmature_nodes.middleware import (
    Cooldown,
    CooldownMiddleware,
    DegradedResponseMiddleware,
    RetryMiddleware,
    SpanMiddleware,
    StructuredOutputMiddleware,
    WarmupGate,
)
from openarmature_nodes.nodes import LLMNode, append_reply, default_onion
from openarmature_nodes.nodes.observe import CallEventMiddleware
from openarmature_nodes.retrying import constant_backoff
from openarmature_nodes.testing import CHAT_PATH, MODELS_PATH, EmbeddedServer, completion_body
from tests.embedded_fixtures import MODEL

pytestmark = pytest.mark.anyio

WEATHER = Tool(
    name="get_weather",
    description="Weather for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


class Chat(State, frozen=True, kw_only=True):
    question: str = ""
    messages: Annotated[list[Message], append] = msgspec.field(default_factory=list)
    answer: str = ""
    turns: int = 0


class Person(msgspec.Struct):
    name: str
    age: int


class Extracted(State, frozen=True, kw_only=True):
    text: str = ""
    person: Person | None = None


@pytest.fixture
def tracing() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    yield tp, exporter
    tp.shutdown()


def ask(s: Chat) -> list[Message]:
    return [UserMessage(content=s.question)]


def keep_answer(r: Response) -> dict[str, Any]:
    return {"answer": r.message.content}


def fast_onion(provider: OpenAIProvider, tp: TracerProvider | None = None) -> list[Any]:
    return default_onion(
        provider,
        span=SpanMiddleware(provider, tracer_provider=tp) if tp is not None else None,
        retry=RetryMiddleware(backoff=constant_backoff(0.0)),
        warmup=WarmupGate(provider, backoff=constant_backoff(0.0)),
    )


def trail(server: EmbeddedServer) -> list[tuple[str, Any]]:
    """(path, max_tokens) per request, in arrival order."""
    return [
        (r.path, (r.json or {}).get("max_tokens") if r.path == CHAT_PATH else None)
        for r in server.requests
    ]


# --- the default onion ----------------------------------------------------------------


async def test_default_onion_layers_outermost_first(provider: OpenAIProvider) -> None:
    onion = default_onion(provider)
    assert [type(m) for m in onion] == [
        CallEventMiddleware,
        SpanMiddleware,
        RetryMiddleware,
        CooldownMiddleware,
        WarmupGate,
        StructuredOutputMiddleware,
        DegradedResponseMiddleware,
    ]
    node = LLMNode(provider, ask, keep_answer)
    assert [type(m) for m in node.middleware] == [type(m) for m in onion]
    assert "CallEventMiddleware, SpanMiddleware, RetryMiddleware, CooldownMiddleware" in repr(node)


async def test_default_onion_shares_the_endpoint_cooldown(provider: OpenAIProvider) -> None:
    first = default_onion(provider)[3]
    second = default_onion(provider)[3]
    assert isinstance(first, CooldownMiddleware) and isinstance(second, CooldownMiddleware)
    assert first.cooldown is second.cooldown is Cooldown.for_endpoint(provider)


async def test_default_onion_can_drop_and_replace_layers(provider: OpenAIProvider) -> None:
    retry = RetryMiddleware(max_attempts=7)
    onion = default_onion(
        provider, events=False, span=False, retry=retry, cooldown=False, structured=False,
        degraded=False,
    )
    assert onion[0] is retry
    assert [type(m) for m in onion] == [RetryMiddleware, WarmupGate]


async def test_first_call_warms_up_once_then_sends(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    node: LLMNode[Chat] = LLMNode(
        provider, ask, keep_answer, config=RuntimeConfig(max_tokens=32),
        middleware=fast_onion(provider),
    )
    graph = GraphBuilder(Chat).add_node("ask", node).add_edge("ask", END).set_entry("ask").compile()
    first = await graph.invoke(Chat(question="hello there"))
    second = await graph.invoke(Chat(question="again"))
    assert first.answer == "echo: hello there"
    assert second.answer == "echo: again"
    # the gate: one models probe and one 1-token completion, before the first real call only
    assert trail(server) == [(MODELS_PATH, None), (CHAT_PATH, 1), (CHAT_PATH, 32), (CHAT_PATH, 32)]


async def test_order_span_outside_retry_outside_gate(
    server: EmbeddedServer,
    provider: OpenAIProvider,
    tracing: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    tp, exporter = tracing
    node: LLMNode[Chat] = LLMNode(
        provider, ask, keep_answer, config=RuntimeConfig(max_tokens=8),
        middleware=fast_onion(provider, tp),
    )
    await node(Chat(question="warm"))  # opens the gate
    exporter.clear()
    server.reset_counters()
    server.fail_5xx(1, status=503)
    out = await node(Chat(question="after a 503"))
    assert out == {"answer": "echo: after a 503"}
    # retry is inside the span: one span for the node call, and it ended well
    spans = exporter.get_finished_spans()
    assert len(spans) == 1
    assert spans[0].status.status_code is not StatusCode.ERROR
    # retry is outside the (open) gate: the retry did not re-probe /v1/models
    assert server.counts[MODELS_PATH] == 0
    assert server.counts[CHAT_PATH] == 2


async def test_structured_output_is_validated_inside_retry(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    node: LLMNode[Extracted] = LLMNode(
        provider,
        lambda s: [UserMessage(content=s.text)],
        lambda r: {"person": r.parsed},
        response_schema=Person,
        config=RuntimeConfig(max_tokens=64),
        middleware=fast_onion(provider),
    )
    good = await node(Extracted(text="Ada, 36"))
    assert isinstance(good["person"], Person)  # type: ignore[index]

    server.enqueue(completion_body("this is not JSON", model=MODEL))
    graph = (
        GraphBuilder(Extracted).add_node("extract", node).add_edge("extract", END)
        .set_entry("extract").compile()
    )
    server.reset_counters()
    with pytest.raises(NodeException) as info:
        await graph.invoke(Extracted(text="bad"))
    assert isinstance(info.value.__cause__, StructuredOutputInvalid)
    assert info.value.__cause__.output_content == "this is not JSON"
    assert server.counts[CHAT_PATH] == 1  # not transient: retry did not resend


async def test_structured_reask_layer_in_the_onion(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    onion = default_onion(
        provider,
        span=False,
        retry=False,
        warmup=False,
        structured=StructuredOutputMiddleware(reask=lambda e: f"Fix: {e.error_message}"),
    )
    node: LLMNode[Extracted] = LLMNode(
        provider,
        lambda s: [UserMessage(content=s.text)],
        lambda r: {"person": r.parsed},
        response_schema=Person,
        middleware=onion,
    )
    server.enqueue(completion_body("{oops", model=MODEL))
    out = await node(Extracted(text="Ada, 36"))
    assert isinstance(out["person"], Person)  # type: ignore[index]
    second = [r.json for r in server.requests if r.path == CHAT_PATH][1]
    roles = [m["role"] for m in second["messages"]]
    assert roles == ["user", "assistant", "user"]
    assert second["messages"][1]["content"] == "{oops"
    assert second["messages"][2]["content"].startswith("Fix: ")


# --- prompt / update plumbing ---------------------------------------------------------


async def test_empty_middleware_calls_the_provider_directly(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    node: LLMNode[Chat] = LLMNode(provider, ask, keep_answer, middleware=[])
    assert await node(Chat(question="hi")) == {"answer": "echo: hi"}
    assert trail(server) == [(CHAT_PATH, None)]


async def test_custom_middleware_order_is_kept(provider: OpenAIProvider) -> None:
    seen: list[str] = []

    def layer(tag: str) -> Callable[[Any, Any], Awaitable[Any]]:
        async def mw(request: CompletionRequest, nxt: Any) -> Response:
            seen.append(f"{tag}>")
            response: Response = await nxt(request)
            seen.append(f"<{tag}")
            return response

        return mw

    node: LLMNode[Chat] = LLMNode(provider, ask, keep_answer, middleware=[layer("a"), layer("b")])
    await node(Chat(question="x"))
    assert seen == ["a>", "b>", "<b", "<a"]


async def test_defaults_fill_what_the_prompt_leaves_open(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    def prompt(s: Chat) -> CompletionRequest:
        # the prompt decides the config itself; tools and tool_choice come from the node
        return CompletionRequest(
            messages=[SystemMessage(content="sys"), UserMessage(content=s.question)],
            config=RuntimeConfig(max_tokens=5),
        )

    node: LLMNode[Chat] = LLMNode(
        provider,
        prompt,
        append_reply(),
        tools=[WEATHER],
        tool_choice=lambda s: ToolChoiceForce(name="get_weather") if s.turns == 0 else "none",
        config=RuntimeConfig(max_tokens=99, temperature=0.5),
        middleware=[],
    )
    first = await node(Chat(question="weather?"))
    assert first is not None
    [reply] = first["messages"]
    assert reply.tool_calls and reply.tool_calls[0].name == "get_weather"
    await node(Chat(question="weather?", turns=1))
    bodies = [r.json for r in server.requests]
    assert bodies[0]["max_tokens"] == 5 and "temperature" not in bodies[0]
    assert bodies[0]["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert [t["function"]["name"] for t in bodies[0]["tools"]] == ["get_weather"]
    assert bodies[1]["tool_choice"] == "none"


async def test_update_may_take_the_state_and_be_async(provider: OpenAIProvider) -> None:
    async def prompt(s: Chat) -> list[Message]:
        return [UserMessage(content=s.question)]

    async def update(r: Response, s: Chat) -> dict[str, Any]:
        return {"turns": s.turns + 1, "answer": r.message.content}

    node: LLMNode[Chat] = LLMNode(provider, prompt, update, config={"max_tokens": 4}, middleware=[])
    out = await node(Chat(question="count me", turns=4))
    assert out == {"turns": 5, "answer": "echo: count me"}


async def test_prompt_returning_garbage_is_a_clear_type_error(provider: OpenAIProvider) -> None:
    node: LLMNode[Chat] = LLMNode(provider, lambda s: "just a string", keep_answer, middleware=[])
    with pytest.raises(TypeError, match="sequence of messages or a CompletionRequest"):
        await node(Chat())


async def test_provider_without_call_is_refused() -> None:
    with pytest.raises(TypeError, match="call"):
        LLMNode(object(), ask, keep_answer)  # type: ignore[arg-type]
