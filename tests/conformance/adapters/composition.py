"""Fan-out and parallel-branches directives for the graph-shaped adapters.

Registers, through the tables of :mod:`.graph_build` and :mod:`.graph_engine`:

- node directives ``fan_out`` and ``parallel_branches`` (conformance-adapter
  §5.4) building the real :class:`~openarmature_nodes.graph.FanOut` /
  :class:`~openarmature_nodes.graph.ParallelBranches` kinds, and the fan-out
  mocks ``flaky_by_index``, ``flaky_instance_only`` plus ``sleep_ms``;
- the ``observer_event_invariants`` / ``node_accumulator_snapshot_invariants``
  predicates, read as a small grammar ``<subject>_<predicate>`` (subjects:
  ``inner``, ``<branch>_inner``, ``fan_out_inner``, ``<node>_node``,
  ``<node>``; predicates: counts, ``*_seen`` sets, chain and uniqueness
  checks), never by fixture name;
- the pipeline-utilities expectations these fixtures add (``recoverable_state``,
  ``concurrency_invariant``, ``expected_failure_isolation_event``,
  ``expected_error.fan_out_category`` / ``branch_name`` / ``cause_message``)
  and their fixture-specific invariants.

Pipeline-utilities cases that use a composition directive run through
:func:`.graph_engine.run_graph_case` (see :func:`wrap_pipeline_utilities`),
with an in-memory recording observer added so event-level invariants can be
checked.

Adapter accommodation: a fixture's subgraph that does not declare the
fan-out's ``item_field`` gets it declared as an ``any`` field (fixture 023
names ``item_field: anything`` on a subgraph without that field; the library
itself rejects an undeclared ``item_field`` at compile time, as §9 requires).
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio

from openarmature_nodes.context import current_lineage
from openarmature_nodes.graph import Branch, FanOut, ParallelBranches
from tests.conformance import vocabulary as _vocab
from tests.conformance.fixtures import check_directives

from . import graph_build as gb

# --- failure mocks for fan-out instances --------------------------------------------------------


class IndexedFailure(Exception):
    """What the fan-out failure mocks raise (categorized, optionally transient)."""

    def __init__(self, message: str, category: str | None, transient: bool) -> None:
        super().__init__(message)
        self.message = message
        self.category = category
        self.transient = transient


def _item_field_of(ctx: gb.BuildContext, nb: gb.NodeBuild) -> str | None:
    """The fan-out's ``item_field`` for a node of its subgraph (``None`` in count mode)."""
    return (ctx.scratch.get("item_field_of") or {}).get(nb.graph_name)


def _item(state: Any, item_field: str | None) -> Any:
    return getattr(state, item_field, None) if item_field is not None else None


def _instance(state: Any, item_field: str | None) -> Any:
    """Which fan-out instance runs this node: its full ``fan_out_index_chain`` from the
    run context (a count-mode instance has no item; items may repeat), else the item."""
    lineage = current_lineage()
    if lineage is not None and lineage.fan_out_index is not None:
        return ("instance", lineage.fan_out_index_chain)
    return ("item", _item(state, item_field))


def _literal_or_field(state: Any, value: Any) -> Any:
    if isinstance(value, str) and value in getattr(type(state), "__struct_fields__", ()):
        return getattr(state, value)
    return value


def _success(state: Any, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _literal_or_field(state, copy.deepcopy(v)) for k, v in spec.items()}


FLAKY_BY_INDEX_KEYS = frozenset({"fail_when_idx", "fail_count_per_idx", "success_compute",
                                 "category"})
FLAKY_INSTANCE_KEYS = frozenset({"fail_count_per_instance", "category", "success_compute"})


