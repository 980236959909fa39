"""Conformance adapter for the checkpoint / resume / migration / crash-injection fixtures of
``spec/pipeline-utilities/conformance`` (pipeline-utilities §10).

Every case runs once per checkpointer backend it is neutral over: a fixture naming
``in_memory`` runs against the in-memory, the SQLite and (when
``OPENARMATURE_POSTGRES_URL`` is set) the PostgreSQL checkpointer; one naming
``sqlite`` (the migration fixtures, which need a class-independent store) against
SQLite and PostgreSQL; ``in_memory_batched`` against the in-memory and SQLite
backends with ``fan_out_batch_every``. A failure names the backend.

Harness pieces: a :class:`Recording` proxy around the real checkpointer (it keeps
every saved record and implements ``crash_injection`` by raising after the
boundary's save, so only what was persisted survives), invocation-keyed failure
mocks (``flaky.fail_first_invocation_only``, ``flaky_per_index``,
``flaky_resume_aware``), the named migration mocks, and an invocation observer
recording which nodes / fan-out instances started during the resume.
"""

from __future__ import annotations

import copy
import os
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from openarmature_nodes.context import current_lineage
from openarmature_nodes.graph import GraphRuntimeError, NodeEvent
from openarmature_nodes.graph.checkpoint import (
    CheckpointFilter,
    CheckpointRecord,
    CheckpointStateMigrationChainAmbiguous,
    CheckpointSummary,
    FanOutInstanceProgress,
    FanOutLineageLink,
    FanOutProgress,
    InMemoryCheckpointer,
    NodePosition,
    SQLiteCheckpointer,
)
from tests.conformance.fixtures import Case, UnknownDirective, check_directives
from tests.conformance.vocabulary import register

from . import composition as _composition  # noqa: F401  (the fan-out directive wrapped below)
from . import graph_build as gb

CHECKPOINT_KEYS = frozenset({
    "checkpointer", "seeded_record", "resume", "crash_injection", "first_run_expected_error",
    "saved_record_assertions", "every_save_assertions", "migrations",
    "expected_chain_ambiguity_error", "populate_checkpointer_via_runs", "runtime_state_subclass",
})
gb.CASE_LEVEL_KEYS.update(CHECKPOINT_KEYS)


def uses_checkpoint(case: Case) -> bool:
    return any(k in case.data for k in CHECKPOINT_KEYS)


# --- backends ------------------------------------------------------------------------------


def postgres_url() -> str | None:
    return os.environ.get("OPENARMATURE_POSTGRES_URL") or None


def backends_for(spec: Any) -> list[tuple[str, int | None]]:
    """(backend, fan_out_batch_every) pairs a case runs against."""
    kind = spec.get("kind") if isinstance(spec, Mapping) else spec
    batch = None
    if isinstance(spec, Mapping):
        batching = spec.get("fan_out_internal_save_batching") or {}
        batch = batching.get("flush_every")
    if kind == "in_memory":
        out = ["in_memory", "sqlite"]
    elif kind == "in_memory_batched":
        return [("in_memory", int(batch or 1)), ("sqlite", int(batch or 1))]
    elif kind == "sqlite":
        out = ["sqlite"]
    else:
        raise UnknownDirective(f"unknown checkpointer {spec!r}")
    if postgres_url():
        out.append("postgres")
    return [(b, None) for b in out]


async def make_checkpointer(backend: str, batch: int | None) -> Any:
    if backend == "in_memory":
        return InMemoryCheckpointer(fan_out_batch_every=batch)
    if backend == "sqlite":
        path = os.path.join(tempfile.mkdtemp(prefix="oa-ckpt-"), "checkpoints.db")
        return SQLiteCheckpointer(path, fan_out_batch_every=batch)
    if backend == "postgres":
        from openarmature_nodes.graph.checkpoint.postgres import PostgresCheckpointer

        url = postgres_url()
        assert url is not None
        return PostgresCheckpointer(url, table=f"oa_ckpt_{uuid.uuid4().hex[:12]}",
                                    fan_out_batch_every=batch)
    raise AssertionError(backend)


async def close_checkpointer(cp: Any) -> None:
    close = getattr(cp, "aclose", None)
    if close is not None:
        drop = getattr(cp, "drop_table", None)
        if drop is not None:
            await drop()
        await close()


class Crash(Exception):
    """Raised by :class:`Recording` right after the crash boundary's save."""


