"""The eight canonical reducers (graph-engine §2), custom reducers, and their errors."""



from __future__ import annotations

from typing import Annotated, Any

import msgspec
import pytest

from openarmature_nodes.graph import (
    END,
    ConflictingReducers,
    GraphBuilder,
    ReducerConfigurationInvalid,
    ReducerError,
    State,
    StateValidationError,
    append,
    bounded_append,
    concat_flatten,
    dedupe_append,
    last_write_wins,
    merge,
    merge_all,
    merge_by_key,
    reducer,
)
from openarmature_nodes.graph.lowlevel import schema_of

pytestmark = pytest.mark.anyio


# --- pure semantics ---------------------------------------------------------------------


def test_last_write_wins_replaces() -> None:
    assert last_write_wins([1], [2]) == [2]
    assert last_write_wins.round_trip_idempotent


def test_append_concatenates_without_mutating() -> None:
    prior = ["a"]
    assert append(prior, ["b", "c"]) == ["a", "b", "c"]
    assert prior == ["a"]
    assert append(prior, []) is prior


@pytest.mark.parametrize("bad", ["x", ("a",), {"a": 1}, None])
def test_append_rejects_non_list_update(bad: Any) -> None:
    with pytest.raises(TypeError, match="append: update must be a list"):
        append([], bad)


def test_merge_is_shallow_and_update_wins() -> None:
    prior = {"a": 1, "b": {"x": 1}}
    assert merge(prior, {"b": {"y": 2}, "c": 3}) == {"a": 1, "b": {"y": 2}, "c": 3}
    assert prior == {"a": 1, "b": {"x": 1}}
    with pytest.raises(TypeError, match="merge: update must be a mapping"):
        merge({}, [("a", 1)])


def test_concat_flatten() -> None:
    assert concat_flatten(["a"], [["b"], [], ["c", "d"]]) == ["a", "b", "c", "d"]
    prior = ["p"]
    assert concat_flatten(prior, []) is prior
    assert concat_flatten([], [[], []]) == []
    with pytest.raises(TypeError, match=r"update\[1\] must be a list"):
        concat_flatten([], [["a"], "b"])
    with pytest.raises(TypeError, match="update must be a list"):
        concat_flatten([], "ab")


def test_merge_all_folds_in_order() -> None:
    out = merge_all({"k": 0, "keep": 1}, [{"k": 1, "a": 1}, {}, {"k": 2}])
    assert out == {"k": 2, "keep": 1, "a": 1}
    prior = {"x": 1}
    assert merge_all(prior, []) is prior
    with pytest.raises(TypeError, match=r"update\[1\] must be a mapping"):
        merge_all({}, [{"a": 1}, "no"])
    with pytest.raises(TypeError, match="update must be a list"):
        merge_all({}, {"a": 1})  # a single mapping is NOT auto-detected


def test_bounded_append() -> None:
    r = bounded_append(3)
    assert r([], ["a", "b", "c", "d", "e"]) == ["c", "d", "e"]
    assert r(["1", "2"], ["3", "4"]) == ["2", "3", "4"]
    over = ["a", "b", "c", "d"]
    assert r(over, []) is over  # the bound applies to merges only
    assert r.name == "bounded_append(max_len=3)"
    with pytest.raises(TypeError):
        r([], "nope")


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, None, "3"])
def test_bounded_append_configuration(bad: Any) -> None:
    with pytest.raises(ReducerConfigurationInvalid) as info:
        bounded_append(bad)
    assert info.value.category == "reducer_configuration_invalid"


def test_dedupe_append() -> None:
    assert dedupe_append()(["seed"], ["seed", "a", "b", "a"]) == ["seed", "a", "b"]
    by_id = dedupe_append(lambda r: r["id"])
    prior = [{"id": 1, "v": "old"}]
    out = by_id(prior, [{"id": 1, "v": "new"}, {"id": 2, "v": "b"}, {"id": 2, "v": "dup"}])
    assert out == [{"id": 1, "v": "old"}, {"id": 2, "v": "b"}]
    assert prior == [{"id": 1, "v": "old"}]
    dup_prior = ["x", "x"]
    assert dedupe_append()(dup_prior, ["y"]) == ["x", "x", "y"]  # no in-place dedup of prior


def test_dedupe_append_errors() -> None:
    with pytest.raises(TypeError, match="not hashable"):
        dedupe_append()([], [["unhashable"]])

    def boom(item: Any) -> Any:
        raise KeyError("id")

    with pytest.raises(ValueError, match="key function raised"):
        dedupe_append(boom)([], [1])
    with pytest.raises(ReducerConfigurationInvalid):
        dedupe_append("id")  # type: ignore[arg-type]


