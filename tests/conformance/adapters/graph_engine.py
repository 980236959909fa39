"""Conformance adapter for ``spec/graph-engine/conformance``.

Builds the case's graph with :mod:`.graph_build`, runs its invocation(s)
inside the graph's delivery runner (``async with graph:``), drains, and checks
the ``expected`` block. Extending adapters reuse :func:`run_graph_case` and add
entries to :data:`EXPECTATIONS` / :data:`INVARIANTS` (``name -> check``).
"""

from __future__ import annotations

import math
import re
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from openarmature_nodes.graph import (
    CompiledGraph,
    DrainSummary,
    GraphCompileError,
    GraphCompileWarning,
    GraphRuntimeError,
    NodeEvent,
)
from tests.conformance import vocabulary as _vocab
from tests.conformance.fixtures import (
    Case,
    FixtureSchemaInvalid,
    check_directives,
    need,
    unknown_predicate,
)
from tests.conformance.matchers import value_matches

from .graph_build import (
    CASE_LEVEL_KEYS,
    GRAPH_KEYS,
    BuildContext,
    InvocationRecord,
    Recorder,
    attach_observers,
    bind_context,
    build_graph,
)

_UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
DRAIN_SLACK = 0.05  # seconds a timed drain may overrun (scheduling noise), far below any sleep used


@dataclass
class Outcome:
    record: InvocationRecord
    final: Any = None
    error: GraphRuntimeError | None = None
    drain: DrainSummary | None = None
    spec: Mapping[str, Any] = field(default_factory=dict)


def plain(value: Any) -> Any:
    return msgspec.to_builtins(value)


async def run_case(case: Case) -> None:
    ctx = BuildContext(case)
    token = bind_context(ctx)
    try:
        await run_graph_case(ctx)
    finally:
        from .graph_build import _CTX

        _CTX.reset(token)


async def run_graph_case(ctx: BuildContext) -> None:
    case = ctx.case
    data = case.data
    check_directives(data, CASE_LEVEL_KEYS | GRAPH_KEYS, case.test_id)
    gdef = data.get("graph", data)
    ctx.collect_subgraphs(case.document if case.document is not data else None, data, gdef)
    invocations = _invocations(data)
    declared = set((gdef.get("state") or {}).get("fields") or {})
    for inv in invocations:
        for key in inv.get("initial_state") or {}:
            if key not in declared:
                ctx.extra_fields[key] = None

    expected_error = data.get("expected_compile_error")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            graph = build_graph(ctx, gdef, name="outer").compile()
        except GraphCompileError as exc:
            if expected_error is None:
                raise
            assert exc.category == expected_error, f"compile error {exc.category}: {exc}"
            return
    assert expected_error is None, f"expected compile error {expected_error}, compiled fine"
    if "expected_compile_warning" in data:
        _check_warnings(data["expected_compile_warning"], caught)
    ctx.outer = graph
    if not invocations:
        return
    scoped = attach_observers(ctx, list(data.get("observers") or ()))
    if _wants_hidden_recorder(data, invocations):
        hidden = Recorder(ctx, {"name": "__harness__", "behavior": "record"})
        ctx.observers[hidden.name] = hidden
        scoped.append((hidden, None))

    runs = int(data.get("run_count", 1))
    async with graph:
        outcomes: list[Outcome] = []
        for round_ in range(runs):
            for spec in invocations:
                outcome = await _invoke(ctx, graph, spec, scoped)
                expected = _expected_of(spec)
                _check_expected(ctx, graph, outcome, expected)
                for name, value in (expected.get("invariants") or {}).items():
                    await _invariant(ctx, graph, name, value, outcome, scoped)
                outcomes.append(outcome)
            if round_:
                a, b = outcomes[0], outcomes[-1]
                assert plain(a.final) == plain(b.final), "runs disagree on final state"
                assert a.record.execution_order == b.record.execution_order
        for name, value in (data.get("invariants") or {}).items():
            await _invariant(ctx, graph, name, value, outcomes[-1], scoped)
        await graph.drain(timeout=30)
    _check_event_shapes(ctx)


