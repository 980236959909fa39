"""The execution loop (graph-engine §3), runtime errors (§4), determinism (§5), concurrency."""



from __future__ import annotations

from typing import Annotated, Any

import anyio
import msgspec
import pytest

from openarmature_nodes.graph import (
    END,
    EdgeException,
    GraphBuilder,
    NodeException,
    RoutingError,
    State,
    StateValidationError,
    append,
    current_invocation_id,
)

pytestmark = pytest.mark.anyio


class Loop(State):
    turns: int = 0
    log: Annotated[list[str], append] = []


async def work(state: Loop) -> dict[str, Any]:
    return {"turns": state.turns + 1, "log": [f"turn {state.turns}"]}


def loop_graph(limit: int = 3) -> Any:
    return (
        GraphBuilder(Loop)
        .add_node("work", work)
        .add_conditional_edge("work", lambda s: "work" if s.turns < limit else END)
        .set_entry("work")
        .compile()
    )


async def test_conditional_loop_sees_post_update_state() -> None:
    final = await loop_graph(3).invoke(Loop())
    assert final == Loop(turns=3, log=["turn 0", "turn 1", "turn 2"])


async def test_invoke_accepts_a_mapping_and_validates_it() -> None:
    graph = loop_graph(1)
    assert (await graph.invoke({"turns": 0})).turns == 1
    with pytest.raises(StateValidationError, match="unknown field"):
        await graph.invoke({"nope": 1})
    with pytest.raises(StateValidationError) as info:
        await graph.invoke(Loop(turns="x"))  # type: ignore[arg-type]
    assert info.value.fields == ("turns",) and info.value.category == "state_validation_error"


async def test_state_is_immutable() -> None:
    state = Loop()
    with pytest.raises(AttributeError):
        state.turns = 3  # type: ignore[misc]


async def test_async_edge_and_node_named_END() -> None:
    seen: list[str] = []

    def record(name: str) -> Any:
        async def node(state: Loop) -> dict[str, Any]:
            seen.append(name)
            return {"log": [name]}

        return node

    async def route(state: Loop) -> str:
        return "END"  # the NODE named "END", not the sentinel

    graph = (
        GraphBuilder(Loop)
        .add_node("a", record("a"))
        .add_node("END", record("END"))
        .add_conditional_edge("a", route)
        .add_edge("END", END)
        .set_entry("a")
        .compile()
    )
    assert (await graph.invoke(Loop())).log == ["a", "END"]
    assert seen == ["a", "END"]


async def test_node_returning_none_changes_nothing() -> None:
    async def quiet(state: Loop) -> None:
        return None

    graph = GraphBuilder(Loop).add_node("q", quiet).add_edge("q", END).set_entry("q").compile()
    start = Loop(turns=4)
    assert await graph.invoke(start) == start


async def test_node_exception_keeps_pre_merge_state_and_cause() -> None:
    class Boom(Exception):
        pass

    async def fail(state: Loop) -> dict[str, Any]:
        raise Boom("boom")

    async def never(state: Loop) -> dict[str, Any]:
        raise AssertionError("must not run")

    graph = (
        GraphBuilder(Loop)
        .add_node("a", work)
        .add_node("b", fail)
        .add_node("c", never)
        .add_edge("a", "b")
        .add_edge("b", "c")
        .add_edge("c", END)
        .set_entry("a")
        .compile()
    )
    with pytest.raises(NodeException) as info:
        await graph.invoke(Loop())
    err = info.value
    assert err.category == "node_exception" and err.node_name == "b"
    assert isinstance(err.__cause__, Boom) and str(err.__cause__) == "boom"
    assert err.recoverable_state == Loop(turns=1, log=["turn 0"])


async def test_routing_error_keeps_post_merge_state() -> None:
    graph = (
        GraphBuilder(Loop)
        .add_node("a", work)
        .add_conditional_edge("a", lambda s: "ghost")
        .set_entry("a")
        .compile()
    )
    with pytest.raises(RoutingError) as info:
        await graph.invoke(Loop())
    assert info.value.destination == "ghost" and info.value.node_name == "a"
    assert info.value.recoverable_state == Loop(turns=1, log=["turn 0"])


