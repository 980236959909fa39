"""Subgraphs as nodes: the three projection forms of graph-engine §2, nesting, failures."""



from __future__ import annotations

from typing import Annotated, Any

import pytest

from openarmature_nodes.graph import (
    END,
    GraphBuilder,
    NodeException,
    State,
    StateValidationError,
    append,
)

pytestmark = pytest.mark.anyio


class Inner(State):
    input: int = 3
    result: int = 0
    note: str = "sub-default"
    trace: Annotated[list[str], append] = []


class Outer(State):
    a: int = 5
    input: int = 7
    result: int = -1
    note: str = "outer-default"
    a_seen: int = -1
    trace: Annotated[list[str], append] = []


async def compute(state: Inner) -> dict[str, Any]:
    return {"result": state.input * 10, "note": "computed", "trace": ["compute"]}


def inner() -> Any:
    return GraphBuilder(Inner).add_node("compute", compute).add_edge("compute", END).set_entry(
        "compute"
    ).compile()


async def run(**projection: Any) -> Outer:
    graph = (
        GraphBuilder(Outer)
        .add_subgraph("sub", inner(), **projection)
        .add_edge("sub", END)
        .set_entry("sub")
        .compile()
    )
    return await graph.invoke(Outer(trace=["start"]))


async def test_default_projection_merges_all_matching_fields() -> None:
    final = await run()
    # Nothing goes in (the subgraph's input keeps its default 3); every same-named
    # field comes back out, the untouched `input` included.
    assert (final.input, final.result, final.note) == (3, 30, "computed")
    assert final.trace == ["start", "compute"]  # through the parent's append reducer
    assert final.a_seen == -1  # no such subgraph field


async def test_explicit_inputs_only_keeps_default_out() -> None:
    final = await run(inputs={"input": "a"})
    assert (final.result, final.note, final.input) == (50, "computed", 5)


async def test_explicit_outputs_replace_name_matching() -> None:
    final = await run(outputs={"a_seen": "input", "result": "result"})
    assert (final.a_seen, final.result) == (3, 30)
    assert final.note == "outer-default" and final.trace == ["start"]  # not projected


async def test_explicit_both_directions() -> None:
    final = await run(inputs={"input": "a"}, outputs={"a_seen": "input"})
    assert final.a_seen == 5 and final.result == -1


async def test_declared_same_name_sets() -> None:
    final = await run(projects_in=["input"], projects_out=["result"])
    assert final.result == 70  # parent.input (7) crossed in by name
    assert final.note == "outer-default" and final.input == 7  # nothing else crosses


async def test_declared_in_only_projects_nothing_out() -> None:
    final = await run(projects_in=["input"])
    assert final == Outer(trace=["start"])


async def test_two_level_nesting() -> None:
    class Mid(State):
        trace: Annotated[list[str], append] = []

    async def mid_x(state: Mid) -> dict[str, Any]:
        return {"trace": ["mid_x"]}

    class Deep(State):
        trace: Annotated[list[str], append] = []

    async def deep(state: Deep) -> dict[str, Any]:
        return {"trace": ["deep"]}

    deep_g = GraphBuilder(Deep).add_node("d", deep).add_edge("d", END).set_entry("d").compile()
    mid_g = (
        GraphBuilder(Mid)
        .add_node("x", mid_x)
        .add_node("deep", deep_g)  # add_node accepts a compiled graph too
        .add_edge("x", "deep")
        .add_edge("deep", END)
        .set_entry("x")
        .compile()
    )
    outer = GraphBuilder(Outer).add_subgraph("mid", mid_g).add_edge("mid", END).set_entry("mid")
    final = await outer.compile().invoke(Outer())
    assert final.trace == ["mid_x", "deep"]


async def test_subgraph_failure_chains_to_the_inner_error() -> None:
    async def fail(state: Inner) -> None:
        raise ValueError("inner boom")

    sub = GraphBuilder(Inner).add_node("bad", fail).add_edge("bad", END).set_entry("bad").compile()
    graph = GraphBuilder(Outer).add_subgraph("sub", sub).add_edge("sub", END).set_entry("sub")
    start = Outer(a=1)
    with pytest.raises(NodeException) as info:
        await graph.compile().invoke(start)
    outer_err = info.value
    assert outer_err.node_name == "sub" and outer_err.recoverable_state == start
    inner_err = outer_err.__cause__
    assert isinstance(inner_err, NodeException) and inner_err.node_name == "bad"
    assert isinstance(inner_err.__cause__, ValueError)


async def test_projected_value_of_wrong_type_fails_at_subgraph_entry() -> None:
    class Typed(State):
        input: str = ""

    async def n(state: Typed) -> None:
        return None

    sub = GraphBuilder(Typed).add_node("n", n).add_edge("n", END).set_entry("n").compile()
    graph = GraphBuilder(Outer).add_subgraph("sub", sub, inputs={"input": "a"})
    with pytest.raises(NodeException) as info:
        await graph.add_edge("sub", END).set_entry("sub").compile().invoke(Outer())
    assert isinstance(info.value.__cause__, StateValidationError)
