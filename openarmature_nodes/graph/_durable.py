"""The engine side of durable runs: saving checkpoints, resuming, fan-out progress.

One :class:`Durable` per checkpointed invocation (``Run.durable``). The loop
calls :meth:`Durable.node_done` after each completed-and-merged node
(pipeline-utilities §10.3); fan-out nodes report their instances through a
:class:`FanOutTracker` (§10.11). A resume builds a :class:`ResumePlan` from the
loaded record (:func:`plan_resume`): the node to re-enter at each nesting level
with that level's restored state, and the saved fan-out progress, consumed by
the levels and fan-outs as they start.

Where a record says to re-enter (``resume_path``): the path of node names from
the outermost graph down to the saving level, cut at the first fan-out or
parallel-branches node (whose instances resume through ``fan_out_progress``,
not through the path). ``resume_done`` says whether the last node completed
(route from it) or must run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from .checkpoint.errors import (
    CheckpointRecordInvalid,
    CheckpointSaveFailed,
    CheckpointStateMigrationMissing,
    SuspensionResumePayloadInvalid,
)
from .checkpoint.migrations import MigrationRegistry
from .checkpoint.protocol import Checkpointer
from .checkpoint.records import (
    CheckpointRecord,
    CheckpointSaved,
    FanOutInstanceProgress,
    FanOutLineageLink,
    FanOutProgress,
    NodePosition,
    RecordStatus,
    SignalDescriptor,
)
from .errors import StateValidationError

if TYPE_CHECKING:
    from ._run import Level, Run
    from .compiled import CompiledGraph

__all__ = ["Durable", "FanOutTracker", "ResumePlan", "declared_version", "plan_resume"]

_NOT_STARTED = FanOutInstanceProgress()
_IN_FLIGHT = FanOutInstanceProgress(state="in_flight")
ProgressKey = tuple[tuple[str, ...], str, tuple[FanOutLineageLink, ...]]


def declared_version(cls: type) -> str:
    """The ``schema_version`` a state class declares (a ``ClassVar[str]``), or ``""``."""
    v = getattr(cls, "schema_version", "")
    return v if isinstance(v, str) else ""


def lineage(level: Level, upto: int | None = None) -> tuple[FanOutLineageLink, ...]:
    """The enclosing fan-out instances of ``level`` (its first ``upto`` nesting steps)."""
    chain = level.fan_out_chain if upto is None else level.fan_out_chain[:upto]
    return tuple(
        FanOutLineageLink(
            namespace=level.prefix[:k], fan_out_node_name=level.prefix[k], fan_out_index=i
        )
        for k, i in enumerate(chain)
        if i is not None
    )


def resume_path(level: Level, node_name: str) -> tuple[tuple[str, ...], bool]:
    """(path, cut): where a resume re-enters for a save at ``level`` after ``node_name``.

    ``cut`` is true when the path stops at an enclosing fan-out / parallel node.
    """
    for k, (f, b) in enumerate(zip(level.fan_out_chain, level.branch_chain, strict=True)):
        if f is not None or b is not None:
            return level.prefix[: k + 1], True
    return (*level.prefix, node_name), False


class FanOutTracker:
    """Per-instance progress of one fan-out execution (one ``fan_out_progress`` entry)."""

    __slots__ = ("count", "instances", "key", "lineage", "name", "namespace")

    def __init__(
        self, key: ProgressKey, count: int, saved: FanOutProgress | None
    ) -> None:
        self.key = key
        self.namespace, self.name, self.lineage = key
        self.count = count
        if saved is None:
            self.instances = [_NOT_STARTED] * count
        else:
            self.instances = [
                e if e.state == "completed" else _NOT_STARTED for e in saved.instances
            ]

    def saved(self, i: int) -> FanOutInstanceProgress | None:
        """Instance ``i``'s completed entry from the resumed record, if any."""
        e = self.instances[i]
        return e if e.state == "completed" else None

    def started(self, i: int) -> None:
        self.instances[i] = _IN_FLIGHT

    def inner_done(self, i: int, pos: NodePosition) -> None:
        e = self.instances[i]
        self.instances[i] = FanOutInstanceProgress(
            state="in_flight", completed_inner_positions=(*e.completed_inner_positions, pos)
        )

    def completed(self, i: int, result: Any, *, error: bool, extra: dict[str, Any] | None) -> None:
        self.instances[i] = FanOutInstanceProgress(
            state="completed", result=result, result_is_error=error, extra=extra
        )

    def entry(self) -> FanOutProgress:
        return FanOutProgress(
            namespace=self.namespace, fan_out_node_name=self.name,
            instance_count=self.count, instances=tuple(self.instances),
            enclosing_fan_out_lineage=self.lineage,
        )


