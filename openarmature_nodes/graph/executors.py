"""The fan-out executor seam: who runs a fan-out's instances.

A fan-out node (:mod:`.fanout`) resolves its instance count, projects each
instance's input state and merges the instances' contributions back by index.
*Running* the instances is delegated to a :class:`FanOutExecutor`:

- no executor (the default) or :class:`LocalExecutor`: every instance runs as
  a task of the caller's event loop, at most ``concurrency`` at once (the
  pool of :mod:`._pool`);
- a remote executor (e.g. :class:`openarmature_nodes.distributed.DaskExecutor`)
  ships the projected inputs to other processes or machines, where the same
  subgraph is built once per worker, and hands the contributions back by index.

The contract an executor keeps (pipeline-utilities §9, whatever runs where):

- :meth:`FanOutExecutor.run` returns an :class:`~._pool.Outcome` whose
  ``results[i]`` is instance ``i``'s *contribution* (a mapping holding the
  ``keys`` of the batch, as ``FanOut`` projects it) and whose ``failures`` maps
  failed indices to their exceptions, in index order: fan-in by index, whatever
  order instances complete in;
- under ``fail_fast`` the first failure stops the others (outstanding work is
  cancelled) and is the only one reported; under ``collect`` every instance
  runs;
- each index contributes exactly once, even where the executor's delivery is
  at least once (a remote worker lost mid-chunk);
- events an instance produced elsewhere are handed to :meth:`FanOutBatch.relay`,
  which re-stamps them as that instance's (``fan_out_index``, namespace, step
  numbers) and queues them for the parent's observers.

This module knows nothing of any distributed engine (nor of LLMs); it only
describes one fan-out dispatch to whoever runs it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, is_dataclass
from dataclasses import replace as _dc_replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from msgspec.structs import replace as _struct_replace

from openarmature_nodes.context import Lineage
from openarmature_nodes.events import ObserverEvent

from ._pool import Outcome, run_indexed
from .events import NodeEvent

if TYPE_CHECKING:
    from openarmature_nodes.onion import Middleware

    from ._run import Level, Step
    from .compiled import CompiledGraph

__all__ = ["FanOutBatch", "FanOutExecutor", "LocalExecutor", "Outcome"]


@dataclass(frozen=True, kw_only=True)
class FanOutBatch:
    """One fan-out dispatch, as an executor sees it.

    Attributes:
        node_name: the fan-out node's name (for error messages and events).
        count: the number of instances (``> 0``).
        limit: the resolved ``concurrency`` (``None``: unbounded).
        fail_fast: ``error_policy == "fail_fast"``.
        subgraph: the instance subgraph (``None`` for an instance callable).
        keys: the fields an instance contributes (``collect_field`` first, then
            any ``extra_outputs`` fields), in subgraph field names.
        instance_middleware: the node's ``instance_middleware``, outermost first.
        instance: ``instance(i)`` builds instance ``i``'s projected input (a
            subgraph state, or a mapping for an instance callable).
        job: ``job(i)`` runs instance ``i`` here, in this event loop, through the
            instance middleware, and returns its contribution.
        step: the fan-out node's step when the run is observed, else ``None``.
        on_result: awaited by an executor that runs instances elsewhere, once per
            index as its contribution (``error`` ``None``) or failure is merged:
            the hook for per-instance bookkeeping such as a checkpoint (a local
            run does that inside ``job``).
    """

    node_name: str
    count: int
    limit: int | None
    fail_fast: bool
    subgraph: CompiledGraph[Any] | None
    keys: tuple[str, ...]
    instance_middleware: tuple[Middleware[Any, Any], ...]
    instance: Callable[[int], Any]
    job: Callable[[int], Awaitable[Any]]
    step: Step | None = None
    on_result: Callable[[int, Any, Exception | None], Awaitable[None]] | None = None
    _levels: dict[int, Level] = field(default_factory=dict, repr=False)
    _steps: dict[tuple[int, str, int], int] = field(default_factory=dict, repr=False)

    @property
    def observed(self) -> bool:
        """Whether anyone observes this run (remote events are worth shipping back)."""
        return self.step is not None

    def relay(self, index: int, events: Sequence[object]) -> None:
        """Queue ``events`` (produced by instance ``index`` in another invocation,
        e.g. on a worker) for the parent's observers, as if produced here.

        Each event's identity is rewritten onto this run: ``invocation_id`` and
        ``correlation_id`` of the parent invocation, ``namespace`` and the lineage
        chains prefixed with the fan-out node's, ``fan_out_index`` = ``index``
        where the event had none of its own, a node event's ``parent_states``
        prefixed with the parent's and its ``step`` renumbered on the parent's
        step counter (in the order the events are relayed). Unobserved runs: a no-op.
        """
        step = self.step
        if step is None:
            return
        level = self._levels.get(index)
        if level is None:
            level = self._levels[index] = step.level.child(
                self.node_name, step.state, self.subgraph, fan_out_index=index
            )
        inv = level.run.inv
        if inv is None or not level.targets:
            return
        for event in events:
            if not isinstance(event, ObserverEvent):
                self._relay_framework_event(index, event)
                continue
            changes: dict[str, Any] = {
                "invocation_id": level.run.invocation_id,
                "correlation_id": level.run.correlation_id,
                "namespace": (*level.prefix, *event.namespace),
                "fan_out_index": (
                    event.fan_out_index if event.fan_out_index is not None else index
                ),
                "branch_name": event.branch_name or level.branch_name,
                "fan_out_index_chain": (*level.fan_out_chain, *event.fan_out_index_chain),
                "branch_name_chain": (*level.branch_chain, *event.branch_name_chain),
                "subgraph_name_chain": (*level.subgraph_names, *event.subgraph_name_chain),
            }
            if isinstance(event, NodeEvent):
                key = (index, event.invocation_id, event.step)
                number = self._steps.get(key)
                if number is None:
                    number = self._steps[key] = level.run.next_step()
                changes["step"] = number
                changes["parent_states"] = (*level.parent_states, *event.parent_states)
            inv.emit(_struct_replace(event, **changes), level.targets)


    def _relay_framework_event(self, index: int, event: object) -> None:
        """An event carrying a ``lineage`` (e.g. a failure-isolation middleware's, raised
        around the instance): re-stamped as the local instance view's lineage would be
        (the fan-out node's namespace, ``fan_out_index`` = ``index``)."""
        step = self.step
        lineage = getattr(event, "lineage", None)
        if step is None or not isinstance(lineage, Lineage) or not is_dataclass(event):
            return
        lv = step.level
        inv = lv.run.inv
        if inv is None or not lv.targets:
            return
        restamped = Lineage(
            invocation_id=lv.run.invocation_id,
            namespace=(*lv.prefix, step.node_name, *lineage.namespace),
            attempt_index=lineage.attempt_index,
            fan_out_index=lineage.fan_out_index if lineage.fan_out_index is not None else index,
            branch_name=lineage.branch_name or lv.branch_name,
            fan_out_index_chain=(*lv.fan_out_chain, *lineage.fan_out_index_chain),
            branch_name_chain=(*lv.branch_chain, *lineage.branch_name_chain),
            subgraph_name_chain=(*lv.subgraph_names, *lineage.subgraph_name_chain),
        )
        inv.emit(_dc_replace(event, lineage=restamped), lv.targets)  # type: ignore[type-var]


@runtime_checkable
class FanOutExecutor(Protocol):
    """Runs a fan-out's instances (see the module documentation for the contract)."""

    async def run(self, batch: FanOutBatch) -> Outcome:
        """Run every instance of ``batch``; contributions by index, failures by index."""
        ...


class LocalExecutor:
    """Today's behaviour: the instances run in this event loop, at most
    ``batch.limit`` at once, starting in index order."""

    async def run(self, batch: FanOutBatch) -> Outcome:
        """Run ``batch.job(i)`` for every index through the local pool."""
        return await run_indexed(
            batch.count, batch.job, limit=batch.limit, fail_fast=batch.fail_fast
        )

    def __repr__(self) -> str:
        return "LocalExecutor()"
