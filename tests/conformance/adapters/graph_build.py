"""Fixture YAML -> compiled graph, reusable by every graph-shaped adapter.

The translation is table-driven so other adapters (pipeline-utilities,
observability, ...) extend it without editing this module:

- :data:`NODE_DIRECTIVES` — ``nodes.<name>.<directive>`` -> ``handler(ctx, node, value)``.
  A handler adds an *action* (``async (state) -> update | None``) to the node's
  body, sets its kind (subgraph, fan-out, ...) or adds middleware.
- :data:`MIDDLEWARE_TYPES` — ``middleware.per_graph/per_node[].type`` ->
  ``factory(ctx, config) -> middleware``.
- :data:`EDGE_CALLABLES` — ``condition.callable`` -> ``factory(ctx, condition) -> route``.
- :data:`OBSERVER_BEHAVIORS` — ``observers[].behavior`` -> ``factory(ctx, spec) -> async fn``.
- :data:`GRAPH_KEYS` / :data:`STATE_FIELD_KEYS` — extra keys a graph / a state field may carry.

Every mapping read goes through ``check_directives`` so an unknown directive
fails naming itself. Nothing here looks at fixture names.
"""

from __future__ import annotations

import copy
import time
import typing
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec

from openarmature_nodes.graph import (
    END,
    CompiledGraph,
    DrainSummary,
    GraphBuilder,
    NodeEvent,
    State,
    append,
    bounded_append,
    concat_flatten,
    current_invocation_id,
    dedupe_append,
    last_write_wins,
    merge,
    merge_all,
    merge_by_key,
)
from openarmature_nodes.graph.lowlevel import SubgraphNode
from openarmature_nodes.graph.nodes import NodeKind
from tests.conformance import vocabulary as _vocab
from tests.conformance.fixtures import Case, FixtureSchemaInvalid, check_directives, need

Action = Callable[[Any], Awaitable[Mapping[str, Any] | None]]
Middleware = Callable[[Any, Callable[[Any], Awaitable[Any]]], Awaitable[Any]]


class FixtureNodeError(Exception):
    """What a ``raises:`` node raises."""


# --- build context ---------------------------------------------------------------------


@dataclass
class NodeBuild:
    """One node being translated: handlers fill these in."""

    name: str
    spec: dict[str, Any]
    graph_name: str
    actions: list[Action] = field(default_factory=list)
    kind: NodeKind | None = None
    subgraph_options: dict[str, Any] = field(default_factory=dict)
    middleware: list[Middleware] = field(default_factory=list)


@dataclass
class InvocationRecord:
    """Per-invocation harness records (reset before each invocation)."""

    index: int
    invocation_id: str
    execution_order: list[str] = field(default_factory=list)
    node_drain_summaries: dict[str, DrainSummary] = field(default_factory=dict)
    node_snapshots: dict[str, dict[str, list[NodeEvent]]] = field(default_factory=dict)


