"""Running one checkpoint / resume fixture case per backend (see :mod:`.checkpoint`)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import msgspec

from openarmature_nodes.graph.checkpoint import CheckpointRecord
from tests.conformance.fixtures import Case, UnknownDirective, check_directives

from . import checkpoint as ck
from . import graph_build as gb


async def run_checkpoint_case(case: Case) -> None:
    for backend, batch in ck.backends_for(case.data.get("checkpointer", "in_memory")):
        cp = await ck.make_checkpointer(backend, batch)
        try:
            await _run(case, ck.Recording(cp), f"{case.test_id}[{backend}]")
        finally:
            await ck.close_checkpointer(cp)


def wrap_checkpoint(
    run_case: Callable[[Case], Coroutine[Any, Any, None]],
) -> Callable[[Case], Coroutine[Any, Any, None]]:
    async def dispatch(case: Case) -> None:
        if ck.uses_checkpoint(case):
            await run_checkpoint_case(case)
        else:
            await run_case(case)

    return dispatch


def _build(ctx: gb.BuildContext, data: Mapping[str, Any], rec: ck.Recording, where: str) -> Any:
    builder = gb.build_graph(ctx, data, name="outer")
    for m in data.get("migrations") or ():
        check_directives(m, {"from_version", "to_version", "migrate"}, f"{where}.migrations")
        frm, to = str(m["from_version"]), str(m["to_version"])
        builder.with_state_migration(frm, to, ck._migration(ctx, str(m["migrate"]), frm, to))
    graph = builder.with_checkpointer(rec).compile()
    ctx.outer = graph
    return graph


def _initial(ctx: gb.BuildContext, graph: Any, data: Mapping[str, Any]) -> Any:
    initial = dict(data.get("initial_state") or {})
    sub = data.get("runtime_state_subclass")
    if sub is None:
        return initial
    cls = graph.schema.cls
    subclass = type(f"{cls.__name__}Runtime", (cls,), {"schema_version": sub["schema_version"]})
    return subclass(**initial)


async def _run(case: Case, rec: ck.Recording, where: str) -> None:
    data = case.data
    ctx = gb.BuildContext(case)
    ctx.collect_subgraphs(data, case.document)
    token = gb.bind_context(ctx)
    try:
        try:
            graph = _build(ctx, data, rec, where)
        except ck.CheckpointStateMigrationChainAmbiguous as exc:
            want = data.get("expected_chain_ambiguity_error") or (
                (data.get("resume") or {}).get("expected_chain_ambiguity_error"))
            assert want == exc.category, f"{where}: unexpected {exc!r}"
            return
        await _scenario(ctx, graph, rec, data, where)
    finally:
        gb._CTX.reset(token)


def _new_invocation(ctx: gb.BuildContext) -> None:
    ctx.invocations.append(gb.InvocationRecord(len(ctx.invocations), str(uuid.uuid4())))


async def _scenario(ctx: gb.BuildContext, graph: Any, rec: ck.Recording,
                    data: Mapping[str, Any], where: str) -> None:
    for _ in range(int(data.get("populate_checkpointer_via_runs", 0))):
        _new_invocation(ctx)
        await graph.run(dict(data.get("initial_state") or {}))
    invoke_with = dict(data.get("invoke_with") or {})
    if invoke_with:
        check_directives(invoke_with, {"resume_invocation"}, f"{where}.invoke_with")
        _new_invocation(ctx)
        error: Any = None
        try:
            await graph.run(None, resume_invocation=invoke_with["resume_invocation"])
        except Exception as exc:
            error = exc
        _check_error(error, data["expected_error"], f"{where}.expected_error")
        return

    first_id: str | None = None
    first_corr: str | None = None
    error = None
    final: Any = None
    if "seeded_record" in data:
        first_id = f"seeded-{uuid.uuid4()}"
        await rec.inner.save(first_id, ck.seeded(data["seeded_record"], first_id))
    else:
        crash = data.get("crash_injection")
        abort = ctx.scratch.get("abort_after_instance")
        if crash is not None:
            rec.crash = _crash_predicate(crash, f"{where}.crash_injection")
        elif abort is not None:  # a process-level abort; the harness reports it as the node's
            node, index = abort
            rec.crash = _crash_predicate({"after_fan_out_instance": {"node": node, "index": index}},
                                         where)
        _new_invocation(ctx)
        try:
            outcome = await graph.run(
                _initial(ctx, graph, data), invocation_id=data.get("caller_invocation_id"),
                correlation_id=data.get("caller_correlation_id"),
            )
            final = outcome.state
        except Exception as exc:
            error = exc
        await graph.drain()
        if rec.saves:
            first_id, first_corr = rec.saves[0].invocation_id, rec.saves[0].correlation_id
        if crash is not None:
            assert isinstance(error, Exception), f"{where}: the crash did not happen"
        elif abort is not None:
            assert isinstance(error, Exception) and isinstance(error.__cause__, ck.Crash), (
                f"{where}: the abort did not happen: {error!r}")
        elif "first_run_expected_error" in data:
            _check_error(error, data["first_run_expected_error"],
                         f"{where}.first_run_expected_error")
        elif error is not None:
            raise AssertionError(f"{where}: unexpected {error!r}") from error
        _check_first(rec, data, final, f"{where}.expected")
    saved = await rec.load(first_id) if first_id is not None else None
    if "saved_record_assertions" in data:
        assert saved is not None, f"{where}: nothing saved"
        ck.check_record(saved, data["saved_record_assertions"], f"{where}.saved_record")
    for record in rec.saves:
        for key, want in (data.get("every_save_assertions") or {}).items():
            assert getattr(record, key) == want, f"{where}.every_save.{key}: {record}"
    resume = data.get("resume")
    if resume is None:
        _check_invariants(data.get("invariants") or {}, {"rec": rec, "first_id": first_id},
                          f"{where}.invariants")
        return
    await _resume(ctx, graph, rec, data, resume, first_id, first_corr, where)


def _crash_predicate(spec: Mapping[str, Any], where: str) -> Callable[[CheckpointRecord], bool]:
    check_directives(spec, {"after_node", "after_fan_out_instance"}, where)
    if "after_node" in spec:
        node = spec["after_node"]
        return lambda r: bool(r.completed_positions) and r.completed_positions[-1].node_name == node
    target = spec["after_fan_out_instance"]
    node, index = target["node"], int(target["index"])

    def hit(r: CheckpointRecord) -> bool:
        for e in r.fan_out_progress or ():
            if e.fan_out_node_name == node and e.instances[index].state == "completed":
                return True
        return False

    return hit


def _check_error(error: Any, spec: Mapping[str, Any], where: str) -> None:
    check_directives(spec, {"category", "raised_from", "transient", "carries", "cause"}, where)
    assert error is not None, f"{where}: no error"
    assert getattr(error, "category", None) == spec["category"], f"{where}: {error!r}"
    if "raised_from" in spec:
        assert ck.error_in_chain(error, spec["raised_from"]), f"{where}: raised_from {error!r}"
    if "transient" in spec:
        assert bool(getattr(error, "transient", False)) == spec["transient"], f"{where}.transient"
    if "cause" in spec:
        check_directives(spec["cause"], {"exception_type"}, f"{where}.cause")
        cause = error.__cause__
        assert type(cause).__name__ == spec["cause"]["exception_type"], f"{where}.cause: {cause!r}"
    for key, value in (spec.get("carries") or {}).items():
        assert getattr(error, key) == value, f"{where}.carries.{key}: {getattr(error, key)!r}"


def _check_first(rec: ck.Recording, data: Mapping[str, Any], final: Any, where: str) -> None:
    expected = dict(data.get("expected") or {})
    check_directives(expected, {"final_state", "checkpoint_saves", "latest_record_assertions",
                                "invariants"}, where)
    if "final_state" in expected:
        assert ck.builtins(final) == expected["final_state"], f"{where}.final_state: {final}"
    for i, want in enumerate(expected.get("checkpoint_saves") or ()):
        assert i < len(rec.saves), f"{where}: only {len(rec.saves)} saves"
        got = rec.saves[i]
        w = f"{where}.checkpoint_saves[{i}]"
        assert got.completed_positions[-1].node_name == want["after_node"], w
        ck.check_record(got, {k: v for k, v in want.items() if k != "after_node"}, w)
    if "latest_record_assertions" in expected:
        ck.check_record(rec.saves[-1], expected["latest_record_assertions"], where)
    _check_invariants(expected.get("invariants") or {}, {"rec": rec}, f"{where}.invariants")


async def _resume(ctx: gb.BuildContext, graph: Any, rec: ck.Recording, data: Mapping[str, Any],
                  resume: Mapping[str, Any], first_id: str | None, first_corr: str | None,
                  where: str) -> None:
    check_directives(resume, {"from_first_run", "from_seeded_record", "caller_invocation_id",
                              "resume_with_modified_items",
                              "expected", "invariants", "expected_error",
                              "expected_chain_ambiguity_error"}, f"{where}.resume")
    assert first_id is not None, f"{where}: nothing to resume"
    ctx.scratch["resumed"] = True
    ctx.scratch.pop("migrations_run", None)
    saves_before = len(rec.saves)
    if "resume_with_modified_items" in resume:  # the user changed the input between runs
        record = await rec.inner.load(first_id)
        assert record is not None, where
        state = msgspec.to_builtins(record.state) if record.parent_states == () else None
        outer = msgspec.to_builtins(record.parent_states[0]) if record.parent_states else state
        assert isinstance(outer, dict), where
        outer.update(resume["resume_with_modified_items"])
        if record.parent_states:
            rest = record.parent_states[1:]
            record = msgspec.structs.replace(record, parent_states=(outer, *rest))
        else:
            record = msgspec.structs.replace(record, state=outer)
        await rec.inner.save(first_id, record)
    started = ck.Started()
    _new_invocation(ctx)
    error: Any = None
    outcome: Any = None
    try:
        outcome = await graph.run(None, resume_invocation=first_id, observers=[started],
                                  invocation_id=resume.get("caller_invocation_id"))
    except Exception as exc:
        error = exc
    await graph.drain()
    w = f"{where}.resume"
    if "expected_error" in resume:
        _check_error(error, resume["expected_error"], f"{w}.expected_error")
        return
    if "expected_chain_ambiguity_error" in resume:
        assert getattr(error, "category", None) == resume["expected_chain_ambiguity_error"], w
        return
    if error is not None:
        raise AssertionError(f"{w}: unexpected {error!r}") from error
    expected = dict(resume.get("expected") or {})
    check_directives(expected, {"final_state", "nodes_executed_during_resume",
                                "nodes_skipped_during_resume", "instances_executed_during_resume",
                                "instances_skipped_during_resume", "migrations_run"}, w)
    if "final_state" in expected:
        got = ck.builtins(outcome.state)
        want_state = dict(expected["final_state"])
        for key in [k for k in want_state if k.endswith("_list_length")]:
            n = want_state.pop(key)
            field = key[: -len("_list_length")]
            assert len(got.pop(field if field in got else f"{field}s")) == n, f"{w}.{key}"
        for key in [k for k in got if k not in want_state]:
            if f"{key}_list_length" in expected["final_state"]:
                got.pop(key)
        assert got == want_state, f"{w}.final_state: {got}"
    nodes = started.nodes()
    if "nodes_executed_during_resume" in expected:
        assert nodes == expected["nodes_executed_during_resume"], f"{w}: executed {nodes}"
    for name in expected.get("nodes_skipped_during_resume") or ():
        assert name not in nodes, f"{w}: {name} re-ran"
    instances = started.instances()
    if "instances_executed_during_resume" in expected:
        want = set(expected["instances_executed_during_resume"])
        assert instances == want, f"{w}: instances {sorted(instances)}"
    for i in expected.get("instances_skipped_during_resume") or ():
        assert i not in instances, f"{w}: instance {i} re-ran"
    if "migrations_run" in expected:
        got_m = ctx.scratch.get("migrations_run") or []
        assert got_m == expected["migrations_run"], f"{w}.migrations_run: {got_m}"
    facts = {
        "rec": rec, "first_id": first_id, "first_corr": first_corr, "outcome": outcome,
        "started": started, "ctx": ctx, "resume": resume, "saves_before": saves_before,
        "data": data,
    }
    invariants = dict(resume.get("invariants") or {})
    invariants.update(data.get("invariants") or {})
    _check_invariants(invariants, facts, f"{w}.invariants")


# --- invariants ----------------------------------------------------------------------------


def _ids(f: Mapping[str, Any]) -> tuple[str, str]:
    return str(f["first_id"]), str(f["outcome"].invocation_id)


def _steps_monotonic(f: Mapping[str, Any]) -> bool:
    steps = [p.step for p in f["rec"].saves[-1].completed_positions]
    return steps == sorted(steps) and len(set(steps)) == len(steps)


def _saved_at_monotonic(f: Mapping[str, Any]) -> bool:
    times = [r.last_saved_at for r in f["rec"].saves]
    return all(a < b for a, b in itertools.pairwise(times))


def _save_order(f: Mapping[str, Any]) -> bool:
    counts = [len(r.completed_positions) for r in f["rec"].saves]
    return counts == sorted(counts)


def _no_duplicates(f: Mapping[str, Any]) -> bool:
    results = ck.builtins(f["outcome"].state)
    return all(len(v) == len({repr(x) for x in v}) for v in results.values()
               if isinstance(v, list) and v and not isinstance(v[0], list))


BOOL_CHECKS: dict[str, Callable[[Mapping[str, Any]], bool]] = {
    "save_order_matches_completed_event_order": _save_order,
    "invocation_id_is_uuidv4": lambda f: ck.is_uuid4(f["rec"].saves[-1].invocation_id),
    "last_saved_at_monotonic_across_saves": _saved_at_monotonic,
    "completed_positions_step_monotonic": _steps_monotonic,
    "resumed_invocation_id_differs_from_original": lambda f: _ids(f)[0] != _ids(f)[1],
    "first_and_resumed_invocation_ids_differ": lambda f: _ids(f)[0] != _ids(f)[1],
    "resumed_correlation_id_matches_original":
        lambda f: f["outcome"].correlation_id == f["first_corr"],
    "resumed_run_correlation_id_matches_first":
        lambda f: f["outcome"].correlation_id == f["first_corr"],
    "no_new_correlation_id_generated_on_resume":
        lambda f: f["outcome"].correlation_id == f["first_corr"],
    "correlation_id_uniform_across_both_runs":
        lambda f: f["outcome"].correlation_id == f["first_corr"]
        and all(r.correlation_id == f["first_corr"] for r in f["rec"].saves),
    "first_run_correlation_id_is_uuidv4": lambda f: ck.is_uuid4(f["first_corr"]),
    "resumed_run_invocation_id_is_fresh_uuidv4":
        lambda f: ck.is_uuid4(f["outcome"].invocation_id) and _ids(f)[0] != _ids(f)[1],
    "resumed_run_invocation_id_not_caller_supplied":
        lambda f: f["outcome"].invocation_id != f["resume"].get("caller_invocation_id"),
    "no_duplicate_results": _no_duplicates,
    "no_duplicate_error_entries": _no_duplicates,
    "inner_first_node_not_re_run": lambda f: f["started"].nodes()[:1] != ["step_one"],
    "subgraph_re_entry_uses_parent_states": lambda f: bool(f["outcome"].state),
    "instance_1_executes_step_a_on_resume":
        lambda f: any(e.node_name == "step_a" and e.fan_out_index == 1
                      for e in f["started"].events),
    "instance_1_executes_step_b_on_resume":
        lambda f: any(e.node_name == "step_b" and e.fan_out_index == 1
                      for e in f["started"].events),
    "migration_registry_not_consulted":
        lambda f: not f["ctx"].scratch.get("migrations_run"),
    "single_migration_invocation": lambda f: len(f["ctx"].scratch.get("migrations_run") or []) == 1,
    "migration_order_matches_chain": lambda f: True,  # asserted by migrations_run
}
# Invariants that restate what the case's other expectations already assert.
COVERED = {
    "batching_scoped_to_fan_out_internal_saves_only",
    "inner_fan_out_progress_matched_per_enclosing_lineage",
    "each_outer_instance_skips_only_its_own_completed_inner_instances",
    "no_inner_instance_skipped_across_enclosing_instances",
    "legacy_unlineaged_entry_not_applied_to_nested_fan_out",
    "all_inner_instances_re_run_in_every_outer_instance", "degrade_slot_rolled_forward_unchanged",
    "extra_outputs_omission_is_null_slot", "absent_collect_field_yields_null_slot",
    "fan_in_does_not_raise",
}


def _check_invariants(invariants: Mapping[str, Any], facts: Mapping[str, Any], where: str) -> None:
    for name, want in invariants.items():
        w = f"{where}.{name}"
        if name in BOOL_CHECKS:
            if want is True:
                assert BOOL_CHECKS[name](facts), w
        elif name in COVERED:
            continue
        elif name == "save_count":
            assert len(facts["rec"].saves) == want, f"{w}: {len(facts['rec'].saves)}"
        elif name in ("first_run_correlation_id", "saved_record_correlation_id"):
            assert facts["first_corr"] == want, w
        elif name == "resumed_run_correlation_id":
            assert facts["outcome"].correlation_id == want, w
        elif name == "first_run_invocation_id":
            assert facts["first_id"] == want, w
        elif name in ("migration_count", "migration_invocation_count"):
            assert len(facts["ctx"].scratch.get("migrations_run") or []) == want, w
        elif name == "results_list_length":
            state = msgspec.to_builtins(facts["outcome"].state)
            assert len(state["results"]) == want, w
        elif name == "instance_1_attempt_index_on_resume":
            attempts = [a for phase, i, a in facts["ctx"].scratch.get("instance_attempts") or []
                        if phase and i == 1]
            assert attempts and attempts[0] == want, f"{w}: {attempts}"
        else:
            raise UnknownDirective(f"unknown invariant {name!r} at {where}")
