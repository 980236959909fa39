"""Node middleware in the engine (pipeline-utilities §2-§5): order, locality, errors, events."""



from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import pytest

from openarmature_nodes.context import attempt_index
from openarmature_nodes.graph import END, GraphBuilder, NodeException, State, append

pytestmark = pytest.mark.anyio

Next = Callable[[Any], Awaitable[Any]]


class S(State):
    v: int = 0
    trace: Annotated[list[str], append] = []


def marker(name: str) -> Any:
    """Wraps the update's trace in ``name.pre`` / ``name.post``."""

    async def mw(state: Any, nxt: Next) -> Any:
        update = dict(await nxt(state) or {})
        update["trace"] = [f"{name}.pre", *update.get("trace", []), f"{name}.post"]
        return update

    return mw


def body(name: str, calls: list[str] | None = None) -> Any:
    async def fn(state: S) -> dict[str, Any]:
        if calls is not None:
            calls.append(name)
        return {"trace": [name]}

    return fn


async def test_per_graph_outside_per_node_each_outer_to_inner() -> None:
    graph = (
        GraphBuilder(S, middleware=[marker("g1")])
        .use(marker("g2"))
        .add_node("a", body("a"), middleware=[marker("n1"), marker("n2")])
        .add_edge("a", END)
        .set_entry("a")
        .compile()
    )
    final = await graph.invoke(S())
    assert final.trace == [
        "g1.pre", "g2.pre", "n1.pre", "n2.pre", "a", "n2.post", "n1.post", "g2.post", "g1.post",
    ]


async def test_middleware_does_not_cross_the_subgraph_boundary() -> None:
    sub = (
        GraphBuilder(S, middleware=[marker("sub")])
        .add_node("x", body("x"))
        .add_node("y", body("y"))
        .add_edge("x", "y")
        .add_edge("y", END)
        .set_entry("x")
        .compile()
    )
    graph = (
        GraphBuilder(S, middleware=[marker("parent")])
        .add_subgraph("s", sub, middleware=[marker("node")])
        .add_edge("s", END)
        .set_entry("s")
        .compile()
    )
    final = await graph.invoke(S())
    # The parent's layers see one dispatch; the subgraph's wrap each inner node.
    assert final.trace == [
        "parent.pre", "node.pre",
        "sub.pre", "x", "sub.post", "sub.pre", "y", "sub.post",
        "node.post", "parent.post",
    ]


async def test_short_circuit_skips_the_node_and_its_events() -> None:
    calls: list[str] = []

    async def short(state: Any, nxt: Next) -> Any:
        return {"trace": ["short"]}

    graph = (
        GraphBuilder(S)
        .add_node("a", body("a", calls), middleware=[marker("outer"), short, marker("inner")])
        .add_edge("a", END)
        .set_entry("a")
        .compile()
    )
    events: list[Any] = []
    final = await graph.invoke(S(), observers=[events.append])
    assert final.trace == ["outer.pre", "short", "outer.post"]
    assert calls == [] and events == []


async def test_middleware_error_is_a_node_exception_with_cause() -> None:
    async def breaker(state: Any, nxt: Next) -> Any:
        raise OSError("circuit open")

    graph = GraphBuilder(S).add_node("a", body("a"), middleware=[breaker])
    start = S(v=3)
    with pytest.raises(NodeException) as info:
        await graph.add_edge("a", END).set_entry("a").compile().invoke(start)
    assert isinstance(info.value.__cause__, OSError) and info.value.recoverable_state == start


async def test_transformed_state_reaches_the_node_not_the_merge() -> None:
    seen: list[int] = []

    async def node(state: S) -> dict[str, Any]:
        seen.append(state.v)
        return {"trace": ["n"]}

    async def bump(state: S, nxt: Next) -> Any:
        return await nxt(S(v=state.v + 100, trace=state.trace))

    graph = GraphBuilder(S).add_node("n", node, middleware=[bump]).add_edge("n", END)
    final = await graph.set_entry("n").compile().invoke(S(v=1))
    assert seen == [101] and final == S(v=1, trace=["n"])


