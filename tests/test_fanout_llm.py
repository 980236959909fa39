"""A fan-out of real LLM calls against the embedded endpoint: the concurrency
bound holds at the server, and a cancelled invocation cancels every in-flight
call and leaves no connection open."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
import msgspec
import pytest

from openarmature_nodes.graph import END, GraphBuilder, State, append
from openarmature_nodes.llm import OpenAIProvider, UserMessage
from openarmature_nodes.nodes import LLMNode
from openarmature_nodes.testing import EmbeddedServer

pytestmark = pytest.mark.anyio


class One(State):
    text: str = ""
    reply: str = ""


class Batch(State):
    texts: list[str] = msgspec.field(default_factory=list)
    replies: Annotated[list[str], append] = msgspec.field(default_factory=list)


def batch_graph(provider: OpenAIProvider, concurrency: int | None) -> Any:
    node = LLMNode(
        provider,
        prompt=lambda s: [UserMessage(s.text)],
        update=lambda r: {"reply": r.message.content or ""},
        middleware=[],  # the bare call: no retry, no warm-up, no span
    )
    one = GraphBuilder(One).add_node("llm", node).add_edge("llm", END).set_entry("llm").compile()
    return (
        GraphBuilder(Batch)
        .add_fan_out_node("fan", one, items_field="texts", item_field="text",
                          collect_field="reply", target_field="replies", concurrency=concurrency)
        .add_edge("fan", END).set_entry("fan").compile()
    )


@pytest.mark.parametrize(("bound", "seen", "latency"), [(5, 5, 0.02), (None, 40, 0.25)])
async def test_bound_holds_at_the_server(bound: int | None, seen: int, latency: float) -> None:
    # simulated model latency per call, so that calls overlap at the server
    async with EmbeddedServer(latency=latency) as server, \
            OpenAIProvider(server.base_url, "embedded-model") as p:
        final = await batch_graph(p, bound).invoke(Batch(texts=[f"t{i}" for i in range(40)]))
        assert len(final.replies) == 40
        assert server.max_in_flight == seen


async def test_cancelled_invocation_cancels_calls_and_leaks_no_connection() -> None:
    n = 12
    async with EmbeddedServer() as server:
        provider = OpenAIProvider(server.base_url, "embedded-model")
        server.hold()  # every chat request waits at the server until released
        finished = False
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:

                async def invoke() -> None:
                    nonlocal finished
                    await batch_graph(provider, None).invoke(Batch(texts=["x"] * n))
                    finished = True

                tg.start_soon(invoke)
                await server.wait_in_flight(n)  # all n calls are at the server
                tg.cancel_scope.cancel()
            assert not finished
            # The cancelled calls' connections are closed, not pooled for reuse: once the
            # server answers the held requests it sees every connection gone, while the
            # provider is still open.
            server.release()
            await server.wait_for(lambda: server.open_connections == 0)
        await provider.aclose()