def _flaky_by_index(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    where = f"{nb.graph_name}.nodes.{nb.name}.flaky_by_index"
    check_directives(value, FLAKY_BY_INDEX_KEYS, where)
    success = dict(value.get("success_compute") or {})
    category = value.get("category", "provider_unavailable")
    item_field = _item_field_of(ctx, nb)
    counts: dict[Any, int] = {}  # per instance

    async def act(state: Any) -> Mapping[str, Any]:
        item = _item(state, item_field)
        if item is None and item_field is None:  # count mode: no item, the index stands in
            lineage = current_lineage()
            item = lineage.fan_out_index if lineage is not None else None
        if "fail_when_idx" in value and item == value["fail_when_idx"]:
            raise IndexedFailure(f"instance with item {item!r} fails by design",
                                 value.get("category"), False)
        if "fail_count_per_idx" in value:
            key = _instance(state, item_field)  # every instance fails its first N attempts
            n = counts.get(key, 0)
            counts[key] = n + 1
            if n < int(value["fail_count_per_idx"]):
                raise IndexedFailure(f"attempt {n} of instance {key!r} fails", category, True)
        return _success(state, success)

    nb.actions.append(act)


def _flaky_instance_only(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    where = f"{nb.graph_name}.nodes.{nb.name}.flaky_instance_only"
    check_directives(value, FLAKY_INSTANCE_KEYS, where)
    success = dict(value.get("success_compute") or {})
    category = value.get("category")
    limit = int(value.get("fail_count_per_instance", 1))
    item_field = _item_field_of(ctx, nb)
    runs: dict[Any, int] = {}

    async def act(state: Any) -> Mapping[str, Any]:
        key = _instance(state, item_field)
        n = runs.get(key, 0)
        runs[key] = n + 1
        if n < limit:
            raise IndexedFailure(f"whole-instance run {n} of {key!r} fails", category, True)
        return _success(state, success)

    nb.actions.append(act)


def _sleep_ms(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    seconds = float(value) / 1000.0

    async def act(state: Any) -> None:
        await anyio.sleep(seconds)

    nb.actions.append(act)


# --- fan_out ------------------------------------------------------------------------------------

FAN_OUT_KEYS = {
    "subgraph", "items_field", "item_field", "count", "collect_field", "target_field",
    "error_policy", "errors_field", "concurrency", "concurrent_mode", "on_empty", "count_field",
    "inputs", "extra_outputs", "instance_middleware",
}


def _state_field_read(spec: Mapping[str, Any]) -> Callable[[Any], Any]:
    check_directives(spec, {"callable", "field"}, "state_field_read")
    field = str(spec["field"])
    return lambda state: getattr(state, field)


def _queue_chunk(spec: Mapping[str, Any]) -> Callable[[Any], Any]:
    check_directives(spec, {"callable", "field", "chunk_size"}, "queue_chunk")
    field, size = str(spec["field"]), int(spec["chunk_size"])
    return lambda state: max(1, len(getattr(state, field)) // size)


STATE_CALLABLES: dict[str, Callable[[Mapping[str, Any]], Callable[[Any], Any]]] = {
    "state_field_read": _state_field_read,
    "queue_chunk": _queue_chunk,
}


def _int_or_callable(value: Any, where: str) -> Any:
    if isinstance(value, Mapping):
        factory = STATE_CALLABLES.get(str(value.get("callable")))
        if factory is None:
            raise AssertionError(f"unknown callable {value.get('callable')!r} at {where}")
        return factory(value)
    return value


def _declare_item_field(ctx: gb.BuildContext, subgraph: str, item_field: str) -> None:
    """Accommodation (module docs): declare an ``item_field`` the fixture's subgraph omits."""
    sdef = ctx.subgraph_defs.get(subgraph)
    if sdef is None or subgraph in ctx.compiled:
        return
    fields = ((sdef.get("state") or {}).get("fields") or {})
    if item_field not in fields:
        sdef = copy.deepcopy(sdef)
        sdef.setdefault("state", {}).setdefault("fields", {})[item_field] = {"type": "any"}
        ctx.subgraph_defs[subgraph] = sdef


def _subgraph_def(ctx: gb.BuildContext, name: str) -> None:
    """Find a subgraph declared under another top-level key (a fixture may declare a
    second one as ``subgraph_with_idx: {name: ..., ...}``)."""
    if name not in ctx.subgraph_defs:
        for key, value in ctx.case.document.items():
            if (key.startswith("subgraph") and isinstance(value, Mapping)
                    and value.get("name") == name):
                ctx.subgraph_defs[name] = dict(value)


def _subgraph(ctx: gb.BuildContext, name: str) -> Any:
    _subgraph_def(ctx, name)
    return ctx.subgraph(name)


def _in_flight_probe(ctx: gb.BuildContext) -> gb.Middleware:
    """Outermost instance middleware counting instances in flight (``concurrency_invariant``)."""
    gauge = ctx.scratch.setdefault("in_flight", {"now": 0, "max": 0})

    async def probe(state: Any, nxt: Callable[[Any], Awaitable[Any]]) -> Any:
        gauge["now"] += 1
        gauge["max"] = max(gauge["max"], gauge["now"])
        try:
            await anyio.lowlevel.checkpoint()  # give every other worker the chance to start
            return await nxt(state)
        finally:
            gauge["now"] -= 1

    return probe


def _fan_out(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    where = f"{nb.graph_name}.nodes.{nb.name}.fan_out"
    check_directives(value, FAN_OUT_KEYS, where)
    sub_name = str(value["subgraph"])
    _subgraph_def(ctx, sub_name)
    item_field = value.get("item_field")
    if item_field is not None:
        _declare_item_field(ctx, sub_name, str(item_field))
        ctx.scratch.setdefault("item_field_of", {})[sub_name] = str(item_field)
    mws = [gb.make_middleware(ctx, cfg, f"{where}.instance_middleware")
           for cfg in value.get("instance_middleware") or ()]
    if "concurrency_invariant" in (ctx.case.data.get("expected") or {}):
        mws.insert(0, _in_flight_probe(ctx))
    concurrency = _int_or_callable(value.get("concurrency", 10), f"{where}.concurrency")
    if value.get("concurrent_mode") == "serial":
        concurrency = 1
    options: dict[str, Any] = {}
    for key in ("items_field", "item_field", "errors_field", "count_field", "error_policy",
                "on_empty"):
        if value.get(key) is not None:
            options[key] = value[key]
    for key in ("inputs", "extra_outputs"):
        if value.get(key):
            options[key] = {str(k): str(v) for k, v in value[key].items()}
    if "count" in value:
        options["count"] = _int_or_callable(value["count"], f"{where}.count")
    kind = FanOut(
        _subgraph(ctx, sub_name),
        collect_field=str(value["collect_field"]),
        target_field=str(value["target_field"]),
        concurrency=concurrency,
        instance_middleware=mws,
        **options,
    )
    ctx.scratch.setdefault("fan_outs", []).append(kind)
    nb.kind = kind


# --- parallel_branches --------------------------------------------------------------------------

BRANCH_KEYS = {"subgraph", "call", "inputs", "outputs", "middleware", "when"}


def _call_branch(ctx: gb.BuildContext, nb: gb.NodeBuild, bname: str, spec: Any) -> Any:
    inner = gb.NodeBuild(bname, dict(spec or {}), f"{nb.graph_name}.{nb.name}.{bname}")
    for directive, val in inner.spec.items():
        handler = gb.NODE_DIRECTIVES.get(directive)
        if handler is None:
            check_directives({directive: val}, set(gb.NODE_DIRECTIVES), f"{inner.graph_name}.call")
        else:
            handler(ctx, inner, val)
    if inner.kind is not None or inner.middleware:
        raise AssertionError(f"{inner.graph_name}.call: only node-body directives are allowed")
    actions = tuple(inner.actions)

    async def call(state: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for act in actions:
            part = await act(state)
            if part:
                out.update(part)
        return out

    return call


def _str_map(value: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()}


def _when(spec: Any, where: str) -> Callable[[Any], bool]:
    check_directives(spec, {"field"}, where)
    field = str(spec["field"])
    return lambda state: bool(getattr(state, field))


def _parallel_branches(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    where = f"{nb.graph_name}.nodes.{nb.name}.parallel_branches"
    check_directives(value, {"branches", "error_policy", "errors_field"}, where)
    branches: dict[str, Branch] = {}
    for bname, spec in (value.get("branches") or {}).items():
        bwhere = f"{where}.branches.{bname}"
        check_directives(spec, BRANCH_KEYS, bwhere)
        branch = Branch(
            subgraph=_subgraph(ctx, str(spec["subgraph"])) if "subgraph" in spec else None,
            call=_call_branch(ctx, nb, str(bname), spec["call"]) if "call" in spec else None,
            inputs=_str_map(spec["inputs"]) if "inputs" in spec else None,
            outputs=_str_map(spec["outputs"]) if "outputs" in spec else None,
            middleware=tuple(gb.make_middleware(ctx, cfg, f"{bwhere}.middleware")
                             for cfg in spec.get("middleware") or ()),
            when=_when(spec["when"], f"{bwhere}.when") if "when" in spec else None,
        )
        branches[str(bname)] = branch
    options = {k: value[k] for k in ("error_policy", "errors_field") if value.get(k) is not None}
    kind = ParallelBranches(branches, **options)
    ctx.scratch.setdefault("parallel", []).append(kind)
    nb.kind = kind


gb.NODE_DIRECTIVES.update({
    "fan_out": _fan_out,
    "parallel_branches": _parallel_branches,
    "flaky_by_index": _flaky_by_index,
    "flaky_instance_only": _flaky_instance_only,
    "sleep_ms": _sleep_ms,
})

_vocab.register("pipeline-utilities", FAN_OUT_KEYS | BRANCH_KEYS | {"branches", "errors_field"})
_vocab.register("pipeline-utilities", FLAKY_BY_INDEX_KEYS | FLAKY_INSTANCE_KEYS)
_vocab.register("pipeline-utilities", STATE_CALLABLES)

from . import composition_checks  # noqa: E402  (expectations / invariants of these fixtures)

wrap_pipeline_utilities = composition_checks.wrap_pipeline_utilities

__all__ = ["IndexedFailure", "STATE_CALLABLES", "wrap_pipeline_utilities"]