class ResumePlan:
    """Where a resumed invocation re-enters (see the module documentation)."""

    __slots__ = ("done", "path", "payload", "progress", "states", "taken")

    def __init__(
        self,
        path: tuple[str, ...],
        states: list[Any],
        done: bool,
        progress: dict[ProgressKey, FanOutProgress],
    ) -> None:
        self.path = path
        self.states = states
        self.done = done
        self.progress = progress
        self.taken = 0

    def take(self, level: Level) -> tuple[Any, str | None, bool] | None:
        """(state, node to start at or ``None`` for the entry, route-from-it) for the
        level about to run, if the resume re-enters it; ``None`` otherwise."""
        k = self.taken
        if k > len(self.path) or (k == len(self.path) and k > 0):
            return None
        if level.prefix != self.path[:k]:
            return None
        self.taken = k + 1
        if not self.path:
            return self.states[0], None, False
        last = k == len(self.path) - 1
        return self.states[k], self.path[k], self.done and last


class Durable:
    """The checkpoint bookkeeping of one invocation (``Run.durable``)."""

    __slots__ = (
        "checkpointer", "correlation_id", "events", "last", "plan", "positions", "run",
        "trackers", "version",
    )

    def __init__(
        self,
        checkpointer: Checkpointer,
        version: str,
        correlation_id: str,
        plan: ResumePlan | None = None,
        positions: tuple[NodePosition, ...] = (),
    ) -> None:
        self.checkpointer = checkpointer
        self.version = version
        self.correlation_id = correlation_id
        self.plan = plan
        self.positions: list[NodePosition] = list(positions)
        self.trackers: dict[ProgressKey, FanOutTracker] = {}
        self.last = 0.0
        self.run: Run | None = None
        self.events = bool(getattr(checkpointer, "emit_save_events", True))

    # --- saving -----------------------------------------------------------------------

    def _record(
        self, level: Level, state: Any, path: tuple[str, ...], done: bool,
        status: RecordStatus, descriptor: SignalDescriptor | None,
        suspended: tuple[str, ...] | None,
    ) -> CheckpointRecord:
        now = time.time()
        if now <= self.last:
            now = self.last + 1e-6
        self.last = now
        assert self.run is not None
        return CheckpointRecord(
            invocation_id=self.run.invocation_id,
            correlation_id=self.correlation_id,
            state=state,
            completed_positions=tuple(self.positions),
            fan_out_progress=(
                tuple(t.entry() for t in self.trackers.values()) if self.trackers else None
            ),
            parent_states=level.parent_states,
            last_saved_at=now,
            schema_version=self.version,
            status=status,
            resume_path=path,
            resume_done=done,
            descriptor=descriptor,
            suspended_namespace=suspended,
        )

    async def save(
        self, level: Level, state: Any, path: tuple[str, ...], done: bool, *,
        internal: bool = False, status: RecordStatus = "running",
        descriptor: SignalDescriptor | None = None, suspended: tuple[str, ...] | None = None,
        node_name: str | None = None,
    ) -> None:
        """Build the record and hand it to the checkpointer (awaited: synchronous, §10.3).

        A failing ``save`` raises ``checkpoint_save_failed`` naming ``node_name``
        (the node whose completion was being saved), the backend error as cause.
        """
        record = self._record(level, state, path, done, status, descriptor, suspended)
        try:
            await self.checkpointer.save(record.invocation_id, record, fan_out_internal=internal)
        except Exception as exc:
            raise CheckpointSaveFailed(
                f"saving the checkpoint of invocation {record.invocation_id!r} to "
                f"{self.checkpointer.backend} failed: {type(exc).__name__}: {exc}",
                node_name=node_name, recoverable_state=state,
            ) from exc
        inv = level.run.inv
        if inv is not None and level.targets and self.events:
            inv.emit(CheckpointSaved(
                invocation_id=record.invocation_id, namespace=level.prefix,
                correlation_id=record.correlation_id, fan_out_index=level.fan_out_index,
                branch_name=level.branch_name, fan_out_index_chain=level.fan_out_chain,
                branch_name_chain=level.branch_chain, backend=self.checkpointer.backend,
                last_saved_at=record.last_saved_at, status=record.status,
                completed_node_count=len(record.completed_positions), fan_out_internal=internal,
            ), level.targets)

    def position(self, level: Level, node_name: str, step: int, attempt: int) -> NodePosition:
        pos = NodePosition(
            namespace=level.prefix, node_name=node_name, step=step, attempt_index=attempt,
            fan_out_index=level.fan_out_index,
        )
        self.positions.append(pos)
        return pos

    async def node_done(
        self, level: Level, node_name: str, step: int, attempt: int, state: Any, terminal: bool
    ) -> None:
        """Node ``node_name`` completed and merged into ``state`` at ``level``: save."""
        pos = self.position(level, node_name, step, attempt)
        path, cut = resume_path(level, node_name)
        if cut:
            tracker, i = self._instance_of(level)
            if tracker is not None:
                tracker.inner_done(i, pos)
                if terminal and level.fan_out_chain[-1] is not None:
                    return  # the instance's completion save follows at once
            await self.save(level, state, path, False, internal=True, node_name=node_name)
            return
        status: RecordStatus = "completed" if terminal and not level.prefix else "running"
        await self.save(level, state, path, True, status=status, node_name=node_name)

    async def node_failed(self, level: Level, node_name: str, state: Any) -> None:
        """A node failed inside a fan-out instance: save, recording the instance in flight."""
        path, cut = resume_path(level, node_name)
        if cut and level.fan_out_index is not None:
            await self.save(level, state, path, False, internal=True, node_name=node_name)

    def _instance_of(self, level: Level) -> tuple[FanOutTracker | None, int]:
        chain = level.fan_out_chain
        for k in range(len(chain) - 1, -1, -1):
            i = chain[k]
            if i is not None:
                key = (level.prefix[:k], level.prefix[k], lineage(level, k))
                return self.trackers.get(key), i
        return None, -1

    # --- fan-out -------------------------------------------------------------------------

    def fan_out_begin(self, level: Level, node_name: str, count: int) -> FanOutTracker:
        """Start tracking a fan-out at ``level``; on resume, pick up its saved progress.

        Raises ``checkpoint_record_invalid`` when the saved entry's instance count
        differs from ``count`` (§10.11 count drift), before any instance runs.
        """
        key: ProgressKey = (level.prefix, node_name, lineage(level))
        saved = self.plan.progress.pop(key, None) if self.plan is not None else None
        if saved is not None and saved.instance_count != count:
            raise CheckpointRecordInvalid(
                f"fan-out {node_name!r}: the checkpoint recorded {saved.instance_count} "
                f"instances but this run resolves {count}; a changed input set needs a fresh "
                "invocation, not a resume",
                node_name=node_name,
            )
        tracker = FanOutTracker(key, count, saved)
        self.trackers[key] = tracker
        return tracker

    def fan_out_end(self, tracker: FanOutTracker) -> None:
        """The fan-out finished (merged, failed or suspended): drop its entry and any
        nested fan-out entries running inside its instances."""
        self.trackers.pop(tracker.key, None)
        ns = (*tracker.namespace, tracker.name)
        for key in [k for k in self.trackers if k[0][: len(ns)] == ns]:
            del self.trackers[key]

    async def instance_done(self, level: Level, node_name: str, state: Any) -> None:
        """A fan-out instance recorded its contribution: save (fan-out internal)."""
        path, _ = resume_path(level, node_name)
        await self.save(level, state, path, False, internal=True, node_name=node_name)


