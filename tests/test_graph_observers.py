"""Observer hooks (graph-engine §6): events, ordering, isolation, delivery, drains."""



from __future__ import annotations

import itertools
import math
from typing import Annotated, Any

import anyio
import pytest

from openarmature_nodes.context import current_lineage, emit_framework_event
from openarmature_nodes.graph import (
    END,
    DrainSummary,
    GraphBuilder,
    NodeEvent,
    ObserverErrorWarning,
    State,
    append,
    current_invocation_id,
)

pytestmark = pytest.mark.anyio


class S(State):
    v: int = 0
    trace: Annotated[list[str], append] = []


def node(name: str, v: int) -> Any:
    async def fn(state: S) -> dict[str, Any]:
        return {"v": v, "trace": [name]}

    return fn


def linear(*names: str) -> Any:
    b = GraphBuilder(S)
    for i, n in enumerate(names):
        b.add_node(n, node(n, i + 1))
    for a, z in itertools.pairwise(names):
        b.add_edge(a, z)
    return b.add_edge(names[-1], END).set_entry(names[0]).compile()


class Log:
    """An observer recording (its name, event) into a shared list."""

    def __init__(self, name: str, sink: list[tuple[str, Any]]) -> None:
        self.name, self.sink = name, sink

    async def __call__(self, event: Any) -> None:
        self.sink.append((self.name, event))


async def test_event_pairs_fields_and_delivery_order() -> None:
    graph = linear("a", "b")
    sink: list[tuple[str, Any]] = []
    graph.attach(Log("g1", sink))
    graph.attach(Log("g2", sink))
    final = await graph.invoke(S(), observers=[Log("inv", sink)])  # no runner: delivered on return
    assert final.v == 2
    got = [(who, e.step, e.phase, e.node_name) for who, e in sink]
    want = [
        (who, step, phase, name)
        for step, name in enumerate(["a", "b"])
        for phase in ("started", "completed")
        for who in ("g1", "g2", "inv")
    ]
    assert got == want
    events = [e for who, e in sink if who == "g1"]
    assert all(isinstance(e, NodeEvent) for e in events)
    a_started, a_done, _b_started, b_done = events
    assert a_started.pre_state == S() and a_started.post_state is None and a_started.error is None
    assert a_done.post_state == S(v=1, trace=["a"]) and a_done.pre_state == S()
    assert b_done.pre_state == a_done.post_state
    assert a_done.namespace == ("a",) and a_done.parent_states == () and a_done.attempt_index == 0
    assert len({e.invocation_id for e in events}) == 1 and a_done.fan_out_index is None


async def test_phase_subscription() -> None:
    graph = linear("a", "b")
    sink: list[tuple[str, Any]] = []
    graph.attach(Log("done", sink), phases={"completed"})
    await graph.invoke(S(), observers=[])
    assert [e.phase for _, e in sink] == ["completed", "completed"]
    with pytest.raises(ValueError, match="must not be empty"):
        graph.attach(Log("x", sink), phases=set())
    with pytest.raises(ValueError, match="unknown phase"):
        graph.attach(Log("x", sink), phases={"finished"})


async def test_subgraph_events_namespace_parent_states_and_local_observers() -> None:
    sub = linear("x", "y")
    sink: list[tuple[str, Any]] = []
    sub.attach(Log("sub", sink))
    outer = (
        GraphBuilder(S)
        .add_node("pre", node("pre", 7))
        .add_subgraph("inner", sub)
        .add_edge("pre", "inner")
        .add_edge("inner", END)
        .set_entry("pre")
        .compile()
    )
    outer.attach(Log("outer", sink))
    final = await outer.invoke(S())
    assert final.trace == ["pre", "x", "y"]
    outer_events = [e for who, e in sink if who == "outer"]
    assert [(e.step, e.namespace) for e in outer_events[::2]] == [
        (0, ("pre",)), (1, ("inner", "x")), (2, ("inner", "y")),
    ]
    x_done = outer_events[3]
    assert x_done.pre_state == S() and x_done.parent_states == (S(v=7, trace=["pre"]),)
    # The subgraph's own observer sees only its nodes, each right after the outer one.
    order = [(who, e.step, e.phase) for who, e in sink]
    assert order[2:4] == [("outer", 1, "started"), ("sub", 1, "started")]
    assert [e.node_name for who, e in sink if who == "sub"] == ["x", "x", "y", "y"]