async def test_declared_destinations_restrict_routing() -> None:
    graph = (
        GraphBuilder(Loop)
        .add_node("a", work)
        .add_node("b", work)
        .add_conditional_edge("a", lambda s: "a", destinations=["b", END])
        .add_edge("b", END)
        .set_entry("a")
        .compile()
    )
    with pytest.raises(RoutingError):
        await graph.invoke(Loop())


async def test_edge_exception() -> None:
    def bad_route(state: Loop) -> str:
        raise KeyError("route")

    graph = GraphBuilder(Loop).add_node("a", work).add_conditional_edge("a", bad_route)
    with pytest.raises(EdgeException) as info:
        await graph.set_entry("a").compile().invoke(Loop())
    assert isinstance(info.value.__cause__, KeyError)
    assert info.value.recoverable_state.turns == 1


@pytest.mark.parametrize(
    "update,field",
    [({"nope": 1}, "nope"), ({"turns": "three"}, "turns"), ({"turns": True}, "turns")],
)
async def test_bad_update_is_a_validation_error_naming_node_and_field(
    update: dict[str, Any], field: str
) -> None:
    async def node(state: Loop) -> dict[str, Any]:
        return update

    graph = GraphBuilder(Loop).add_node("n", node).add_edge("n", END).set_entry("n").compile()
    with pytest.raises(StateValidationError) as info:
        await graph.invoke(Loop())
    assert info.value.fields == (field,) and info.value.node_name == "n"
    assert field in str(info.value) and "'n'" in str(info.value)


async def test_non_mapping_update_is_rejected() -> None:
    async def node(state: Loop) -> Any:
        return ["turns", 1]

    graph = GraphBuilder(Loop).add_node("n", node).add_edge("n", END).set_entry("n").compile()
    with pytest.raises(StateValidationError, match="must return a mapping"):
        await graph.invoke(Loop())


async def test_untouched_fields_are_shared_not_copied() -> None:
    class Big(State):
        blob: list[int] = msgspec.field(default_factory=lambda: list(range(1000)))
        n: int = 0

    async def bump(state: Big) -> dict[str, Any]:
        return {"n": state.n + 1}

    graph = GraphBuilder(Big).add_node("b", bump).add_edge("b", END).set_entry("b").compile()
    start = Big()
    final = await graph.invoke(start)
    assert final.n == 1 and final.blob is start.blob


async def test_determinism() -> None:
    graph = loop_graph(4)
    results = [await graph.invoke(Loop()) for _ in range(3)]
    assert results[0] == results[1] == results[2]


async def test_concurrent_invocations_of_one_graph_do_not_interfere() -> None:
    """Twenty runs interleave at every node (each node yields); each keeps its own state."""

    class Count(State):
        start: int = 0
        n: int = 0
        trail: Annotated[list[int], append] = []

    async def step(state: Count) -> dict[str, Any]:
        await anyio.lowlevel.checkpoint()  # let the other runs go between steps
        return {"n": state.n + 1, "trail": [state.start + state.n]}

    graph = (
        GraphBuilder(Count)
        .add_node("step", step)
        .add_conditional_edge("step", lambda s: "step" if s.n < 5 else END)
        .set_entry("step")
        .compile()
    )
    results: dict[int, Count] = {}

    async def one(i: int) -> None:
        results[i] = await graph.invoke(Count(start=i * 100))

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(one, i)
    for i in range(20):
        assert results[i].trail == [i * 100 + k for k in range(5)]


async def test_current_invocation_id() -> None:
    seen: list[str] = []

    async def node(state: Loop) -> None:
        seen.append(current_invocation_id())

    graph = GraphBuilder(Loop).add_node("n", node).add_edge("n", END).set_entry("n").compile()
    await graph.invoke(Loop(), invocation_id="caller-id")
    await graph.invoke(Loop())
    await graph.invoke(Loop())
    assert seen[0] == "caller-id" and len(set(seen)) == 3
    with pytest.raises(LookupError):
        current_invocation_id()


async def test_cancellation_propagates_unwrapped() -> None:
    entered = anyio.Event()

    async def hang(state: Loop) -> None:
        entered.set()
        await anyio.sleep_forever()

    graph = GraphBuilder(Loop).add_node("h", hang).add_edge("h", END).set_entry("h").compile()
    with anyio.move_on_after(5) as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(graph.invoke, Loop())
            await entered.wait()
            tg.cancel_scope.cancel()
    assert not scope.cancelled_caught  # cancelled by us, promptly, with no NodeException
