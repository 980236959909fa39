"""Fan-out (pipeline-utilities §9) run time: bound, ordering, error policies,
cancellation, middleware layering, degrade slots.

Every scenario runs on asyncio and trio, and (through the ``observed``
fixture) both through the unobserved fast path and with an observer attached.
No sleeps: instances synchronize on anyio Events.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import anyio
import msgspec
import pytest

from openarmature_nodes.graph import (
    END,
    CompiledGraph,
    FanOutEmpty,
    FanOutInvalidConcurrency,
    FanOutInvalidCount,
    FanOutNullSlotWarning,
    GraphBuilder,
    NodeEvent,
    NodeException,
    ReducerError,
    State,
    append,
    concat_flatten,
)
from openarmature_nodes.middleware import (
    FailureIsolationEvent,
    FailureIsolationMiddleware,
    RetryMiddleware,
)
from openarmature_nodes.retrying import constant_backoff

pytestmark = pytest.mark.anyio


class Item(State):
    x: int = 0
    result: int = 0
    note: str = ""


class Parent(State):
    items: list[int] = msgspec.field(default_factory=list)
    results: Annotated[list[Any], append] = msgspec.field(default_factory=list)
    notes: Annotated[list[Any], append] = msgspec.field(default_factory=list)
    last_note: str = ""
    errors: Annotated[list[dict[str, str]], append] = msgspec.field(default_factory=list)
    processed: int = -1
    width: int = 3


Body = Callable[[Item], Awaitable[dict[str, Any]]]


def leaf(body: Body) -> CompiledGraph[Item]:
    builder = GraphBuilder(Item).add_node("work", body).add_edge("work", END)
    return builder.set_entry("work").compile()


def fan_out(body: Body, **config: Any) -> CompiledGraph[Parent]:
    config.setdefault("items_field", "items")
    config.setdefault("item_field", "x")
    config.setdefault("collect_field", "result")
    config.setdefault("target_field", "results")
    builder = GraphBuilder(Parent).add_fan_out_node("fan", leaf(body), **config)
    return builder.add_edge("fan", END).set_entry("fan").compile()


@pytest.fixture(params=["plain", "observed"])
def observed(request: pytest.FixtureRequest) -> bool:
    return request.param == "observed"


class Events:
    def __init__(self) -> None:
        self.events: list[Any] = []

    async def __call__(self, event: Any) -> None:
        self.events.append(event)

    def nodes(self, name: str) -> list[NodeEvent]:
        return [e for e in self.events if isinstance(e, NodeEvent) and e.node_name == name]


async def run(graph: CompiledGraph[Parent], state: Parent, observed: bool) -> tuple[Parent, Events]:
    rec = Events()
    final = await graph.invoke(state, observers=[rec] if observed else [])
    return final, rec


async def double(s: Item) -> dict[str, Any]:
    return {"result": s.x * 2}


# --- the bound ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bound", [1, 7, 64])
async def test_bound_holds_with_1000_instances(observed: bool, bound: int) -> None:
    gauge = {"now": 0, "max": 0}
    full = anyio.Event()  # set once `bound` instances are in flight at the same time

    async def body(s: Item) -> dict[str, Any]:
        gauge["now"] += 1
        gauge["max"] = max(gauge["max"], gauge["now"])
        if gauge["now"] == bound:
            full.set()
        await full.wait()  # the first `bound` instances wait for each other
        await anyio.lowlevel.checkpoint()  # then give any excess instance the chance to start
        await anyio.lowlevel.checkpoint()
        gauge["now"] -= 1
        return {"result": s.x}

    graph = fan_out(body, concurrency=bound)
    with anyio.fail_after(10):
        final, _ = await run(graph, Parent(items=list(range(1000))), observed)
    assert final.results == list(range(1000))
    assert gauge["max"] == bound  # reached, never exceeded


async def test_concurrency_none_runs_all_at_once(observed: bool) -> None:
    n = 50
    arrived = 0
    everyone = anyio.Event()

    async def body(s: Item) -> dict[str, Any]:
        nonlocal arrived
        arrived += 1
        if arrived == n:
            everyone.set()
        await everyone.wait()  # deadlocks unless all n run concurrently
        return {"result": s.x}

    with anyio.fail_after(10):
        graph = fan_out(body, concurrency=None)
        final, _ = await run(graph, Parent(items=list(range(n))), observed)
    assert final.results == list(range(n))


async def test_concurrency_and_count_callables_resolve_once_at_entry(observed: bool) -> None:
    calls = {"count": 0, "conc": 0}
    gauge = {"now": 0, "max": 0}

    def count(state: Parent) -> int:
        calls["count"] += 1
        return state.width + 2

    def conc(state: Parent) -> int:
        calls["conc"] += 1
        return 2

    async def body(s: Item) -> dict[str, Any]:
        gauge["now"] += 1
        gauge["max"] = max(gauge["max"], gauge["now"])
        await anyio.lowlevel.checkpoint()
        gauge["now"] -= 1
        return {"result": 1}

    graph = fan_out(body, items_field=None, item_field=None, count=count, concurrency=conc,
                    count_field="processed")
    final, _ = await run(graph, Parent(), observed)
    assert final.results == [1] * 5 and final.processed == 5
    assert calls == {"count": 1, "conc": 1} and gauge["max"] == 2


# --- ordering -------------------------------------------------------------------------------------


async def test_fan_in_is_in_index_order_not_completion_order(observed: bool) -> None:
    n = 6
    done = [anyio.Event() for _ in range(n + 1)]
    done[n].set()
    finished: list[int] = []

    async def body(s: Item) -> dict[str, Any]:
        await done[s.x + 1].wait()  # instance i finishes only after instance i+1
        finished.append(s.x)
        done[s.x].set()
        return {"result": s.x * 10}

    with anyio.fail_after(10):
        graph = fan_out(body, concurrency=None)
        final, _ = await run(graph, Parent(items=list(range(n))), observed)
    assert finished == list(reversed(range(n)))
    assert final.results == [i * 10 for i in range(n)]


async def test_instances_start_in_index_order() -> None:
    async def body(s: Item) -> dict[str, Any]:
        await anyio.lowlevel.checkpoint()
        return {"result": s.x}

    rec = Events()
    await fan_out(body, concurrency=8).invoke(Parent(items=list(range(40))), observers=[rec])
    started = [e.fan_out_index for e in rec.nodes("work") if e.phase == "started"]
    assert started == list(range(40))


async def test_instance_events_carry_lineage_and_fan_out_config() -> None:
    rec = Events()
    await fan_out(double).invoke(Parent(items=[1, 2]), observers=[rec])
    own = rec.nodes("fan")
    assert [e.phase for e in own] == ["started", "completed"]
    for e in own:
        assert e.fan_out_config is not None and e.fan_out_index is None
        assert (e.fan_out_config.item_count, e.fan_out_config.concurrency) == (2, 10)
    inner = rec.nodes("work")
    assert {(e.fan_out_index, e.fan_out_index_chain, e.namespace) for e in inner} == {
        (0, (0,), ("fan", "work")), (1, (1,), ("fan", "work")),
    }
    assert all(e.fan_out_config is None and len(e.parent_states) == 1 for e in inner)


# --- error policies -------------------------------------------------------------------------------


async def test_fail_fast_cancels_siblings_and_leaves_no_task(observed: bool) -> None:
    n = 20
    entered = 0
    cleaned = 0
    all_in = anyio.Event()
    never = anyio.Event()

    async def body(s: Item) -> dict[str, Any]:
        nonlocal entered, cleaned
        entered += 1
        if entered == n:
            all_in.set()
        try:
            if s.x == 13:
                await all_in.wait()
                raise ValueError("instance 13 failed")
            await never.wait()  # only cancellation gets the others out
            return {"result": s.x}
        finally:
            cleaned += 1

    before = len(anyio.get_running_tasks())
    with anyio.fail_after(10), pytest.raises(NodeException) as info:
        await run(fan_out(body, concurrency=None), Parent(items=list(range(n))), observed)
    err = info.value
    assert err.node_name == "fan" and err.recoverable_state == Parent(items=list(range(n)))
    assert isinstance(err.__cause__, NodeException) and err.__cause__.node_name == "work"
    assert str(err.__cause__.__cause__) == "instance 13 failed"
    assert cleaned == entered == n  # every sibling ran its cleanup
    assert len(anyio.get_running_tasks()) == before


async def test_collect_gathers_every_error_with_its_index(observed: bool) -> None:
    async def body(s: Item) -> dict[str, Any]:
        if s.x % 3 == 0:
            raise RuntimeError(f"bad {s.x}")
        return {"result": s.x}

    graph = fan_out(body, error_policy="collect", errors_field="errors", concurrency=4)
    final, _ = await run(graph, Parent(items=list(range(10))), observed)
    assert final.results == [1, 2, 4, 5, 7, 8]
    assert final.errors == [
        {"fan_out_index": str(i), "category": "node_exception"} for i in (0, 3, 6, 9)
    ]


async def test_collect_with_custom_error_record() -> None:
    async def body(s: Item) -> dict[str, Any]:
        raise RuntimeError(f"bad {s.x}")

    def record(i: int, exc: Exception) -> dict[str, str]:
        return {"i": str(i), "root": str(exc.__cause__)}

    final = await fan_out(body, error_policy="collect", errors_field="errors",
                          error_record=record).invoke(Parent(items=[4, 5]))
    assert final.results == [] and final.errors == [
        {"i": "0", "root": "bad 4"}, {"i": "1", "root": "bad 5"},
    ]


async def test_cancelled_invocation_cancels_every_instance(observed: bool) -> None:
    n = 30
    entered = 0
    cancelled = 0
    all_in = anyio.Event()
    never = anyio.Event()

    async def body(s: Item) -> dict[str, Any]:
        nonlocal entered, cancelled
        entered += 1
        if entered == n:
            all_in.set()
        try:
            await never.wait()
        except anyio.get_cancelled_exc_class():
            cancelled += 1
            raise
        return {"result": s.x}

    graph = fan_out(body, concurrency=None)
    returned = False
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:

            async def invoke() -> None:
                nonlocal returned
                await run(graph, Parent(items=list(range(n))), observed)
                returned = True

            tg.start_soon(invoke)
            await all_in.wait()
            tg.cancel_scope.cancel()
    assert not returned and cancelled == n


# --- empty, invalid -------------------------------------------------------------------------------


async def test_empty_raises_fan_out_empty_by_default(observed: bool) -> None:
    rec = Events()
    with pytest.raises(NodeException) as info:
        await fan_out(double).invoke(Parent(items=[]), observers=[rec] if observed else [])
    assert isinstance(info.value.__cause__, FanOutEmpty)
    assert info.value.__cause__.category == "fan_out_empty"
    if observed:
        _, completed = rec.nodes("fan")
        assert completed.error is not None and completed.fan_out_config is not None
        assert completed.fan_out_config.item_count == 0


async def test_empty_noop_writes_count_field(observed: bool) -> None:
    final, _ = await run(fan_out(double, on_empty="noop", count_field="processed"),
                         Parent(items=[], results=[9]), observed)
    assert final.results == [9] and final.processed == 0


@pytest.mark.parametrize(
    ("config", "cause"),
    [
        ({"items_field": None, "item_field": None, "count": lambda s: -1}, FanOutInvalidCount),
        ({"concurrency": lambda s: 0}, FanOutInvalidConcurrency),
    ],
)
async def test_invalid_runtime_resolution(config: dict[str, Any], cause: type) -> None:
    with pytest.raises(NodeException) as info:
        await fan_out(double, **config).invoke(Parent(items=[1]))
    assert isinstance(info.value.__cause__, cause)


# --- middleware layering --------------------------------------------------------------------------


async def test_instance_retry_reruns_only_that_instance_with_its_attempt_index() -> None:
    runs: dict[int, int] = {}

    async def body(s: Item) -> dict[str, Any]:
        runs[s.x] = runs.get(s.x, 0) + 1
        if s.x == 2 and runs[s.x] < 3:
            raise ConnectionError("flaky")
        return {"result": s.x}

    retry = RetryMiddleware(max_attempts=3, backoff=constant_backoff(0),
                            classifier=lambda exc: True)
    rec = Events()
    final = await fan_out(body, instance_middleware=[retry]).invoke(
        Parent(items=[1, 2, 3]), observers=[rec]
    )
    assert final.results == [1, 2, 3] and runs == {1: 1, 2: 3, 3: 1}
    seen = {(e.fan_out_index, e.attempt_index, e.phase, e.error is None)
            for e in rec.nodes("work")}
    assert seen == {
        (0, 0, "started", True), (0, 0, "completed", True),
        (2, 0, "started", True), (2, 0, "completed", True),
        (1, 0, "started", True), (1, 0, "completed", False),
        (1, 1, "started", True), (1, 1, "completed", False),
        (1, 2, "started", True), (1, 2, "completed", True),
    }


async def test_outer_middleware_sees_one_dispatch_instance_middleware_sees_each() -> None:
    outer: list[Any] = []
    per_instance: list[Any] = []

    async def outer_mw(state: Any, nxt: Any) -> Any:
        update = await nxt(state)
        outer.append(update)
        return update

    async def inst_mw(state: Any, nxt: Any) -> Any:
        update = await nxt(state)
        per_instance.append((state.x, update))
        return update

    builder = GraphBuilder(Parent, middleware=[outer_mw]).add_fan_out_node(
        "fan", leaf(double), items_field="items", item_field="x", collect_field="result",
        target_field="results", instance_middleware=[inst_mw],
    )
    graph = builder.add_edge("fan", END).set_entry("fan").compile()
    final = await graph.invoke(Parent(items=[1, 2]))
    assert final.results == [2, 4]
    assert outer == [{"results": [2, 4]}]
    assert sorted(per_instance) == [(1, {"result": 2}), (2, {"result": 4})]


# --- degrade slots and extra outputs --------------------------------------------------------------


async def test_degraded_instance_keeps_its_slot_and_reports_its_index() -> None:
    async def body(s: Item) -> dict[str, Any]:
        if s.x == 2:
            raise RuntimeError("down")
        return {"result": s.x, "note": f"n{s.x}"}

    isolate = FailureIsolationMiddleware(degraded_update={"result": -1}, event_name="degraded")
    rec = Events()
    final = await fan_out(body, instance_middleware=[isolate],
                          extra_outputs={"notes": "note", "last_note": "note"}).invoke(
        Parent(items=[1, 2, 3]), observers=[rec]
    )
    assert final.results == [1, -1, 3]
    assert final.notes == ["n1", None, "n3"]  # the degraded slot is null, not dropped
    assert final.last_note == "n3"  # last_write_wins gets the last instance's value
    (event,) = [e for e in rec.events if isinstance(e, FailureIsolationEvent)]
    assert event.lineage.fan_out_index == 1 and event.caught_exception.category is None
    assert event.caught_exception.links[0].carrier  # caught through the instance's carrier


async def test_callable_degrade_without_collect_field_is_a_null_slot() -> None:
    async def body(s: Item) -> dict[str, Any]:
        raise RuntimeError("down")

    isolate = FailureIsolationMiddleware(degraded_update=lambda s: {"note": f"x{s.x}"},
                                         event_name="degraded")
    graph = fan_out(body, instance_middleware=[isolate], extra_outputs={"notes": "note"})
    with pytest.warns(FanOutNullSlotWarning, match="instance"):
        final = await graph.invoke(Parent(items=[5]))
    assert final.results == [None] and final.notes == ["x5"]


async def test_null_slot_into_strict_reducer_is_a_reducer_error() -> None:
    class Strict(State):
        items: list[int] = msgspec.field(default_factory=list)
        results: Annotated[list[Any], concat_flatten] = msgspec.field(default_factory=list)

    async def body(s: Item) -> dict[str, Any]:
        raise RuntimeError("down")

    isolate = FailureIsolationMiddleware(degraded_update=lambda s: {"note": "x"},
                                         event_name="degraded")
    graph = (
        GraphBuilder(Strict)
        .add_fan_out_node("fan", leaf(body), items_field="items", item_field="x",
                     collect_field="result", target_field="results",
                     instance_middleware=[isolate])
        .add_edge("fan", END).set_entry("fan").compile()
    )
    with pytest.raises(ReducerError) as info:
        await graph.invoke(Strict(items=[1]))
    assert info.value.node_name == "fan" and info.value.field == "results"


async def test_async_callable_instances(observed: bool) -> None:
    async def enrich(inst: dict[str, Any]) -> dict[str, Any]:
        return {"result": inst["x"] + inst["w"]}

    builder = GraphBuilder(Parent).add_fan_out_node(
        "fan", enrich, items_field="items", item_field="x", collect_field="result",
        target_field="results", inputs={"w": "width"},
    )
    graph = builder.add_edge("fan", END).set_entry("fan").compile()
    final, rec = await run(graph, Parent(items=[1, 2], width=10), observed)
    assert final.results == [11, 12]
    if observed:
        inner = [e for e in rec.nodes("fan") if len(e.namespace) == 2]
        assert {(e.fan_out_index, e.phase) for e in inner} == {
            (0, "started"), (0, "completed"), (1, "started"), (1, "completed"),
        }


async def test_nested_fan_out_chains() -> None:
    class Mid(State):
        inner: list[int] = msgspec.field(default_factory=list)
        out: Annotated[list[int], append] = msgspec.field(default_factory=list)

    class Outer(State):
        groups: list[list[int]] = msgspec.field(default_factory=list)
        all: Annotated[list[list[int]], append] = msgspec.field(default_factory=list)

    mid = (
        GraphBuilder(Mid)
        .add_fan_out_node("in_fan", leaf(double), items_field="inner", item_field="x",
                     collect_field="result", target_field="out")
        .add_edge("in_fan", END).set_entry("in_fan").compile()
    )
    graph = (
        GraphBuilder(Outer)
        .add_fan_out_node("out_fan", mid, items_field="groups", item_field="inner",
                     collect_field="out", target_field="all")
        .add_edge("out_fan", END).set_entry("out_fan").compile()
    )
    rec = Events()
    final = await graph.invoke(Outer(groups=[[1, 2], [3]]), observers=[rec])
    assert final.all == [[2, 4], [6]]
    chains = {e.fan_out_index_chain for e in rec.nodes("work")}
    assert chains == {(0, 0), (0, 1), (1, 0)}


async def test_retry_around_the_fan_out_node_reruns_every_instance() -> None:
    runs: dict[int, int] = {}

    async def body(s: Item) -> dict[str, Any]:
        runs[s.x] = runs.get(s.x, 0) + 1
        if s.x == 1 and runs[s.x] == 1:
            raise ConnectionError("first pass fails")
        return {"result": s.x}

    retry = RetryMiddleware(max_attempts=2, backoff=constant_backoff(0),
                            classifier=lambda exc: True)
    builder = GraphBuilder(Parent).add_fan_out_node(
        "fan", leaf(body), middleware=[retry], items_field="items", item_field="x",
        collect_field="result", target_field="results", concurrency=1,
    )
    graph = builder.add_edge("fan", END).set_entry("fan").compile()
    rec = Events()
    final = await graph.invoke(Parent(items=[0, 1, 2]), observers=[rec])
    assert final.results == [0, 1, 2] and runs == {0: 2, 1: 2, 2: 1}
    own = [(e.phase, e.attempt_index, e.error is None, e.fan_out_config is not None)
           for e in rec.nodes("fan")]
    assert own == [("started", 0, True, True), ("completed", 0, False, True),
                   ("started", 1, True, True), ("completed", 1, True, True)]