async def test_failed_node_gets_completed_with_error() -> None:
    async def boom(state: S) -> None:
        raise RuntimeError("boom")

    graph = GraphBuilder(S).add_node("f", boom).add_edge("f", END).set_entry("f").compile()
    sink: list[tuple[str, Any]] = []
    with pytest.raises(Exception, match="boom"):
        await graph.invoke(S(), observers=[Log("o", sink)])
    started, done = (e for _, e in sink)
    assert started.phase == "started"
    assert done.phase == "completed" and done.post_state is None
    assert done.error is not None and done.error.category == "node_exception"
    assert isinstance(done.error.exception.__cause__, RuntimeError)


async def test_observer_error_is_isolated_and_warned() -> None:
    graph = linear("a", "b")

    async def bad(event: Any) -> None:
        raise RuntimeError("observer bug")

    sink: list[tuple[str, Any]] = []
    graph.attach(bad)
    graph.attach(Log("good", sink))
    with pytest.warns(ObserverErrorWarning, match="observer bug"):
        final = await graph.invoke(S())
    assert final.v == 2 and len(sink) == 4


async def test_sync_observer_is_accepted() -> None:
    graph = linear("a")
    seen: list[str] = []
    graph.attach(lambda e: seen.append(e.phase))
    await graph.invoke(S())
    assert seen == ["started", "completed"]


async def test_detach_and_snapshot_at_invocation_start() -> None:
    graph = linear("a", "b")
    sink: list[tuple[str, Any]] = []
    late = Log("late", sink)

    async def attach_late(state: S) -> None:
        graph.attach(late)  # mid-run: takes effect from the next invocation

    b = GraphBuilder(S).add_node("a", attach_late).add_edge("a", END).set_entry("a")
    graph = b.compile()
    await graph.invoke(S(), observers=[Log("inv", sink)])
    assert {who for who, _ in sink} == {"inv"}
    sink.clear()
    await graph.invoke(S())
    assert {who for who, _ in sink} == {"late"}
    graph.detach(late)
    sink.clear()
    await graph.invoke(S())
    assert sink == []


# --- delivery off the execution path, drains -------------------------------------------------


class Gate:
    """An observer that blocks on every event until released."""

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.entered = anyio.Event()
        self.events: list[Any] = []

    async def __call__(self, event: Any) -> None:
        self.entered.set()
        await self.release.wait()
        self.events.append(event)


async def test_invoke_returns_before_slow_observers_inside_runner() -> None:
    graph = linear("a", "b", "c")
    gate = Gate()
    graph.attach(gate)
    async with graph:
        final = await graph.invoke(S())  # returns although the observer is blocked
        assert final.v == 3
        await gate.entered.wait()
        assert gate.events == []
        gate.release.set()
        assert await graph.drain() == DrainSummary(0, False)
        assert len(gate.events) == 6


async def test_drain_timeout_cancels_and_leaves_graph_clean() -> None:
    graph = linear("a", "b", "c")
    gate = Gate()
    graph.attach(gate)
    async with graph:
        await graph.invoke(S())
        await gate.entered.wait()
        summary = await graph.drain(timeout=0.05)
        assert summary == DrainSummary(undelivered_count=6, timeout_reached=True)
        assert graph._delivery._active == {}  # the worker is gone, not lingering
        gate.release.set()  # later invocations deliver normally
        await graph.invoke(S())
        assert await graph.drain(timeout=5) == DrainSummary(0, False)
        assert len(gate.events) == 6


async def test_drain_with_nothing_pending_returns_at_once() -> None:
    graph = linear("a")
    assert await graph.drain() == DrainSummary(0, False)
    assert await graph.drain_events_for("unknown", timeout=0) == DrainSummary(0, False)


