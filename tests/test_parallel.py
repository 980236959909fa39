"""Parallel branches (pipeline-utilities §11) run time: concurrency, insertion-order
fan-in, when-skips, fail_fast / collect, branch middleware, events."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import anyio
import msgspec
import pytest

from openarmature_nodes.graph import (
    END,
    Branch,
    CompiledGraph,
    GraphBuilder,
    NodeEvent,
    ParallelBranchFailed,
    State,
    append,
    merge,
)
from openarmature_nodes.middleware import FailureIsolationMiddleware, RetryMiddleware
from openarmature_nodes.retrying import constant_backoff

pytestmark = pytest.mark.anyio


class Parent(State):
    doc: str = "text"
    a: int = 0
    b: int = 0
    tags: Annotated[list[str], append] = msgspec.field(default_factory=list)
    meta: Annotated[dict[str, str], merge] = msgspec.field(default_factory=dict)
    errors: Annotated[list[dict[str, str]], append] = msgspec.field(default_factory=list)
    go: bool = False


class Sub(State):
    text: str = ""
    n: int = 0
    tags: list[str] = msgspec.field(default_factory=list)


def sub(body: Callable[[Sub], Awaitable[dict[str, Any]]]) -> CompiledGraph[Sub]:
    return GraphBuilder(Sub).add_node("s", body).add_edge("s", END).set_entry("s").compile()


def graph(
    branches: dict[str, Any], *, middleware: Any = (), **config: Any
) -> CompiledGraph[Parent]:
    builder = GraphBuilder(Parent).add_parallel_branches_node("pb", branches, middleware=middleware,
                                                         **config)
    return builder.add_edge("pb", END).set_entry("pb").compile()


@pytest.fixture(params=["plain", "observed"])
def observed(request: pytest.FixtureRequest) -> bool:
    return request.param == "observed"


class Events:
    def __init__(self) -> None:
        self.events: list[NodeEvent] = []

    async def __call__(self, event: Any) -> None:
        if isinstance(event, NodeEvent):
            self.events.append(event)


async def run(g: CompiledGraph[Parent], state: Parent, observed: bool) -> tuple[Parent, Events]:
    rec = Events()
    return await g.invoke(state, observers=[rec] if observed else []), rec


async def test_branches_run_concurrently_and_merge_in_declaration_order(observed: bool) -> None:
    gate = {name: anyio.Event() for name in ("x", "y", "z")}

    def leg(name: str, release: str | None) -> Any:
        async def call(state: Parent) -> dict[str, Any]:
            await gate[name].wait()  # z releases y releases x: completion order z, y, x
            if release is not None:
                gate[release].set()
            return {"tags": [name], "meta": {"k": name}}

        return call

    gate["z"].set()
    g = graph({"x": leg("x", None), "y": leg("y", "x"), "z": leg("z", "y")})
    with anyio.fail_after(10):
        final, _ = await run(g, Parent(), observed)
    assert final.tags == ["x", "y", "z"]  # declaration order, not completion order
    assert final.meta == {"k": "z"}  # the last-declared branch wins a merge key


async def test_subgraph_branch_projection_and_call_branch(observed: bool) -> None:
    async def count(s: Sub) -> dict[str, Any]:
        return {"n": len(s.text)}

    async def call(state: Parent) -> dict[str, Any]:
        return {"b": 7}

    g = graph({
        "len": Branch(subgraph=sub(count), inputs={"text": "doc"}, outputs={"a": "n"}),
        "seven": call,
    })
    final, rec = await run(g, Parent(doc="hello"), observed)
    assert (final.a, final.b) == (5, 7)
    if observed:
        inner = [(e.namespace, e.branch_name, e.branch_name_chain, e.phase) for e in rec.events
                 if len(e.namespace) > 1]
        assert sorted(inner) == sorted([
            (("pb", "s"), "len", ("len",), "started"), (("pb", "s"), "len", ("len",), "completed"),
            (("pb", "seven"), "seven", ("seven",), "started"),
            (("pb", "seven"), "seven", ("seven",), "completed"),
        ])
        own = [e for e in rec.events if e.node_name == "pb"]
        assert all(e.parallel_branches_config is not None for e in own) and len(own) == 2


async def test_when_skips_branch_entirely(observed: bool) -> None:
    ran: list[str] = []

    def leg(name: str) -> Any:
        async def call(state: Parent) -> dict[str, Any]:
            ran.append(name)
            return {"tags": [name]}

        return call

    g = graph({"gated": Branch(call=leg("gated"), when=lambda s: s.go), "free": leg("free")})
    final, rec = await run(g, Parent(), observed)
    assert final.tags == ["free"] and ran == ["free"]
    if observed:
        assert {e.branch_name for e in rec.events if e.branch_name} == {"free"}
        cfg = rec.events[0].parallel_branches_config
        assert cfg is not None and cfg.branch_names == ("gated", "free") and cfg.branch_count == 1
    final, _ = await run(g, Parent(go=True), observed)
    assert final.tags == ["gated", "free"]


async def test_all_skipped_is_a_no_op() -> None:
    async def call(state: Parent) -> dict[str, Any]:
        return {"a": 1}

    final = await graph({"only": Branch(call=call, when=lambda s: False)}).invoke(Parent())
    assert final == Parent()


async def test_fail_fast_raises_branch_failed_and_cancels_the_rest(observed: bool) -> None:
    started = anyio.Event()
    cleaned: list[str] = []

    async def slow(state: Parent) -> dict[str, Any]:
        try:
            started.set()
            await anyio.Event().wait()
            return {"a": 1}
        finally:
            cleaned.append("slow")

    async def fast_ok(state: Parent) -> dict[str, Any]:
        return {"b": 2}

    async def failing(state: Parent) -> dict[str, Any]:
        await started.wait()
        raise LookupError("nope")

    before = len(anyio.get_running_tasks())
    with anyio.fail_after(10), pytest.raises(ParallelBranchFailed) as info:
        await run(graph({"ok": fast_ok, "slow": slow, "bad": failing}), Parent(), observed)
    err = info.value
    assert err.category == "parallel_branches_branch_failed" and err.branch_name == "bad"
    assert err.node_name == "pb" and err.recoverable_state == Parent()  # nothing merged
    assert str(err.__cause__.__cause__) == "nope"  # branch carrier -> the callable's error
    assert cleaned == ["slow"] and len(anyio.get_running_tasks()) == before


async def test_collect_records_branch_failures(observed: bool) -> None:
    async def bad(state: Parent) -> dict[str, Any]:
        raise LookupError("nope")

    async def good(state: Parent) -> dict[str, Any]:
        return {"a": 1}

    g = graph({"bad": bad, "good": good}, error_policy="collect", errors_field="errors")
    final, _ = await run(g, Parent(), observed)
    assert final.a == 1
    assert final.errors == [{"branch_name": "bad", "category": "node_exception"}]


async def test_branch_retry_is_per_branch_with_attempt_index() -> None:
    tries = {"n": 0}

    async def flaky(s: Sub) -> dict[str, Any]:
        tries["n"] += 1
        if tries["n"] == 1:
            raise ConnectionError("blip")
        return {"n": 1}

    async def steady(s: Sub) -> dict[str, Any]:
        return {"n": 2}

    retry = RetryMiddleware(max_attempts=3, backoff=constant_backoff(0), classifier=lambda e: True)
    g = graph({
        "f": Branch(subgraph=sub(flaky), outputs={"a": "n"}, middleware=[retry]),
        "s": Branch(subgraph=sub(steady), outputs={"b": "n"}),
    })
    rec = Events()
    final = await g.invoke(Parent(), observers=[rec])
    assert (final.a, final.b) == (1, 2)
    seen = {(e.branch_name, e.attempt_index) for e in rec.events if e.branch_name}
    assert seen == {("f", 0), ("f", 1), ("s", 0)}


async def test_branch_degrade_skips_uncovered_outputs() -> None:
    async def broken(s: Sub) -> dict[str, Any]:
        raise RuntimeError("down")

    isolate = FailureIsolationMiddleware(degraded_update={"tags": ["fallback"]},
                                         event_name="iso")
    g = graph({"x": Branch(subgraph=sub(broken), outputs={"a": "n", "tags": "tags"},
                           middleware=[isolate])})
    final = await g.invoke(Parent(a=3))
    assert final.a == 3 and final.tags == ["fallback"]


async def test_parent_middleware_wraps_the_whole_node_once() -> None:
    seen: list[Any] = []

    async def outer(state: Any, nxt: Any) -> Any:
        update = await nxt(state)
        seen.append(update)
        return update

    async def one(state: Parent) -> dict[str, Any]:
        return {"tags": ["1"]}

    async def two(state: Parent) -> dict[str, Any]:
        return {"tags": ["2"]}

    final = await graph({"one": one, "two": two}, middleware=[outer]).invoke(Parent())
    assert seen == [{"tags": ["1", "2"]}] and final.tags == ["1", "2"]
