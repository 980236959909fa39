"""The checkpoint record (pipeline-utilities §10.2, §10.11) and its parts.

A :class:`CheckpointRecord` is what the engine hands to
:meth:`Checkpointer.save` after every ``completed`` event and what
:meth:`Checkpointer.load` gives back on resume. The same shape, with
``status="suspended"`` and a ``descriptor``, is the paused-invocation record
of suspension §2 (one store, told apart by ``status``: pipeline-utilities
§10.15).

Every type is a frozen :class:`msgspec.Struct`, so a durable backend encodes
a record in one call and decodes it with a typed decoder. Decoded records
carry their states as plain builtins (dicts, lists, ...): the engine converts
them back to the graph's state classes, after running any state migrations
(§10.12) on that class-independent form.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from openarmature_nodes.events import ObserverEvent

__all__ = [
    "CheckpointFilter",
    "CheckpointRecord",
    "CheckpointSaved",
    "CheckpointSummary",
    "FanOutInstanceProgress",
    "FanOutLineageLink",
    "FanOutProgress",
    "NodePosition",
    "RecordStatus",
    "SignalDescriptor",
]

RecordStatus = Literal["running", "completed", "suspended"]
"""``running``: saved mid-run (a crash or an error ends it here; resumable with
``resume_invocation``); ``completed``: the run reached ``END``; ``suspended``: a
paused-invocation record, resumable with ``resume_invocation`` + ``signal_payload``."""


class NodePosition(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One completed-and-merged node attempt (§10.2 ``completed_positions``).

    Encoded as a compact array ``[namespace, node_name, step, attempt_index,
    fan_out_index]``: a record carries one per completed step.

    ``namespace`` is the path of containing node names (``[]`` in the outermost
    graph, ``["dispatch"]`` inside subgraph node ``dispatch``); ``step`` is
    monotonic across the invocation, subgraph-internal nodes included.
    """

    namespace: tuple[str, ...]
    node_name: str
    step: int
    attempt_index: int
    fan_out_index: int | None = None


class FanOutInstanceProgress(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One fan-out instance's status on a saved record (§10.11).

    ``result`` is the instance's contribution to ``target_field`` (its
    ``collect_field`` value) or, with ``result_is_error``, its ``errors_field``
    entry (``collect`` mode). ``extra`` holds its ``extra_outputs`` values
    (sub field -> value) when the fan-out declares any.
    """

    state: Literal["completed", "in_flight", "not_started"] = "not_started"
    result: Any = None
    result_is_error: bool = False
    completed_inner_positions: tuple[NodePosition, ...] = ()
    extra: dict[str, Any] | None = None


class FanOutLineageLink(msgspec.Struct, frozen=True, kw_only=True):
    """One enclosing fan-out instance of a nested fan-out (§10.11)."""

    namespace: tuple[str, ...]
    fan_out_node_name: str
    fan_out_index: int


class FanOutProgress(msgspec.Struct, frozen=True, kw_only=True):
    """Per-instance progress of one in-flight fan-out execution (§10.11).

    Keyed by ``(namespace, fan_out_node_name, enclosing_fan_out_lineage)``: a
    fan-out nested in an outer fan-out's instances has one entry per outer
    instance.
    """

    namespace: tuple[str, ...]
    fan_out_node_name: str
    instance_count: int
    instances: tuple[FanOutInstanceProgress, ...]
    enclosing_fan_out_lineage: tuple[FanOutLineageLink, ...] = ()


class SignalDescriptor(msgspec.Struct, frozen=True, kw_only=True):
    """What a suspended invocation awaits (suspension §4).

    ``signal_id`` is the application's correlation token; ``metadata`` is
    opaque round-trip data (the engine never inspects it). Durable backends
    store it as JSON-native data: pass builtins (or msgspec-encodable values).
    """

    signal_id: str
    metadata: dict[str, Any] | None = None


class CheckpointRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The checkpoint record of §10.2 (and suspension's paused-invocation record).

    ``state`` is the saving graph level's post-merge state; ``parent_states``
    the containing levels' states, outermost first (empty in the outermost
    graph). ``resume_path`` / ``resume_done`` say where a resume re-enters:
    ``resume_path[k]`` is the node to run (or, when ``resume_done`` and it is
    the last element, the node to route from) at level ``k``, whose state is
    ``(*parent_states, state)[k]``. Records without it (written by another
    implementation) resume from the last completed position.
    """

    invocation_id: str
    correlation_id: str
    state: Any
    completed_positions: tuple[NodePosition, ...] = ()
    fan_out_progress: tuple[FanOutProgress, ...] | None = None
    parent_states: tuple[Any, ...] = ()
    last_saved_at: float = 0.0
    schema_version: str = ""
    status: RecordStatus = "running"
    resume_path: tuple[str, ...] | None = None
    resume_done: bool = True
    descriptor: SignalDescriptor | None = None
    suspended_namespace: tuple[str, ...] | None = None


class CheckpointSaved(ObserverEvent, frozen=True, kw_only=True):
    """Observer event after each successful checkpoint save (pipeline-utilities §10.8).

    Emitted only when the invocation is observed (no cost otherwise), in order
    with the node events, from the graph level whose completion was saved. A
    backend with ``emit_save_events = False`` suppresses it.
    """

    backend: str
    last_saved_at: float
    status: RecordStatus
    completed_node_count: int
    fan_out_internal: bool = False


class CheckpointSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One invocation as :meth:`Checkpointer.list` enumerates it (§10.1)."""

    invocation_id: str
    correlation_id: str
    last_saved_at: float
    completed_node_count: int
    status: RecordStatus
    schema_version: str


class CheckpointFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Which invocations :meth:`Checkpointer.list` returns (every criterion is optional).

    ``saved_after`` / ``saved_before`` bound ``last_saved_at`` (seconds since
    the epoch, inclusive / exclusive).
    """

    correlation_id: str | None = None
    status: RecordStatus | None = None
    saved_after: float | None = None
    saved_before: float | None = None

    def matches(self, summary: CheckpointSummary) -> bool:
        """Whether ``summary`` passes every criterion given."""
        if self.correlation_id is not None and summary.correlation_id != self.correlation_id:
            return False
        if self.status is not None and summary.status != self.status:
            return False
        if self.saved_after is not None and summary.last_saved_at < self.saved_after:
            return False
        return self.saved_before is None or summary.last_saved_at < self.saved_before


def summarize(record: CheckpointRecord) -> CheckpointSummary:
    """The :class:`CheckpointSummary` of ``record``."""
    return CheckpointSummary(
        invocation_id=record.invocation_id,
        correlation_id=record.correlation_id,
        last_saved_at=record.last_saved_at,
        completed_node_count=len(record.completed_positions),
        status=record.status,
        schema_version=record.schema_version,
    )
