"""``graph.stream()`` over a streamed ``LLMNode`` against the real llama.cpp server
(Gemma 3 270M), on asyncio and trio: more than one token item, then the node's
update, whose text is the concatenated deltas. The model's text is junk: the
test asserts shapes, never wording."""

from __future__ import annotations

import pytest

from openarmature_nodes.graph import END, GraphBuilder, State
from openarmature_nodes.graph.streaming import NodeUpdate, TokenItem
from openarmature_nodes.llm import OpenAIProvider, UserMessage
from openarmature_nodes.nodes import LLMNode, default_onion
from tests.real_server import MODEL, URL, requires_real_server

pytestmark = [pytest.mark.anyio, *requires_real_server()]


class Chat(State):
    text: str = ""
    reply: str = ""


async def test_a_streamed_node_yields_tokens_from_the_real_server() -> None:
    async with OpenAIProvider(URL, MODEL, genai_system="llama.cpp") as provider:
        node = LLMNode(
            provider,
            prompt=lambda s: [UserMessage(s.text)],
            update=lambda r: {"reply": r.message.content or ""},
            config={"max_tokens": 12, "temperature": 0, "seed": 1},
            middleware=default_onion(provider, retry=False),
            stream=True,
        )
        graph = (
            GraphBuilder(Chat).add_node("llm", node).add_edge("llm", END).set_entry("llm")
            .compile()
        )
        async with graph.stream(Chat(text="What is the capital of France?"),
                                mode={"updates", "tokens"}) as items:
            got = [item async for item in items]
    tokens = [i for i in got if isinstance(i, TokenItem)]
    updates = [i for i in got if isinstance(i, NodeUpdate)]
    assert len(tokens) > 1
    assert [u.node_name for u in updates] == ["llm"]
    assert got.index(tokens[-1]) < got.index(updates[0])
    assert "".join(t.text for t in tokens) == updates[0].update["reply"]
