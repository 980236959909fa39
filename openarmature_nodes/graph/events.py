"""Node events: what the graph engine itself puts on the observer queue.

Every event derives from :class:`~openarmature_nodes.events.ObserverEvent`
(ground floor, re-exported here), which carries the identity an observer needs
to scope it (``invocation_id`` and the lineage fields). The graph engine emits
:class:`NodeEvent`: one ``started`` and one ``completed`` per node attempt
(graph-engine §6). Other layers build the typed call events of
:mod:`openarmature_nodes.events` (LLM completions and failures, tool calls,
token deltas) and put them on the same delivery queue; observers tell them
apart with ``isinstance``.

Events that have a ``phase`` (node events) honour an observer's phase
subscription; events without one reach every observer.

An event is built only when at least one observer will receive it, so an
unobserved graph pays nothing for this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from openarmature_nodes.events import ObserverEvent

__all__ = [
    "FanOutConfig",
    "FanOutInstanceEvent",
    "InvocationEvent",
    "NodeError",
    "NodeEvent",
    "ObserverEvent",
    "ParallelBranchesConfig",
    "Phase",
]

Phase = Literal["started", "completed", "suspended"]
PHASES: frozenset[str] = frozenset(("started", "completed", "suspended"))
INSTANCE_PHASE = "fan_out_instance"
"""The opt-in phase of :class:`FanOutInstanceEvent` (not in any default subscription)."""
INVOCATION_PHASES: frozenset[str] = frozenset(("invocation_started", "invocation_completed"))


class NodeError(msgspec.Struct, frozen=True):
    """The ``error`` of a failed ``completed`` event: a §4 category and the error."""

    category: str
    exception: BaseException


class FanOutConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Resolved configuration of a fan-out node (set on that node's own events)."""

    item_count: int
    concurrency: int | None
    error_policy: Literal["fail_fast", "collect"]
    parent_node_name: str


class ParallelBranchesConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Resolved configuration of a parallel-branches node (set on its own events)."""

    branch_names: tuple[str, ...]
    branch_count: int
    error_policy: Literal["fail_fast", "collect"]
    parent_node_name: str


class NodeEvent(ObserverEvent, frozen=True, kw_only=True):
    """One node-boundary event (graph-engine §6).

    ``pre_state`` is the state the node received. A ``completed`` event carries
    exactly one of ``post_state`` (the merged state; the step succeeded) and
    ``error``. ``parent_states`` holds, outermost first, each containing graph's
    state at the moment it entered the subgraph leading here. ``update`` is, on
    a successful ``completed`` event of a graph node, the partial update the
    node returned (an empty mapping for ``None``); ``None`` elsewhere.
    """

    phase: Phase
    node_name: str
    step: int
    pre_state: Any
    post_state: Any = None
    error: NodeError | None = None
    parent_states: tuple[Any, ...] = ()
    descriptor: Any = None
    fan_out_config: FanOutConfig | None = None
    parallel_branches_config: ParallelBranchesConfig | None = None
    update: Any = None


class FanOutInstanceEvent(ObserverEvent, frozen=True, kw_only=True):
    """One fan-out instance finished (for progress reporting; opt-in).

    Not a graph-engine §6 event: it reaches only observers subscribed to the
    phase ``"fan_out_instance"`` (``graph.attach(obs, phases={"fan_out_instance"})``,
    or an observer object whose ``observer_phases`` attribute names it), so the
    event stream every other observer sees is unchanged. ``namespace`` is the
    fan-out node's, ``fan_out_index`` the instance's; ``outcome`` is ``"ok"``
    (it returned, possibly a degraded update) or ``"failed"`` (it raised).
    """

    phase: Literal["fan_out_instance"] = "fan_out_instance"
    node_name: str
    item_count: int
    outcome: Literal["ok", "failed"]


class InvocationEvent(ObserverEvent, frozen=True, kw_only=True):
    """The outermost invocation began (``invocation_started``) or ended
    (``invocation_completed``, with ``state`` or ``error``).

    Delivered only to observers that subscribe to these phases explicitly
    (a tracing observer needs the invocation's window; most observers do not),
    so default subscriptions never see it. ``namespace`` is empty;
    ``entry_node`` is the outermost graph's entry node.
    """

    phase: Literal["invocation_started", "invocation_completed"]
    entry_node: str
    state: Any = None
    error: NodeError | None = None
    metadata: Mapping[str, Any] = msgspec.field(default_factory=dict)
