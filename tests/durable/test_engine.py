"""The engine side of durable runs: resume, errors, migrations, suspension, step limit."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest

from openarmature_nodes.graph import (
    END,
    GraphBuilder,
    GraphSuspended,
    InMemoryCheckpointer,
    SQLiteCheckpointer,
    State,
    StepLimitExceeded,
    Suspended,
    suspend,
)
from openarmature_nodes.graph.checkpoint import (
    CheckpointNotFound,
    CheckpointSaveFailed,
    CheckpointStateMigrationChainAmbiguous,
    CheckpointStateMigrationFailed,
    CheckpointStateMigrationMissing,
    SuspensionInUnsupportedContext,
    SuspensionPersistenceFailed,
    SuspensionRecordInvalid,
    SuspensionResumePayloadInvalid,
)

pytestmark = pytest.mark.anyio


class Counter(State):
    n: int = 0
    done: bool = False


async def bump(s: Counter) -> dict[str, Any]:
    return {"n": s.n + 1}


def _linear(cp: Any, fail: dict[str, bool]) -> Any:
    async def flaky(s: Counter) -> dict[str, Any]:
        if fail["now"]:
            raise RuntimeError("transient outage")
        return {"done": True}

    return (GraphBuilder(Counter).add_node("a", bump).add_node("b", bump).add_node("c", flaky)
            .add_edge("a", "b").add_edge("b", "c").add_edge("c", END).set_entry("a")
            .with_checkpointer(cp).compile())


async def test_resume_from_sqlite_after_a_failure_skips_completed_nodes(tmp_path: Path) -> None:
    fail = {"now": True}
    async with SQLiteCheckpointer(tmp_path / "c.db") as cp:
        graph = _linear(cp, fail)
        with pytest.raises(Exception, match="transient outage"):
            await graph.invoke({}, invocation_id="first", correlation_id="biz-7")
        fail["now"] = False
        out = await graph.run(None, resume_invocation="first")
    # a and b ran once (n == 2), c ran on resume; fresh id, same correlation id
    assert out.state == Counter(n=2, done=True)
    assert out.invocation_id != "first" and out.correlation_id == "biz-7"


async def test_resume_unknown_or_without_checkpointer_is_not_found() -> None:
    graph = GraphBuilder(Counter).add_node("a", bump).set_entry("a").compile()
    with pytest.raises(CheckpointNotFound, match="no checkpointer"):
        await graph.invoke(None, resume_invocation="x")
    graph.with_checkpointer(InMemoryCheckpointer())
    with pytest.raises(CheckpointNotFound) as info:
        await graph.invoke(None, resume_invocation="x")
    assert info.value.category == "checkpoint_not_found" and info.value.transient is False


async def test_save_failure_stops_the_run_as_checkpoint_save_failed() -> None:
    class Broken(InMemoryCheckpointer):
        async def save(self, invocation_id: str, record: Any, *, fan_out_internal: bool = False
                       ) -> None:
            raise OSError("disk full")

    graph = _linear(Broken(), {"now": False})
    with pytest.raises(CheckpointSaveFailed) as info:
        await graph.invoke({})
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.node_name == "a"  # stopped at the first save


class V2(State):
    schema_version: ClassVar[str] = "v2"
    n: int = 0
    lang: str = ""


async def _seed_v1(cp: SQLiteCheckpointer) -> None:
    """A run of a v1 graph (no schema_version) that stops after node ``a``."""

    async def boom(s: Any) -> None:
        raise RuntimeError("stop")

    g1 = (GraphBuilder(Counter).add_node("a", bump).add_node("b", boom).add_edge("a", "b")
          .add_edge("b", END).set_entry("a").with_checkpointer(cp).compile())
    with pytest.raises(Exception, match="stop"):
        await g1.invoke({}, invocation_id="old")


def _v2(cp: Any, migrate: Any = None) -> Any:
    b = (GraphBuilder(V2).add_node("a", bump).add_node("b", bump).add_edge("a", "b")
         .add_edge("b", END).set_entry("a").with_checkpointer(cp))
    if migrate is not None:
        b.with_state_migration("", "v2", migrate)
    return b.compile()


async def test_state_migrations(tmp_path: Path) -> None:
    async with SQLiteCheckpointer(tmp_path / "c.db") as cp:
        await _seed_v1(cp)
        with pytest.raises(CheckpointStateMigrationMissing) as missing:
            await _v2(cp).invoke(None, resume_invocation="old")
        assert (missing.value.from_version, missing.value.to_version) == ("", "v2")
        assert missing.value.registered_migrations_count == 0

        def bad(s: dict[str, Any]) -> dict[str, Any]:
            raise KeyError("lang")

        with pytest.raises(CheckpointStateMigrationFailed) as failed:
            await _v2(cp, bad).invoke(None, resume_invocation="old")
        assert isinstance(failed.value.__cause__, KeyError)
        out = await _v2(cp, lambda s: {"n": s["n"], "lang": "en"}).invoke(
            None, resume_invocation="old")
        assert out == V2(n=2, lang="en")  # a's n=1 kept, b ran once


async def test_duplicate_and_ambiguous_migrations_are_configuration_errors() -> None:
    b = GraphBuilder(V2).add_node("a", bump).set_entry("a")
    b.with_state_migration("v1", "v2", lambda s: s)
    with pytest.raises(CheckpointStateMigrationChainAmbiguous):
        b.with_state_migration("v1", "v2", lambda s: s)
    b2 = GraphBuilder(V2).add_node("a", bump).set_entry("a")
    for frm, to in (("v0", "v1a"), ("v0", "v1b"), ("v1a", "v2"), ("v1b", "v2")):
        b2.with_state_migration(frm, to, lambda s: s)
    with pytest.raises(CheckpointStateMigrationChainAmbiguous) as info:
        b2.compile()
    assert (info.value.from_version, info.value.to_version) == ("v0", "v2")


class Approval(State):
    approved: bool = False
    calls: int = 0


async def ask(s: Approval) -> None:
    await suspend("approve-1", metadata={"tool": "wire_money"})


async def act(s: Approval) -> dict[str, Any]:
    return {"calls": s.calls + (1 if s.approved else 0)}


def _approval(cp: Any) -> Any:
    return (GraphBuilder(Approval).add_node("ask", ask).add_node("act", act)
            .add_edge("ask", "act").add_edge("act", END).set_entry("ask")
            .with_checkpointer(cp).compile())


async def test_suspend_and_resume_across_store_instances(tmp_path: Path) -> None:
    async with SQLiteCheckpointer(tmp_path / "c.db") as cp:
        outcome = await _approval(cp).run({})
        assert isinstance(outcome, Suspended)
        assert outcome.descriptor.metadata == {"tool": "wire_money"}
        with pytest.raises(GraphSuspended):
            await _approval(cp).invoke({})
    async with SQLiteCheckpointer(tmp_path / "c.db") as cp2:  # "another process"
        graph = _approval(cp2)
        with pytest.raises(SuspensionResumePayloadInvalid):
            await graph.run(None, resume_invocation=outcome.invocation_id,
                            signal_payload={"approved": "yes"})
        done = await graph.run(None, resume_invocation=outcome.invocation_id,
                               signal_payload={"approved": True})
        assert done.state == Approval(approved=True, calls=1)
        assert done.invocation_id == outcome.invocation_id
        with pytest.raises(SuspensionRecordInvalid):  # already resumed
            await graph.run(None, resume_invocation=outcome.invocation_id, signal_payload={})


async def test_suspend_outside_a_run_or_without_checkpointer() -> None:
    with pytest.raises(SuspensionInUnsupportedContext):
        await suspend("x")
    graph = (GraphBuilder(Approval).add_node("ask", ask).set_entry("ask").compile())
    with pytest.raises(SuspensionPersistenceFailed, match="checkpointer"):
        await graph.invoke({})


class Loop(State):
    n: int = 0


async def test_routing_loop_hits_the_step_limit_naming_the_nodes() -> None:
    graph = (GraphBuilder(Loop).add_node("a", lambda_bump).add_conditional_edge("a", lambda s: "a")
             .set_entry("a").compile())
    with pytest.raises(StepLimitExceeded) as info:
        await graph.invoke({}, step_limit=100)
    assert info.value.limit == 100 and info.value.last_nodes == ("a",) * 5
    assert "100" in str(info.value) and "a -> a" in str(info.value)
    assert info.value.recoverable_state.n == 100
    with pytest.raises(StepLimitExceeded):  # the default limit, observed path too
        await graph.invoke({}, observers=[lambda e: None])


async def lambda_bump(s: Loop) -> dict[str, Any]:
    return {"n": s.n + 1}


async def test_a_loop_of_nodes_that_never_await_still_sees_cancellation() -> None:
    seen = {"n": 0}
    scope = anyio.CancelScope()

    async def spin(s: Loop) -> dict[str, Any]:
        seen["n"] += 1
        if seen["n"] == 100:
            scope.cancel()  # requested from inside: the loop must notice between steps
        return {"n": s.n + 1}

    graph = (GraphBuilder(Loop).add_node("spin", spin)
             .add_conditional_edge("spin", lambda s: "spin").set_entry("spin").compile())
    with scope:
        await graph.invoke({}, step_limit=10**9)
    assert scope.cancelled_caught
    assert 100 <= seen["n"] < 100 + 32


class Inner(State):
    x: int = 0
    ok: bool = False
    y: int = 0


class Outer(State):
    x: int = 0
    y: int = 0
    ok: bool = False


async def test_suspend_in_a_subgraph_reruns_the_node_not_its_predecessors() -> None:
    ran = {"pre": 0, "gate": 0}

    async def pre(s: Inner) -> dict[str, Any]:
        ran["pre"] += 1
        return {"x": s.x + 1}

    async def gate(s: Inner) -> dict[str, Any]:
        ran["gate"] += 1
        if not s.ok:
            await suspend("need-ok", mark_node_completed=False)
        return {"y": 5}

    sub = (GraphBuilder(Inner).add_node("pre", pre).add_node("gate", gate)
           .add_edge("pre", "gate").add_edge("gate", END).set_entry("pre").compile())
    graph = (GraphBuilder(Outer).add_subgraph("sub", sub, inputs={"x": "x"},
                                              outputs={"x": "x", "y": "y"})
             .add_edge("sub", END).set_entry("sub").with_checkpointer(InMemoryCheckpointer())
             .compile())
    first = await graph.run({"x": 1})
    assert isinstance(first, Suspended) and first.namespace == ("sub", "gate")
    again = await graph.run(None, resume_invocation=first.invocation_id,
                            signal_payload={"ok": False})  # a second cycle
    assert isinstance(again, Suspended) and again.invocation_id == first.invocation_id
    done = await graph.run(None, resume_invocation=first.invocation_id,
                           signal_payload={"ok": True, "not_a_field": 1})
    assert done.state == Outer(x=2, y=5, ok=True)  # overlaid at both levels declaring it
    assert ran == {"pre": 1, "gate": 3}


async def test_retry_budget_and_attempt_index_restart_on_resume() -> None:
    """§10.6: a node whose retries ran out fails the run; on resume it starts again at
    attempt 0 with a fresh budget."""
    from openarmature_nodes.context import attempt_index
    from openarmature_nodes.middleware import RetryMiddleware
    from openarmature_nodes.retrying import constant_backoff

    seen: list[tuple[bool, int]] = []
    phase = {"resumed": False}

    class Outage(Exception):
        transient = True

    async def flaky(s: Counter) -> dict[str, Any]:
        seen.append((phase["resumed"], attempt_index.get()))
        if not phase["resumed"] or len([p for p, _ in seen if p]) < 2:
            raise Outage("try again")
        return {"done": True}

    retry = RetryMiddleware(max_attempts=3, backoff=constant_backoff(0.0))
    graph = (GraphBuilder(Counter).add_node("a", bump)
             .add_node("b", flaky, middleware=[retry]).add_edge("a", "b").add_edge("b", END)
             .set_entry("a").with_checkpointer(InMemoryCheckpointer()).compile())
    with pytest.raises(Exception, match="try again"):
        await graph.invoke({}, invocation_id="r")
    phase["resumed"] = True
    out = await graph.invoke(None, resume_invocation="r")
    assert out == Counter(n=1, done=True)
    assert seen == [(False, 0), (False, 1), (False, 2), (True, 0), (True, 1)]


async def test_observed_runs_get_a_checkpoint_saved_event_per_save() -> None:
    from openarmature_nodes.graph import NodeEvent
    from openarmature_nodes.graph.checkpoint import CheckpointSaved

    events: list[Any] = []
    graph = _linear(InMemoryCheckpointer(), {"now": False})
    await graph.invoke({}, observers=[events.append])
    await graph.drain()
    saved = [e for e in events if isinstance(e, CheckpointSaved)]
    assert [e.completed_node_count for e in saved] == [1, 2, 3]
    assert saved[-1].status == "completed" and saved[0].backend == "in_memory"
    # each save follows its node's completed event
    kinds = [("saved" if isinstance(e, CheckpointSaved) else e.phase) for e in events
             if isinstance(e, (CheckpointSaved, NodeEvent))]
    assert kinds == ["started", "completed", "saved"] * 3

    quiet = InMemoryCheckpointer()
    quiet.emit_save_events = False  # type: ignore[attr-defined]
    events.clear()
    await _linear(quiet, {"now": False}).invoke({}, observers=[events.append])
    assert not [e for e in events if isinstance(e, CheckpointSaved)]


async def test_a_tool_that_suspends_suspends_its_tool_node() -> None:
    """A tool's suspend() (raised in the tool node's task group) pauses the run at the
    tool node, cancelling the sibling call; with mark_node_completed=False the calls run
    again on resume."""
    from openarmature_nodes.llm import AssistantMessage, ToolCall
    from openarmature_nodes.nodes import AgentState, ToolNode, tool

    approved = {"ok": False}

    @tool
    async def wire_money(amount: int) -> str:
        """Send money (needs a human's approval)."""
        if not approved["ok"]:
            await suspend("approve-wire", metadata={"amount": amount},
                          mark_node_completed=False)
        return f"sent {amount}"

    @tool
    async def lookup(city: str) -> str:
        """A sibling call: waits forever until approved (then it is cancelled)."""
        if not approved["ok"]:
            await anyio.sleep_forever()
        return city

    calls = [ToolCall(id="c1", name="wire_money", arguments={"amount": 5}),
             ToolCall(id="c2", name="lookup", arguments={"city": "Paris"})]
    graph = (GraphBuilder(AgentState).add_node("tools", ToolNode([wire_money, lookup]))
             .add_edge("tools", END).set_entry("tools")
             .with_checkpointer(InMemoryCheckpointer()).compile())
    first = await graph.run({"messages": [AssistantMessage(content="", tool_calls=calls)]})
    assert isinstance(first, Suspended)
    assert first.node_name == "tools" and first.descriptor.metadata == {"amount": 5}
    approved["ok"] = True
    done = await graph.run(None, resume_invocation=first.invocation_id, signal_payload={})
    assert [m.content for m in done.state.messages[1:]] == ["sent 5", "Paris"]