class Recording:
    """A checkpointer proxy keeping every saved record (and injecting the crash)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.saves: list[CheckpointRecord] = []
        self.crash: Any = None  # predicate(record) -> bool

    @property
    def backend(self) -> str:
        return str(self.inner.backend)

    @property
    def supports_migration(self) -> bool:
        return bool(self.inner.supports_migration)

    async def save(self, invocation_id: str, record: CheckpointRecord, *,
                   fan_out_internal: bool = False) -> None:
        await self.inner.save(invocation_id, record, fan_out_internal=fan_out_internal)
        self.saves.append(record)
        if self.crash is not None and self.crash(record):
            self.crash = None
            discard = getattr(self.inner, "discard_buffered", None)
            if discard is not None:
                discard()
            raise Crash("injected crash")

    async def load(self, invocation_id: str) -> CheckpointRecord | None:
        record: CheckpointRecord | None = await self.inner.load(invocation_id)
        return record

    async def list(self, filter: CheckpointFilter | None = None) -> Sequence[CheckpointSummary]:
        out: Sequence[CheckpointSummary] = await self.inner.list(filter)
        return out

    async def delete(self, invocation_id: str) -> None:
        await self.inner.delete(invocation_id)


# --- node directives: invocation-keyed failure mocks ---------------------------------------------


class MockFailure(Exception):
    category = "mock_failure"
    transient = False


def resumed(ctx: gb.BuildContext) -> bool:
    return bool(ctx.scratch.get("resumed"))


def _values(state: Any, spec: Mapping[str, Any]) -> dict[str, Any]:
    fields = getattr(type(state), "__struct_fields__", ())
    return {k: getattr(state, v) if isinstance(v, str) and v in fields else copy.deepcopy(v)
            for k, v in spec.items()}


_ORIGINAL_FLAKY = gb.NODE_DIRECTIVES.get("flaky")


def _flaky(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    if not (isinstance(value, Mapping) and "fail_first_invocation_only" in value):
        assert _ORIGINAL_FLAKY is not None
        _ORIGINAL_FLAKY(ctx, nb, value)
        return
    check_directives(value, {"fail_first_invocation_only", "on_success"}, nb.name)
    success = dict(value.get("on_success") or {})

    async def act(state: Any) -> Mapping[str, Any]:
        if not resumed(ctx):
            raise MockFailure(f"{nb.name} fails on the first invocation")
        return _values(state, success)

    nb.actions.append(act)


def _index() -> int:
    lineage = current_lineage()
    assert lineage is not None and lineage.fan_out_index is not None, "not in a fan-out instance"
    return lineage.fan_out_index


def _flaky_per_index(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    check_directives(value, {"fail_first_run_indices", "always_fail_indices", "success_compute"},
                     nb.name)
    first = set(value.get("fail_first_run_indices") or ())
    always = set(value.get("always_fail_indices") or ())
    success = dict(value.get("success_compute") or {})

    async def act(state: Any) -> Mapping[str, Any]:
        i = _index()
        lineage = current_lineage()
        ctx.scratch.setdefault("instance_attempts", []).append(
            (resumed(ctx), i, lineage.attempt_index if lineage else None))
        if i in always or (i in first and not resumed(ctx)):
            raise MockFailure(f"instance {i} fails by design")
        return _values(state, success)

    nb.actions.append(act)


def _flaky_resume_aware(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    check_directives(value, {"fail_first_invocation_count", "fail_resumed_invocation_count",
                             "on_success", "success_compute", "category"}, nb.name)
    category = value.get("category", "provider_unavailable")
    success = dict(value.get("on_success") or value.get("success_compute") or {})
    counts: dict[bool, int] = {}

    async def act(state: Any) -> Mapping[str, Any]:
        phase = resumed(ctx)
        n = counts.get(phase, 0)
        counts[phase] = n + 1
        limit = value.get("fail_resumed_invocation_count" if phase
                          else "fail_first_invocation_count", 0)
        attempts = ctx.scratch.setdefault("attempt_indexes", [])
        lineage = current_lineage()
        attempts.append((phase, lineage.attempt_index if lineage else None))
        if n < int(limit):
            exc = MockFailure(f"{nb.name} attempt {n} fails")
            exc.transient = True  # retry-classifier-friendly, as the directive asks
            exc.category = category
            raise exc
        return _values(state, success)

    nb.actions.append(act)


def _update_pure(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    """``update_pure``; a string naming a state field, for a non-string target field, reads
    that field (the fan-out checkpoint fixtures write ``{out: input}`` for "copy input")."""
    frozen = copy.deepcopy(dict(value))

    async def act(state: Any) -> Mapping[str, Any]:
        fields = getattr(type(state), "__struct_fields__", ())
        return {k: getattr(state, v)
                if isinstance(v, str) and v in fields and not isinstance(getattr(state, k, ""), str)
                else copy.deepcopy(v) for k, v in frozen.items()}

    nb.actions.append(act)


_ORIGINAL_FAN_OUT = gb.NODE_DIRECTIVES["fan_out"]


def _fan_out(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    """``fan_out`` plus the harness directive ``abort_after_instance: N``: a process-level
    abort right after instance ``N``'s completion save (run as a crash injection)."""
    spec = dict(value)
    abort = spec.pop("abort_after_instance", None)
    _ORIGINAL_FAN_OUT(ctx, nb, spec)
    if abort is not None:
        ctx.scratch["abort_after_instance"] = (nb.name, int(abort))


