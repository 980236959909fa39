"""The fan-out executor seam (``openarmature_nodes.graph.executors``) without any cluster."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import pytest

from openarmature_nodes.graph import END, GraphBuilder, State, append
from openarmature_nodes.graph.executors import FanOutBatch, FanOutExecutor, LocalExecutor, Outcome

pytestmark = pytest.mark.anyio


class Item(State):
    x: int = 0
    y: int = 0


class Parent(State):
    xs: list[int] = msgspec.field(default_factory=list)
    ys: Annotated[list[int], append] = msgspec.field(default_factory=list)


async def _double(state: Item) -> dict[str, int]:
    return {"y": state.x * 2}


SUB = GraphBuilder(Item).add_node("d", _double).add_edge("d", END).set_entry("d").compile()


def _parent(**options: Any) -> Any:
    return (GraphBuilder(Parent)
            .add_fan_out_node("fan", SUB, items_field="xs", item_field="x", collect_field="y",
                              target_field="ys", **options)
            .add_edge("fan", END).set_entry("fan").compile())


class Reversed:
    """An executor running instances last-first: fan-in must still be by index."""

    def __init__(self) -> None:
        self.batches: list[FanOutBatch] = []

    async def run(self, batch: FanOutBatch) -> Outcome:
        self.batches.append(batch)
        results: list[Any] = [None] * batch.count
        for i in reversed(range(batch.count)):
            results[i] = await batch.job(i)
        return Outcome(results, {})


async def test_local_executor_is_the_default_behaviour() -> None:
    xs = list(range(50))
    default = await _parent(concurrency=4).invoke(Parent(xs=xs))
    local = await _parent(concurrency=4, executor=LocalExecutor()).invoke(Parent(xs=xs))
    assert local.ys == default.ys == [2 * x for x in xs]


async def test_a_custom_executor_gets_projected_instances_and_results_merge_by_index() -> None:
    executor = Reversed()
    assert isinstance(executor, FanOutExecutor)
    final = await _parent(concurrency=3, executor=executor).invoke(Parent(xs=[5, 6, 7]))
    assert final.ys == [10, 12, 14]
    (batch,) = executor.batches
    assert (batch.count, batch.limit, batch.fail_fast, batch.keys) == (3, 3, True, ("y",))
    assert batch.instance(1) == Item(x=6)
    assert batch.observed is False
