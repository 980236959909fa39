"""GraphBuilder: declare nodes, edges and the entry point, then ``compile()``.

::

    graph = (
        GraphBuilder(Agent)
        .add_node("llm", call_model)
        .add_node("tools", run_tools)
        .add_conditional_edge("llm", lambda s: "tools" if s.pending else END)
        .add_edge("tools", "llm")
        .set_entry("llm")
        .compile()
    )
    final = await graph.invoke(Agent())

The builder only records; :meth:`GraphBuilder.compile` checks everything
(graph-engine §2 compile errors, each naming the offending node or edge) and
produces an immutable :class:`~.compiled.CompiledGraph`. A builder may be
compiled more than once.

Middleware (``async (state, next) -> update``): ``middleware=`` on the
constructor or :meth:`GraphBuilder.use` wraps every node of this graph;
``middleware=`` on a node wraps that node only, inside the per-graph layers.
Neither crosses into a subgraph: a subgraph node is one dispatch to its parent.
A per-graph middleware object with a ``bind_node(name)`` method is asked, at
compile time, for the instance to use around node ``name`` (e.g. a timing
middleware that labels its records with the node).
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from openarmature_nodes.onion import Middleware

from .checkpoint.migrations import Migration, MigrationRegistry
from .checkpoint.protocol import Checkpointer
from .compiled import END, CompiledGraph, _Node, is_async_callable
from .errors import (
    DanglingEdge,
    GraphCompileError,
    GraphCompileWarning,
    MultipleOutgoingEdges,
    NoDeclaredEntry,
    UnreachableNode,
)
from .nodes import FunctionNode, NodeKind, SubgraphNode
from .state import State, check_state_class, schema_of

__all__ = ["GraphBuilder"]

S = TypeVar("S", bound=State)

NodeFn = Callable[[Any], Awaitable[Mapping[str, Any] | None] | Mapping[str, Any] | None]
"""``async def node(state)`` or plain ``def node(state)`` (run in a worker thread)."""
RouteFn = Callable[[Any], Any]


def _bind_per_node(
    middleware: tuple[Middleware[Any, Any], ...], node_name: str
) -> tuple[Middleware[Any, Any], ...]:
    """Per-graph middleware may specialize per node: ``mw.bind_node(name) -> middleware``."""
    return tuple(
        m.bind_node(node_name) if callable(getattr(m, "bind_node", None)) else m  # type: ignore[attr-defined]
        for m in middleware
    )


class _Edge:
    __slots__ = ("destinations", "route", "target")

    def __init__(
        self,
        target: Any = None,
        route: RouteFn | None = None,
        destinations: tuple[Any, ...] | None = None,
    ) -> None:
        self.target = target
        self.route = route
        self.destinations = destinations


class GraphBuilder(Generic[S]):
    """Collects a graph definition over state type ``S``."""

    def __init__(
        self,
        state: type[S],
        *,
        middleware: Iterable[Middleware[Any, Any]] = (),
        name: str = "",
    ) -> None:
        """``name`` labels the compiled graph (``CompiledGraph.name``): observers see it
        as the subgraph's name when the graph runs inside another one (the OTel
        observer's ``openarmature.subgraph.name`` and detached-trace selection,
        observability §4.4 / §5.3). Empty by default: an unnamed graph."""
        check_state_class(state)
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        self.state = state
        self.name = name
        self._middleware: list[Middleware[Any, Any]] = list(middleware)
        self._nodes: dict[str, tuple[NodeKind, tuple[Middleware[Any, Any], ...]]] = {}
        self._edges: dict[str, list[_Edge]] = {}
        self._entry: str | None = None
        self._checkpointer: Checkpointer | None = None
        self._migrations = MigrationRegistry()

    # --- durability -------------------------------------------------------------------

    def with_checkpointer(self, checkpointer: Checkpointer) -> GraphBuilder[S]:
        """Save a checkpoint after every completed node (pipeline-utilities §10).

        One checkpointer per graph; a second call replaces the first. Enables
        ``invoke(..., resume_invocation=id)`` and suspension. See
        :mod:`openarmature_nodes.graph.checkpoint` for the backends.
        """
        if not isinstance(checkpointer, Checkpointer):
            raise TypeError(f"{checkpointer!r} does not implement the Checkpointer protocol")
        self._checkpointer = checkpointer
        return self

    def with_state_migration(
        self, from_version: str, to_version: str, migrate: Migration
    ) -> GraphBuilder[S]:
        """Register a state migration used when resuming an older record (§10.12).

        ``migrate`` maps the saved state (a dict) at ``from_version`` to the dict
        at ``to_version``; it must be pure. A second migration for the same pair
        raises ``checkpoint_state_migration_chain_ambiguous`` here; two distinct
        shortest chains raise it at :meth:`compile`.
        """
        self._migrations.register(from_version, to_version, migrate)
        return self

    # --- nodes -------------------------------------------------------------------

    def add_node(
        self,
        name: str,
        fn: NodeFn | CompiledGraph[Any],
        *,
        middleware: Iterable[Middleware[Any, Any]] = (),
    ) -> GraphBuilder[S]:
        """Add ``fn(state) -> partial update``: ``async def``, or a plain ``def`` that
        runs in a worker thread (see :class:`~.nodes.FunctionNode` for the cost).
        A compiled graph becomes a subgraph."""
        if isinstance(fn, CompiledGraph):
            return self.add_subgraph(name, fn, middleware=middleware)
        return self.add_node_kind(name, FunctionNode(fn), middleware=middleware)

    def add_subgraph(
        self,
        name: str,
        graph: CompiledGraph[Any],
        *,
        inputs: Mapping[str, str] | None = None,
        outputs: Mapping[str, str] | None = None,
        projects_in: Collection[str] | None = None,
        projects_out: Collection[str] | None = None,
        middleware: Iterable[Middleware[Any, Any]] = (),
    ) -> GraphBuilder[S]:
        """Add a compiled graph as one node.

        Projection: by default nothing goes in and same-named fields come out.
        ``inputs={sub: parent}`` copies parent fields in; ``outputs={parent: sub}``
        replaces name matching on the way out. Or declare the exact same-name
        boundary with ``projects_in=[...]`` / ``projects_out=[...]`` (an omitted
        set is empty). The two forms are mutually exclusive.
        """
        if not isinstance(graph, CompiledGraph):
            raise TypeError(f"add_subgraph({name!r}): expected a CompiledGraph, got {graph!r}")
        kind = SubgraphNode(
            graph,
            inputs=inputs,
            outputs=outputs,
            projects_in=projects_in,
            projects_out=projects_out,
        )
        return self.add_node_kind(name, kind, middleware=middleware)

    def add_node_kind(
        self, name: str, kind: NodeKind, *, middleware: Iterable[Middleware[Any, Any]] = ()
    ) -> GraphBuilder[S]:
        """Add a node of any :class:`~.nodes.NodeKind` (the extension point)."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"node name must be a non-empty string, got {name!r}")
        if name in self._nodes:
            raise GraphCompileError(f"node {name!r} is already declared")
        self._nodes[name] = (kind, tuple(middleware))
        return self

    def add_fan_out_node(
        self,
        name: str,
        subgraph: Any,
        *,
        middleware: Iterable[Middleware[Any, Any]] = (),
        **config: Any,
    ) -> GraphBuilder[S]:
        """Add a fan-out node: ``subgraph`` once per item (pipeline-utilities §9).

        ``config`` is :class:`~.fanout.FanOut`'s keywords (``items_field`` /
        ``item_field`` or ``count``, ``collect_field``, ``target_field``,
        ``concurrency``, ``error_policy``, ``instance_middleware``, ...).
        ``middleware`` wraps the whole fan-out as one dispatch.
        """
        from .fanout import FanOut

        return self.add_node_kind(name, FanOut(subgraph, **config), middleware=middleware)

    def add_parallel_branches_node(
        self,
        name: str,
        branches: Mapping[str, Any],
        *,
        middleware: Iterable[Middleware[Any, Any]] = (),
        **config: Any,
    ) -> GraphBuilder[S]:
        """Add a parallel-branches node (pipeline-utilities §11).

        ``branches`` maps names to :class:`~.parallel.Branch` (or a compiled
        graph / async callable); ``config`` is ``error_policy``,
        ``errors_field``, ``error_record``.
        """
        from .parallel import ParallelBranches

        kind = ParallelBranches(branches, **config)
        return self.add_node_kind(name, kind, middleware=middleware)

    # --- edges and entry ------------------------------------------------------------

    def add_edge(self, source: str, target: str | Any) -> GraphBuilder[S]:
        """Route ``source`` always to ``target`` (a node name or ``END``)."""
        self._edges.setdefault(source, []).append(_Edge(target=target))
        return self

    def add_conditional_edge(
        self,
        source: str,
        route: RouteFn,
        *,
        destinations: Iterable[str | Any] | None = None,
    ) -> GraphBuilder[S]:
        """Route ``source`` to ``route(post_update_state)`` (a node name or ``END``).

        ``route`` may be sync or async. Declaring ``destinations`` lets
        ``compile()`` check them and the reachability of every node; without it
        the route is assumed able to reach any node.
        """
        if not callable(route):
            raise TypeError(f"add_conditional_edge({source!r}): route must be callable")
        dests = tuple(destinations) if destinations is not None else None
        self._edges.setdefault(source, []).append(_Edge(route=route, destinations=dests))
        return self

    def set_entry(self, name: str) -> GraphBuilder[S]:
        """Declare the entry node (required: there is no implicit first node)."""
        self._entry = name
        return self

    def use(self, *middleware: Middleware[Any, Any]) -> GraphBuilder[S]:
        """Append per-graph middleware (outer to inner, outside per-node middleware)."""
        self._middleware.extend(middleware)
        return self

    # --- compile ------------------------------------------------------------------------

    def compile(self) -> CompiledGraph[S]:
        """Check the definition and build the immutable graph.

        Raises the first :class:`~.errors.GraphCompileError` found, in this
        order: reducer declarations, entry, edges (dangling, multiple),
        subgraph projections, reachability. Emits
        :class:`~.errors.GraphCompileWarning` (also kept on ``graph.warnings``).
        """
        schema = schema_of(self.state)  # conflicting_reducers
        if self._entry is None:
            raise NoDeclaredEntry("no entry node declared: call set_entry(name)")
        if self._entry not in self._nodes:
            raise DanglingEdge(f"entry {self._entry!r} is not a declared node")
        for source, edges in self._edges.items():
            if source not in self._nodes:
                raise DanglingEdge(f"edge from {source!r}: no node named {source!r}")
            if len(edges) > 1:
                raise MultipleOutgoingEdges(
                    f"node {source!r} has {len(edges)} outgoing edges; branch with one "
                    "conditional edge instead"
                )
            edge = edges[0]
            targets = (edge.target,) if edge.route is None else (edge.destinations or ())
            for t in targets:
                if t is not END and t not in self._nodes:
                    raise DanglingEdge(f"edge {source!r} -> {t!r}: no node named {t!r}")

        found: list[GraphCompileWarning] = []
        graph_mw = tuple(self._middleware)
        nodes: dict[str, _Node] = {}
        for name, (kind, node_mw) in self._nodes.items():
            found.extend(kind.bind(name, schema))
            nodes[name] = _Node(name, kind, _bind_per_node(graph_mw, name) + node_mw)

        self._check_reachable()
        for name, node in nodes.items():
            edges = self._edges.get(name, [])
            if not edges:
                found.append(
                    GraphCompileWarning(
                        "no_outgoing_edge",
                        f"node {name!r} has no outgoing edge; the run ends after it",
                    )
                )
                continue
            edge = edges[0]
            if edge.route is None:
                node.next = None if edge.target is END else nodes[edge.target]
            else:
                node.route = edge.route
                node.route_async = is_async_callable(edge.route)
                allowed = edge.destinations
                node.destinations = allowed
                node.routes = (
                    dict(nodes)
                    if allowed is None
                    else {d: nodes[d] for d in allowed if d is not END}
                )
        self._migrations.check_unambiguous()
        for w in found:
            warnings.warn(w, stacklevel=2)
        graph: CompiledGraph[S] = CompiledGraph(schema, nodes, nodes[self._entry], found,
                                                name=self.name)
        graph.migrations = self._migrations
        if self._checkpointer is not None:
            graph.with_checkpointer(self._checkpointer)
        return graph

    def _check_reachable(self) -> None:
        assert self._entry is not None
        seen = {self._entry}
        todo = [self._entry]
        while todo:
            edges = self._edges.get(todo.pop(), [])
            for edge in edges:
                if edge.route is None:
                    nxt: Sequence[Any] = (edge.target,)
                elif edge.destinations is None:
                    nxt = tuple(self._nodes)  # an opaque route may go anywhere
                else:
                    nxt = edge.destinations
                for t in nxt:
                    if t is not END and t not in seen:
                        seen.add(t)
                        todo.append(t)
        for name in self._nodes:
            if name not in seen:
                raise UnreachableNode(f"node {name!r} cannot be reached from entry {self._entry!r}")
