"""``complete(stream=True)`` against a real llama.cpp server, on asyncio and trio.

Start the server with ``../shared/tools/real-llm-server.sh start 18188`` (or
point ``$OPENARMATURE_REAL_LLM_URL`` at another host root). Without a server
answering there, these tests skip with the reason.

What this server does differently from the spec's vectors, and what the
tests therefore pin: it ignores ``stream_options.include_usage`` (no usage
chunk, so ``usage`` is unreported), repeats the tool call's id and name in
every chunk, and ends with a chunk whose delta fields are ``null``. The model
(Gemma 3 270M base) produces junk text: the tests assert shapes, never
wording.
"""

from __future__ import annotations

import pytest

from openarmature_nodes.llm import (
    OpenAIProvider,
    RuntimeConfig,
    SystemMessage,
    Tool,
    ToolChoiceForce,
    UserMessage,
)
from openarmature_nodes.llm.tokens import TokenDelta
from openarmature_nodes.llm.transport import HttpxTransport, StreamingTransport
from openarmature_nodes.llm.transport.fast import FastTransport
from tests.real_server import MODEL, URL, requires_real_server

pytestmark = [pytest.mark.anyio, *requires_real_server()]


KINDS = ["httpx", "fast"]


def provider(kind: str) -> OpenAIProvider:
    transport: StreamingTransport = HttpxTransport() if kind == "httpx" else FastTransport()
    return OpenAIProvider(URL, MODEL, genai_system="llama.cpp", transport=transport)


WEATHER = Tool(
    "get_weather",
    "Current weather for a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


@pytest.mark.parametrize("kind", KINDS)
async def test_streamed_text_equals_the_concatenated_deltas(kind: str) -> None:
    config = RuntimeConfig(temperature=0.0, max_tokens=12, seed=1)
    msgs = [UserMessage("What is the capital of France?")]
    async with provider(kind) as p:
        got: list[TokenDelta] = []
        streamed = await p.complete(msgs, config=config, stream=True, on_token=got.append)
        atomic = await p.complete(msgs, config=config)
        if isinstance(p.transport, FastTransport):
            assert p.transport.connection_count == 1  # the stream's connection was reused
    assert streamed.finish_reason in ("stop", "length")
    assert isinstance(streamed.message.content, str)
    assert "".join(d.text for d in got) == streamed.message.content
    assert all(d.kind == "content" and d.text for d in got)
    assert [d.index for d in got] == list(range(len(got)))
    # temperature 0 and a seed: the same tokens either way
    assert streamed.message.content == atomic.message.content
    assert streamed.raw["object"] == "chat.completion.chunk" and streamed.raw["id"]
    # llama-cpp-python ignores include_usage: usage is unreported, not invented
    assert streamed.usage.total_tokens is None


@pytest.mark.parametrize("kind", KINDS)
async def test_streamed_forced_tool_call_reassembles(kind: str) -> None:
    msgs = [SystemMessage("You can call tools."), UserMessage("Weather in Paris?")]
    choice = ToolChoiceForce("get_weather")
    config = RuntimeConfig(temperature=0.0, max_tokens=32)
    async with provider(kind) as p:
        got: list[TokenDelta] = []
        streamed = await p.complete(
            msgs,
            tools=[WEATHER],
            tool_choice=choice,
            config=config,
            stream=True,
            on_token=got.append,
        )
        atomic = await p.complete(msgs, tools=[WEATHER], tool_choice=choice, config=config)
    assert streamed.finish_reason == atomic.finish_reason == "tool_calls"
    (call,) = streamed.message.tool_calls or []
    (expected,) = atomic.message.tool_calls or []
    assert call.name == "get_weather" and call.id.startswith("call_")
    assert call.arguments == expected.arguments
    assert isinstance(call.arguments, dict) and isinstance(call.arguments.get("city"), str)
    assert got == []  # tool-call fragments are not token deltas
