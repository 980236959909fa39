"""Graphs and worker factories for the Dask executor tests (``tests/test_distributed.py``).

They live in an importable module, not in the test file's ``__main__`` or in a
closure: Dask workers import the state classes and the factories by name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import msgspec

from openarmature_nodes.graph import END, CompiledGraph, GraphBuilder, State, append
from openarmature_nodes.llm import OpenAIProvider, RuntimeConfig, UserMessage
from openarmature_nodes.nodes import LLMNode

MODEL = "embedded-model"


class Record(State):
    """One instance: a record in, a summary out."""

    record: str = ""
    summary: str = ""


class Batch(State):
    records: list[str] = msgspec.field(default_factory=list)
    summaries: Annotated[list[str], append] = msgspec.field(default_factory=list)
    errors: Annotated[list[dict[str, str]], append] = msgspec.field(default_factory=list)


def build_llm_graph(provider: Any, middleware: list[Any] | None = None) -> CompiledGraph[Record]:
    """One LLM call per record: the embedded server answers ``echo: <record>``."""
    node = LLMNode(
        provider,
        prompt=lambda s: [UserMessage(s.record)],
        update=lambda r: {"summary": (r.message.content or "").upper()},
        config=RuntimeConfig(max_tokens=64),
        middleware=middleware,
    )
    return (GraphBuilder(Record).add_node("summarize", node)
            .add_edge("summarize", END).set_entry("summarize").compile())


@asynccontextmanager
async def make_llm_graph(
    base_url: str, inflight_limit: int | None = None
) -> AsyncIterator[CompiledGraph[Record]]:
    """The worker runtime factory: one provider (one connection pool) per worker."""
    from openarmature_nodes.distributed import FleetInflightLimit

    async with OpenAIProvider(base_url, MODEL) as provider:
        middleware = (
            [FleetInflightLimit(endpoint=base_url, limit=inflight_limit)]
            if inflight_limit else None
        )
        yield build_llm_graph(provider, middleware)


class Boom(Exception):
    """An instance failure with a category of its own."""

    category = "boom"


async def _pure(state: Record) -> dict[str, Any]:
    if "bad" in state.record:
        raise Boom(f"bad record {state.record!r}")
    return {"summary": state.record[::-1]}


def make_pure_graph() -> CompiledGraph[Record]:
    """No I/O: reverses the record; a record containing ``bad`` raises :class:`Boom`."""
    return (GraphBuilder(Record).add_node("reverse", _pure)
            .add_edge("reverse", END).set_entry("reverse").compile())


def parent(subgraph: CompiledGraph[Any], **fan_out: Any) -> CompiledGraph[Batch]:
    """The parent graph: one fan-out node over ``records``."""
    return (
        GraphBuilder(Batch)
        .add_fan_out_node(
            "enrich", subgraph, items_field="records", item_field="record",
            collect_field="summary", target_field="summaries", **fan_out,
        )
        .add_edge("enrich", END).set_entry("enrich").compile()
    )


class Other(State):
    record: str = ""
    summary: str = ""


def make_other_graph() -> CompiledGraph[Other]:
    """A factory building a graph over another state class than the parent's subgraph."""
    return (GraphBuilder(Other).add_node("reverse", _pure)
            .add_edge("reverse", END).set_entry("reverse").compile())


async def _slow(state: Record) -> dict[str, Any]:
    import anyio

    if "bad" in state.record:
        raise Boom(f"bad record {state.record!r}")
    await anyio.sleep(60)  # simulated long work: only a cancellation ends it early
    return {"summary": state.record}


def make_slow_graph() -> CompiledGraph[Record]:
    """Every instance works for a minute, except a ``bad`` one, which fails at once."""
    return (GraphBuilder(Record).add_node("slow", _slow)
            .add_edge("slow", END).set_entry("slow").compile())


def running_instances(dask_worker: Any = None) -> int:
    """Run on a worker by ``client.run``: instances of any runtime still running there."""
    from openarmature_nodes.distributed import WorkerRuntime

    return sum(
        int(limiter.borrowed_tokens)
        for plugin in dask_worker.plugins.values() if isinstance(plugin, WorkerRuntime)
        for limiter in plugin._limiters.values()
    )
