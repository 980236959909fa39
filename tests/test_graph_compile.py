"""Every compile-time error of graph-engine §2, and the compile warnings."""



from __future__ import annotations

import warnings
from typing import Annotated, Any

import pytest

from openarmature_nodes.graph import (
    END,
    ConflictingProjectionForms,
    DanglingEdge,
    GraphBuilder,
    GraphCompileError,
    GraphCompileWarning,
    MappingReferencesUndeclaredField,
    MultipleOutgoingEdges,
    NoDeclaredEntry,
    State,
    UnreachableNode,
    append,
    reducer,
)


class S(State):
    v: str = ""
    log: Annotated[list[str], append] = []


async def noop(state: Any) -> None:
    return None


def builder() -> GraphBuilder[S]:
    return GraphBuilder(S).add_node("a", noop)


def test_no_declared_entry() -> None:
    with pytest.raises(NoDeclaredEntry) as info:
        builder().add_edge("a", END).compile()
    assert info.value.category == "no_declared_entry"


def test_entry_must_be_a_node() -> None:
    with pytest.raises(DanglingEdge, match="'ghost'"):
        builder().add_edge("a", END).set_entry("ghost").compile()


def test_unreachable_node_is_named() -> None:
    b = builder().add_node("orphan", noop).add_edge("a", END).add_edge("orphan", END)
    with pytest.raises(UnreachableNode, match="'orphan'") as info:
        b.set_entry("a").compile()
    assert info.value.category == "unreachable_node"


@pytest.mark.parametrize("source,target", [("a", "ghost"), ("ghost", "a")])
def test_dangling_edge(source: str, target: str) -> None:
    with pytest.raises(DanglingEdge, match="ghost") as info:
        builder().add_edge(source, target).set_entry("a").compile()
    assert info.value.category == "dangling_edge"


def test_dangling_declared_conditional_destination() -> None:
    b = builder().add_conditional_edge("a", lambda s: END, destinations=["a", "ghost", END])
    with pytest.raises(DanglingEdge, match="ghost"):
        b.set_entry("a").compile()


def test_multiple_outgoing_edges() -> None:
    b = builder().add_node("b", noop).add_edge("a", "b").add_edge("a", END).add_edge("b", END)
    with pytest.raises(MultipleOutgoingEdges, match="'a'") as info:
        b.set_entry("a").compile()
    assert info.value.category == "multiple_outgoing_edges"


def test_static_plus_conditional_is_also_multiple() -> None:
    b = builder().add_edge("a", END).add_conditional_edge("a", lambda s: END)
    with pytest.raises(MultipleOutgoingEdges):
        b.set_entry("a").compile()


def test_duplicate_node_name_is_rejected_at_once() -> None:
    with pytest.raises(GraphCompileError, match="already declared"):
        builder().add_node("a", noop)


def test_non_callable_node_is_rejected() -> None:
    with pytest.raises(TypeError, match="must be a callable"):
        builder().add_node("s", 42)  # type: ignore[arg-type]


def test_declared_destinations_drive_reachability() -> None:
    b = builder().add_node("b", noop).add_node("c", noop)
    b.add_conditional_edge("a", lambda s: "b", destinations=["b", END])
    b.add_edge("b", END).add_edge("c", END)
    with pytest.raises(UnreachableNode, match="'c'"):
        b.set_entry("a").compile()


def test_opaque_conditional_may_reach_anything() -> None:
    b = builder().add_node("b", noop).add_conditional_edge("a", lambda s: END)
    b.add_edge("b", END).set_entry("a").compile()  # no UnreachableNode


def test_node_named_END_does_not_collide_with_the_sentinel() -> None:
    b = builder().add_node("END", noop).add_edge("a", "END").add_edge("END", END)
    graph = b.set_entry("a").compile()
    assert graph.node_names == ("a", "END")


def test_missing_outgoing_edge_warns() -> None:
    with pytest.warns(GraphCompileWarning, match="no outgoing edge"):
        graph = builder().set_entry("a").compile()
    assert [w.category for w in graph.warnings] == ["no_outgoing_edge"]


# --- subgraph projection compile errors and the round-trip warning ---------------------------


class Sub(State):
    v: str = ""
    log: Annotated[list[str], append] = []
    only_sub: int = 0


def sub_graph() -> Any:
    return GraphBuilder(Sub).add_node("i", noop).add_edge("i", END).set_entry("i").compile()


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"inputs": {"v": "nope"}}, "nope"),  # parent side of inputs
        ({"inputs": {"nope": "v"}}, "nope"),  # subgraph side of inputs
        ({"outputs": {"nope": "v"}}, "nope"),  # parent side of outputs
        ({"outputs": {"v": "nope"}}, "nope"),  # subgraph side of outputs
        ({"projects_in": ["only_sub"]}, "only_sub"),  # declared set: checked on both schemas
        ({"projects_out": ["nope"]}, "nope"),
    ],
)
def test_mapping_references_undeclared_field(kwargs: dict[str, Any], name: str) -> None:
    b = GraphBuilder(S).add_subgraph("sub", sub_graph(), **kwargs).add_edge("sub", END)
    with pytest.raises(MappingReferencesUndeclaredField, match=name) as info:
        b.set_entry("sub").compile()
    assert info.value.category == "mapping_references_undeclared_field"


def test_conflicting_projection_forms() -> None:
    b = GraphBuilder(S).add_subgraph(
        "sub", sub_graph(), projects_in=["v"], outputs={"v": "v"}
    ).add_edge("sub", END)
    with pytest.raises(ConflictingProjectionForms, match="'sub'") as info:
        b.set_entry("sub").compile()
    assert info.value.category == "conflicting_projection_forms"


def _compile_warnings(**kwargs: Any) -> list[str]:
    b = GraphBuilder(S).add_subgraph("sub", sub_graph(), **kwargs).add_edge("sub", END)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b.set_entry("sub").compile()
    return [w.message.category for w in caught if isinstance(w.message, GraphCompileWarning)]


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        ({"projects_in": ["log"], "projects_out": ["log"]}, ["projection_reducer_round_trip"]),
        ({"inputs": {"log": "log"}, "outputs": {"log": "log"}}, ["projection_reducer_round_trip"]),
        ({"inputs": {"log": "log"}}, ["projection_reducer_round_trip"]),  # default out name-matches
        ({"projects_in": ["v"], "projects_out": ["v"]}, []),  # last_write_wins is idempotent
        ({"projects_in": ["log"], "projects_out": []}, []),  # in only: no round trip
        ({"inputs": {"log": "log"}, "outputs": {"log": "v"}}, []),  # different sub field back
        ({}, []),  # default form projects nothing in
    ],
)
def test_round_trip_warning(kwargs: dict[str, Any], expected: list[str]) -> None:
    assert _compile_warnings(**kwargs) == expected


add = reducer(lambda a, b: a + b, name="add")


class P(State):
    n: Annotated[int, add] = 0


class Q(State):
    n: int = 0


def test_round_trip_warning_for_non_idempotent_custom_reducer() -> None:
    sub = GraphBuilder(Q).add_node("i", noop).add_edge("i", END).set_entry("i").compile()
    b = GraphBuilder(P).add_subgraph("s", sub, projects_in=["n"], projects_out=["n"])
    with pytest.warns(GraphCompileWarning, match="add"):
        b.add_edge("s", END).set_entry("s").compile()
