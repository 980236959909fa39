"""Retry attempt indexes on failure isolation and fan-out events (graph-engine §6
``attempt_index``; pipeline-utilities §6.1 / §6.3 composition, §9.7).

- A failure-isolation event's lineage reports the attempt of the wrapped node
  (or unit) that failed, the same ``attempt_index`` as that attempt's
  ``completed`` event, not the index the retry restored on its way out.
- Inner events of fan-out instances run under a retry carry the retry's
  attempt index.

Every test runs on asyncio and trio.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import pytest

from openarmature_nodes.graph import END, GraphBuilder, NodeEvent, State, append
from openarmature_nodes.middleware import (
    FailureIsolationEvent,
    FailureIsolationMiddleware,
    RetryMiddleware,
)
from openarmature_nodes.retrying import constant_backoff

pytestmark = pytest.mark.anyio


class Flat(State):
    out: str = ""


class Item(State):
    x: int = 0
    result: int = -1


class Parent(State):
    items: list[int] = msgspec.field(default_factory=list)
    results: Annotated[list[Any], append] = msgspec.field(default_factory=list)


class Recorder:
    def __init__(self) -> None:
        self.events: list[Any] = []

    async def __call__(self, event: Any) -> None:
        self.events.append(event)

    def isolated(self) -> list[FailureIsolationEvent]:
        return [e for e in self.events if isinstance(e, FailureIsolationEvent)]

    def nodes(self, name: str) -> list[NodeEvent]:
        return [e for e in self.events if isinstance(e, NodeEvent) and e.node_name == name]


def retry(n: int) -> RetryMiddleware:
    return RetryMiddleware(max_attempts=n, backoff=constant_backoff(0), classifier=lambda e: True)


def isolate() -> FailureIsolationMiddleware:
    return FailureIsolationMiddleware(degraded_update={"out": "degraded"}, event_name="degraded")


async def always_fails(state: Any) -> dict[str, Any]:
    raise ConnectionError("down")


async def run_flat(middleware: list[Any]) -> Recorder:
    graph = (GraphBuilder(Flat).add_node("n", always_fails, middleware=middleware)
             .add_edge("n", END).set_entry("n").compile())
    rec = Recorder()
    async with graph:
        final = await graph.invoke(Flat(), observers=[rec])
        await graph.drain()
    assert final.out == "degraded"
    return rec


def degraded_attempt(rec: Recorder, node: str) -> int:
    """The attempt whose failure was degraded: the engine saw it return the degraded
    update, so its ``completed`` event is the node's last and carries ``post_state``."""
    last = [e for e in rec.nodes(node) if e.phase == "completed"][-1]
    assert last.error is None and last.post_state is not None
    return last.attempt_index


async def test_isolation_outside_retry_reports_the_attempt_that_failed() -> None:
    rec = await run_flat([isolate(), retry(3)])
    (event,) = rec.isolated()
    assert [e.attempt_index for e in rec.nodes("n") if e.phase == "completed"] == [0, 1, 2]
    assert event.lineage.attempt_index == 2 == degraded_attempt(rec, "n")
    assert event.attempt_index == 2 and event.namespace == ("n",)


async def test_stacked_retries_report_the_innermost_counter() -> None:
    # outer retry: 2 attempts, each running the inner retry's 3 attempts; the node's
    # events carry the inner counter (graph-engine §6), so the event does too.
    rec = await run_flat([isolate(), retry(2), retry(3)])
    (event,) = rec.isolated()
    assert [e.attempt_index for e in rec.nodes("n") if e.phase == "completed"] == [0, 1, 2] * 2
    assert event.attempt_index == 2 == degraded_attempt(rec, "n")


async def test_isolation_without_retry_and_inside_retry_report_attempt_zero() -> None:
    (alone,) = (await run_flat([isolate()])).isolated()
    assert alone.attempt_index == 0
    # isolation inside retry degrades the first attempt: retry never re-runs
    rec = await run_flat([retry(3), isolate()])
    (inside,) = rec.isolated()
    assert inside.attempt_index == 0 == degraded_attempt(rec, "n")


async def test_non_retryable_failure_reports_the_attempt_it_stopped_at() -> None:
    calls = {"n": 0}

    async def transient_then_fatal(state: Any) -> dict[str, Any]:
        calls["n"] += 1
        raise (ConnectionError if calls["n"] == 1 else ValueError)("boom")

    only_connection = RetryMiddleware(max_attempts=5, backoff=constant_backoff(0),
                                      classifier=lambda e: isinstance(e, ConnectionError))
    graph = (GraphBuilder(Flat).add_node("n", transient_then_fatal,
                                         middleware=[isolate(), only_connection])
             .add_edge("n", END).set_entry("n").compile())
    rec = Recorder()
    async with graph:
        await graph.invoke(Flat(), observers=[rec])
        await graph.drain()
    (event,) = rec.isolated()
    assert event.attempt_index == 1 == degraded_attempt(rec, "n")