class BuildContext:
    """Everything a case's translation and run share."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.subgraph_defs: dict[str, dict[str, Any]] = {}
        self.compiled: dict[str, CompiledGraph[Any]] = {}
        self.outer: CompiledGraph[Any] | None = None
        self.observers: dict[str, Any] = {}  # name -> Recorder
        self.delivery_log: list[tuple[int, dict[str, Any]]] = []  # (invocation index, entry)
        self.invocations: list[InvocationRecord] = []
        self.index_by_id: dict[str, int] = {}
        self.drain_timings: list[tuple[float, float | None]] = []  # (elapsed, timeout)
        # undeclared initial_state fields -> their type (None: Any)
        self.extra_fields: dict[str, Any] = {}
        self.scratch: dict[str, Any] = {}  # free space for extending adapters

    @property
    def current(self) -> InvocationRecord:
        return self.invocations[-1]

    # --- subgraphs ------------------------------------------------------------------

    def collect_subgraphs(self, *sources: Mapping[str, Any] | None) -> None:
        for src in sources:
            if not isinstance(src, Mapping):
                continue
            single = src.get("subgraph")
            if isinstance(single, Mapping):
                self.subgraph_defs[str(single["name"])] = dict(single)
            many = src.get("subgraphs")
            if isinstance(many, Mapping):
                for name, sdef in many.items():
                    self.subgraph_defs[str(name)] = dict(sdef)

    def subgraph(self, name: str) -> CompiledGraph[Any]:
        graph = self.compiled.get(name)
        if graph is None:
            sdef = self.subgraph_defs.get(name)
            if sdef is None:
                raise AssertionError(f"subgraph {name!r} is not declared by the fixture")
            self.collect_subgraphs(sdef)
            graph = build_graph(self, sdef, name=name).compile()
            self.compiled[name] = graph
        return graph

    def graph_named(self, target: str) -> CompiledGraph[Any]:
        if target == "outer":
            assert self.outer is not None
            return self.outer
        if target in self.subgraph_defs:
            return self.subgraph(target)
        if target == "inner" and len(self.subgraph_defs) >= 1:
            return self.subgraph(list(self.subgraph_defs)[-1])
        runs = self._subgraph_run_by_node(target)
        if runs is not None:  # §5.5: a node name targets the subgraph that node runs
            return self.subgraph(runs)
        raise FixtureSchemaInvalid(
            f"fixture_schema_invalid: observer target {target!r} names no graph or subgraph node")

    def _subgraph_run_by_node(self, node: str) -> str | None:
        graphs = [self.case.data.get("graph", self.case.data), *self.subgraph_defs.values()]
        for gdef in graphs:
            spec = (gdef.get("nodes") or {}).get(node)
            if isinstance(spec, Mapping):
                if isinstance(spec.get("subgraph"), str):
                    return str(spec["subgraph"])
                fan_out = spec.get("fan_out")
                if isinstance(fan_out, Mapping) and isinstance(fan_out.get("subgraph"), str):
                    return str(fan_out["subgraph"])
        return None


# --- state schemas --------------------------------------------------------------------

_SCALARS: dict[str, Any] = {
    "string": str, "str": str, "int": int, "integer": int, "float": float, "number": float,
    "bool": bool, "boolean": bool, "any": Any, "object": Any,
}


def parse_type(text: str) -> Any:
    """``list<dict<string,int>>`` -> ``list[dict[str, int]]``; unknown barewords -> ``Any``."""
    text = text.strip()
    if "<" in text:
        head, rest = text.split("<", 1)
        if not rest.endswith(">"):
            raise AssertionError(f"malformed type {text!r}")
        args = [parse_type(a) for a in _split_args(rest[:-1])]
        head = head.strip()
        if head == "list" and len(args) == 1:
            return list[args[0]]  # type: ignore[valid-type]
        if head in ("dict", "map") and len(args) == 2:
            return dict[args[0], args[1]]  # type: ignore[valid-type]
        raise AssertionError(f"unsupported parameterized type {text!r}")
    if text == "list":
        return list
    if text in ("dict", "map"):
        return dict
    return _SCALARS.get(text, Any)  # a user-defined record: a mapping, not constrained


def _split_args(text: str) -> list[str]:
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return out


def _key_accessor(key: Any) -> Any:
    if key is None:
        return None

    def get(item: Any) -> Any:
        return item[key] if isinstance(item, Mapping) else getattr(item, key)

    get.__name__ = f"field:{key}"
    return get


REDUCERS: dict[str, Any] = {
    "last_write_wins": last_write_wins, "append": append, "merge": merge,
    "concat_flatten": concat_flatten, "merge_all": merge_all,
}
REDUCER_FACTORIES: dict[str, Callable[..., Any]] = {
    "bounded_append": lambda max_len=None: bounded_append(max_len),  # type: ignore[arg-type]
    "dedupe_append": lambda key=None: dedupe_append(_key_accessor(key)),
    "merge_by_key": lambda key=None: merge_by_key(_key_accessor(key)),
}


def make_reducer(spec: Any, where: str) -> Any:
    if isinstance(spec, str):
        if spec not in REDUCERS:
            raise AssertionError(f"unknown reducer {spec!r} at {where}")
        return REDUCERS[spec]
    if isinstance(spec, Mapping) and len(spec) == 1:
        (name, kwargs), = spec.items()
        if name not in REDUCER_FACTORIES:
            raise AssertionError(f"unknown reducer factory {name!r} at {where}")
        return REDUCER_FACTORIES[name](**(kwargs or {}))
    raise AssertionError(f"malformed reducer {spec!r} at {where}")


STATE_FIELD_KEYS: set[str] = {"type", "default", "reducer", "alt_reducer", "description"}
_counter = iter(range(1_000_000))


def state_class(ctx: BuildContext, sdef: Mapping[str, Any] | None, name: str) -> type[State]:
    """A ``State`` subclass from ``state: {fields: ...}`` (plus undeclared initial fields)."""
    sdef = sdef or {"fields": {}}
    check_directives(sdef, {"fields", "schema_version"}, f"{name}.state")
    specs: list[tuple[Any, ...]] = []
    fields = dict(sdef.get("fields") or {})
    for fname, fdef in fields.items():
        where = f"{name}.state.fields.{fname}"
        check_directives(fdef, STATE_FIELD_KEYS, where)
        tp = parse_type(str(fdef.get("type", "any")))
        reducers = [make_reducer(fdef[k], where) for k in ("reducer", "alt_reducer") if k in fdef]
        ann = typing.Annotated[(tp, *reducers)] if reducers else tp
        if "default" in fdef:
            specs.append((fname, ann, _default(fdef["default"])))
        else:
            specs.append((fname, ann))
    for fname in ctx.extra_fields if name == "outer" else ():
        if fname not in fields:
            specs.append((fname, ctx.extra_fields[fname] or Any, None))
    namespace = (
        {"schema_version": str(sdef["schema_version"])} if "schema_version" in sdef else None
    )
    cls = msgspec.defstruct(
        f"{name}_state_{next(_counter)}", specs, bases=(State,), kw_only=True, frozen=True,
        namespace=namespace,
    )
    return typing.cast(type[State], cls)


def _default(value: Any) -> Any:
    if isinstance(value, (list, dict)) and value:
        frozen = copy.deepcopy(value)
        return msgspec.field(default_factory=lambda: copy.deepcopy(frozen))
    return copy.deepcopy(value)


# --- graphs -------------------------------------------------------------------------------

GRAPH_KEYS: set[str] = {
    "name", "description", "state", "entry", "nodes", "edges", "middleware",
    "subgraph", "subgraphs",
}


def build_graph(ctx: BuildContext, gdef: Mapping[str, Any], *, name: str) -> GraphBuilder[Any]:
    """A GraphBuilder for one graph definition (outer graph or subgraph)."""
    check_directives(gdef, GRAPH_KEYS | CASE_LEVEL_KEYS if name == "outer" else GRAPH_KEYS, name)
    # a subgraph compiles under its declared name (the fixture's `subgraph: {name}` /
    # `subgraphs:` key): observers see it as the compiled subgraph's name
    builder: GraphBuilder[Any] = GraphBuilder(state_class(ctx, gdef.get("state"), name),
                                              name="" if name == "outer" else name)
    if name == "outer":
        builder.use(_execution_recorder_outer)  # outermost: one entry per step, not per attempt
    mw = gdef.get("middleware") or {}
    check_directives(mw, {"per_graph", "per_node"}, f"{name}.middleware")
    for cfg in mw.get("per_graph") or ():
        builder.use(make_middleware(ctx, cfg, f"{name}.middleware.per_graph"))
    per_node = mw.get("per_node") or {}
    for node_name, spec in (gdef.get("nodes") or {}).items():
        nb = NodeBuild(str(node_name), dict(spec or {}), name)
        for directive, value in nb.spec.items():
            handler = NODE_DIRECTIVES.get(directive)
            if handler is None:
                where = f"{name}.nodes.{node_name}"
                check_directives({directive: value}, set(NODE_DIRECTIVES), where)
            else:
                handler(ctx, nb, value)
        for cfg in per_node.get(node_name) or ():
            where = f"{name}.middleware.per_node.{node_name}"
            nb.middleware.append(make_middleware(ctx, cfg, where))
        if name == "outer":
            nb.middleware.append(_make_execution_recorder_inner(ctx, nb.name))
        _add_node(ctx, builder, nb)
    for edge in gdef.get("edges") or ():
        _add_edge(ctx, builder, edge, name)
    if "entry" in gdef and gdef["entry"] is not None:
        builder.set_entry(str(gdef["entry"]))
    return builder


def _add_node(ctx: BuildContext, builder: GraphBuilder[Any], nb: NodeBuild) -> None:
    if nb.kind is not None:
        if nb.actions:
            raise AssertionError(f"node {nb.name!r}: body directives on a compound node")
        builder.add_node_kind(nb.name, nb.kind, middleware=nb.middleware)
        return
    if "subgraph" in nb.subgraph_options:
        opts = dict(nb.subgraph_options)
        graph = ctx.subgraph(opts.pop("subgraph"))
        middleware = list(nb.middleware)
        if nb.actions:  # body directives beside `subgraph:` run first, then the dispatch
            middleware.append(_before_dispatch(tuple(nb.actions)))
        builder.add_subgraph(nb.name, graph, middleware=middleware, **opts)
        return
    actions = tuple(nb.actions)

    async def body(state: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for act in actions:
            part = await act(state)
            if part:
                out.update(part)
        return out

    builder.add_node(nb.name, body, middleware=nb.middleware)


def _before_dispatch(actions: tuple[Any, ...]) -> Middleware:
    """A subgraph node's own body directives (e.g. ``emits_log``): run in order before
    the subgraph dispatches; their partial updates merge under the subgraph's."""

    async def run_first(state: Any, nxt: Any) -> Any:
        own: dict[str, Any] = {}
        for act in actions:
            part = await act(state)
            if part:
                own.update(part)
        out = await nxt(state)
        return {**own, **(out or {})} if own else out

    return run_first