INVOKE_KEYS = frozenset({"drain"})


def _invocations(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if "invocations" in data:
        return list(data["invocations"])
    runnable = ("initial_state", "expected", "expected_error", "invoke", "invoke_with")
    if not any(k in data for k in runnable):
        return []
    inv = dict(data.get("invoke") or data.get("invoke_with") or {})
    check_directives(inv, INVOKE_KEYS, "invoke")
    spec: dict[str, Any] = {"initial_state": data.get("initial_state") or {}}
    if "drain" in inv:
        spec["drain"] = inv["drain"]
    if "caller_invocation_id" in data:
        spec["caller_invocation_id"] = data["caller_invocation_id"]
    if "caller_correlation_id" in data:  # §5.7: the single-invocation spelling
        spec["correlation_id"] = data["caller_correlation_id"]
    expected = dict(data.get("expected") or {})
    if "expected_error" in data:
        expected["expected_error"] = data["expected_error"]
    spec["expected"] = expected
    return [spec]


def _expected_of(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    return spec.get("expected") or {}


def _wants_hidden_recorder(data: Mapping[str, Any], invocations: list[Mapping[str, Any]]) -> bool:
    return any("expected_observer_event" in _expected_of(s) for s in invocations)


INVOCATION_KEYS = {
    "name", "description", "initial_state", "drain", "expected", "caller_invocation_id",
    "correlation_id",
}


async def _invoke(
    ctx: BuildContext,
    graph: CompiledGraph[Any],
    spec: Mapping[str, Any],
    scoped: list[tuple[Recorder, frozenset[str] | None]],
) -> Outcome:
    check_directives(spec, INVOCATION_KEYS, "invocations[]")
    index = len(ctx.invocations)
    inv_id = spec.get("caller_invocation_id")
    from openarmature_nodes.graph.lowlevel import subscribe

    observers = [subscribe(rec, phases) for rec, phases in scoped]
    record = InvocationRecord(index, inv_id or "")
    if inv_id:
        ctx.index_by_id[inv_id] = index
    ctx.invocations.append(record)
    outcome = Outcome(record, spec=spec)
    initial = dict(spec.get("initial_state") or {})
    try:
        outcome.final = await graph.invoke(
            initial, observers=observers, invocation_id=inv_id,
            correlation_id=spec.get("correlation_id"),
        )
    except GraphRuntimeError as exc:
        outcome.error = exc
    drain = spec.get("drain")
    if drain is not None:
        check_directives(drain, {"timeout_seconds"}, "drain")
        timeout = drain.get("timeout_seconds")
        began = time.monotonic()
        outcome.drain = await graph.drain(timeout=timeout)
        ctx.drain_timings.append((time.monotonic() - began, timeout))
    else:
        outcome.drain = await graph.drain()
    return outcome


# --- expectations ---------------------------------------------------------------------------

Expectation = Callable[[BuildContext, CompiledGraph[Any], Outcome, Any], None]
EXPECTATIONS: dict[str, Expectation] = {}


def expectation(name: str) -> Callable[[Expectation], Expectation]:
    def deco(fn: Expectation) -> Expectation:
        EXPECTATIONS[name] = fn
        return fn

    return deco


def _check_expected(
    ctx: BuildContext,
    graph: CompiledGraph[Any],
    outcome: Outcome,
    expected: Mapping[str, Any],
) -> None:
    check_directives(expected, set(EXPECTATIONS) | {"invariants"}, "expected")
    errored = "expected_error" in expected or expected.get("outcome") == "errored"
    if not errored and outcome.error is not None:
        error = outcome.error
        raise AssertionError(f"invocation failed unexpectedly: {error!r}") from error
    for key, value in expected.items():
        if key != "invariants":
            EXPECTATIONS[key](ctx, graph, outcome, value)


@expectation("final_state")
def _final_state(ctx: BuildContext, graph: Any, outcome: Outcome, value: Any) -> None:
    assert outcome.error is None, f"run failed: {outcome.error!r}"
    value_matches(value, plain(outcome.final), "final_state")


@expectation("execution_order")
def _execution_order(ctx: BuildContext, graph: Any, outcome: Outcome, value: Any) -> None:
    got = outcome.record.execution_order
    assert got == list(value), f"execution order {got} != {value}"


@expectation("outcome")
def _outcome(ctx: BuildContext, graph: Any, outcome: Outcome, value: Any) -> None:
    got = "errored" if outcome.error is not None else "completed"
    assert got == value, f"outcome {got} != {value}"


@expectation("error")
def _error(ctx: BuildContext, graph: Any, outcome: Outcome, value: Any) -> None:
    check_directives(value, {"category"}, "expected.error")
    want = need(value, "category", "expected.error")
    assert outcome.error is not None, f"expected.error: the run completed: {outcome.final}"
    assert outcome.error.category == want, f"error category {outcome.error.category} != {want}"


@expectation("no_propagated_error")
def _no_error(ctx: BuildContext, graph: Any, outcome: Outcome, value: Any) -> None:
    assert (outcome.error is None) == bool(value)


def root_cause(exc: BaseException) -> BaseException:
    while isinstance(exc, GraphRuntimeError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


EXPECTED_ERROR_KEYS = frozenset(
    {"category", "raised_from", "message", "recoverable_state", "execution_order"}
)


@expectation("expected_error")
def _expected_error(ctx: BuildContext, graph: Any, outcome: Outcome, value: Any) -> None:
    check_directives(value, EXPECTED_ERROR_KEYS, "expected_error")
    err = outcome.error
    assert err is not None, f"expected {value.get('category')}, run completed: {outcome.final}"
    assert err.category == value["category"], f"category {err.category} != {value['category']}"
    if "raised_from" in value:
        assert err.node_name == value["raised_from"], f"raised from {err.node_name}"
    if "message" in value:
        assert str(root_cause(err)) == value["message"], f"message {root_cause(err)}"
    if "recoverable_state" in value:
        assert plain(err.recoverable_state) == value["recoverable_state"]
    if "execution_order" in value:
        _execution_order(ctx, graph, outcome, value["execution_order"])


@expectation("final_state_at_error")
def _state_at_error(ctx: BuildContext, graph: Any, outcome: Outcome, value: Any) -> None:
    assert outcome.error is not None
    assert plain(outcome.error.recoverable_state) == value


@expectation("drain_summary")
def _drain_summary(ctx: BuildContext, graph: Any, outcome: Outcome, value: Any) -> None:
    _summary(outcome.drain, value, "drain_summary")


SUMMARY_KEYS = frozenset({"timeout_reached", "undelivered_count", "undelivered_count_min"})


def _summary(got: DrainSummary | None, value: Mapping[str, Any], where: str) -> None:
    check_directives(value, SUMMARY_KEYS, where)
    assert got is not None, f"{where}: no drain summary recorded"
    if "timeout_reached" in value:
        assert got.timeout_reached == value["timeout_reached"], f"{where}: {got}"
    if "undelivered_count" in value:
        assert got.undelivered_count == value["undelivered_count"], f"{where}: {got}"
    if "undelivered_count_min" in value:
        assert got.undelivered_count >= value["undelivered_count_min"], f"{where}: {got}"


@expectation("node_drain_summaries")
def _node_drains(ctx: BuildContext, graph: Any, outcome: Outcome, value: Any) -> None:
    for node, want in value.items():
        _summary(outcome.record.node_drain_summaries.get(node), want, f"node {node} drain")


@expectation("node_accumulator_snapshots")
def _node_snapshots(ctx: BuildContext, graph: Any, outcome: Outcome, value: Any) -> None:
    for node, per_observer in value.items():
        snaps = outcome.record.node_snapshots.get(node, {})
        for obs, events in per_observer.items():
            _match_events(snaps.get(obs, []), events, f"snapshot {node}/{obs}")


@expectation("final_accumulator_state")
def _final_accumulator(ctx: BuildContext, graph: Any, outcome: Outcome, value: Any) -> None:
    """The accumulate observer's bucket for this invocation, after the drain (§5.8)."""
    for name, events in value.items():
        rec = ctx.observers.get(name)
        if rec is None or rec.behavior != "accumulate":
            raise FixtureSchemaInvalid(
                f"fixture_schema_invalid: final_accumulator_state names {name!r}, which is no "
                f"accumulate observer of the case")
        bucket = rec.buckets.get(outcome.record.invocation_id, [])
        _match_events(bucket, events, f"final_accumulator_state.{name}")


@expectation("observer_events")
def _observer_events(ctx: BuildContext, graph: Any, outcome: Outcome, value: Any) -> None:
    for name, events in value.items():
        rec = need(ctx.observers, name, "observer_events (an observer the case declares)")
        mine = [e for e in rec.events if _of(ctx, e, outcome)]
        _match_events(mine, events, f"observer {name}")


@expectation("delivery_order")
def _delivery_order(ctx: BuildContext, graph: Any, outcome: Outcome, value: Any) -> None:
    got = [d for i, d in ctx.delivery_log if i == outcome.record.index]
    assert got[: len(value)] == list(value) and len(got) == len(value), f"delivery {got}"


@expectation("empty_phases_raises_at_registration")
def _empty_phases(
    ctx: BuildContext, graph: CompiledGraph[Any], outcome: Outcome, value: Any
) -> None:
    async def obs(event: Any) -> None:
        return None

    raised = False
    try:
        graph.attach(obs, phases=[])
    except ValueError:
        raised = True
    assert raised == bool(value)


@expectation("expected_observer_event")
def _some_event(ctx: BuildContext, graph: Any, outcome: Outcome, value: Any) -> None:
    keys = {"node_name", "post_state", "error_absent", "phase"}
    check_directives(value, keys, "expected_observer_event")
    for ev in ctx.observers["__harness__"].events:
        if ev.node_name != value.get("node_name", ev.node_name) or ev.phase != "completed":
            continue
        if "post_state" in value and plain(ev.post_state) != value["post_state"]:
            continue
        if value.get("error_absent") and ev.error is not None:
            continue
        return
    raise AssertionError(f"no observer event matches {value}")


def _of(ctx: BuildContext, event: Any, outcome: Outcome) -> bool:
    """Does ``event`` belong to ``outcome``'s invocation?"""
    return ctx.index_by_id.get(getattr(event, "invocation_id", ""), 0) == outcome.record.index


# --- event matching -------------------------------------------------------------------------

EVENT_KEYS = {
    "step", "phase", "node_name", "namespace", "pre_state", "post_state", "parent_states", "error",
    "attempt_index", "fan_out_index", "branch_name", "fan_out_index_chain", "branch_name_chain",
    "invocation_id", "correlation_id",
}


def _match_events(got: list[Any], want: list[Mapping[str, Any]], where: str) -> None:
    assert len(got) == len(want), f"{where}: {len(got)} events, expected {len(want)}: {got}"
    for i, (ev, exp) in enumerate(zip(got, want, strict=True)):
        match_event(ev, exp, f"{where}[{i}]")


def match_event(ev: NodeEvent, exp: Mapping[str, Any], where: str) -> None:
    check_directives(exp, EVENT_KEYS, where)
    for key, want in exp.items():
        if key == "error":
            cat = want.get("category") if isinstance(want, Mapping) else want
            assert ev.error is not None, f"{where}: no error on {ev}"
            assert ev.error.category == cat, f"{where}: error {ev.error.category} != {cat}"
            assert ev.post_state is None, f"{where}: post_state set on a failed event"
        elif key in ("pre_state", "post_state"):
            value_matches(want, plain(getattr(ev, key)), f"{where}.{key}")
        elif key == "parent_states":
            value_matches(list(want), [plain(s) for s in ev.parent_states],
                          f"{where}.parent_states")
        elif key in ("namespace", "fan_out_index_chain", "branch_name_chain"):
            assert list(getattr(ev, key)) == list(want), f"{where}: {key} {getattr(ev, key)}"
        else:
            value_matches(want, getattr(ev, key), f"{where}.{key}")


def _check_event_shapes(ctx: BuildContext) -> None:
    """§6 shape rules on every recorded node event."""
    for rec in ctx.observers.values():
        for ev in rec.events:
            if not isinstance(ev, NodeEvent):
                continue
            assert len(ev.parent_states) == len(ev.namespace) - 1, ev
            if ev.phase == "started":
                assert ev.post_state is None and ev.error is None, ev
            elif ev.phase == "completed":
                assert (ev.post_state is None) != (ev.error is None), ev


def _check_warnings(want: Any, caught: list[warnings.WarningMessage]) -> None:
    got = [w.message.category for w in caught if isinstance(w.message, GraphCompileWarning)]
    relevant = [c for c in got if c != "no_outgoing_edge"]
    if isinstance(want, list):
        assert sorted(relevant) == sorted(want), f"compile warnings {relevant} != {want}"
    else:
        assert want in relevant, f"compile warning {want} not among {relevant}"


# --- invariants ---------------------------------------------------------------------------------

Invariant = Callable[..., Any]
INVARIANTS: dict[str, Invariant] = {}


def invariant(name: str) -> Callable[[Invariant], Invariant]:
    def deco(fn: Invariant) -> Invariant:
        INVARIANTS[name] = fn
        return fn

    return deco


async def _invariant(
    ctx: BuildContext, graph: CompiledGraph[Any], name: str, value: Any, outcome: Outcome,
    scoped: list[tuple[Recorder, frozenset[str] | None]],
) -> None:
    check = INVARIANTS.get(name) or _family(name)
    if check is None:
        unknown_predicate(name, f"{ctx.case.test_id}.invariants")
        return
    result = check(ctx, graph, value, outcome, scoped)
    if hasattr(result, "__await__"):
        await result


# --- predicate families: names read by their words (graph-engine §6 drain rules) -------------

_REJECTS_TIMEOUT = re.compile(r"^(?=.*timeout)(?=.*reject)(?=.*(negative|nan)).*$")


def _family(name: str) -> Invariant | None:
    """A predicate interpreted by its words rather than listed: the MUST-reject rule
    for bad drain timeouts (``..._negative_..._timeout_..._rejected``, ``nan``)."""
    if _REJECTS_TIMEOUT.match(name):
        bad = [v for word, v in (("negative", -1.0), ("nan", math.nan)) if word in name]
        return _rejects_bad_timeouts(bad)
    return None


def _rejects_bad_timeouts(bad: list[float]) -> Invariant:
    async def check(ctx: BuildContext, graph: CompiledGraph[Any], value: Any, outcome: Outcome,
                    scoped: Any) -> None:
        for timeout in bad:
            for name in ("drain", "drain_events_for"):
                args = () if name == "drain" else (outcome.record.invocation_id or "x",)
                try:
                    await getattr(graph, name)(*args, timeout=timeout)
                except (ValueError, TypeError):
                    rejected = True
                else:
                    rejected = False
                assert rejected == bool(value), f"{name}(timeout={timeout}) rejected={rejected}"

    return check


def resolves(name: str) -> bool:
    """Does a predicate family interpret ``name``?"""
    return _family(name) is not None


@invariant("drain_returned_within_timeout")
def _within(ctx: BuildContext, graph: Any, value: Any, outcome: Outcome, scoped: Any) -> None:
    timed = [(e, t) for e, t in ctx.drain_timings if t is not None]
    assert timed, "no timed drain was made"
    ok = all(e <= t + DRAIN_SLACK for e, t in timed)
    assert ok == bool(value), f"drain timings {timed}"


@invariant("graph_state_intact_after_timeout")
async def _intact(ctx: BuildContext, graph: Any, value: Any, outcome: Outcome, scoped: Any) -> None:
    again = await _invoke(ctx, graph, {"initial_state": outcome.spec.get("initial_state")}, scoped)
    assert again.error is None and plain(again.final) == plain(outcome.final)
    assert again.drain == DrainSummary(0, False), again.drain


@invariant("second_invocation_drain_independent_of_first")
def _independent(ctx: BuildContext, graph: Any, value: Any, outcome: Outcome, scoped: Any) -> None:
    assert len(ctx.invocations) >= 2
    assert outcome.drain == DrainSummary(0, False), outcome.drain


@invariant("drain_waited_for_all_events")
def _waited(ctx: BuildContext, graph: Any, value: Any, outcome: Outcome, scoped: Any) -> None:
    assert outcome.drain == DrainSummary(0, False)
    steps = len(outcome.record.execution_order)
    for rec in ctx.observers.values():
        assert len([e for e in rec.events if _of(ctx, e, outcome)]) == 2 * steps


@invariant("drain_events_for_synchronized_accumulator_read")
def _synced(ctx: BuildContext, graph: Any, value: Any, outcome: Outcome, scoped: Any) -> None:
    for node, snaps in outcome.record.node_snapshots.items():
        for events in snaps.values():
            assert events, f"empty snapshot at {node}"
            last = events[-1]
            assert (last.node_name, last.phase) == (node, "started"), last


@invariant("graph_state_intact_after_per_invocation_drain_timeout")
def _intact_pi(ctx: BuildContext, graph: Any, value: Any, outcome: Outcome, scoped: Any) -> None:
    assert outcome.error is None


@invariant("workers_not_cancelled_on_per_invocation_drain_timeout")
def _not_cancelled(
    ctx: BuildContext, graph: Any, value: Any, outcome: Outcome, scoped: Any
) -> None:
    timed_out = [
        r for r in ctx.invocations
        if any(s.timeout_reached for s in r.node_drain_summaries.values())
    ]
    assert timed_out, "no per-invocation drain timed out"
    for r in timed_out:
        for rec in ctx.observers.values():
            bucket = rec.buckets.get(r.invocation_id, [])
            assert len(bucket) == 2 * len(r.execution_order), f"{rec.name}: {len(bucket)} events"


@invariant("each_invocation_has_unique_invocation_id")
def _unique_ids(ctx: BuildContext, graph: Any, value: Any, outcome: Outcome, scoped: Any) -> None:
    ids = [r.invocation_id for r in ctx.invocations]
    assert all(_UUID4.match(i) for i in ids), ids
    assert len(set(ids)) == len(ids), ids


@invariant("drain_scopes_strictly_to_supplied_invocation_id")
def _scoped(ctx: BuildContext, graph: Any, value: Any, outcome: Outcome, scoped: Any) -> None:
    for r in ctx.invocations:
        for snaps in r.node_snapshots.values():
            for events in snaps.values():
                assert {e.invocation_id for e in events} <= {r.invocation_id}


@invariant("no_events_for_node")
def _no_events(ctx: BuildContext, graph: Any, value: Any, outcome: Outcome, scoped: Any) -> None:
    for rec in ctx.observers.values():
        assert not [e for e in rec.events if getattr(e, "node_name", None) == value]


@invariant("edge_resolution_failure_in_completed_event")
def _edge_fail(ctx: BuildContext, graph: Any, value: Any, outcome: Outcome, scoped: Any) -> None:
    err = outcome.error
    assert err is not None and err.category in ("routing_error", "edge_exception")
    found = [
        e for rec in ctx.observers.values() for e in rec.events
        if e.node_name == err.node_name and e.phase == "completed" and e.error is not None
    ]
    assert found and all(e.error.category == err.category for e in found)


__all__ = ["EXPECTATIONS", "INVARIANTS", "Outcome", "match_event", "run_case", "run_graph_case"]

_vocab.register("graph-engine", EXPECTATIONS)
_vocab.register("graph-engine", INVARIANTS)
_vocab.register_resolver("graph-engine", resolves)
_vocab.register("graph-engine", INVOCATION_KEYS | INVOKE_KEYS)
_vocab.register("graph-engine", EVENT_KEYS | EXPECTED_ERROR_KEYS | SUMMARY_KEYS)

from . import composition  # noqa: E402,F401  (fan-out / parallel-branches directives and checks)
