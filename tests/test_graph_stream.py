"""``graph.stream()``: typed items from the observer event stream, on asyncio and trio.

Node updates arrive in execution order with their lineage, the final state
last; a failing run raises after its items; leaving the block early cancels
the run (no task left, no connection checked out); and sync node functions
run in a worker thread.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

import anyio
import pytest

from openarmature_nodes.graph import (
    END,
    GraphBuilder,
    NodeException,
    State,
    append,
)
from openarmature_nodes.graph.streaming import EventItem, FinalState, NodeUpdate
from openarmature_nodes.llm import OpenAIProvider, UserMessage
from openarmature_nodes.nodes import LLMNode
from openarmature_nodes.testing import EmbeddedServer

pytestmark = pytest.mark.anyio


class Loop(State):
    turns: int = 0
    log: Annotated[list[str], append] = []


class Inner(State):
    turns: int = 0


async def count(state: Loop) -> dict[str, Any]:
    return {"turns": state.turns + 1, "log": [f"turn {state.turns}"]}


async def nothing(state: Any) -> None:
    return None


def loop_graph() -> Any:
    return (
        GraphBuilder(Loop)
        .add_node("count", count)
        .add_node("idle", nothing)
        .add_conditional_edge("count", lambda s: "count" if s.turns < 3 else "idle",
                              destinations=("count", "idle"))
        .add_edge("idle", END)
        .set_entry("count")
        .compile()
    )


async def test_updates_in_execution_order_then_the_final_state() -> None:
    items = []
    async with loop_graph().stream(Loop()) as stream:
        async for item in stream:
            items.append(item)
    updates = [i for i in items if isinstance(i, NodeUpdate)]
    assert [(u.node_name, u.step) for u in updates] == [
        ("count", 0), ("count", 1), ("count", 2), ("idle", 3),
    ]
    assert updates[0].update == {"turns": 1, "log": ["turn 0"]}  # what the node returned
    assert dict(updates[3].update) == {}  # a node returning None
    assert updates[0].namespace == ("count",)
    assert isinstance(items[-1], FinalState)
    assert items[-1].state == Loop(turns=3, log=["turn 0", "turn 1", "turn 2"])
    assert sum(isinstance(i, FinalState) for i in items) == 1


async def test_inside_the_delivery_runner_every_item_precedes_the_end() -> None:
    graph = loop_graph()
    async with graph, graph.stream(Loop()) as stream:
        items = [i async for i in stream]
    assert [type(i).__name__ for i in items] == ["NodeUpdate"] * 4 + ["FinalState"]


async def test_mode_selects_items_and_rejects_unknown_modes() -> None:
    async with loop_graph().stream(Loop(), mode="values") as stream:
        items = [i async for i in stream]
    assert len(items) == 1 and isinstance(items[0], FinalState)
    async with loop_graph().stream(Loop(), mode={"updates"}) as stream:
        items = [i async for i in stream]
    assert len(items) == 4 and all(isinstance(i, NodeUpdate) for i in items)
    with pytest.raises(ValueError, match="unknown stream mode"):
        loop_graph().stream(Loop(), mode="update")


async def test_nested_updates_carry_their_lineage() -> None:
    async def bump(state: Inner) -> dict[str, Any]:
        return {"turns": state.turns + 10}

    inner = GraphBuilder(Inner).add_node("bump", bump).add_edge("bump", END).set_entry("bump")
    outer = (
        GraphBuilder(Loop)
        .add_node("count", count)
        .add_subgraph("sub", inner.compile(), projects_in=["turns"], projects_out=["turns"])
        .add_edge("count", "sub")
        .add_edge("sub", END)
        .set_entry("count")
        .compile()
    )
    async with outer.stream(Loop(), mode="updates") as stream:
        items = [i async for i in stream]
    # a subgraph node is no event source of its own (graph-engine §6): its nodes are
    assert [i.namespace for i in items] == [("count",), ("sub", "bump")]
    assert items[1].update == {"turns": 11}
    assert items[1].node_name == "bump"


async def test_a_failing_run_raises_after_its_items() -> None:
    async def boom(state: Loop) -> None:
        raise RuntimeError("no")

    graph = (
        GraphBuilder(Loop).add_node("count", count).add_node("boom", boom)
        .add_edge("count", "boom").add_edge("boom", END).set_entry("count").compile()
    )
    seen = []
    with pytest.raises(NodeException, match="boom"):
        async with graph.stream(Loop()) as stream:
            async for item in stream:
                seen.append(item)
    assert [i.node_name for i in seen] == ["count"]


async def test_plain_async_for_without_the_block_is_refused_with_the_fix() -> None:
    with pytest.raises(TypeError, match=r"async with graph\.stream"):
        async for _ in loop_graph().stream(Loop()):
            pass


async def test_breaking_out_cancels_the_run_and_leaves_no_task() -> None:
    started = anyio.Event()
    unwound = []

    async def forever(state: Loop) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            unwound.append("forever")

    graph = (
        GraphBuilder(Loop).add_node("count", count).add_node("forever", forever)
        .add_edge("count", "forever").add_edge("forever", END).set_entry("count").compile()
    )
    with anyio.fail_after(10):
        async with graph.stream(Loop()) as stream:
            async for item in stream:
                assert isinstance(item, NodeUpdate)
                await started.wait()
                break
        # leaving the block waited for the run to unwind: its node was cancelled
        assert unwound == ["forever"]


async def test_cancelling_the_consumer_cancels_the_run() -> None:
    unwound = []

    async def forever(state: Loop) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            unwound.append("forever")

    graph = GraphBuilder(Loop).add_node("f", forever).add_edge("f", END).set_entry("f").compile()
    with anyio.move_on_after(0.05) as scope:
        async with graph.stream(Loop()) as stream:
            async for _ in stream:
                pass
    assert scope.cancelled_caught
    assert unwound == ["forever"]


async def test_events_mode_passes_other_events_through() -> None:
    from openarmature_nodes.context import emit_framework_event

    class Note:
        pass

    note = Note()

    async def noting(state: Loop) -> None:
        emit_framework_event(note)

    graph = GraphBuilder(Loop).add_node("n", noting).add_edge("n", END).set_entry("n").compile()
    async with graph.stream(Loop(), mode="events") as stream:
        items = [i async for i in stream]
    assert items == [EventItem(note)]


# --- an LLM node: leaving early returns its connection -----------------------------------


class Chat(State):
    text: str = ""
    reply: str = ""


async def test_breaking_out_during_an_llm_call_leaks_no_connection() -> None:
    async with EmbeddedServer() as server:
        provider = OpenAIProvider(server.base_url, "embedded-model")
        node = LLMNode(provider, prompt=lambda s: [UserMessage(s.text)],
                       update=lambda r: {"reply": r.message.content or ""}, middleware=[])
        graph = (
            GraphBuilder(Chat).add_node("first", nothing).add_node("llm", node)
            .add_edge("first", "llm").add_edge("llm", END).set_entry("first").compile()
        )
        server.hold()  # the chat request waits at the server
        with anyio.fail_after(20):
            async with graph.stream(Chat(text="hi"), mode="updates") as stream:
                async for item in stream:
                    assert item.node_name == "first"
                    await server.wait_in_flight(1)  # the call is checked out, at the server
                    break
            server.release()
            # the cancelled call's connection was closed, not pooled: the server sees it go
            await server.wait_for(lambda: server.open_connections == 0)
        await provider.aclose()


# --- sync node functions ----------------------------------------------------------------


async def test_a_sync_node_runs_in_a_worker_thread() -> None:
    loop_thread = threading.get_ident()
    threads = []

    def work(state: Loop) -> dict[str, Any]:
        threads.append(threading.get_ident())
        return {"turns": state.turns + 1}

    graph = GraphBuilder(Loop).add_node("w", work).add_edge("w", END).set_entry("w").compile()
    assert (await graph.invoke(Loop())).turns == 1
    async with graph.stream(Loop(), mode="updates") as stream:
        items = [i async for i in stream]
    assert items[0].update == {"turns": 1}
    assert threads and all(t != loop_thread for t in threads)


async def test_a_sync_node_fails_like_an_async_one() -> None:
    def bad(state: Loop) -> None:
        raise ValueError("sync failure")

    graph = GraphBuilder(Loop).add_node("bad", bad).add_edge("bad", END).set_entry("bad").compile()
    with pytest.raises(NodeException, match="sync failure") as info:
        await graph.invoke(Loop())
    assert info.value.node_name == "bad"
    assert isinstance(info.value.__cause__, ValueError)