EDGE_KEYS = frozenset({"from", "to", "condition"})
CONDITION_KEYS = frozenset({"if_field", "equals", "then", "else", "callable"})


def _target(value: Any) -> Any:
    return END if value == "END" else str(value)


def _add_edge(ctx: BuildContext, builder: GraphBuilder[Any], edge: Any, where: str) -> None:
    check_directives(edge, EDGE_KEYS, f"{where}.edges")
    source = str(need(edge, "from", f"{where}.edges[]"))
    cond = edge.get("condition")
    if cond is None:
        builder.add_edge(source, _target(need(edge, "to", f"{where}.edges[{source}]")))
        return
    if "callable" in cond:
        factory = EDGE_CALLABLES.get(cond["callable"])
        if factory is None:
            raise AssertionError(f"unknown edge callable {cond['callable']!r} at {where}")
        dests = [_target(edge["to"])] if "to" in edge else None
        builder.add_conditional_edge(source, factory(ctx, cond), destinations=dests)
        return
    check_directives(cond, CONDITION_KEYS, f"{where}.edges.condition")
    cw = f"{where}.edges[{source}].condition"
    fname, value = str(need(cond, "if_field", cw)), cond.get("equals")
    then, other = _target(need(cond, "then", cw)), _target(need(cond, "else", cw))

    def route(state: Any) -> Any:
        return then if getattr(state, fname, None) == value else other

    # Destinations stay undeclared: a bad one is a runtime routing_error (§4), not a compile error.
    builder.add_conditional_edge(source, route)


