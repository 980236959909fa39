"""Worker factories for ``distributed_bench.py`` (workers import them by name)."""

from __future__ import annotations

from typing import Any

from openarmature_nodes.graph import END, CompiledGraph, GraphBuilder, State


class Item(State):
    record: str = ""
    tagline: str = ""


async def _copy(state: Item) -> dict[str, Any]:
    return {"tagline": state.record}


def make_noop_graph() -> CompiledGraph[Item]:
    """A one-node graph doing no I/O: what a chunk costs beyond its instances."""
    return (GraphBuilder(Item).add_node("copy", _copy).add_edge("copy", END)
            .set_entry("copy").compile())