def test_merge_by_key() -> None:
    r = merge_by_key(lambda x: x["k"])
    prior = [{"k": 1, "v": "a"}, {"k": 2, "v": "b"}]
    out = r(prior, [{"k": 2, "v": "B"}, {"k": 3, "v": "c"}, {"k": 3, "v": "C"}])
    assert out == [{"k": 1, "v": "a"}, {"k": 2, "v": "B"}, {"k": 3, "v": "C"}]
    assert prior[1] == {"k": 2, "v": "b"}


def test_merge_by_key_duplicate_prior_keys_replace_the_last() -> None:
    r = merge_by_key(lambda x: x[0])
    out = r([("a", 1), ("a", 2), ("b", 3)], [("a", 9)])
    assert out == [("a", 1), ("a", 9), ("b", 3)]


def test_merge_by_key_errors() -> None:
    with pytest.raises(ReducerConfigurationInvalid):
        merge_by_key(None)
    with pytest.raises(TypeError, match="not hashable"):
        merge_by_key(lambda x: x)([], [[1]])
    with pytest.raises(TypeError, match="update must be a list"):
        merge_by_key(lambda x: x)([], {"k": 1})


def test_round_trip_idempotency_classification() -> None:
    idem = [last_write_wins, merge, merge_by_key(lambda x: x), dedupe_append()]
    growing = [append, concat_flatten, bounded_append(2), merge_all]
    assert all(r.round_trip_idempotent for r in idem)
    assert not any(r.round_trip_idempotent for r in growing)


# --- reducers in a graph --------------------------------------------------------------------


class Doc(State):
    log: Annotated[list[str], append] = []
    tags: Annotated[list[str], dedupe_append()] = []
    meta: Annotated[dict[str, str], merge] = {}
    batches: Annotated[list[int], concat_flatten] = []
    window: Annotated[list[int], bounded_append(2)] = []
    total: Annotated[int, reducer(lambda a, b: a + b, name="sum")] = 0


def _one_node(update: dict[str, Any]) -> Any:
    async def node(state: Doc) -> dict[str, Any]:
        return update

    return GraphBuilder(Doc).add_node("n", node).add_edge("n", END).set_entry("n").compile()


async def test_reducers_merge_through_the_engine() -> None:
    graph = _one_node(
        {"log": ["x"], "tags": ["a", "a"], "meta": {"k": "v"}, "batches": [[1], [2, 3]],
         "window": [1, 2, 3], "total": 5}
    )
    final = await graph.invoke(Doc(log=["seed"], total=1))
    assert final == Doc(
        log=["seed", "x"], tags=["a"], meta={"k": "v"}, batches=[1, 2, 3], window=[2, 3], total=6
    )


async def test_reducer_error_names_field_reducer_and_node() -> None:
    graph = _one_node({"log": "not a list"})
    start = Doc(log=["seed"])
    with pytest.raises(ReducerError) as info:
        await graph.invoke(start)
    err = info.value
    assert (err.category, err.field, err.reducer_name, err.node_name) == (
        "reducer_error", "log", "append", "n"
    )
    assert isinstance(err.__cause__, TypeError)
    assert err.recoverable_state == start  # pre-merge state


async def test_wrong_item_type_after_reduction_is_a_validation_error() -> None:
    graph = _one_node({"log": [1, 2]})
    with pytest.raises(StateValidationError) as info:
        await graph.invoke(Doc())
    assert info.value.fields == ("log",) and info.value.node_name == "n"


def strict(prior: int, update: int) -> int:
    raise ValueError("never")


class Strict(State):
    v: Annotated[int, strict] = 0


async def test_custom_reducer_raising_is_a_reducer_error() -> None:
    S = Strict

    async def node(state: S) -> dict[str, Any]:
        return {"v": 1}

    graph = GraphBuilder(S).add_node("n", node).add_edge("n", END).set_entry("n").compile()
    with pytest.raises(ReducerError) as info:
        await graph.invoke(S())
    assert info.value.reducer_name == "strict"
    assert str(info.value.__cause__) == "never"


def test_two_reducers_on_one_field_conflict() -> None:
    class S(State):
        v: Annotated[list[str], append, last_write_wins] = []

    with pytest.raises(ConflictingReducers) as info:
        schema_of(S)
    assert "S.v" in str(info.value) and info.value.category == "conflicting_reducers"

    async def node(state: Any) -> None:
        return None

    with pytest.raises(ConflictingReducers):
        GraphBuilder(S).add_node("n", node).add_edge("n", END).set_entry("n").compile()


def test_non_empty_defaults_use_default_factory() -> None:
    class S(State):
        items: Annotated[list[str], append] = msgspec.field(default_factory=lambda: ["seed"])

    a, b = S(), S()
    assert a.items == ["seed"] and a.items is not b.items
