"""``LLMNode(stream=True)`` in ``graph.stream()``: token items (more than one) from the
node's streamed call, before the node's update, and the update equal to the
non-streaming one; the same for ``build_agent(stream=True)``; observers get the
typed ``LlmTokenEvent``s. On the embedded endpoint (both loops)."""

from __future__ import annotations

from typing import Any

import pytest

from openarmature_nodes.events import LlmTokenEvent
from openarmature_nodes.graph import END, GraphBuilder, State
from openarmature_nodes.graph.streaming import FinalState, NodeUpdate, TokenItem
from openarmature_nodes.llm import OpenAIProvider, RuntimeConfig, UserMessage
from openarmature_nodes.nodes import LLMNode, build_agent, default_onion
from openarmature_nodes.testing import EmbeddedServer

pytestmark = pytest.mark.anyio


class Chat(State):
    text: str = ""
    reply: str = ""


def chat_graph(provider: OpenAIProvider, *, stream: bool) -> Any:
    node = LLMNode(
        provider,
        prompt=lambda s: [UserMessage(s.text)],
        update=lambda r: {"reply": r.message.content or ""},
        config={"max_tokens": 16, "temperature": 0},
        middleware=default_onion(provider, retry=False, warmup=False),
        stream=stream,
    )
    return GraphBuilder(Chat).add_node("llm", node).add_edge("llm", END).set_entry("llm").compile()


async def collect(graph: Any, state: Any, mode: Any = None) -> list[Any]:
    async with graph.stream(state, mode=mode) as items:
        return [item async for item in items]


async def test_a_streamed_llm_node_yields_tokens_then_the_same_update(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    start = Chat(text="tell me about the sea")
    items = await collect(chat_graph(provider, stream=True), start)
    tokens = [i for i in items if isinstance(i, TokenItem)]
    updates = [i for i in items if isinstance(i, NodeUpdate)]
    assert len(tokens) > 1
    assert all(t.node_name == "llm" and t.namespace == ("llm",) for t in tokens)
    assert [t.index for t in tokens] == list(range(len(tokens)))
    assert items.index(tokens[-1]) < items.index(updates[0])  # tokens first, then the update
    assert "".join(t.text for t in tokens) == updates[0].update["reply"]
    assert isinstance(items[-1], FinalState)
    # the same update, and the same final state, as the non-streaming node
    plain = await collect(chat_graph(provider, stream=False), start)
    assert not any(isinstance(i, TokenItem) for i in plain)
    plain_update = next(i for i in plain if isinstance(i, NodeUpdate))
    assert plain_update.update == updates[0].update
    assert plain[-1] == items[-1]
    assert server.requests[-2].json["stream"] is True and "stream" not in server.requests[-1].json


async def test_observers_get_typed_token_events(provider: OpenAIProvider) -> None:
    seen: list[Any] = []

    async def observe(event: Any) -> None:
        seen.append(event)

    await chat_graph(provider, stream=True).invoke(Chat(text="hello there"), observers=[observe])
    tokens = [e for e in seen if isinstance(e, LlmTokenEvent)]
    assert len(tokens) > 1
    assert {t.call_id for t in tokens} and len({t.call_id for t in tokens}) == 1


async def test_the_agent_streams_its_llm_turns(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    agent = build_agent(provider, [], config=RuntimeConfig(max_tokens=16),
                        middleware=default_onion(provider, retry=False, warmup=False),
                        stream=True)
    items = await collect(agent, {"messages": [UserMessage("say something")]},
                          mode={"tokens", "values"})
    assert sum(isinstance(i, TokenItem) for i in items) > 1
    streamed_final = items[-1].state
    plain = build_agent(provider, [], config=RuntimeConfig(max_tokens=16),
                        middleware=default_onion(provider, retry=False, warmup=False))
    final = await plain.invoke({"messages": [UserMessage("say something")]})
    assert final.messages[-1].content == streamed_final.messages[-1].content
    assert final.stop_reason == streamed_final.stop_reason == "answer"