def _state_field_read(ctx: BuildContext, cond: Mapping[str, Any]) -> Callable[[Any], Any]:
    check_directives(cond, {"callable", "field"}, "condition")
    fname = str(cond["field"])
    return lambda state: _target(getattr(state, fname, None))


def _edge_raises(ctx: BuildContext, cond: Mapping[str, Any]) -> Callable[[Any], Any]:
    check_directives(cond, {"callable", "message"}, "condition")
    message = str(cond.get("message", "edge raised"))

    def route(state: Any) -> Any:
        raise FixtureNodeError(message)

    return route


EDGE_CALLABLES: dict[str, Callable[[BuildContext, Mapping[str, Any]], Callable[[Any], Any]]] = {
    "state_field_read": _state_field_read,
    "edge_raises": _edge_raises,
}


# --- execution order (outer graph): a step counts once, if its node body ran ------------------

_ran: ContextVar[list[str] | None] = ContextVar("fixture_node_ran", default=None)
_CTX: ContextVar[BuildContext | None] = ContextVar("fixture_ctx", default=None)


async def _execution_recorder_outer(state: Any, nxt: Callable[[Any], Awaitable[Any]]) -> Any:
    ctx = _CTX.get()
    if ctx is not None and ctx.invocations and not ctx.current.invocation_id:
        inv_id = current_invocation_id()
        ctx.current.invocation_id = inv_id
        ctx.index_by_id[inv_id] = ctx.current.index
    ran: list[str] = []
    token = _ran.set(ran)
    try:
        return await nxt(state)
    finally:
        _ran.reset(token)
        if ran and ctx is not None and ctx.invocations:
            ctx.current.execution_order.append(ran[0])