gb.NODE_DIRECTIVES["update_pure"] = _update_pure
gb.NODE_DIRECTIVES["fan_out"] = _fan_out
gb.NODE_DIRECTIVES["flaky"] = _flaky
gb.NODE_DIRECTIVES["flaky_per_index"] = _flaky_per_index
gb.NODE_DIRECTIVES["flaky_resume_aware"] = _flaky_resume_aware


# --- migrations ---------------------------------------------------------------------------------


def _migration(ctx: gb.BuildContext, name: str, frm: str, to: str) -> Any:
    def run(state: dict[str, Any]) -> dict[str, Any]:
        ctx.scratch.setdefault("migrations_run", []).append(f"{frm}->{to}")
        if name == "add_new_field_default":
            return {**state, "new_field": "v2_default"}
        if name == "add_v2_field":
            return {**state, "v2_field": "v2_default"}
        if name == "add_v3_field":
            return {**state, "v3_field": "v3_default"}
        if name == "raises_keyerror":
            raise KeyError("missing_key")
        if name in ("should_not_run", "irrelevant"):
            raise AssertionError(f"migration {frm}->{to} ({name}) must not run")
        raise UnknownDirective(f"unknown migration mock {name!r}")

    return run


# --- records ----------------------------------------------------------------------------------


def builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)


def seeded(data: Mapping[str, Any], invocation_id: str) -> CheckpointRecord:
    seed = dict(data)
    progress = seed.get("fan_out_progress")
    entries = None
    if progress is not None:
        entries = tuple(
            FanOutProgress(
                namespace=tuple(e.get("namespace") or ()),
                fan_out_node_name=str(e["fan_out_node_name"]),
                instance_count=int(e["instance_count"]),
                instances=tuple(FanOutInstanceProgress(**i) for i in e["instances"]),
                enclosing_fan_out_lineage=tuple(
                    FanOutLineageLink(namespace=tuple(link.get("namespace") or ()),
                                      fan_out_node_name=str(link["fan_out_node_name"]),
                                      fan_out_index=int(link["fan_out_index"]))
                    for link in e.get("enclosing_fan_out_lineage") or ()
                ),
            )
            for e in progress
        )
    return CheckpointRecord(
        invocation_id=invocation_id,
        correlation_id=str(seed.get("correlation_id") or uuid.uuid4()),
        state=dict(seed.get("state") or {}),
        completed_positions=tuple(
            NodePosition(namespace=tuple(p.get("namespace") or ()), node_name=p["node_name"],
                         step=int(p.get("step", 0)), attempt_index=int(p.get("attempt_index", 0)),
                         fan_out_index=p.get("fan_out_index"))
            for p in seed.get("completed_positions") or ()
        ),
        fan_out_progress=entries,
        parent_states=tuple(dict(s) for s in seed.get("parent_states") or ()),
        schema_version=str(seed.get("schema_version", "")),
    )


def _positions(record: CheckpointRecord) -> list[dict[str, Any]]:
    out = []
    for p in record.completed_positions:
        d = {"namespace": list(p.namespace), "node_name": p.node_name, "step": p.step,
             "attempt_index": p.attempt_index}
        if p.fan_out_index is not None:
            d["fan_out_index"] = p.fan_out_index
        out.append(d)
    return out


def check_positions(record: CheckpointRecord, want: list[Mapping[str, Any]], where: str) -> None:
    got = _positions(record)
    assert len(got) == len(want), f"{where}: positions {got}"
    for g, w in zip(got, want, strict=True):
        for key, value in w.items():
            assert g.get(key) == value, f"{where}: {key} {g} != {dict(w)}"


