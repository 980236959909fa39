"""The issue's seed example against a real llama.cpp server, on asyncio and trio.

Start the server with ``../shared/tools/real-llm-server.sh start 18188`` (or
point ``$OPENARMATURE_REAL_LLM_URL`` at another host root). Without a server
answering there, these tests skip with the reason.

The model (Gemma 3 270M base) produces junk text: the tests assert shapes,
never wording.
"""

from __future__ import annotations

import pytest

from openarmature_nodes.llm import (
    OpenAIProvider,
    ProviderInvalidModel,
    RuntimeConfig,
    SystemMessage,
    Tool,
    ToolChoiceForce,
    ToolMessage,
    UserMessage,
)
from tests.real_server import MODEL, URL, requires_real_server

pytestmark = [pytest.mark.anyio, *requires_real_server()]



async def test_seed_example() -> None:
    provider = OpenAIProvider(base_url=URL, model=MODEL, api_key=None, genai_system="llama.cpp")
    await provider.ready()
    warm = await provider.complete([UserMessage(content="hi")], config=RuntimeConfig(max_tokens=1))
    assert warm.finish_reason in ("length", "stop") and isinstance(warm.message.content, str)
    response = await provider.complete(
        [UserMessage(content="hello")], config=RuntimeConfig(temperature=0.0, max_tokens=16)
    )
    assert isinstance(response.message.content, str)  # may be "" on this base model
    assert response.finish_reason in ("stop", "length")
    assert response.usage.completion_tokens is not None and response.usage.completion_tokens <= 16
    assert response.raw["choices"][0]["message"]["role"] == "assistant"
    await provider.aclose()


async def test_ready_rejects_unknown_model() -> None:
    async with OpenAIProvider(URL, "no-such-model-here") as provider:
        with pytest.raises(ProviderInvalidModel, match=MODEL):
            await provider.ready()


async def test_forced_tool_call_round_trip() -> None:
    weather = Tool(
        "get_weather",
        "Current weather for a city.",
        {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
        },
    )
    async with OpenAIProvider(URL, MODEL) as provider:
        history = [SystemMessage("You call tools."), UserMessage("Weather in Paris?")]
        r = await provider.complete(
            history,
            tools=[weather],
            tool_choice=ToolChoiceForce("get_weather"),
            config=RuntimeConfig(temperature=0.0, max_tokens=32),
        )
        assert r.finish_reason == "tool_calls" and r.message.tool_calls
        call = r.message.tool_calls[0]
        assert call.name == "get_weather" and isinstance(call.arguments, dict)
        assert call.id == r.raw["choices"][0]["message"]["tool_calls"][0]["id"]  # verbatim
        # llama-cpp-python needs a string content on the replayed assistant turn
        replay = r.message.__class__(content="", tool_calls=r.message.tool_calls)
        r2 = await provider.complete(
            [*history, replay, ToolMessage('{"temp_c": 21}', call.id)],
            tools=[weather],
            config=RuntimeConfig(max_tokens=8),
        )
        assert r2.finish_reason in ("stop", "length", "tool_calls")