def retrying(times: int) -> Any:
    """A minimal re-attempting middleware (sets attempt_index like the real retry)."""

    async def mw(state: Any, nxt: Next) -> Any:
        for i in range(times):
            token = attempt_index.set(i)
            try:
                return await nxt(state)
            except Exception:
                if i == times - 1:
                    raise
            finally:
                attempt_index.reset(token)
        raise AssertionError("unreachable")

    return mw


async def test_each_attempt_gets_its_own_event_pair() -> None:
    attempts: list[int] = []

    async def flaky(state: S) -> dict[str, Any]:
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError(f"fail {len(attempts)}")
        return {"v": 7}

    graph = GraphBuilder(S).add_node("t", flaky, middleware=[retrying(3)]).add_edge("t", END)
    events: list[Any] = []
    final = await graph.set_entry("t").compile().invoke(S(), observers=[events.append])
    assert final.v == 7
    assert [(e.phase, e.attempt_index, e.step) for e in events] == [
        ("started", 0, 0), ("completed", 0, 0),
        ("started", 1, 0), ("completed", 1, 0),
        ("started", 2, 0), ("completed", 2, 0),
    ]
    assert [e.error is not None for e in events if e.phase == "completed"] == [True, True, False]
    assert events[-1].post_state == S(v=7)


async def test_retry_around_a_subgraph_stamps_inner_events() -> None:
    tries: list[int] = []

    async def inner_node(state: S) -> dict[str, Any]:
        tries.append(1)
        if len(tries) == 1:
            raise RuntimeError("first try fails")
        return {"v": 1}

    sub = GraphBuilder(S).add_node("i", inner_node).add_edge("i", END).set_entry("i").compile()
    graph = (
        GraphBuilder(S)
        .add_subgraph("s", sub, middleware=[retrying(2)])
        .add_node("after", body("after"))
        .add_edge("s", "after")
        .add_edge("after", END)
        .set_entry("s")
        .compile()
    )
    events: list[Any] = []
    await graph.invoke(S(), observers=[events.append])
    assert [(e.node_name, e.phase, e.attempt_index) for e in events] == [
        ("i", "started", 0), ("i", "completed", 0),
        ("i", "started", 1), ("i", "completed", 1),
        ("after", "started", 0), ("after", "completed", 0),
    ]


async def test_recovered_failure_completes_with_post_state() -> None:
    async def fail(state: S) -> None:
        raise RuntimeError("boom")

    async def recover(state: Any, nxt: Next) -> Any:
        try:
            return await nxt(state)
        except RuntimeError:
            return {"v": 99}

    graph = GraphBuilder(S).add_node("f", fail, middleware=[recover]).add_edge("f", END)
    events: list[Any] = []
    final = await graph.set_entry("f").compile().invoke(S(), observers=[events.append])
    assert final.v == 99
    assert [e.phase for e in events] == ["started", "completed"]
    assert events[1].error is None and events[1].post_state == S(v=99)


async def test_leaked_attempt_index_does_not_reach_the_next_node() -> None:
    async def leaky(state: Any, nxt: Next) -> Any:
        attempt_index.set(5)  # a buggy middleware that never resets
        return await nxt(state)

    graph = (
        GraphBuilder(S)
        .add_node("a", body("a"), middleware=[leaky])
        .add_node("b", body("b"))
        .add_edge("a", "b")
        .add_edge("b", END)
        .set_entry("a")
        .compile()
    )
    events: list[Any] = []
    await graph.invoke(S(), observers=[events.append])
    assert [(e.node_name, e.attempt_index) for e in events] == [
        ("a", 5), ("a", 5), ("b", 0), ("b", 0),
    ]


async def test_per_graph_middleware_can_bind_per_node() -> None:
    class Labeler:
        def __init__(self, label: str = "") -> None:
            self.label = label

        def bind_node(self, name: str) -> Labeler:
            return Labeler(name)

        async def __call__(self, state: Any, nxt: Next) -> Any:
            update = dict(await nxt(state) or {})
            update["trace"] = [*update.get("trace", []), f"@{self.label}"]
            return update

    graph = (
        GraphBuilder(S, middleware=[Labeler()])
        .add_node("a", body("a"))
        .add_node("b", body("b"))
        .add_edge("a", "b")
        .add_edge("b", END)
        .set_entry("a")
        .compile()
    )
    assert (await graph.invoke(S())).trace == ["a", "@a", "b", "@b"]