def fan_out_graph(body: Any, *, instance_middleware: list[Any], **config: Any) -> Any:
    leaf = GraphBuilder(Item).add_node("work", body).add_edge("work", END).set_entry("work")
    config.setdefault("items_field", "items")
    config.setdefault("item_field", "x")
    builder = GraphBuilder(Parent).add_fan_out_node(
        "fan", leaf.compile(), collect_field="result", target_field="results",
        instance_middleware=instance_middleware, **config,
    )
    return builder.add_edge("fan", END).set_entry("fan").compile()


async def test_instance_isolation_outside_instance_retry_reports_each_instances_last_attempt(
) -> None:
    async def body(s: Item) -> dict[str, Any]:
        if s.x == 20:
            raise ConnectionError("instance down")
        return {"result": s.x}

    degrade = FailureIsolationMiddleware(degraded_update={"result": -9}, event_name="inst")
    graph = fan_out_graph(body, instance_middleware=[degrade, retry(3)])
    rec = Recorder()
    async with graph:
        final = await graph.invoke(Parent(items=[10, 20, 30]), observers=[rec])
        await graph.drain()
    assert final.results == [10, -9, 30]
    (event,) = rec.isolated()
    assert (event.fan_out_index, event.attempt_index) == (1, 2)
    inner = [(e.fan_out_index, e.attempt_index) for e in rec.nodes("work")
             if e.phase == "completed" and e.error is not None]
    assert inner == [(1, 0), (1, 1), (1, 2)]


async def test_node_isolation_around_a_fan_out_reports_the_fan_out_nodes_attempt() -> None:
    """An instance retry re-runs the instance, not the fan-out node: an isolation
    around the fan-out node reports that node's own attempt (0)."""

    async def body(s: Item) -> dict[str, Any]:
        raise ConnectionError("every instance fails")

    leaf = GraphBuilder(Item).add_node("work", body).add_edge("work", END).set_entry("work")
    degrade = FailureIsolationMiddleware(degraded_update={"results": [-1]}, event_name="fan")
    graph = (GraphBuilder(Parent)
             .add_fan_out_node("fan", leaf.compile(), middleware=[degrade],
                               items_field="items", item_field="x", collect_field="result",
                               target_field="results", instance_middleware=[retry(3)])
             .add_edge("fan", END).set_entry("fan").compile())
    rec = Recorder()
    async with graph:
        final = await graph.invoke(Parent(items=[1]), observers=[rec])
        await graph.drain()
    assert final.results == [-1]
    (event,) = rec.isolated()
    assert [e.attempt_index for e in rec.nodes("work") if e.phase == "completed"] == [0, 1, 2]
    assert event.namespace == ("fan",) and event.attempt_index == 0 == degraded_attempt(rec, "fan")


async def test_branch_isolation_outside_branch_retry_reports_the_branchs_last_attempt() -> None:
    from openarmature_nodes.graph import Branch

    async def down(state: Any) -> dict[str, Any]:
        raise ConnectionError("branch down")

    async def fine(state: Any) -> dict[str, Any]:
        return {"out": "fine"}

    degrade = FailureIsolationMiddleware(degraded_update={"out": "degraded"}, event_name="br")
    graph = (GraphBuilder(Flat)
             .add_parallel_branches_node("pb", {
                 "bad": Branch(call=down, middleware=(degrade, retry(3))),
                 "good": Branch(call=fine),
             })
             .add_edge("pb", END).set_entry("pb").compile())
    rec = Recorder()
    async with graph:
        await graph.invoke(Flat(), observers=[rec])
        await graph.drain()
    (event,) = rec.isolated()
    assert (event.branch_name, event.attempt_index) == ("bad", 2)
    bad = [e.attempt_index for e in rec.events
           if isinstance(e, NodeEvent) and e.branch_name == "bad" and e.phase == "completed"]
    assert bad[-1] == 2


async def test_count_mode_instances_under_retry_carry_the_retried_attempt_indexes() -> None:
    attempts: dict[int, int] = {}

    async def body(s: Item) -> dict[str, Any]:
        from openarmature_nodes.context import current_lineage

        lineage = current_lineage()
        assert lineage is not None and lineage.fan_out_index is not None
        i = lineage.fan_out_index
        attempts[i] = attempts.get(i, 0) + 1
        if attempts[i] == 1:
            raise ConnectionError(f"instance {i} first try")
        return {"result": i}

    graph = fan_out_graph(body, instance_middleware=[retry(3)], items_field=None,
                          item_field=None, count=3)
    rec = Recorder()
    async with graph:
        final = await graph.invoke(Parent(), observers=[rec])
        await graph.drain()
    assert final.results == [0, 1, 2]
    seen = sorted((e.fan_out_index, e.attempt_index, e.phase, e.error is None)
                  for e in rec.nodes("work"))
    assert seen == sorted(
        (i, a, phase, ok)
        for i in range(3)
        for a, phase, ok in ((0, "started", True), (0, "completed", False),
                             (1, "started", True), (1, "completed", True))
    )
