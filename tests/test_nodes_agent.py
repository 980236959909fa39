"""The agent helper against the embedded server: the loop runs tools and ends."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from openarmature_nodes.graph import NodeException
from openarmature_nodes.llm import (
    AssistantMessage,
    OpenAIProvider,
    RuntimeConfig,
    ToolChoiceForce,
    ToolMessage,
    UserMessage,
)
from openarmature_nodes.middleware import RetryMiddleware, WarmupGate
from openarmature_nodes.nodes import (
    AgentState,
    ToolExecutionError,
    agent_builder,
    build_agent,
    default_onion,
    tool,
)
from openarmature_nodes.retrying import constant_backoff
from openarmature_nodes.testing import CHAT_PATH, EmbeddedServer, ReceivedRequest, completion_body
from tests.embedded_fixtures import MODEL

pytestmark = pytest.mark.anyio



class City(msgspec.Struct):
    city: str


@tool(args=City)
async def get_weather(args: City) -> dict[str, Any]:
    """Current weather in a city."""
    return {"city": args.city, "sky": "clear"}


@tool(args=City)
async def get_time(args: City) -> str:
    """Local time in a city."""
    return f"12:00 in {args.city}"


def fast(provider: OpenAIProvider) -> list[Any]:
    return default_onion(
        provider,
        retry=RetryMiddleware(backoff=constant_backoff(0.0)),
        warmup=WarmupGate(provider, backoff=constant_backoff(0.0)),
    )


def chats(server: EmbeddedServer) -> list[dict[str, Any]]:
    """Chat bodies after the gate's one-token warm-up."""
    return [
        r.json for r in server.requests
        if r.path == CHAT_PATH and r.json.get("max_tokens") != 1
    ]


async def test_agent_loop_calls_a_tool_then_answers(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    graph = build_agent(
        provider, [get_weather, get_time], system="Use the tools.",
        config=RuntimeConfig(max_tokens=64), middleware=fast(provider),
    )
    final = await graph.invoke({"messages": [UserMessage(content="What's the weather?")]})
    assert isinstance(final, AgentState)
    kinds = [type(m).__name__ for m in final.messages]
    assert kinds == ["UserMessage", "AssistantMessage", "ToolMessage", "AssistantMessage"]
    call = final.messages[1].tool_calls[0]
    assert call.name == "get_weather"
    assert final.messages[2].tool_call_id == call.id
    assert final.messages[3].content.startswith("tool result: ")
    assert (final.llm_turns, final.stop_reason) == (2, "answer")

    first, second = chats(server)
    assert first["messages"][0] == {"role": "system", "content": "Use the tools."}
    assert first["tool_choice"] == "auto"
    assert {t["function"]["name"] for t in first["tools"]} == {"get_weather", "get_time"}
    # the tool-call turn goes back with content "" (llama.cpp refuses null)
    assert second["messages"][2]["role"] == "assistant"
    assert second["messages"][2]["content"] == ""
    assert second["messages"][3]["role"] == "tool"


async def test_parallel_tool_calls_are_answered_in_order(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    def model(request: ReceivedRequest) -> Any:
        messages = request.json["messages"]
        if request.json.get("max_tokens") == 1 or messages[-1]["role"] == "tool":
            return None  # default reply
        calls = [
            {"id": f"c{i}", "type": "function",
             "function": {"name": name, "arguments": msgspec.json.encode({"city": city}).decode()}}
            for i, (name, city) in enumerate(
                [("get_time", "Tokyo"), ("get_weather", "Paris"), ("get_time", "Lima")]
            )
        ]
        return completion_body(None, tool_calls=calls, model=MODEL)

    server.set_script(model)
    graph = build_agent(provider, [get_weather, get_time], middleware=fast(provider))
    final = await graph.invoke({"messages": [UserMessage(content="Tokyo, Paris, Lima?")]})
    tool_messages = [m for m in final.messages if isinstance(m, ToolMessage)]
    assert [(m.tool_call_id, m.content) for m in tool_messages] == [
        ("c0", "12:00 in Tokyo"),
        ("c1", '{"city":"Paris","sky":"clear"}'),
        ("c2", "12:00 in Lima"),
    ]
    assert final.stop_reason == "answer"


async def test_agent_stops_at_max_turns(provider: OpenAIProvider, server: EmbeddedServer) -> None:
    server.tool_policy = "always"  # the model never stops asking for tools
    graph = build_agent(provider, [get_weather], max_turns=3, middleware=fast(provider))
    final = await graph.invoke({"messages": [UserMessage(content="loop forever")]})
    assert (final.llm_turns, final.stop_reason) == (3, "max_turns")
    assert len(chats(server)) == 3
    last = final.messages[-1]
    assert isinstance(last, AssistantMessage) and last.tool_calls  # left unanswered, visible


async def test_tool_choice_may_depend_on_the_state(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    def force_first(s: AgentState) -> Any:
        return ToolChoiceForce(name="get_time") if s.llm_turns == 0 else "none"

    graph = build_agent(provider, [get_weather, get_time], tool_choice=force_first,
                        middleware=fast(provider))
    final = await graph.invoke({"messages": [UserMessage(content="weather please")]})
    assert final.messages[1].tool_calls[0].name == "get_time"
    first, second = chats(server)
    assert first["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}
    assert second["tool_choice"] == "none"


async def test_tool_failure_raises_when_configured(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    @tool(args=City)
    async def broken(args: City) -> str:
        """Always fails."""
        raise RuntimeError("backend down")

    graph = build_agent(provider, [broken], on_tool_error="raise", middleware=fast(provider))
    with pytest.raises(NodeException) as info:
        await graph.invoke({"messages": [UserMessage(content="go")]})
    assert info.value.node_name == "tools"
    assert isinstance(info.value.__cause__, ToolExecutionError)


async def test_tool_failure_is_told_to_the_model_by_default(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    @tool(args=City)
    async def broken(args: City) -> str:
        """Always fails."""
        raise RuntimeError("backend down")

    graph = build_agent(provider, [broken], middleware=fast(provider))
    final = await graph.invoke({"messages": [UserMessage(content="go")]})
    assert "backend down" in final.messages[2].content
    assert final.stop_reason == "answer"


async def test_builder_can_be_extended_with_a_custom_state(provider: OpenAIProvider) -> None:
    class Mine(AgentState, frozen=True, kw_only=True):
        user: str = "ada"

    builder = agent_builder(provider, [get_weather], state=Mine, middleware=fast(provider))
    final = await builder.compile().invoke(Mine(messages=[UserMessage(content="hi")]))
    assert isinstance(final, Mine) and final.user == "ada"


def test_bad_options_are_refused() -> None:
    provider = OpenAIProvider("http://127.0.0.1:9", MODEL)  # never contacted
    with pytest.raises(ValueError, match="max_turns"):
        build_agent(provider, [get_weather], max_turns=0)
    with pytest.raises(TypeError, match="AgentState"):
        agent_builder(provider, [get_weather], state=dict)  # type: ignore[type-var]