def _make_execution_recorder_inner(ctx: BuildContext, node_name: str) -> Middleware:
    async def inner_recorder(state: Any, nxt: Callable[[Any], Awaitable[Any]]) -> Any:
        ran = _ran.get()
        if ran is not None and not ran:
            ran.append(node_name)
        return await nxt(state)

    return inner_recorder


# --- node directives ---------------------------------------------------------------------------

NodeDirective = Callable[[BuildContext, NodeBuild, Any], None]


def _update(ctx: BuildContext, nb: NodeBuild, value: Any) -> None:
    frozen = copy.deepcopy(dict(value))

    async def act(state: Any) -> Mapping[str, Any]:
        return copy.deepcopy(frozen)

    nb.actions.append(act)


def _update_from_field(ctx: BuildContext, nb: NodeBuild, value: Any) -> None:
    spec = dict(value)
    mult = spec.pop("multiplier", 1)

    async def act(state: Any) -> Mapping[str, Any]:
        return {t: getattr(state, s) * mult for t, s in spec.items()}

    nb.actions.append(act)


def _raises(ctx: BuildContext, nb: NodeBuild, value: Any) -> None:
    async def act(state: Any) -> Mapping[str, Any]:
        raise FixtureNodeError(str(value))

    nb.actions.append(act)


def _subgraph_option(key: str) -> NodeDirective:
    def handler(ctx: BuildContext, nb: NodeBuild, value: Any) -> None:
        if key == "subgraph":
            nb.subgraph_options[key] = str(value)
        elif isinstance(value, Mapping):
            nb.subgraph_options[key] = {str(k): str(v) for k, v in value.items()}
        else:
            nb.subgraph_options[key] = [str(v) for v in value or ()]

    return handler


DRAIN_EVENTS_FOR_KEYS = frozenset({"timeout_seconds", "snapshot_observer"})
WRAP_KEYS = frozenset({"name", "pre_log", "post_log"})
SLEEP_KEYS = frozenset({"first_invocation", "subsequent_invocations"})


def _invoke_drain_events_for(ctx: BuildContext, nb: NodeBuild, value: Any) -> None:
    where = f"{nb.name}.invoke_drain_events_for"
    check_directives(value, DRAIN_EVENTS_FOR_KEYS, where)
    timeout = value.get("timeout_seconds")
    observer = value.get("snapshot_observer")

    async def act(state: Any) -> None:
        assert ctx.outer is not None
        inv_id = current_invocation_id()
        began = time.monotonic()
        summary = await ctx.outer.drain_events_for(inv_id, timeout=timeout)
        ctx.drain_timings.append((time.monotonic() - began, timeout))
        rec = ctx.current
        rec.node_drain_summaries[nb.name] = summary
        if observer is not None:
            watched = need(ctx.observers, observer, f"{where}.snapshot_observer")
            snap = list(watched.buckets.get(inv_id, ()))
            rec.node_snapshots.setdefault(nb.name, {})[observer] = snap

    nb.actions.append(act)


def _wrap_with_middleware(ctx: BuildContext, nb: NodeBuild, value: Any) -> None:
    for cfg in value or ():
        check_directives(cfg, WRAP_KEYS, f"{nb.name}.wrap_with_middleware")
        log: list[Any] = ctx.scratch.setdefault("middleware_log", [])
        pre, post = cfg.get("pre_log"), cfg.get("post_log")

        async def mw(
            state: Any, nxt: Any, pre: Any = pre, post: Any = post, log: list[Any] = log
        ) -> Any:
            if pre is not None:
                log.append(pre)
            result = await nxt(state)
            if post is not None:
                log.append(post)
            return result

        nb.middleware.append(mw)


def _node_middleware(ctx: BuildContext, nb: NodeBuild, value: Any) -> None:
    for cfg in value or ():
        nb.middleware.append(make_middleware(ctx, cfg, f"{nb.name}.middleware"))