@pytest.mark.parametrize("bad,exc", [(-1, ValueError), (math.nan, ValueError), ("1", TypeError)])
async def test_drain_rejects_bad_timeouts(bad: Any, exc: type[Exception]) -> None:
    graph = linear("a")
    with pytest.raises(exc):
        await graph.drain(timeout=bad)
    with pytest.raises(exc):
        await graph.drain_events_for("x", timeout=bad)


async def test_drain_events_for_inside_a_node_sees_earlier_events() -> None:
    snapshots: list[list[str]] = []
    seen: list[Any] = []

    async def slowish(event: Any) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(event)

    async def terminal(state: S) -> dict[str, Any]:
        summary = await graph.drain_events_for(current_invocation_id(), timeout=5)
        assert summary == DrainSummary(0, False)
        snapshots.append([f"{e.node_name}:{e.phase}" for e in seen])
        return {"v": 9}

    graph = (
        GraphBuilder(S)
        .add_node("a", node("a", 1))
        .add_node("b", terminal)
        .add_edge("a", "b")
        .add_edge("b", END)
        .set_entry("a")
        .compile()
    )
    graph.attach(slowish)
    for _ in range(2):  # without and with the runner
        seen.clear()
        if _:
            async with graph:
                await graph.invoke(S())
        else:
            await graph.invoke(S())
        assert snapshots[-1] == ["a:started", "a:completed", "b:started"]
        assert len(seen) == 4


async def test_drain_events_for_timeout_does_not_cancel_delivery() -> None:
    gate = Gate()
    summaries: list[DrainSummary] = []

    async def terminal(state: S) -> None:
        summaries.append(await graph.drain_events_for(current_invocation_id(), timeout=0.02))

    graph = (
        GraphBuilder(S)
        .add_node("a", node("a", 1))
        .add_node("b", terminal)
        .add_edge("a", "b")
        .add_edge("b", END)
        .set_entry("a")
        .compile()
    )
    graph.attach(gate)
    async with graph:
        await graph.invoke(S())
        assert summaries == [DrainSummary(undelivered_count=3, timeout_reached=True)]
        gate.release.set()
        assert await graph.drain() == DrainSummary(0, False)
    assert len(gate.events) == 4  # the worker kept going after the per-invocation timeout


async def test_runner_exit_with_error_cancels_workers_and_keeps_the_error() -> None:
    graph = linear("a")
    gate = Gate()
    graph.attach(gate)
    with pytest.raises(KeyError):
        async with graph:
            await graph.invoke(S())
            await gate.entered.wait()
            raise KeyError("mine")
    assert graph._delivery._active == {}


async def test_runner_is_not_reentrant() -> None:
    graph = linear("a")
    async with graph:
        with pytest.raises(RuntimeError, match="already open"):
            async with graph:
                pass


async def test_framework_events_and_lineage() -> None:
    class Note:  # a framework event: no `phase`, so every observer gets it
        def __init__(self, lineage: Any) -> None:
            self.lineage = lineage

    async def noting(state: S) -> None:
        emit_framework_event(Note(current_lineage()))

    sub = GraphBuilder(S).add_node("n", noting).add_edge("n", END).set_entry("n").compile()
    outer = GraphBuilder(S).add_subgraph("sub", sub).add_edge("sub", END).set_entry("sub")
    graph = outer.compile()
    seen: list[Any] = []
    graph.attach(seen.append, phases={"completed"})
    await graph.invoke(S())
    notes = [e for e in seen if isinstance(e, Note)]
    assert len(notes) == 1 and notes[0].lineage.namespace == ("sub", "n")
    assert notes[0].lineage.fan_out_index_chain == (None,)
    assert [type(e).__name__ for e in seen] == ["Note", "NodeEvent"]
    # Unobserved runs: nothing to deliver to, nothing tracked.
    graph.detach(seen.append)
    assert emit_framework_event(Note(None)) is False
    await graph.invoke(S())