def check_progress(record: CheckpointRecord, want: Mapping[str, Any], where: str) -> None:
    entries = {e.fan_out_node_name: e for e in record.fan_out_progress or ()}
    for node, spec in want.items():
        assert node in entries, f"{where}: no fan_out_progress entry for {node!r}: {entries}"
        entry = entries[node]
        if "instance_count" in spec:
            assert entry.instance_count == spec["instance_count"], f"{where}.instance_count"
        for i, inst in enumerate(spec.get("instances") or ()):
            got = entry.instances[i]
            if "state" in inst:
                assert got.state == inst["state"], f"{where}[{i}].state: {got}"
            if "state_one_of" in inst:
                assert got.state in inst["state_one_of"], f"{where}[{i}].state: {got}"
            if inst.get("result_present"):
                assert got.result is not None, f"{where}[{i}].result: {got}"
            if "result" in inst:
                assert builtins(got.result) == inst["result"], f"{where}[{i}].result: {got}"
            if "result_is_error" in inst:
                assert got.result_is_error == inst["result_is_error"], f"{where}[{i}]: {got}"
            if "completed_inner_positions" in inst:
                inner = [{"node_name": p.node_name, "attempt_index": p.attempt_index}
                         for p in got.completed_inner_positions]
                for g, w in zip(inner, inst["completed_inner_positions"], strict=True):
                    assert all(g.get(k) == v for k, v in w.items()), f"{where}[{i}]: {inner}"


def check_record(record: CheckpointRecord, spec: Mapping[str, Any], where: str) -> None:
    for key, want in spec.items():
        w = f"{where}.{key}"
        if key == "state":
            assert builtins(record.state) == want, f"{w}: {builtins(record.state)}"
        elif key == "completed_positions":
            check_positions(record, want, w)
        elif key == "fan_out_progress":
            if want is None:
                assert record.fan_out_progress is None, f"{w}: {record.fan_out_progress}"
            else:
                check_progress(record, want, w)
        elif key == "parent_states":
            assert builtins(list(record.parent_states)) == want, w
        elif key == "parent_states_present":
            assert bool(record.parent_states) == want, w
        elif key == "parent_states_outermost_first":
            assert record.parent_states, w  # the outer state is the only (first) entry
        elif key == "fan_out_node_in_completed_positions":
            names = {p.node_name for p in record.completed_positions if not p.namespace}
            nodes = {e.fan_out_node_name for e in record.fan_out_progress or ()}
            assert bool(names & nodes) == want, f"{w}: {names} / {nodes}"
        elif key == "invocation_id":
            _placeholder(record.invocation_id, want, w)
        elif key == "correlation_id":
            _placeholder(record.correlation_id, want, w)
        elif key == "last_saved_at":
            assert isinstance(record.last_saved_at, float) and record.last_saved_at > 0, w
        elif key == "schema_version":
            _placeholder(record.schema_version, want, w)
        else:
            raise UnknownDirective(f"unknown record assertion {key!r} at {where}")


def is_uuid4(value: Any) -> bool:
    try:
        return uuid.UUID(str(value)).version == 4
    except ValueError:
        return False


def _placeholder(got: Any, want: Any, where: str) -> None:
    if want == "<uuid>":
        assert is_uuid4(got), f"{where}: {got!r} is not a UUIDv4"
    elif want == "<any-string>":
        assert isinstance(got, str), where
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def error_in_chain(error: BaseException | None, node: str) -> bool:
    while error is not None:
        if getattr(error, "node_name", None) == node:
            return True
        error = error.__cause__
    return False


class Started:
    """An invocation observer recording the ``started`` events of one run."""

    def __init__(self) -> None:
        self.events: list[NodeEvent] = []

    async def __call__(self, event: Any) -> None:
        if isinstance(event, NodeEvent) and event.phase == "started":
            self.events.append(event)

    def nodes(self) -> list[str]:
        return [e.node_name for e in self.events]

    def instances(self) -> set[int]:
        return {e.fan_out_index for e in self.events
                if e.fan_out_index is not None and len(e.namespace) == 2}


# What this adapter interprets (conformance-adapter §5.1 mocks, §5.6 persistence, §5.9).
register("checkpoint", CHECKPOINT_KEYS)
register("checkpoint", {
    "fail_first_invocation_only", "on_success", "flaky_per_index", "fail_first_run_indices",
    "always_fail_indices", "flaky_resume_aware", "fail_first_invocation_count",
    "fail_resumed_invocation_count", "after_node", "after_fan_out_instance", "node", "index",
    "fan_out_progress", "instance_count", "instances", "result", "result_is_error",
    "completed_inner_positions", "from_first_run", "instances_executed_during_resume",
    "instances_skipped_during_resume", "resume_invocation", "exception_type",
})

__all__ = [
    "CHECKPOINT_KEYS", "Crash", "MockFailure", "Recording", "Started", "backends_for",
    "builtins", "check_positions", "check_progress", "check_record", "close_checkpointer",
    "error_in_chain", "is_uuid4", "make_checkpointer", "postgres_url", "resumed", "seeded",
    "uses_checkpoint", "CheckpointStateMigrationChainAmbiguous", "GraphRuntimeError",
]

from .checkpoint_run import run_checkpoint_case, wrap_checkpoint  # noqa: E402

__all__ += ["run_checkpoint_case", "wrap_checkpoint"]