NODE_DIRECTIVES: dict[str, NodeDirective] = {
    "update": _update,
    "update_pure": _update,
    "update_from_field": _update_from_field,
    "raises": _raises,
    "subgraph": _subgraph_option("subgraph"),
    "inputs": _subgraph_option("inputs"),
    "outputs": _subgraph_option("outputs"),
    "projects_in": _subgraph_option("projects_in"),
    "projects_out": _subgraph_option("projects_out"),
    "invoke_drain_events_for": _invoke_drain_events_for,
    "wrap_with_middleware": _wrap_with_middleware,
    "middleware": _node_middleware,
}


# --- middleware types ------------------------------------------------------------------------

MiddlewareFactory = Callable[[BuildContext, Mapping[str, Any]], Middleware]


def make_middleware(ctx: BuildContext, cfg: Mapping[str, Any], where: str) -> Middleware:
    kind = cfg.get("type")
    factory = MIDDLEWARE_TYPES.get(str(kind))
    if factory is None:
        raise AssertionError(f"unknown middleware type {kind!r} at {where}")
    return factory(ctx, cfg)


def _trace_recorder(ctx: BuildContext, cfg: Mapping[str, Any]) -> Middleware:
    """Prepends ``pre_marker`` / appends ``post_marker`` to the update's ``trace`` list."""
    check_directives(cfg, {"type", "name", "pre_marker", "post_marker", "field"}, "trace_recorder")
    name = cfg.get("name", "rec")
    pre = cfg.get("pre_marker", f"{name}.pre")
    post = cfg.get("post_marker", f"{name}.post")
    fname = cfg.get("field", "trace")

    async def mw(state: Any, nxt: Callable[[Any], Awaitable[Any]]) -> Any:
        update = dict(await nxt(state) or {})
        update[fname] = [pre, *update.get(fname, []), post]
        return update

    return mw


def _short_circuit(ctx: BuildContext, cfg: Mapping[str, Any]) -> Middleware:
    check_directives(cfg, {"type", "name", "partial_update"}, "short_circuit")
    frozen = copy.deepcopy(dict(cfg.get("partial_update") or {}))

    async def mw(state: Any, nxt: Callable[[Any], Awaitable[Any]]) -> Any:
        return copy.deepcopy(frozen)

    return mw


def _error_recovery(ctx: BuildContext, cfg: Mapping[str, Any]) -> Middleware:
    check_directives(cfg, {"type", "name", "partial_update"}, "error_recovery")
    frozen = copy.deepcopy(dict(cfg.get("partial_update") or {}))

    async def mw(state: Any, nxt: Callable[[Any], Awaitable[Any]]) -> Any:
        try:
            return await nxt(state)
        except Exception:
            return copy.deepcopy(frozen)

    return mw


MIDDLEWARE_TYPES: dict[str, MiddlewareFactory] = {
    "trace_recorder": _trace_recorder,
    "short_circuit": _short_circuit,
    "error_recovery": _error_recovery,
}


# --- observers -------------------------------------------------------------------------------

OBSERVER_KEYS: set[str] = {"name", "attach", "target", "behavior", "sleep_ms_per_event", "phases"}


class Recorder:
    """A harness observer: records, accumulates per invocation, or raises."""

    def __init__(self, ctx: BuildContext, spec: Mapping[str, Any]) -> None:
        check_directives(spec, OBSERVER_KEYS, f"observers[{spec.get('name')}]")
        self.ctx = ctx
        self.name = str(spec["name"])
        self.behavior = str(spec.get("behavior", "record"))
        if self.behavior not in OBSERVER_BEHAVIORS:
            raise AssertionError(f"unknown observer behavior {self.behavior!r}")
        self.sleep = spec.get("sleep_ms_per_event", 0)
        if isinstance(self.sleep, Mapping):
            check_directives(self.sleep, SLEEP_KEYS, "sleep_ms_per_event")
        self.events: list[Any] = []
        self.buckets: dict[str, list[Any]] = {}

    def _sleep_ms(self, event: Any) -> float:
        if isinstance(self.sleep, Mapping):
            first = self.ctx.index_by_id.get(getattr(event, "invocation_id", ""), 0) == 0
            key = "first_invocation" if first else "subsequent_invocations"
            return float(self.sleep.get(key) or 0)
        return float(self.sleep or 0)

    async def __call__(self, event: Any) -> None:
        ms = self._sleep_ms(event)
        if ms:
            await anyio.sleep(ms / 1000)
        index = self.ctx.index_by_id.get(getattr(event, "invocation_id", ""), -1)
        self.ctx.delivery_log.append(
            (index, {"observer": self.name, "step": getattr(event, "step", None),
                     "phase": getattr(event, "phase", None)})
        )
        await OBSERVER_BEHAVIORS[self.behavior](self, event)


