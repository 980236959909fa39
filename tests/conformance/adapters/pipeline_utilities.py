"""Conformance adapter for ``spec/pipeline-utilities/conformance`` (middleware,
retry, timing, failure isolation).

Graphs are built by the reusable translation of :mod:`.graph_build`, extended
here only through its registration tables:

- node directives: ``flaky`` (the ``failure_sequence`` mock, with ``cause``
  chains), ``raises`` (also the mapping form ``{message, exception_kind}``) and
  its sibling ``error_category``;
- middleware types: the canonical ``retry``, ``timing`` and
  ``failure_isolation`` built from the real :mod:`middleware` classes, and the
  fixture-only ``trace_recorder`` (markers only when configured; records what
  it saw), ``short_circuit``, ``error_recovery``, ``error_raiser`` and
  ``state_inspector``;
- case keys: ``clock_stub`` (a deterministic monotonic clock for timing).

Harness side channels (per the fixtures' header notes): trace records, timing
records (``on_complete: {capture_to: <name>}``), failure-isolation events,
the ``record_to_state_side_channel`` ``on_caught`` (its fields are overlaid on
the final state before comparison) and per-node flaky call counters. All are
reset before each run (``run_count`` runs the same compiled graph N times and
asserts every run).

Failure-isolation events are read where the spec puts them: on the observer
delivery queue (an observer attached to the outer graph collects them).
Fan-out and parallel-branches cases are run by :mod:`.composition` (wrapping
:func:`run_case` at the end of this module).
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec

from openarmature_nodes.graph import GraphRuntimeError, NodeEvent
from openarmature_nodes.middleware import (
    FailureIsolationEvent,
    FailureIsolationMiddleware,
    RetryMiddleware,
    TimingMiddleware,
    TimingRecord,
)
from openarmature_nodes.retrying import RetryConfig, constant_backoff
from tests.conformance import vocabulary as _vocab
from tests.conformance.fixtures import (
    Case,
    UnknownDirective,
    check_directives,
    need,
    unknown_predicate,
)
from tests.conformance.matchers import value_matches

from . import graph_build as gb
from . import graph_engine as ge

Next = Callable[[Any], Awaitable[Any]]


# --- failure mocks -------------------------------------------------------------------------


class MockFailure(Exception):
    """What a failure mock raises: a message, a category (or none) and a
    ``transient`` flag, as the fixture declares them."""

    def __init__(self, message: str, category: str | None, transient: bool) -> None:
        super().__init__(message)
        self.message = message
        self.category = category
        self.transient = transient


FAILURE_KEYS = frozenset({"transient", "category", "message", "cause"})
FLAKY_KEYS = frozenset({"failure_sequence", "success_update"})


def _failure(spec: Mapping[str, Any], where: str) -> MockFailure:
    check_directives(spec, FAILURE_KEYS, where)
    exc = MockFailure(str(spec.get("message") or ""), spec.get("category"),
                      bool(spec.get("transient", False)))
    if spec.get("cause") is not None:
        exc.__cause__ = _failure(spec["cause"], f"{where}.cause")
    return exc


def _counters(ctx: gb.BuildContext) -> dict[str, int]:
    counters: dict[str, int] = ctx.scratch.setdefault("flaky_calls", {})
    return counters


def _flaky(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    where = f"{nb.graph_name}.nodes.{nb.name}.flaky"
    check_directives(value, FLAKY_KEYS, where)
    sequence = list(value.get("failure_sequence") or [])
    for i, entry in enumerate(sequence):
        if entry is not None:
            _failure(entry, f"{where}.failure_sequence[{i}]")  # validate up front
    success = copy.deepcopy(dict(value.get("success_update") or {}))
    key = f"{nb.graph_name}.{nb.name}"

    async def act(state: Any) -> Mapping[str, Any]:
        counters = _counters(ctx)
        n = counters.get(key, 0)
        counters[key] = n + 1
        if n < len(sequence) and sequence[n] is not None:
            raise _failure(sequence[n], where)
        return {k: _success_value(state, v) for k, v in copy.deepcopy(success).items()}

    nb.actions.append(act)


def _success_value(state: Any, value: Any) -> Any:
    if isinstance(value, str) and value in getattr(type(state), "__struct_fields__", ()):
        return getattr(state, value)
    return value


_EXCEPTION_KINDS: dict[str, type[Exception]] = {
    "ValueError": ValueError, "RuntimeError": RuntimeError, "KeyError": KeyError,
    "TypeError": TypeError, "Exception": Exception,
}


def _raises(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    where = f"{nb.graph_name}.nodes.{nb.name}.raises"
    category = nb.spec.get("error_category")
    if isinstance(value, Mapping):
        check_directives(value, {"message", "exception_kind"}, where)
        message = str(value.get("message", ""))
        kind = str(value.get("exception_kind", "RuntimeError"))
        if kind not in _EXCEPTION_KINDS:
            raise UnknownDirective(f"exception_kind {kind!r} in {where}")
        exc_type: type[Exception] | None = _EXCEPTION_KINDS[kind]
    else:
        message, exc_type = str(value), None

    async def act(state: Any) -> Mapping[str, Any]:
        if category is not None:
            raise MockFailure(message, str(category), False)
        if exc_type is not None:
            raise exc_type(message)
        raise gb.FixtureNodeError(message)

    nb.actions.append(act)


def _consumed_by_sibling(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    """A directive read by another directive of the same node (``error_category``)."""


# --- fixture-only middleware ------------------------------------------------------------------


def _builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)


def _trace_recorder(ctx: gb.BuildContext, cfg: Mapping[str, Any]) -> gb.Middleware:
    check_directives(cfg, {"type", "name", "pre_marker", "post_marker", "field"},
                     "trace_recorder")
    name = str(cfg.get("name", "rec"))
    pre, post = cfg.get("pre_marker"), cfg.get("post_marker")
    fname = str(cfg.get("field", "trace"))

    async def mw(state: Any, nxt: Next) -> Any:
        record: dict[str, Any] = {"state_in": _builtins(state), "pre_seen": True,
                                  "post_seen": False}
        ctx.scratch.setdefault("trace_records", {}).setdefault(name, []).append(record)
        update = await nxt(state)
        record["post_seen"] = True
        if pre is not None or post is not None:
            update = dict(update or {})
            update[fname] = [*([pre] if pre is not None else []), *update.get(fname, []),
                             *([post] if post is not None else [])]
        record["partial_update_returned"] = _builtins(update)
        return update

    return mw


def _error_raiser(ctx: gb.BuildContext, cfg: Mapping[str, Any]) -> gb.Middleware:
    check_directives(cfg, {"type", "name", "message"}, "error_raiser")
    message = str(cfg.get("message", "raised by middleware"))

    async def mw(state: Any, nxt: Next) -> Any:
        raise gb.FixtureNodeError(message)

    return mw


def _state_inspector(ctx: gb.BuildContext, cfg: Mapping[str, Any]) -> gb.Middleware:
    check_directives(cfg, {"type", "name"}, "state_inspector")

    async def mw(state: Any, nxt: Next) -> Any:
        before = _builtins(state)
        update = await nxt(state)
        assert _builtins(state) == before, "the input state was mutated during the chain"
        return update

    return mw


# --- canonical middleware ------------------------------------------------------------------------


def _backoff(spec: Any, where: str) -> dict[str, Any]:
    if spec is None:
        return {}
    check_directives(spec, {"type", "seconds"}, where)
    if spec.get("type") != "deterministic":
        raise UnknownDirective(f"backoff type {spec.get('type')!r} in {where}")
    return {"backoff": constant_backoff(float(spec.get("seconds", 0)))}


def _classifier(spec: Any, where: str) -> dict[str, Any]:
    if spec is None:
        return {}
    check_directives(spec, {"type"}, where)
    if spec.get("type") == "state_aware_max_retries_remaining":

        def classify(exc: Exception, state: Any) -> bool:
            return int(getattr(state, "max_retries_remaining", 0)) > 0

        return {"classifier": classify}
    raise UnknownDirective(f"classifier type {spec.get('type')!r} in {where}")


RETRY_KEYS = frozenset({"type", "name", "max_attempts", "backoff", "classifier"})


def _retry(ctx: gb.BuildContext, cfg: Mapping[str, Any]) -> gb.Middleware:
    where = "retry"
    check_directives(cfg, RETRY_KEYS, where)
    kw: dict[str, Any] = {}
    if "max_attempts" in cfg:
        kw["max_attempts"] = int(cfg["max_attempts"])
    kw.update(_backoff(cfg.get("backoff"), f"{where}.backoff"))
    kw.update(_classifier(cfg.get("classifier"), f"{where}.classifier"))
    return RetryMiddleware(RetryConfig(**kw))


def _clock(ctx: gb.BuildContext) -> Callable[[], float]:
    stub = ctx.scratch.get("clock_stub")
    if stub is None:
        import time

        return time.monotonic
    check_directives(stub, {"type", "advance_ms_per_call"}, "clock_stub")
    if stub.get("type") != "deterministic_monotonic":
        raise UnknownDirective(f"clock_stub type {stub.get('type')!r}")
    step = float(stub.get("advance_ms_per_call", 1)) / 1000.0
    ticks = [0.0]

    def clock() -> float:
        now = ticks[0]
        ticks[0] = now + step
        return now

    return clock


def _timing(ctx: gb.BuildContext, cfg: Mapping[str, Any]) -> gb.Middleware:
    check_directives(cfg, {"type", "name", "node_name", "on_complete"}, "timing")
    sink = cfg.get("on_complete") or {}
    check_directives(sink, {"capture_to"}, "timing.on_complete")
    capture = str(sink.get("capture_to", "timing_records"))

    async def on_complete(record: TimingRecord) -> None:
        ctx.scratch.setdefault("captures", {}).setdefault(capture, []).append(record)

    node_name = cfg.get("node_name")
    if node_name is None:
        return TimingMiddleware.for_graph(on_complete, clock=_clock(ctx))
    return TimingMiddleware(str(node_name), on_complete, clock=_clock(ctx))


def _degraded(spec: Any, where: str) -> Any:
    if isinstance(spec, Mapping) and "callable" in spec:
        check_directives(spec, {"callable", "template", "target_field"}, where)
        if spec["callable"] != "state_derived":
            raise UnknownDirective(f"degraded_update callable {spec['callable']!r} in {where}")
        template, target = str(spec["template"]), str(spec["target_field"])

        def render(state: Any) -> dict[str, Any]:
            text = re.sub(r"\{\{\s*state\.(\w+)\s*\}\}",
                          lambda m: str(getattr(state, m.group(1))), template)
            return {target: text}

        return render
    return copy.deepcopy(dict(spec))


def _predicate(spec: Any, where: str) -> Callable[[Exception], bool] | None:
    if spec is None:
        return None
    check_directives(spec, {"matches_category"}, where)
    wanted = spec["matches_category"]
    return lambda exc: getattr(exc, "category", None) == wanted


def _on_caught(ctx: gb.BuildContext, spec: Any, where: str) -> Any:
    if spec is None:
        return None
    check_directives(spec, {"kind", "increment_field", "capture_message_field"}, where)
    if spec.get("kind") != "record_to_state_side_channel":
        raise UnknownDirective(f"on_caught kind {spec.get('kind')!r} in {where}")

    async def on_caught(exc: Exception) -> None:
        side: dict[str, Any] = ctx.scratch.setdefault("side_channel", {})
        calls: list[Exception] = ctx.scratch.setdefault("on_caught_calls", [])
        calls.append(exc)
        if spec.get("increment_field"):
            side[spec["increment_field"]] = side.get(spec["increment_field"], 0) + 1
        if spec.get("capture_message_field"):
            side[spec["capture_message_field"]] = getattr(exc, "message", str(exc))

    return on_caught


ISOLATION_KEYS = frozenset({"type", "name", "degraded_update", "event_name", "catch", "predicate",
                            "on_caught"})


def _failure_isolation(ctx: gb.BuildContext, cfg: Mapping[str, Any]) -> gb.Middleware:
    where = "failure_isolation"
    check_directives(cfg, ISOLATION_KEYS, where)
    return FailureIsolationMiddleware(
        degraded_update=_degraded(need(cfg, "degraded_update", where), f"{where}.degraded_update"),
        event_name=str(need(cfg, "event_name", where)),
        catch=set(cfg["catch"]) if cfg.get("catch") is not None else None,
        predicate=_predicate(cfg.get("predicate"), f"{where}.predicate"),
        on_caught=_on_caught(ctx, cfg.get("on_caught"), f"{where}.on_caught"),
    )


gb.NODE_DIRECTIVES.setdefault("flaky", _flaky)
gb.NODE_DIRECTIVES["raises"] = _raises  # a superset of the string form
gb.NODE_DIRECTIVES.setdefault("error_category", _consumed_by_sibling)
gb.MIDDLEWARE_TYPES["trace_recorder"] = _trace_recorder  # records; markers only when given
gb.MIDDLEWARE_TYPES.update({
    "retry": _retry,
    "timing": _timing,
    "failure_isolation": _failure_isolation,
    "error_raiser": _error_raiser,
    "state_inspector": _state_inspector,
})
gb.CASE_LEVEL_KEYS.add("clock_stub")


# --- running a case --------------------------------------------------------------------------

EXPECTED_KEYS = frozenset({
    "final_state", "execution_order", "trace_records", "timing_records", "observer_events",
    "expected_observer_event", "expected_failure_isolation_event", "no_failure_isolation_event",
    "invariants",
})
ERROR_KEYS = frozenset({"category", "raised_from", "message", "recoverable_state",
                        "flaky_call_count"})


async def run_case(case: Case) -> None:
    data = case.data
    where = case.test_id
    ctx = gb.BuildContext(case)
    ctx.collect_subgraphs(data, case.document)
    ctx.scratch["clock_stub"] = data.get("clock_stub")
    token = gb.bind_context(ctx)
    try:
        graph = gb.build_graph(ctx, data, name="outer").compile()
        ctx.outer = graph
        expected = dict(data.get("expected") or {})
        check_directives(expected, EXPECTED_KEYS | set(ge.EXPECTATIONS), f"{where}.expected")
        gb.attach_observers(ctx, list(data.get("observers") or []))

        async def collect_fi(event: Any) -> None:  # framework events arrive on the queue
            if isinstance(event, FailureIsolationEvent):
                ctx.scratch.setdefault("fi_events", []).append(event)

        graph.attach(collect_fi)
        implicit: list[Any] = []
        listed = isinstance(expected.get("observer_events"), list)
        if listed or "expected_observer_event" in expected:

            async def record(event: Any) -> None:
                implicit.append(event)

            graph.attach(record)
        for run in range(int(data.get("run_count", 1))):
            implicit.clear()
            for rec in ctx.observers.values():
                rec.events.clear()
            ctx.scratch.pop("flaky_calls", None)
            for key in ("trace_records", "captures", "fi_events", "side_channel",
                        "on_caught_calls"):
                ctx.scratch.pop(key, None)
            await _run_once(ctx, graph, data, expected, implicit, f"{where}[run {run}]")
    finally:
        gb._CTX.reset(token)


async def _run_once(ctx: gb.BuildContext, graph: Any, data: dict[str, Any],
                    expected: dict[str, Any], implicit: list[Any], where: str) -> None:
    inv_id = str(uuid.uuid4())
    ctx.invocations.append(gb.InvocationRecord(len(ctx.invocations), inv_id))
    ctx.index_by_id[inv_id] = len(ctx.invocations) - 1
    final: Any = None
    error: GraphRuntimeError | None = None
    try:
        final = await graph.invoke(dict(data.get("initial_state") or {}), invocation_id=inv_id)
    except GraphRuntimeError as exc:
        error = exc
    await graph.drain()

    if "expected_error" in data:
        _check_error(ctx, error, data["expected_error"], f"{where}.expected_error")
    elif error is not None and not _errored_expected(expected):
        raise AssertionError(f"{where}: unexpected {error!r}") from error

    if "final_state" in expected:
        assert final is not None, f"{where}: no final state"
        got = _builtins(final)
        got.update(ctx.scratch.get("side_channel") or {})
        value_matches(expected["final_state"], got, f"{where}.final_state")
    if "execution_order" in expected:
        got_order = ctx.current.execution_order
        assert got_order == expected["execution_order"], f"{where}.execution_order: {got_order}"
    if "trace_records" in expected:
        _check_trace_records(ctx, expected["trace_records"], f"{where}.trace_records")
    for name, want in expected.items():
        if name.endswith("_records") and name != "trace_records":
            _check_captures(ctx, name, want, f"{where}.{name}")
    if "observer_events" in expected:
        want_events = expected["observer_events"]
        if isinstance(want_events, list):
            _check_events(implicit, want_events, f"{where}.observer_events")
        else:
            for obs, evs in want_events.items():
                rec = need(ctx.observers, obs, f"{where}.observer_events")
                _check_events(rec.events, evs, f"{where}.observer_events.{obs}")
    if "expected_observer_event" in expected:
        _check_observer_event(implicit, expected["expected_observer_event"],
                              f"{where}.expected_observer_event")
    events: list[FailureIsolationEvent] = ctx.scratch.get("fi_events") or []
    if "expected_failure_isolation_event" in expected:
        assert len(events) == 1, f"{where}: {len(events)} failure-isolation events"
        _check_fi_event(events[0], expected["expected_failure_isolation_event"],
                        f"{where}.expected_failure_isolation_event")
    if expected.get("no_failure_isolation_event"):
        assert events == [], f"{where}: unexpected failure-isolation event {events!r}"
    _shared_expectations(ctx, graph, expected, final, error)
    invariants = dict(data.get("invariants") or {})
    invariants.update(expected.get("invariants") or {})
    for name, want in invariants.items():
        check = INVARIANTS.get(name)
        if check is None:
            unknown_predicate(name, f"{where}.invariants")
            continue
        if want:
            check(ctx, data, final, error, f"{where}.invariants.{name}")


def _errored_expected(expected: Mapping[str, Any]) -> bool:
    return expected.get("outcome") == "errored" or "error" in expected or (
        "expected_error" in expected)


def _shared_expectations(ctx: gb.BuildContext, graph: Any, expected: Mapping[str, Any],
                         final: Any, error: GraphRuntimeError | None) -> None:
    """The rest of the §5.8 vocabulary (``outcome``, ``error``, ``drain_summary``, ...),
    checked by the graph-engine adapter's table on this run's outcome."""
    outcome = ge.Outcome(ctx.current, final=final, error=error)
    for key, value in expected.items():
        if key not in EXPECTED_KEYS:
            ge.EXPECTATIONS[key](ctx, graph, outcome, value)


def _check_error(ctx: gb.BuildContext, error: GraphRuntimeError | None, spec: Mapping[str, Any],
                 where: str) -> None:
    check_directives(spec, ERROR_KEYS, where)
    assert error is not None, f"{where}: the invocation succeeded"
    assert error.category == need(spec, "category", where), f"{where}: category {error.category!r}"
    if "raised_from" in spec:
        assert getattr(error, "node_name", None) == spec["raised_from"], f"{where}: raised_from"
    if "message" in spec:
        cause = error.__cause__
        text = getattr(cause, "message", None) or str(cause if cause is not None else error)
        assert spec["message"] in text, f"{where}.message: {spec['message']!r} not in {text!r}"
    if "recoverable_state" in spec:
        got = _builtins(getattr(error, "recoverable_state", None))
        assert got == spec["recoverable_state"], f"{where}.recoverable_state: {got!r}"
    if "flaky_call_count" in spec:
        calls = sum(_counters(ctx).values())
        assert calls == spec["flaky_call_count"], f"{where}.flaky_call_count: {calls}"


def _subset(want: Mapping[str, Any], got: Mapping[str, Any], where: str) -> None:
    for key, value in want.items():
        assert key in got, f"{where}: missing {key!r} in {got!r}"
        assert got[key] == value, f"{where}.{key}: {got[key]!r} != {value!r}"


def _check_trace_records(ctx: gb.BuildContext, want: Mapping[str, Any], where: str) -> None:
    records = ctx.scratch.get("trace_records") or {}
    for name, entries in want.items():
        got = records.get(name, [])
        assert len(got) == len(entries), f"{where}.{name}: {got!r}"
        for i, (w, g) in enumerate(zip(entries, got, strict=True)):
            _subset(w, g, f"{where}.{name}[{i}]")


def _check_captures(ctx: gb.BuildContext, name: str, want: list[Any], where: str) -> None:
    got = [_builtins(r) if not isinstance(r, TimingRecord) else {
        "node_name": r.node_name, "duration_ms": round(r.duration_ms, 6), "outcome": r.outcome,
        "exception_category": r.exception_category,
    } for r in (ctx.scratch.get("captures") or {}).get(name, [])]
    assert len(got) == len(want), f"{where}: {got!r}"
    for i, (w, g) in enumerate(zip(want, got, strict=True)):
        _subset(w, g, f"{where}[{i}]")


def _event_view(event: Any) -> dict[str, Any]:
    view: dict[str, Any] = {
        "step": getattr(event, "step", None),
        "phase": getattr(event, "phase", None),
        "node_name": getattr(event, "node_name", None),
        "attempt_index": event.attempt_index,
        "namespace": list(event.namespace),
        "fan_out_index": event.fan_out_index,
        "branch_name": event.branch_name,
    }
    if isinstance(event, NodeEvent):
        view["pre_state"] = _builtins(event.pre_state)
        view["parent_states"] = [_builtins(s) for s in event.parent_states]
        if event.post_state is not None:
            view["post_state"] = _builtins(event.post_state)
        if event.error is not None:
            view["error"] = event.error.category
    return view


def _check_events(events: list[Any], want: list[Mapping[str, Any]], where: str) -> None:
    views = [_event_view(e) for e in events if isinstance(e, NodeEvent)]
    assert len(views) == len(want), f"{where}: {len(views)} events, expected {len(want)}: {views}"
    for i, (w, g) in enumerate(zip(want, views, strict=True)):
        _subset(w, g, f"{where}[{i}]")
        if "post_state" in w:
            assert "error" not in g, f"{where}[{i}]: has an error"
        if "error" in w:
            assert "post_state" not in g, f"{where}[{i}]: has a post_state"


def _check_observer_event(events: list[Any], spec: Mapping[str, Any], where: str) -> None:
    check_directives(spec, {"node_name", "post_state", "error_absent"}, where)
    completed = [e for e in events if isinstance(e, NodeEvent) and e.phase == "completed"
                 and e.node_name == spec["node_name"]]
    assert completed, f"{where}: no completed event for {spec['node_name']!r}"
    event = completed[-1]
    if "post_state" in spec:
        assert _builtins(event.post_state) == spec["post_state"], f"{where}.post_state"
    if spec.get("error_absent"):
        assert event.error is None, f"{where}: error {event.error!r}"


CAUGHT_KEYS = frozenset({"category", "message", "chain"})
CHAIN_LINK_KEYS = frozenset({"category", "message", "carrier"})
FI_KEYS = frozenset({"event_name", "wrapped_node_lineage", "pre_state", "post_state",
                     "caught_exception"})


def _check_fi_event(event: FailureIsolationEvent, spec: Mapping[str, Any], where: str) -> None:
    check_directives(spec, FI_KEYS, where)
    if "event_name" in spec:
        assert event.event_name == spec["event_name"], f"{where}.event_name"
    if "wrapped_node_lineage" in spec:
        lin = event.lineage
        got = {"namespace": list(lin.namespace), "attempt_index": lin.attempt_index,
               "fan_out_index": lin.fan_out_index, "branch_name": lin.branch_name}
        _subset(spec["wrapped_node_lineage"], got, f"{where}.wrapped_node_lineage")
    if "pre_state" in spec:
        assert _builtins(event.pre_state) == spec["pre_state"], f"{where}.pre_state"
    if "post_state" in spec:
        assert _builtins(event.post_state) == spec["post_state"], f"{where}.post_state"
    if "caught_exception" in spec:
        want = spec["caught_exception"]
        check_directives(want, CAUGHT_KEYS, f"{where}.caught_exception")
        chain = event.caught_exception
        if "category" in want:
            assert chain.category == want["category"], f"{where}: category {chain.category!r}"
        if "message" in want:
            assert chain.message == want["message"], f"{where}: message {chain.message!r}"
        if "chain" in want:
            links = [{"category": link.category, "message": link.message,
                      "carrier": link.carrier} for link in chain.links]
            assert len(links) == len(want["chain"]), f"{where}.chain: {links!r}"
            for i, (w, g) in enumerate(zip(want["chain"], links, strict=True)):
                _subset(w, g, f"{where}.chain[{i}]")


# --- fixture-specific invariants ---------------------------------------------------------------

Invariant = Callable[[gb.BuildContext, dict[str, Any], Any, Any, str], None]


def _events(ctx: gb.BuildContext) -> list[FailureIsolationEvent]:
    return list(ctx.scratch.get("fi_events") or [])


def _one_event(ctx: gb.BuildContext, data: dict[str, Any], final: Any, error: Any,
               where: str) -> None:
    assert len(_events(ctx)) == 1 and error is None, f"{where}: {_events(ctx)!r} / {error!r}"


def _degraded_reached_engine(ctx: gb.BuildContext, data: dict[str, Any], final: Any, error: Any,
                             where: str) -> None:
    (event,) = _events(ctx)
    got = _builtins(final)
    for key, value in _builtins(event.post_state).items():
        assert got.get(key) == value, f"{where}: final {key}={got.get(key)!r}"


def _callable_saw_pre_merge_state(ctx: gb.BuildContext, data: dict[str, Any], final: Any,
                                  error: Any, where: str) -> None:
    (event,) = _events(ctx)
    initial = dict(data.get("initial_state") or {})
    pre = _builtins(event.pre_state)
    assert all(pre.get(k) == v for k, v in initial.items()), f"{where}: pre_state {pre!r}"


def _propagated(ctx: gb.BuildContext, data: dict[str, Any], final: Any, error: Any,
                where: str) -> None:
    assert error is not None and final is None, f"{where}: the failure did not propagate"


def _no_event(ctx: gb.BuildContext, data: dict[str, Any], final: Any, error: Any,
              where: str) -> None:
    assert _events(ctx) == [], f"{where}: {_events(ctx)!r}"


def _on_caught_once(ctx: gb.BuildContext, data: dict[str, Any], final: Any, error: Any,
                    where: str) -> None:
    assert len(ctx.scratch.get("on_caught_calls") or []) == 1, where


def _on_caught_original(ctx: gb.BuildContext, data: dict[str, Any], final: Any, error: Any,
                        where: str) -> None:
    (exc,) = ctx.scratch.get("on_caught_calls") or [None]
    assert isinstance(exc, MockFailure), f"{where}: on_caught got {exc!r} (not the raised error)"


def _category_null(ctx: gb.BuildContext, data: dict[str, Any], final: Any, error: Any,
                   where: str) -> None:
    (event,) = _events(ctx)
    assert event.caught_exception.category is None, where


def _message_is_str_exc(ctx: gb.BuildContext, data: dict[str, Any], final: Any, error: Any,
                        where: str) -> None:
    (event,) = _events(ctx)
    assert event.caught_exception.message == event.caught_exception.links[0].message, where
    assert event.caught_exception.message, where


def _single_non_carrier(ctx: gb.BuildContext, data: dict[str, Any], final: Any, error: Any,
                        where: str) -> None:
    (event,) = _events(ctx)
    links = event.caught_exception.links
    assert len(links) == 1 and not links[0].carrier, f"{where}: {links!r}"


INVARIANTS: dict[str, Invariant] = {
    "callable_receives_pre_merge_state": _callable_saw_pre_merge_state,
    "callable_return_merges_via_reducer": _degraded_reached_engine,
    "matching_exception_caught": _one_event,
    "non_matching_exception_propagates": _propagated,
    "no_event_when_predicate_does_not_match": _no_event,
    "on_caught_fires_exactly_once": _on_caught_once,
    "on_caught_receives_original_exception": _on_caught_original,
    "framework_event_still_emits_with_on_caught": _one_event,
    "degraded_return_reaches_engine_with_on_caught": _degraded_reached_engine,
    "default_predicate_catches_bare_exception": _one_event,
    "caught_exception_category_null_for_non_categorized": _category_null,
    "caught_exception_message_captures_str_exc": _message_is_str_exc,
    "engine_sees_degraded_return": _degraded_reached_engine,
    "node_level_chain_is_single_non_carrier_link": _single_non_carrier,
}

_vocab.register("pipeline-utilities", FAILURE_KEYS | FLAKY_KEYS | RETRY_KEYS | ISOLATION_KEYS)
_vocab.register("pipeline-utilities", CAUGHT_KEYS | CHAIN_LINK_KEYS | FI_KEYS)
_vocab.register("pipeline-utilities", {"caught_exception"})
_vocab.register("pipeline-utilities", EXPECTED_KEYS | ERROR_KEYS | {"clock_stub", "seconds"})
_vocab.register("pipeline-utilities", INVARIANTS)

from .checkpoint import wrap_checkpoint  # noqa: E402  (checkpoint / resume / migration cases)
from .composition import wrap_pipeline_utilities  # noqa: E402  (fan-out / parallel branches)

run_case = wrap_checkpoint(wrap_pipeline_utilities(run_case))
