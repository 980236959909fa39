"""A finished fan-out leaves no reference cycle holding its instances' results.

The pool's worker starts its spares by name, so its closure refers to itself;
that cycle also held the per-instance results list until the cyclic garbage
collector's next pass (memory per instance then grows with every fan-out run
between collections). The pool breaks the cycle when it is done: with the
collector off, nothing of the fan-out is left for it to find.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Annotated, Any

import msgspec
import pytest

from openarmature_nodes.graph import END, GraphBuilder, State, append

pytestmark = pytest.mark.anyio

N = 50


class One(State):
    item: int = 0
    result: int = 0


class Parent(State):
    items: list[int] = msgspec.field(default_factory=list)
    results: Annotated[list[int], append] = msgspec.field(default_factory=list)


def graph(concurrency: int | None) -> Any:
    wb = GraphBuilder(One)
    wb.add_node("work", lambda s: {"result": s.item + 1})
    wb.add_edge("work", END)
    wb.set_entry("work")
    b = GraphBuilder(Parent)
    b.add_fan_out_node(
        "fan", wb.compile(), items_field="items", item_field="item",
        collect_field="result", target_field="results", concurrency=concurrency,
    )
    b.add_edge("fan", END)
    b.set_entry("fan")
    return b.compile()


@pytest.fixture
def no_collector() -> Iterator[list[Any]]:
    """The collector off; ``gc.garbage`` (returned) gets whatever it would have freed."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def results_lists(garbage: list[Any]) -> list[Any]:
    """The pool's per-instance results lists among ``garbage``: N contribution mappings."""
    return [
        o for o in garbage
        if isinstance(o, list) and len(o) == N and all(isinstance(r, dict) for r in o)
    ]


@pytest.mark.parametrize("concurrency", [None, 4])
async def test_the_instances_results_are_freed_without_the_collector(
    no_collector: list[Any], concurrency: int | None
) -> None:
    g = graph(concurrency)
    final = await g.invoke(Parent(items=list(range(N))))
    assert final.results == [i + 1 for i in range(N)]
    del final
    gc.collect()
    assert results_lists(no_collector) == []