async def _record(rec: Recorder, event: Any) -> None:
    rec.events.append(event)


async def _accumulate(rec: Recorder, event: Any) -> None:
    rec.events.append(event)
    rec.buckets.setdefault(event.invocation_id, []).append(event)


async def _raise(rec: Recorder, event: Any) -> None:
    raise RuntimeError(f"observer {rec.name} raises by design")


OBSERVER_BEHAVIORS: dict[str, Callable[[Recorder, Any], Awaitable[None]]] = {
    "record": _record,
    "accumulate": _accumulate,
    "raise": _raise,
}


def attach_observers(
    ctx: BuildContext, specs: list[Mapping[str, Any]]
) -> list[tuple[Recorder, frozenset[str] | None]]:
    """Attach graph observers; return the invocation-scoped ones (with phases)."""
    scoped: list[tuple[Recorder, frozenset[str] | None]] = []
    for spec in specs:
        rec = Recorder(ctx, spec)
        ctx.observers[rec.name] = rec
        phases = frozenset(spec["phases"]) if spec.get("phases") is not None else None
        attach = spec.get("attach", "graph")
        if attach == "graph":
            ctx.graph_named(str(spec.get("target", "outer"))).attach(rec, phases=phases)
        elif attach == "invocation":
            scoped.append((rec, phases))
        else:
            raise AssertionError(f"unknown observer attach mode {attach!r}")
    return scoped


# Keys a case may carry beside the graph definition (run_case consumes them).
CASE_LEVEL_KEYS: set[str] = {
    "initial_state", "observers", "expected", "expected_error", "expected_compile_error",
    "expected_compile_warning", "invoke", "invoke_with", "invocations", "run_count",
    "invariants", "graph", "cases", "conformance_version", "caller_invocation_id",
    "caller_correlation_id",
}


def bind_context(ctx: BuildContext) -> Any:
    """Make ``ctx`` current for the execution-order recorder (returns the reset token)."""
    return _CTX.set(ctx)


__all__ = [
    "CASE_LEVEL_KEYS", "EDGE_CALLABLES", "GRAPH_KEYS", "MIDDLEWARE_TYPES", "NODE_DIRECTIVES",
    "OBSERVER_BEHAVIORS", "OBSERVER_KEYS", "REDUCERS", "REDUCER_FACTORIES", "STATE_FIELD_KEYS",
    "BuildContext", "FixtureNodeError", "InvocationRecord", "NodeBuild", "Recorder",
    "SubgraphNode", "attach_observers", "bind_context", "build_graph", "make_middleware",
    "make_reducer", "parse_type", "state_class",
]


# --- vocabulary (tests/conformance/vocabulary.py) ---------------------------------------------

_vocab.register("graph-engine", NODE_DIRECTIVES)
_vocab.register("graph-engine", GRAPH_KEYS)
_vocab.register("graph-engine", CASE_LEVEL_KEYS)
_vocab.register("graph-engine", STATE_FIELD_KEYS | {"fields"})
_vocab.register("graph-engine", REDUCERS)
_vocab.register("graph-engine", REDUCER_FACTORIES)
_vocab.register("graph-engine", {"max_len", "key"})  # the factory reducers' kwargs
_vocab.register("graph-engine", EDGE_KEYS | CONDITION_KEYS | {"multiplier"})
_vocab.register("graph-engine", DRAIN_EVENTS_FOR_KEYS | WRAP_KEYS | SLEEP_KEYS)
_vocab.register("graph-engine", OBSERVER_KEYS)
_vocab.register("graph-engine", OBSERVER_BEHAVIORS)
_vocab.register("graph-engine", MIDDLEWARE_TYPES)