# --- resume --------------------------------------------------------------------------------


def plan_resume(
    graph: CompiledGraph[Any],
    record: CheckpointRecord,
    migrations: MigrationRegistry,
    supports_migration: bool,
    payload: Mapping[str, Any] | None,
) -> ResumePlan:
    """Check, migrate and convert ``record``'s states for ``graph``; say where to re-enter.

    Raises the §10.10 categories in the spec's order (migration missing /
    failed, then record invalid) and, with a ``payload``, suspension's
    ``suspension_resume_payload_invalid``.
    """
    from .nodes import SubgraphNode

    version = declared_version(graph.schema.cls)
    states = [*record.parent_states, record.state]
    if record.schema_version != version:
        structural = all(isinstance(s, Mapping) for s in states)
        if not structural or not supports_migration:
            if len(migrations) == 0:
                raise _missing(record.schema_version, version, migrations)
            raise CheckpointRecordInvalid(
                f"the checkpoint was saved with schema_version {record.schema_version!r}, the "
                f"graph's state is {version!r}, and this checkpointer keeps typed states, "
                "which state migrations cannot rewrite"
            )
        states = [
            migrations.migrate(dict(s), record.schema_version, version) for s in states
        ]
    path, done = _path_of(graph, record)
    # Convert each level's state with that level's graph schema.
    g: Any = graph
    out: list[Any] = []
    graphs: list[Any] = []
    for k in range(max(len(path), 1)):
        if k >= len(states):
            raise CheckpointRecordInvalid(
                f"the checkpoint's resume path {list(path)} is deeper than its saved states"
            )
        out.append(_convert(g, states[k], k))
        graphs.append(g)
        if k < len(path):
            node = g._nodes.get(path[k])
            if node is None:
                raise CheckpointRecordInvalid(
                    f"the checkpoint resumes at node {path[k]!r}, which the graph does not have"
                )
            if k < len(path) - 1:
                if not isinstance(node.kind, SubgraphNode):
                    raise CheckpointRecordInvalid(
                        f"the checkpoint's resume path {list(path)} goes through {path[k]!r}, "
                        "which is not a subgraph node"
                    )
                g = node.kind.graph
    if payload is not None:
        # Suspension §6: the payload overwrites the fields it names in every level of the
        # paused path that declares them (the suspending node's level, its containing ones).
        if not isinstance(payload, Mapping):
            raise SuspensionResumePayloadInvalid(
                f"signal_payload must be a mapping of state fields, got {type(payload).__name__}"
            )
        # Fields no level declares are dropped (§6 "extra fields").
        out = [_overlay(gr, st, payload) for gr, st in zip(graphs, out, strict=True)]
    progress: dict[ProgressKey, FanOutProgress] = {
        (e.namespace, e.fan_out_node_name, e.enclosing_fan_out_lineage): e
        for e in record.fan_out_progress or ()
    }
    return ResumePlan(path, out, done, progress)


