"""The per-record graph of ``distributed_enrichment.py``, in a module workers can import.

Dask workers rebuild the instance subgraph by importing its factory by name
(``"distributed_records:make_record_graph"``) and decode each instance's input
into its state class, found the same way. Neither may live in the script you
run (``__main__``): the executor refuses them before sending anything. On a
real cluster this module must be importable on every worker (installed with
your package, or shipped with ``client.upload_file("distributed_records.py")``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import msgspec

from openarmature_nodes.graph import END, CompiledGraph, GraphBuilder, State, append
from openarmature_nodes.llm import OpenAIProvider, RuntimeConfig, SystemMessage, UserMessage
from openarmature_nodes.middleware import WarmupGate
from openarmature_nodes.nodes import LLMNode, default_onion

INSTRUCTIONS = "Write a catchy tagline of at most eight words for the product. Reply with it only."


class Product(State):
    """One fan-out instance: a record in, a tagline out."""

    record: str = ""
    tagline: str = ""


class Catalogue(State):
    records: list[str] = msgspec.field(default_factory=list)
    taglines: Annotated[list[str], append] = msgspec.field(default_factory=list)


def record_onion(provider: OpenAIProvider, inflight_limit: int | None = None) -> list[Any]:
    """The default call onion; with ``inflight_limit``, a fleet-wide in-flight limit
    inside the warm-up gate (so every attempt, retries included, takes a lease)."""
    from openarmature_nodes.distributed import FleetInflightLimit

    onion: list[Any] = list(default_onion(provider))
    if inflight_limit:
        gate = next(i for i, layer in enumerate(onion) if isinstance(layer, WarmupGate))
        onion.insert(gate + 1, FleetInflightLimit(endpoint=provider.base_url,
                                                  limit=inflight_limit))
    return onion


def build_record_graph(provider: OpenAIProvider, onion: list[Any]) -> CompiledGraph[Product]:
    """One LLM call per record, through ``onion`` (retry, cooldown, warm-up...)."""
    tagline = LLMNode(
        provider,
        prompt=lambda s: [SystemMessage(INSTRUCTIONS), UserMessage(s.record)],
        update=lambda r: {"tagline": (r.message.content or "").strip()},
        config=RuntimeConfig(max_tokens=32, temperature=0.7),
        middleware=onion,
    )
    return (GraphBuilder(Product).add_node("tagline", tagline)
            .add_edge("tagline", END).set_entry("tagline").compile())


@asynccontextmanager
async def make_record_graph(
    base_url: str, model: str, inflight_limit: int | None = None
) -> AsyncIterator[CompiledGraph[Product]]:
    """The worker runtime factory: once per worker, one provider (one connection pool),
    warmed up before the first chunk; closed when the runtime is unregistered.

    The API key is read here, on the worker, from ``OPENARMATURE_API_KEY``: it never
    travels in the runtime's arguments.
    """
    api_key = os.environ.get("OPENARMATURE_API_KEY")
    async with OpenAIProvider(base_url, model, api_key=api_key) as provider:
        onion = record_onion(provider, inflight_limit)
        for layer in onion:
            if isinstance(layer, WarmupGate):
                await layer.open()
        yield build_record_graph(provider, onion)
