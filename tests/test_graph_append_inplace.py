"""The plain loop's in-place ``append`` (graph/_inplace.py) is invisible: state stays immutable.

The engine may extend an ``append`` field's list in place instead of copying it,
but only when nobody else can reach the previous state or its list. Each test
here keeps a reference the way a user could (a node keeping the state or its
list, the caller's initial state, a failing merge's ``recoverable_state``, an
observer's event) and checks that a later step's append never shows through it.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import pytest

from openarmature_nodes.graph import (
    END,
    GraphBuilder,
    ReducerError,
    State,
    StateValidationError,
    _inplace,
    append,
    reducer,
)

pytestmark = pytest.mark.anyio

STEPS = 6
# The engine copies short lists anyway: start long enough for the in-place path to be taken.
BASE = tuple(f"b{i}" for i in range(_inplace.MIN_LENGTH))


class Chat(State):
    turns: int = 0
    messages: Annotated[list[str], append] = msgspec.field(default_factory=list)


def loop(node: Any, cls: type[State] = Chat, steps: int = STEPS) -> Any:
    b = GraphBuilder(cls)
    b.add_node("llm", node)
    b.set_entry("llm")
    b.add_conditional_edge("llm", lambda s: "llm" if s.turns < steps else END)
    return b.compile()


def turn(state: Any) -> dict[str, Any]:
    return {"messages": [f"m{state.turns}"], "turns": state.turns + 1}


def expected(n: int, start: tuple[str, ...] = BASE) -> list[str]:
    return [*start, *(f"m{i}" for i in range(n))]


def test_reference_counts_are_exact_on_this_interpreter() -> None:
    # Not a requirement (the engine copies where they are not), but on the CPython
    # versions the project supports the in-place path must actually be available.
    assert _inplace.ENABLED


async def test_a_kept_state_never_sees_later_appends() -> None:
    kept: list[Any] = []

    async def node(state: Chat) -> dict[str, Any]:
        kept.append(state)
        return turn(state)

    final = await loop(node).invoke(Chat(messages=list(BASE)))
    assert final.messages == expected(STEPS)
    assert [s.messages for s in kept] == [expected(i) for i in range(STEPS)]


async def test_a_kept_list_never_sees_later_appends() -> None:
    kept: list[list[str]] = []

    async def node(state: Chat) -> dict[str, Any]:
        kept.append(state.messages)
        return turn(state)

    final = await loop(node).invoke(Chat(messages=list(BASE)))
    assert final.messages == expected(STEPS)
    assert kept == [expected(i) for i in range(STEPS)]


async def test_the_callers_initial_state_and_list_stay_as_given() -> None:
    given = list(BASE)
    initial = Chat(messages=given)
    final = await loop(lambda s: turn(s)).invoke(initial)
    assert final.messages == expected(STEPS)
    assert initial.messages == list(BASE) and given == list(BASE)
    again = await loop(lambda s: turn(s)).invoke(final)
    assert final.messages == expected(STEPS)  # reused as an input: untouched
    assert len(again.messages) == len(BASE) + STEPS + 1  # turns already at STEPS: one more


async def test_two_invocations_from_one_mapping_do_not_share_a_list() -> None:
    graph = loop(lambda s: turn(s))
    first = await graph.invoke({"messages": list(BASE)})
    second = await graph.invoke({"messages": list(BASE)})
    assert first.messages == second.messages == expected(STEPS)
    assert first.messages is not second.messages


def _refuse(prior: Any, update: Any) -> Any:
    raise ValueError("no")


refuse = reducer(_refuse, name="refuse")


class Two(State):
    turns: int = 0
    messages: Annotated[list[str], append] = msgspec.field(default_factory=list)
    other: Annotated[int, refuse] = 0


async def test_a_failing_merge_leaves_the_recoverable_state_unextended() -> None:
    async def node(state: Two) -> dict[str, Any]:
        if state.turns == 3:
            return {"messages": ["late"], "other": 1}
        return turn(state)

    with pytest.raises(ReducerError) as info:
        await loop(node, Two).invoke(Two(messages=list(BASE)))
    assert info.value.recoverable_state.messages == expected(3)


async def test_a_wrong_item_type_leaves_the_recoverable_state_unextended() -> None:
    async def node(state: Chat) -> dict[str, Any]:
        if state.turns == 3:
            return {"messages": [42]}
        return turn(state)

    with pytest.raises(StateValidationError) as info:
        await loop(node).invoke(Chat(messages=list(BASE)))
    assert info.value.recoverable_state.messages == expected(3)


async def test_appending_the_list_to_itself_doubles_it() -> None:
    async def node(state: Chat) -> dict[str, Any]:
        if state.turns == 2:
            return {"messages": state.messages, "turns": 3}
        return turn(state)

    final = await loop(node, steps=3).invoke(Chat(messages=list(BASE)))
    assert final.messages == expected(2) * 2


async def test_a_subclass_post_init_still_sees_every_state() -> None:
    seen: list[list[str]] = []

    class Checked(State):
        turns: int = 0
        messages: Annotated[list[str], append] = msgspec.field(default_factory=list)

        def __post_init__(self) -> None:
            seen.append(self.messages)

    final = await loop(lambda s: turn(s), Checked).invoke(Checked(messages=list(BASE)))
    assert final.messages == expected(STEPS)
    assert [len(m) - len(BASE) for m in seen] == list(range(STEPS + 1))
    assert seen[-1] == expected(STEPS)
    assert seen[2] == expected(2)


async def test_observed_events_keep_their_states() -> None:
    events: list[Any] = []

    async def observer(event: Any) -> None:
        events.append(event)

    graph = loop(lambda s: turn(s))
    final = await graph.invoke(Chat(messages=list(BASE)), observers=[observer])
    assert final.messages == expected(STEPS)
    done = [e for e in events if getattr(e, "phase", None) == "completed"]
    assert [e.pre_state.messages for e in done] == [expected(i) for i in range(STEPS)]
    assert [e.post_state.messages for e in done] == [expected(i + 1) for i in range(STEPS)]


async def test_a_fan_out_collects_into_an_append_field() -> None:
    class One(State):
        item: int = 0
        result: int = 0

    class Parent(State):
        items: list[int] = msgspec.field(default_factory=list)
        results: Annotated[list[int], append] = msgspec.field(default_factory=list)
        turns: int = 0

    wb = GraphBuilder(One)
    wb.add_node("work", lambda s: {"result": s.item * 2})
    wb.add_edge("work", END)
    wb.set_entry("work")
    kept: list[Any] = []

    def bump(state: Parent) -> dict[str, Any]:
        kept.append(state.results)
        return {"turns": state.turns + 1}

    b = GraphBuilder(Parent)
    b.add_fan_out_node(
        "fan", wb.compile(), items_field="items", item_field="item",
        collect_field="result", target_field="results", concurrency=None,
    )
    b.add_node("bump", bump)
    b.set_entry("fan")
    b.add_edge("fan", "bump")
    b.add_conditional_edge("bump", lambda s: "fan" if s.turns < 3 else END)
    items = list(range(_inplace.MIN_LENGTH))
    doubled = [2 * i for i in items]
    final = await b.compile().invoke(Parent(items=items))
    assert final.results == doubled * 3
    assert kept == [doubled * i for i in (1, 2, 3)]