def _missing(frm: str, to: str, registry: MigrationRegistry) -> CheckpointStateMigrationMissing:
    return CheckpointStateMigrationMissing(
        f"the checkpoint was saved with schema_version {frm!r} but the graph's state is {to!r}, "
        "and no state migration is registered; register one with "
        "GraphBuilder.with_state_migration()",
        from_version=frm, to_version=to, registered_migrations_count=len(registry),
        registry_description=registry.describe(),
    )


def _path_of(graph: CompiledGraph[Any], record: CheckpointRecord) -> tuple[tuple[str, ...], bool]:
    if record.resume_path is not None:
        return tuple(record.resume_path), record.resume_done
    if not record.completed_positions:
        return (), False
    last = record.completed_positions[-1]
    path = (*last.namespace, last.node_name)
    from .nodes import SubgraphNode

    g: Any = graph
    for k, name in enumerate(path[:-1]):
        node = g._nodes.get(name)
        if node is None or not isinstance(node.kind, SubgraphNode):
            return path[: k + 1], False
        g = node.kind.graph
    return path, True


def _convert(graph: Any, state: Any, depth: int) -> Any:
    schema = graph.schema
    if not isinstance(state, schema.cls):
        if not isinstance(state, Mapping):
            raise CheckpointRecordInvalid(
                f"the checkpoint's state at nesting level {depth} is a {type(state).__name__}, "
                f"not a {schema.cls.__name__} or a mapping"
            )
        try:
            state = msgspec.convert(dict(state), schema.cls, strict=False)
        except (msgspec.ValidationError, TypeError) as exc:
            raise CheckpointRecordInvalid(
                f"the checkpoint's state does not fit {schema.cls.__name__}: {exc}"
            ) from exc
    try:
        schema.validate(state, where="checkpoint state")
    except StateValidationError as exc:
        raise CheckpointRecordInvalid(str(exc)) from exc
    return state


def _overlay(graph: Any, state: Any, payload: Mapping[str, Any]) -> Any:
    """Suspension §6: each declared field of ``payload`` overwrites the state's (no reducers)."""
    schema = graph.schema
    fields = {k: v for k, v in payload.items() if k in schema.fields}
    if not fields:
        return state
    new = msgspec.structs.replace(state, **fields)
    try:
        schema.validate(new, where="signal_payload merge")
    except StateValidationError as exc:
        raise SuspensionResumePayloadInvalid(str(exc), recoverable_state=state) from exc
    return new
