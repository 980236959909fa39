"""Checks for the fan-out / parallel-branches fixtures (see :mod:`.composition`).

Event predicates are interpreted by grammar, ``<subject>_<predicate>``:

- subjects: ``inner`` (events below the outermost graph), ``fan_out_inner``
  (inner events inside a fan-out instance), ``<branch>_inner`` (inner events
  of that branch), ``<node>_node`` or ``<node>`` (events of that node name),
  ``branch`` (for ``started_event_order``);
- predicates: ``events_count`` / ``event_count``, ``*_seen`` (the set of a
  field's values), ``fan_out_index_absent``, ``fan_out_index_chain_empty``,
  ``scalar_*`` chain consistency, ``event_identities_unique[_by_chain]``,
  ``events_carry_*``, ``started_present`` / ``completed_present``,
  ``started_event_order``.

A ``false`` value asserts the negation of a boolean predicate.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from openarmature_nodes.graph import NodeEvent
from tests.conformance import vocabulary as _vocab
from tests.conformance.fixtures import Case, check_directives, unknown_predicate

from . import graph_build as gb
from . import graph_engine as ge

# --- the event grammar ----------------------------------------------------------------------------


def _last_non_null(chain: tuple[Any, ...]) -> Any:
    for v in reversed(chain):
        if v is not None:
            return v
    return None


def _seen(attr: Callable[[NodeEvent], Any]) -> Callable[[list[NodeEvent], Any], bool]:
    def check(events: list[NodeEvent], want: Any) -> bool:
        got = {_hashable(attr(e)) for e in events}
        wanted = {_hashable(w) for w in want} if isinstance(want, list) else {_hashable(want)}
        return got == wanted

    return check


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, (list, tuple)) else value


def _unique(key: Callable[[NodeEvent], Any]) -> Callable[[list[NodeEvent], Any], bool]:
    def check(events: list[NodeEvent], want: Any) -> bool:
        keys = [key(e) for e in events]
        return (len(set(keys)) == len(keys)) == bool(want)

    return check


def _all(pred: Callable[[NodeEvent], bool]) -> Callable[[list[NodeEvent], Any], bool]:
    return lambda events, want: bool(events) and all(pred(e) for e in events) == bool(want)


def _present(phase: str) -> Callable[[list[NodeEvent], Any], bool]:
    return lambda events, want: any(e.phase == phase for e in events) == bool(want)


def _scalar_not_unique(events: list[NodeEvent], want: Any) -> bool:
    outer_by_scalar: dict[Any, set[Any]] = {}
    for e in events:
        outer_by_scalar.setdefault(e.fan_out_index, set()).add(
            e.fan_out_index_chain[0] if e.fan_out_index_chain else None
        )
    return any(len(v) > 1 for v in outer_by_scalar.values()) == bool(want)


def _started_order(events: list[NodeEvent], want: Any) -> bool:
    order: list[str] = []
    for e in events:
        if e.phase == "started" and e.branch_name is not None and e.branch_name not in order:
            order.append(e.branch_name)
    return order == list(want)


PREDICATES: dict[str, Callable[[list[NodeEvent], Any], bool]] = {
    "events_count": lambda ev, want: len(ev) == want,
    "event_count": lambda ev, want: len(ev) == want,
    "fan_out_index_absent": _all(lambda e: e.fan_out_index is None),
    "fan_out_index_chain_empty": _all(lambda e: e.fan_out_index_chain == ()),
    "fan_out_indices_seen": _seen(lambda e: e.fan_out_index),
    "attempt_indices_seen": _seen(lambda e: e.attempt_index),
    "branch_names_seen": _seen(lambda e: e.branch_name),
    "branch_name_seen": _seen(lambda e: e.branch_name),
    "fan_out_index_chains_seen": _seen(lambda e: e.fan_out_index_chain),
    "branch_name_chains_seen": _seen(lambda e: e.branch_name_chain),
    "scalar_fan_out_index_equals_innermost_chain_element": _all(
        lambda e: e.fan_out_index == _last_non_null(e.fan_out_index_chain)),
    "scalar_branch_name_absent": _all(lambda e: e.branch_name is None),
    "event_identities_unique": _unique(
        lambda e: (e.namespace, e.fan_out_index, e.branch_name, e.attempt_index, e.phase)),
    "event_identities_unique_by_chain": _unique(
        lambda e: (e.namespace, e.fan_out_index_chain, e.branch_name_chain, e.attempt_index,
                   e.phase)),
    "scalar_fan_out_index_not_unique_across_outer_instances": _scalar_not_unique,
    "events_carry_both_branch_name_and_fan_out_index": _all(
        lambda e: e.branch_name is not None and e.fan_out_index is not None),
    "events_carry_branch_name_but_no_fan_out_index": _all(
        lambda e: e.branch_name is not None and e.fan_out_index is None),
    "started_present": _present("started"),
    "completed_present": _present("completed"),
    "started_event_order": _started_order,
}


def _subject(events: list[NodeEvent], subject: str) -> list[NodeEvent]:
    inner = [e for e in events if len(e.namespace) > 1]
    if subject == "inner" or subject == "branch":
        return inner
    if subject.endswith("_node"):
        node = subject[: -len("_node")]
        return [e for e in events if e.node_name == node]
    if subject.endswith("_inner"):
        head = subject[: -len("_inner")]
        if head == "fan_out":
            return [e for e in inner if e.fan_out_index is not None]
        return [e for e in inner if e.branch_name == head]
    return [e for e in events if e.node_name == subject]


def resolves(name: str) -> bool:
    """Does the event-predicate grammar interpret ``name``?"""
    return any(name.endswith("_" + pred) for pred in PREDICATES)


def check_event_predicate(events: list[NodeEvent], name: str, want: Any, where: str) -> None:
    for pred in sorted(PREDICATES, key=len, reverse=True):
        if name.endswith("_" + pred):
            subset = _subject(events, name[: -len(pred) - 1])
            seen = [(e.phase, e.namespace, e.fan_out_index_chain, e.branch_name_chain,
                     e.attempt_index) for e in subset]
            assert PREDICATES[pred](subset, want), (
                f"{where}: {name} = {want!r} does not hold over {len(subset)} events: {seen}"
            )
            return
    unknown_predicate(name, where)


def _node_events(events: list[Any]) -> list[NodeEvent]:
    return [e for e in events if isinstance(e, NodeEvent)]


@ge.expectation("observer_event_invariants")
def _observer_invariants(ctx: gb.BuildContext, graph: Any, outcome: ge.Outcome, value: Any) -> None:
    recorders = [r for r in ctx.observers.values() if r.behavior in ("record", "accumulate")]
    assert recorders, "observer_event_invariants: no recording observer"
    for rec in recorders:
        mine = _node_events([e for e in rec.events if ge._of(ctx, e, outcome)])
        for name, want in value.items():
            check_event_predicate(mine, name, want, f"observer {rec.name}")


@ge.expectation("node_accumulator_snapshot_invariants")
def _snapshot_invariants(ctx: gb.BuildContext, graph: Any, outcome: ge.Outcome, value: Any) -> None:
    for node, per_observer in value.items():
        snaps = outcome.record.node_snapshots.get(node, {})
        for obs, preds in per_observer.items():
            events = _node_events(snaps.get(obs, []))
            for name, want in preds.items():
                check_event_predicate(events, name, want, f"snapshot {node}/{obs}")


def _drain_covered(ctx: gb.BuildContext, graph: Any, value: Any, outcome: ge.Outcome,
                   scoped: Any) -> None:
    """Every snapshot holds only this invocation's events, and every fan-out instance /
    dispatched branch appears in it with both phases."""
    snaps = [evs for per in outcome.record.node_snapshots.values() for evs in per.values()]
    assert snaps, "no accumulator snapshot was taken"
    for events in snaps:
        assert {e.invocation_id for e in events} == {outcome.record.invocation_id}
        nodes = _node_events(events)
        for e in nodes:
            if e.fan_out_config is not None and e.phase == "completed":
                want = set(range(e.fan_out_config.item_count))
                for phase in ("started", "completed"):
                    got = {x.fan_out_index for x in nodes if x.phase == phase
                           and x.fan_out_index is not None and x.namespace[:1] == e.namespace}
                    assert got == want, f"fan-out instances {got} != {want} ({phase})"
            if e.parallel_branches_config is not None and e.phase == "completed":
                want_b = set(e.parallel_branches_config.branch_names)
                got_b = {x.branch_name for x in nodes if x.branch_name is not None}
                assert got_b == want_b, f"branches {got_b} != {want_b}"
        assert any(len(e.namespace) > 1 for e in nodes), "no inner event in the snapshot"


for _name in ("drain_covered_all_fan_out_instances_via_shared_invocation_id",
              "drain_covered_all_parallel_branches_via_shared_invocation_id"):
    ge.INVARIANTS[_name] = _drain_covered


# --- pipeline-utilities expectations --------------------------------------------------------------


def _root(exc: BaseException) -> BaseException:
    seen = set()
    while exc.__cause__ is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__
    return exc


_base_expected_error = ge.EXPECTATIONS["expected_error"]


@ge.expectation("expected_error")
def _expected_error(ctx: gb.BuildContext, graph: Any, outcome: ge.Outcome, value: Any) -> None:
    extra = {"fan_out_category", "branch_name", "cause_message"}
    rest = {k: v for k, v in value.items() if k not in extra}
    _base_expected_error(ctx, graph, outcome, rest)
    err = outcome.error
    assert err is not None
    if "fan_out_category" in value:
        cause = err.__cause__
        assert getattr(cause, "category", None) == value["fan_out_category"], f"cause {cause!r}"
    if "branch_name" in value:
        assert getattr(err, "branch_name", None) == value["branch_name"], f"branch of {err!r}"
    if "cause_message" in value:
        root = _root(err)
        assert str(root) == value["cause_message"], f"root cause {root!r}"


@ge.expectation("recoverable_state")
def _recoverable(ctx: gb.BuildContext, graph: Any, outcome: ge.Outcome, value: Any) -> None:
    assert outcome.error is not None, "expected an error carrying recoverable_state"
    assert ge.plain(outcome.error.recoverable_state) == value


@ge.expectation("concurrency_invariant")
def _concurrency(ctx: gb.BuildContext, graph: Any, outcome: ge.Outcome, value: Any) -> None:
    check_directives(value, {"max_in_flight"}, "concurrency_invariant")
    gauge = ctx.scratch.get("in_flight")
    assert gauge is not None, "no fan-out in-flight probe ran"
    assert gauge["max"] == value["max_in_flight"], f"max in flight {gauge['max']}"


@ge.expectation("expected_failure_isolation_event")
def _fi_event(ctx: gb.BuildContext, graph: Any, outcome: ge.Outcome, value: Any) -> None:
    from . import pipeline_utilities as pu

    events = _fi_events(ctx)
    assert len(events) == 1, f"{len(events)} failure-isolation events"
    pu._check_fi_event(events[0], value, "expected_failure_isolation_event")


def _fi_events(ctx: gb.BuildContext) -> list[Any]:
    """Failure-isolation events, as delivered on the observer queue."""
    from openarmature_nodes.middleware import FailureIsolationEvent

    rec = ctx.observers.get("__composition__")
    events = rec.events if rec is not None else []
    return [e for e in events if isinstance(e, FailureIsolationEvent)]


# --- fixture-specific invariants (pipeline-utilities) ------------------------------------------

Check = Callable[[gb.BuildContext, ge.Outcome], None]


def _one_fi(ctx: gb.BuildContext) -> Any:
    events = _fi_events(ctx)
    assert len(events) == 1, f"{len(events)} failure-isolation events"
    return events[0]


def _final(outcome: ge.Outcome) -> dict[str, Any]:
    assert outcome.error is None, f"run failed: {outcome.error!r}"
    got: dict[str, Any] = ge.plain(outcome.final)
    return got


def _fan_out_slots(ctx: gb.BuildContext, outcome: ge.Outcome) -> list[tuple[Any, Any]]:
    """(fan-out kind, FI post_state) for the single degraded instance."""
    (kind,) = ctx.scratch.get("fan_outs") or [None]
    assert kind is not None, "no fan-out in the case"
    return [(kind, ge.plain(_one_fi(ctx).post_state))]


def _contribution_is_degraded(ctx: gb.BuildContext, outcome: ge.Outcome) -> None:
    final = _final(outcome)
    for kind, post in _fan_out_slots(ctx, outcome):
        assert final[kind.target_field] == [post.get(kind.collect_field)], final
        for parent, sub in kind.extra_outputs.items():
            assert final[parent] == [post.get(sub)], final


def _extra_by_sub_name(ctx: gb.BuildContext, outcome: ge.Outcome) -> None:
    final = _final(outcome)
    for kind, post in _fan_out_slots(ctx, outcome):
        assert kind.extra_outputs, "no extra_outputs configured"
        for parent, sub in kind.extra_outputs.items():
            assert sub in post and final[parent] == [post[sub]], (parent, sub, post, final)


def _collect_null_slot(ctx: gb.BuildContext, outcome: ge.Outcome) -> None:
    final = _final(outcome)
    for kind, post in _fan_out_slots(ctx, outcome):
        assert kind.collect_field not in post and final[kind.target_field] == [None], final


def _extra_null_slot(ctx: gb.BuildContext, outcome: ge.Outcome) -> None:
    final = _final(outcome)
    for kind, post in _fan_out_slots(ctx, outcome):
        missing = [(p, s) for p, s in kind.extra_outputs.items() if s not in post]
        assert missing, "every extra_outputs field was supplied"
        for parent, _ in missing:
            assert final[parent] == [None], final


def _no_error(ctx: gb.BuildContext, outcome: ge.Outcome) -> None:
    assert outcome.error is None, f"run failed: {outcome.error!r}"


def _reducer_error_not_suppressed(ctx: gb.BuildContext, outcome: ge.Outcome) -> None:
    assert outcome.error is not None and outcome.error.category == "reducer_error", outcome.error
    post = ge.plain(_one_fi(ctx).post_state)
    (kind,) = ctx.scratch.get("fan_outs") or [None]
    assert kind is not None and kind.collect_field not in post, post


def _pb_events(ctx: gb.BuildContext, outcome: ge.Outcome) -> list[NodeEvent]:
    rec = ctx.observers.get("__composition__")
    assert rec is not None, "no composition recorder"
    return _node_events([e for e in rec.events if ge._of(ctx, e, outcome)])


def _pb_node_pair(
    ctx: gb.BuildContext, outcome: ge.Outcome
) -> tuple[dict[str, Any], dict[str, Any]]:
    done = [e for e in _pb_events(ctx, outcome)
            if e.parallel_branches_config is not None and e.phase == "completed"]
    assert len(done) == 1, f"{len(done)} parallel-branches completed events"
    return ge.plain(done[0].pre_state), ge.plain(done[0].post_state)


def _uncovered_skipped(ctx: gb.BuildContext, outcome: ge.Outcome) -> None:
    pre, post = _pb_node_pair(ctx, outcome)
    degraded = ge.plain(_one_fi(ctx).post_state)
    (kind,) = ctx.scratch.get("parallel") or [None]
    uncovered = [p for b in kind.branches.values() for p, s in (b.outputs or {}).items()
                 if s not in degraded]
    assert uncovered, "every projected field was covered"
    for field in uncovered:
        assert post[field] == pre[field], (field, pre, post)


def _call_only(ctx: gb.BuildContext, outcome: ge.Outcome) -> None:
    (kind,) = ctx.scratch.get("parallel") or [None]
    assert all(b.call is not None and b.subgraph is None for b in kind.branches.values())
    inner = [e for e in _pb_events(ctx, outcome) if len(e.namespace) > 1]
    assert inner and all(e.node_name == e.branch_name and len(e.namespace) == 2 for e in inner)


def _merged_via_reducer(ctx: gb.BuildContext, outcome: ge.Outcome) -> None:
    final = _final(outcome)
    updates = [ge.plain(e.post_state) for e in _pb_events(ctx, outcome)
               if len(e.namespace) > 1 and e.phase == "completed"]
    assert updates
    for update in updates:
        for k, v in update.items():
            assert final[k] == v, (k, final)


def _dispatched(ctx: gb.BuildContext, outcome: ge.Outcome) -> set[str]:
    return {e.branch_name for e in _pb_events(ctx, outcome) if e.branch_name is not None}


def _when_branches(ctx: gb.BuildContext) -> dict[str, Any]:
    (kind,) = ctx.scratch.get("parallel") or [None]
    return {n: b for n, b in kind.branches.items() if b.when is not None}


def _when_false_skipped(ctx: gb.BuildContext, outcome: ge.Outcome) -> None:
    pre, _ = _pb_node_pair(ctx, outcome)
    gated = _when_branches(ctx)
    skipped = {n for n, b in gated.items() if not b.when(_state_obj(ctx, outcome))}
    assert skipped and not (skipped & _dispatched(ctx, outcome)), (skipped, pre)


def _state_obj(ctx: gb.BuildContext, outcome: ge.Outcome) -> Any:
    started = [e for e in _pb_events(ctx, outcome)
               if e.parallel_branches_config is not None and e.phase == "started"]
    return started[0].pre_state


def _skipped_no_contribution(ctx: gb.BuildContext, outcome: ge.Outcome) -> None:
    pre, post = _pb_node_pair(ctx, outcome)
    written = {k for e in _pb_events(ctx, outcome) if len(e.namespace) > 1
               and e.phase == "completed" for k in ge.plain(e.post_state)}
    changed = {k for k in post if post[k] != pre[k]}
    assert changed <= written, (changed, written)


def _skipped_no_event(ctx: gb.BuildContext, outcome: ge.Outcome) -> None:
    state = _state_obj(ctx, outcome)
    skipped = {n for n, b in _when_branches(ctx).items() if not b.when(state)}
    assert skipped and not (skipped & _dispatched(ctx, outcome))


def _when_true_dispatches(ctx: gb.BuildContext, outcome: ge.Outcome) -> None:
    state = _state_obj(ctx, outcome)
    chosen = {n for n, b in _when_branches(ctx).items() if b.when(state)}
    assert chosen and chosen <= _dispatched(ctx, outcome)


def _call_degraded(ctx: gb.BuildContext, outcome: ge.Outcome) -> None:
    final = _final(outcome)
    for k, v in ge.plain(_one_fi(ctx).post_state).items():
        assert final[k] == v, (k, final)


def _siblings_completed(ctx: gb.BuildContext, outcome: ge.Outcome) -> None:
    events = _pb_events(ctx, outcome)
    done = {e.branch_name for e in events if e.phase == "completed" and e.error is None
            and e.branch_name is not None}
    failed = {e.branch_name for e in events if e.phase == "completed" and e.error is not None}
    assert failed and done - failed, (done, failed)


def _chain(ctx: gb.BuildContext) -> Any:
    return _one_fi(ctx).caught_exception


def _derived_outermost(ctx: gb.BuildContext, outcome: ge.Outcome) -> None:
    chain = _chain(ctx)
    firsts = [link.category for link in chain.links if not link.carrier and link.category]
    assert chain.category == (firsts[0] if firsts else None), chain


def _carrier_and_origin(ctx: gb.BuildContext, outcome: ge.Outcome) -> None:
    links = _chain(ctx).links
    assert links[0].carrier and not links[-1].carrier, links


def _null_derived(ctx: gb.BuildContext, outcome: ge.Outcome) -> None:
    chain = _chain(ctx)
    assert chain.category is None
    assert all(link.category is None for link in chain.links if not link.carrier)


def _two_non_carriers(ctx: gb.BuildContext, outcome: ge.Outcome) -> None:
    assert len([link for link in _chain(ctx).links if not link.carrier]) == 2


def _through_wrapper(ctx: gb.BuildContext, outcome: ge.Outcome) -> None:
    chain = _chain(ctx)
    assert chain.links[0].carrier and chain.category not in (None, "node_exception"), chain


def _not_masked(ctx: gb.BuildContext, outcome: ge.Outcome) -> None:
    assert _chain(ctx).category != "node_exception"


PU_INVARIANTS: dict[str, Check] = {
    "contribution_is_the_degraded_update": _contribution_is_degraded,
    "extra_outputs_read_by_subgraph_field_name": _extra_by_sub_name,
    "omitted_collect_field_yields_null_slot": _collect_null_slot,
    "absent_collect_field_yields_null_slot": _collect_null_slot,
    "extra_outputs_omission_is_null_slot": _extra_null_slot,
    "degrade_path_does_not_raise": _no_error,
    "fan_in_does_not_raise": _no_error,
    "strict_reducer_null_slot_raises": _reducer_error_not_suppressed,
    "degrade_does_not_suppress_reducer_error": _reducer_error_not_suppressed,
    "uncovered_projected_field_skipped": _uncovered_skipped,
    "parent_keeps_prior_value": _uncovered_skipped,
    "callable_branches_run_without_subgraph": _call_only,
    "contributions_merge_via_parent_reducer": _merged_via_reducer,
    "when_false_branch_skipped": _when_false_skipped,
    "skipped_branch_no_contribution": _skipped_no_contribution,
    "skipped_branch_emits_no_event": _skipped_no_event,
    "when_true_branch_dispatches": _when_true_dispatches,
    "callable_branch_failure_isolated_and_degraded": _call_degraded,
    "sibling_branch_completed": _siblings_completed,
    "derived_category_is_outermost_non_carrier_with_category": _derived_outermost,
    "chain_includes_carrier_and_originating": _carrier_and_origin,
    "uncategorized_cause_yields_null_derived_category": _null_derived,
    "chain_has_two_non_carrier_links": _two_non_carriers,
    "category_resolves_through_node_exception_wrapper": _through_wrapper,
    "category_not_masked_as_node_exception": _not_masked,
}


def _as_invariant(check: Check) -> Callable[..., None]:
    def run(ctx: gb.BuildContext, graph: Any, value: Any, outcome: ge.Outcome, scoped: Any) -> None:
        if value:
            check(ctx, outcome)

    return run


for _name, _check in PU_INVARIANTS.items():
    ge.INVARIANTS.setdefault(_name, _as_invariant(_check))

_vocab.register_resolver("graph-engine", resolves)


# --- routing pipeline-utilities cases -------------------------------------------------------------

COMPOSITION_DIRECTIVES = ("fan_out", "parallel_branches")


def uses_composition(case: Case) -> bool:
    """Does the case (or a subgraph it declares) use a fan-out / parallel-branches node?"""

    def walk(value: Any) -> bool:
        if isinstance(value, Mapping):
            return any(
                (k in COMPOSITION_DIRECTIVES and isinstance(v, Mapping)) or walk(v)
                for k, v in value.items()
            )
        if isinstance(value, list):
            return any(walk(v) for v in value)
        return False

    subgraphs = {k: case.document.get(k) for k in ("subgraph", "subgraphs")}
    return walk(case.data) or walk(subgraphs)


async def run_composition_case(case: Case) -> None:
    """Run a pipeline-utilities composition case through the graph-engine flow,
    with an in-memory recording observer for the event-level invariants."""
    data = copy.deepcopy(case.data)
    observers = list(data.get("observers") or [])
    observers.append({"name": "__composition__", "attach": "invocation", "behavior": "record"})
    data["observers"] = observers
    document = case.document if case.document is not case.data else data
    await ge.run_case(Case(case.capability, case.fixture, case.name, data, document, case.path))


def wrap_pipeline_utilities(
    run_case: Callable[[Case], Coroutine[Any, Any, None]],
) -> Callable[[Case], Coroutine[Any, Any, None]]:
    """The pipeline-utilities ``run_case``; composition cases go to :func:`run_composition_case`."""

    async def dispatch(case: Case) -> None:
        if uses_composition(case):
            await run_composition_case(case)
        else:
            await run_case(case)

    return dispatch


__all__ = [
    "PREDICATES", "PU_INVARIANTS", "check_event_predicate", "run_composition_case",
    "uses_composition", "wrap_pipeline_utilities",
]
