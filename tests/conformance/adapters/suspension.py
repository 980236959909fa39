"""Conformance adapter for ``spec/suspension/conformance`` (the suspension capability).

A case is a graph plus an ``invocations`` list run in order against one
checkpointer store: a fresh invoke, then resumes naming an earlier outcome
(``"<from previous suspended outcome>"``, ``"<invocation_id from initial
completed invoke>"``, or a literal id) with a ``signal_payload``. Every case
runs once per backend: the fixture's ``checkpointer`` when it names one, else
the in-memory, SQLite and (with ``OPENARMATURE_POSTGRES_URL``) PostgreSQL
checkpointers: a suspension needs a store, and the cases that do not name one
are backend-neutral.

Node directives added here: ``suspend_with_descriptor``, ``conditional_suspend``
(suspend in one fan-out instance, run ``on_other_indices`` in the others) and the
``wrap_with_middleware`` entry ``pre_next_calls_suspend_with_descriptor``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from openarmature_nodes.context import current_lineage
from openarmature_nodes.graph import NodeEvent
from openarmature_nodes.graph.suspension import SignalDescriptor, Suspended, suspend
from openarmature_nodes.observability.otel import OTelObserver
from tests.conformance.fixtures import Case, UnknownDirective, check_directives
from tests.conformance.vocabulary import register

from . import checkpoint as ck
from . import graph_build as gb
from . import observability as obs
from . import pipeline_utilities as _pu  # noqa: F401  (registers every node directive first)


def _descriptor(spec: Mapping[str, Any], where: str) -> tuple[SignalDescriptor, bool]:
    check_directives(spec, {"signal_id", "metadata", "mark_node_completed"}, where)
    desc = SignalDescriptor(signal_id=str(spec["signal_id"]),
                            metadata=dict(spec["metadata"]) if spec.get("metadata") else None)
    return desc, bool(spec.get("mark_node_completed", True))


def _suspend_with_descriptor(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    desc, mark = _descriptor(value, f"{nb.name}.suspend_with_descriptor")

    async def act(state: Any) -> Mapping[str, Any]:
        await suspend(desc, mark_node_completed=mark)

    nb.actions.append(act)


def _conditional_suspend(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    where = f"{nb.name}.conditional_suspend"
    check_directives(value, {"suspend_on_item_index", "descriptor", "on_other_indices"}, where)
    desc, mark = _descriptor(value["descriptor"], f"{where}.descriptor")
    others = value.get("on_other_indices") or nb.spec.get("on_other_indices") or {}
    other = gb.NodeBuild(nb.name, dict(others), nb.graph_name)
    for directive, spec in other.spec.items():
        gb.NODE_DIRECTIVES[directive](ctx, other, spec)
    target = int(value["suspend_on_item_index"])

    async def act(state: Any) -> Mapping[str, Any]:
        lineage = current_lineage()
        if lineage is not None and lineage.fan_out_index == target:
            await suspend(desc, mark_node_completed=mark)
        update: dict[str, Any] = {}
        for action in other.actions:
            update.update(await action(state) or {})
        return update

    nb.actions.append(act)


_ORIGINAL_WRAP = gb.NODE_DIRECTIVES["wrap_with_middleware"]


def _wrap_with_middleware(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    plain = []
    for cfg in value or ():
        spec = cfg.get("pre_next_calls_suspend_with_descriptor")
        if spec is None:
            plain.append(cfg)
            continue
        desc, _ = _descriptor(spec, f"{nb.name}.wrap_with_middleware")

        async def mw(state: Any, nxt: Any, desc: SignalDescriptor = desc) -> Any:
            await suspend(desc)
            return await nxt(state)

        nb.middleware.append(mw)
    if plain:
        _ORIGINAL_WRAP(ctx, nb, plain)


_ORIGINAL_FAN_OUT = gb.NODE_DIRECTIVES["fan_out"]


def _fan_out(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    spec = dict(value)
    spec.setdefault("collect_field", spec.get("item_field"))  # 007 names none (it never merges)
    _ORIGINAL_FAN_OUT(ctx, nb, spec)


def _conditional_review(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    """Own-case directive: suspend (re-entrantly) until ``state.verdict`` is set."""
    check_directives(value, set(), f"{nb.name}.conditional_review")

    async def act(state: Any) -> Mapping[str, Any]:
        if not state.verdict:
            await suspend("review-needed", metadata={"queue": "editors"},
                          mark_node_completed=False)
        return {}

    nb.actions.append(act)


def _consumed(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    """``on_other_indices`` beside ``conditional_suspend``: read by that directive."""


gb.NODE_DIRECTIVES.update({
    "on_other_indices": _consumed,
    "conditional_review": _conditional_review,
    "suspend_with_descriptor": _suspend_with_descriptor,
    "conditional_suspend": _conditional_suspend,
    "wrap_with_middleware": _wrap_with_middleware,
    "fan_out": _fan_out,
})

INVOCATION_KEYS = {"name", "initial_state", "resume_invocation", "signal_payload", "expected"}
EXPECTED_KEYS = {"outcome", "suspended_state", "descriptor", "suspending_node", "final_state",
                 "execution_order", "error", "final_state_at_error", "observer_events",
                 "observer_event_invariants", "checkpointer_assertions", "otel_spans"}


register("suspension", INVOCATION_KEYS | EXPECTED_KEYS)
register("suspension", {
    "suspend_with_descriptor", "conditional_suspend", "pre_next_calls_suspend_with_descriptor",
    "signal_id", "metadata", "metadata_includes", "suspend_on_item_index", "on_other_indices",
    "checkpointer_assertions", "started_followed_by_suspended_in_order",
    "no_completed_event_for_suspending_node", "suspended_event_carries_descriptor",
})


async def run_case(case: Case) -> None:
    spec = case.data.get("checkpointer")
    backends = ck.backends_for(spec if spec is not None else "in_memory")
    for backend, batch in backends:
        cp = await ck.make_checkpointer(backend, batch)
        try:
            await _run(case, cp, f"{case.test_id}[{backend}]")
        finally:
            await ck.close_checkpointer(cp)


async def _run(case: Case, cp: Any, where: str) -> None:
    data = case.data
    ctx = gb.BuildContext(case)
    ctx.collect_subgraphs(data, case.document)
    token = gb.bind_context(ctx)
    try:
        graph = gb.build_graph(ctx, data, name="outer").with_checkpointer(cp).compile()
        ctx.outer = graph
        specs = list(data.get("observers") or [])
        gb.attach_observers(ctx, [o for o in specs if o.get("behavior") != "otel"])
        exporters = _attach_otel(ctx, [o for o in specs if o.get("behavior") == "otel"])
        spans: list[Any] = []
        outcomes: list[Any] = []
        for i, inv in enumerate(data.get("invocations") or ()):
            w = f"{where}.invocations[{i}]"
            check_directives(inv, INVOCATION_KEYS, w)
            for rec in ctx.observers.values():
                rec.events.clear()
            for exporter in exporters.values():
                exporter.clear()
            ctx.invocations.append(gb.InvocationRecord(len(ctx.invocations), ""))
            outcome: Any = None
            error: Any = None
            resume = inv.get("resume_invocation")
            try:
                if resume is None:
                    outcome = await graph.run(dict(inv.get("initial_state") or {}))
                else:
                    outcome = await graph.run(
                        None, resume_invocation=_resolve(resume, outcomes, w),
                        signal_payload=dict(inv.get("signal_payload") or {}),
                    )
            except Exception as exc:
                error = exc
            await graph.drain()
            outcomes.append(outcome)
            ctx.scratch["otel_spans"] = {n: list(e.get_finished_spans())
                                         for n, e in exporters.items()}
            spans.extend(s for got in ctx.scratch["otel_spans"].values() for s in got)
            await _check(ctx, cp, dict(inv.get("expected") or {}), outcome, error, w)
        if exporters:
            _otel_invariants(spans, dict(data.get("invariants") or {}), where)
    finally:
        gb._CTX.reset(token)


def _attach_otel(ctx: gb.BuildContext, specs: list[Mapping[str, Any]]
                 ) -> dict[str, InMemorySpanExporter]:
    """``behavior: otel`` observers: the OpenTelemetry observer, exporting in memory."""
    exporters: dict[str, InMemorySpanExporter] = {}
    for spec in specs:
        check_directives(spec, {"name", "attach", "target", "behavior"}, "observers[otel]")
        if spec.get("attach", "graph") != "graph":
            raise UnknownDirective(f"otel observer attach {spec.get('attach')!r}")
        exporter = InMemorySpanExporter()
        observer = OTelObserver(span_processors=[SimpleSpanProcessor(exporter)])
        ctx.graph_named(str(spec.get("target", "outer"))).attach(observer)
        exporters[str(spec["name"])] = exporter
    return exporters


def _otel_invariants(spans: list[Any], invariants: Mapping[str, Any], where: str) -> None:
    """The case-level invariants over the OTel spans of a suspension (observability §4.2)."""
    suspended = [s for s in spans if (s.attributes or {}).get("openarmature.outcome")
                 == "suspended"]
    roots = [s for s in suspended if s.name == "openarmature.invocation"]
    nodes = [s for s in suspended if s.name != "openarmature.invocation"]
    checks = {
        "invocation_span_carries_outcome_suspended": lambda: bool(roots),
        "node_span_carries_suspension_attributes": lambda: bool(nodes) and all(
            "openarmature.suspension.signal_id" in (s.attributes or {}) for s in nodes)
        and not any("openarmature.suspension.signal_id" in (s.attributes or {})
                    for s in roots),
        "otel_status_code_is_OK_per_4_2_mapping": lambda: bool(suspended) and all(
            s.status.status_code is StatusCode.OK for s in suspended),
    }
    for name, want in invariants.items():
        if name in checks:
            assert checks[name]() == bool(want), f"{where}.invariants.{name}"


def _resolve(value: Any, outcomes: list[Any], where: str) -> str:
    text = str(value)
    if text == "<from previous suspended outcome>":
        found = [o for o in outcomes if isinstance(o, Suspended)]
        assert found, f"{where}: no suspended outcome to resume"
        return found[-1].invocation_id
    if text.startswith("<invocation_id from"):
        assert outcomes and outcomes[0] is not None, f"{where}: no earlier invocation"
        return str(outcomes[0].invocation_id)
    if text.startswith("<"):
        raise UnknownDirective(f"unknown resume placeholder {text!r} at {where}")
    return text


async def _check(ctx: gb.BuildContext, cp: Any, expected: dict[str, Any], outcome: Any,
                 error: Any, where: str) -> None:
    check_directives(expected, EXPECTED_KEYS, where)
    want = expected.get("outcome", "completed")
    if want == "errored":
        assert error is not None, f"{where}: expected an error, got {outcome!r}"
        err = expected.get("error") or {}
        check_directives(err, {"category"}, f"{where}.error")
        if "category" in err:
            assert error.category == err["category"], f"{where}: {error!r}"
        if "final_state_at_error" in expected:
            got = ck.builtins(getattr(error, "recoverable_state", None))
            assert got == expected["final_state_at_error"], f"{where}: {got}"
        return
    if error is not None:
        raise AssertionError(f"{where}: unexpected {error!r}") from error
    assert outcome.outcome == want, f"{where}: outcome {outcome.outcome!r}"
    if "suspended_state" in expected:
        assert ck.builtins(outcome.state) == expected["suspended_state"], f"{where}.state"
    if "final_state" in expected:
        got = ck.builtins(outcome.state)
        assert got == expected["final_state"], f"{where}.final_state: {got}"
    if "suspending_node" in expected:
        assert outcome.node_name == expected["suspending_node"], f"{where}: {outcome.node_name}"
    if "descriptor" in expected:
        _check_descriptor(outcome.descriptor, expected["descriptor"], f"{where}.descriptor")
    if "execution_order" in expected:
        got_order = ctx.current.execution_order
        assert got_order == expected["execution_order"], f"{where}.execution_order: {got_order}"
    if "observer_events" in expected:
        for name, events in expected["observer_events"].items():
            _check_events(ctx.observers[name].events, events, f"{where}.observer_events.{name}")
    for name, want_inv in (expected.get("observer_event_invariants") or {}).items():
        events = [e for r in ctx.observers.values() for e in r.events if isinstance(e, NodeEvent)]
        _check_event_invariant(name, want_inv, events, f"{where}.{name}")
    if "checkpointer_assertions" in expected:
        record = await cp.load(outcome.invocation_id)
        spec = expected["checkpointer_assertions"]
        check_directives(spec, {"paused_invocation_record_exists", "record_type"}, where)
        if "paused_invocation_record_exists" in spec:
            assert (record is not None) == spec["paused_invocation_record_exists"], where
        if "record_type" in spec:
            assert record is not None and record.status == spec["record_type"], where
    for name, tree in (expected.get("otel_spans") or {}).items():
        got = ctx.scratch["otel_spans"][name]
        run = obs.Run()
        run.spans = got
        trees = tree if isinstance(tree, list) else [tree]
        obs._match_forest(run, trees, obs._roots(got), f"{where}.otel_spans.{name}")


def _check_descriptor(got: SignalDescriptor, want: Mapping[str, Any], where: str) -> None:
    check_directives(want, {"signal_id", "metadata", "metadata_includes"}, where)
    assert got.signal_id == want["signal_id"], f"{where}: {got}"
    if "metadata" in want:
        assert msgspec.to_builtins(got.metadata) == want["metadata"], f"{where}: {got}"
    for key, value in (want.get("metadata_includes") or {}).items():
        assert (got.metadata or {}).get(key) == value, f"{where}.{key}: {got}"


def _check_events(events: list[Any], want: list[Mapping[str, Any]], where: str) -> None:
    node_events = [e for e in events if isinstance(e, NodeEvent)]
    assert len(node_events) == len(want), f"{where}: {[(e.phase, e.node_name) for e in events]}"
    for got, spec in zip(node_events, want, strict=True):
        for key, value in spec.items():
            if key == "namespace":
                assert list(got.namespace) == value, f"{where}: {got}"
            elif key == "descriptor":
                _check_descriptor(got.descriptor, value, f"{where}.descriptor")
            else:
                assert getattr(got, key) == value, f"{where}.{key}: {got}"


def _check_event_invariant(name: str, want: Any, events: list[NodeEvent], where: str) -> None:
    phases = [(e.phase, e.node_name) for e in events]
    suspended = [n for p, n in phases if p == "suspended"]
    if name == "no_completed_event_for_suspending_node":
        ok = not any(p == "completed" and n in suspended for p, n in phases)
    elif name == "suspended_event_carries_descriptor":
        ok = all(e.descriptor is not None for e in events if e.phase == "suspended")
    elif name == "started_followed_by_suspended_in_order":
        ok = all(phases.index(("started", n)) < phases.index(("suspended", n)) for n in suspended)
    else:
        raise UnknownDirective(f"unknown observer event invariant {name!r}")
    assert ok == want, f"{where}: {phases}"
