"""Node kinds: what "run this node" means, pluggable.

The engine's loop does not know what a node is. It asks the node's *kind* for
an inner callable ``state -> partial update``, wraps it in the node's
middleware chain, and merges what comes back. Two kinds ship here:

- :class:`FunctionNode` — ``async def node(state) -> mapping``, or a plain
  ``def`` (run in a worker thread, see :class:`FunctionNode`).
- :class:`SubgraphNode` — a compiled graph run as one node, with one of the
  three projection forms of graph-engine §2.

A new kind (fan-out, parallel branches, ...) implements :class:`NodeKind` and
is added with ``GraphBuilder.add_node_kind(name, kind)``. In an observed run
the kind receives the :class:`~._run.Step` of the dispatch: call
``step.begin(state)`` right before doing the node's work and ``step.fail(exc)``
if it raises, to get the node's own started/completed pair; and use
``step.level.child(...)`` to run nested graphs so their events carry the right
namespace and lineage.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import anyio.to_thread

from openarmature_nodes.context import run_scope

from ._kinds import need_field
from ._run import run_observed, run_plain
from .errors import ConflictingProjectionForms, GraphCompileWarning
from .state import Schema
from .suspension import in_node_body

if TYPE_CHECKING:
    from ._run import Step
    from .compiled import CompiledGraph

__all__ = ["FunctionNode", "Inner", "NodeKind", "SubgraphNode"]

Inner = Callable[[Any], Awaitable[Any]]
"""``async (state) -> partial update | None``: the innermost layer of a node's chain."""


class NodeKind(Protocol):
    """The pluggable "dispatch one node" step."""

    def bind(self, name: str, schema: Schema) -> Sequence[GraphCompileWarning]:
        """Check the kind against the owning graph's schema at compile time.

        Raise a :class:`~.errors.GraphCompileError` for a fatal problem; return
        warnings for suspicious-but-legal configurations.
        """
        ...

    def plain(self) -> Inner:
        """The inner callable for unobserved runs (built once, at compile time)."""
        ...

    def observed(self, step: Step) -> Inner:
        """The inner callable for one step of an observed run."""
        ...

    def subgraphs(self) -> Sequence[CompiledGraph[Any]]:
        """Compiled graphs this kind runs (for observer snapshots)."""
        ...


class FunctionNode:
    """A node function ``state -> partial update``: ``async def`` or plain ``def``.

    An ``async def`` (or an object whose ``__call__`` is one) is awaited on the
    event loop. A plain function is run in a worker thread with
    :func:`anyio.to_thread.run_sync`, so blocking code (a database driver, a
    CPU-bound parse) does not stall the other tasks; context variables are
    copied into the thread. Errors are handled exactly as for async nodes
    (the exception becomes the step's ``node_exception``).

    The cost: a thread hop per dispatch (measured at about 200 us a step
    against 2.6 us for an ``async def`` node, on a loaded 2-core machine;
    anyio's default thread limiter allows 40 at once), and a cancelled run
    waits for the running function to return, since a thread cannot be
    interrupted. Write cheap, non-blocking nodes as ``async def``.
    """

    __slots__ = ("fn", "name")

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        if not callable(fn):
            raise TypeError(f"node must be a callable (async def or def), got {fn!r}")
        self.fn: Callable[[Any], Awaitable[Any]] = (
            fn if _is_async(fn) else _in_thread(fn)
        )
        self.name = ""

    def bind(self, name: str, schema: Schema) -> Sequence[GraphCompileWarning]:
        """Nothing to check: a function accepts any state."""
        self.name = name
        return ()

    def plain(self) -> Inner:
        """The function itself."""
        return self.fn

    def observed(self, step: Step) -> Inner:
        """The function between ``step.begin`` and, if it raises, ``step.fail``."""
        return _bracketed(self.fn, lambda: step)

    def observed_shared(self) -> Inner:
        """:meth:`observed` for every step at once (built once, at compile time): the
        step is the run scope the observed loop set before calling the chain."""
        return _bracketed(self.fn, run_scope.get)  # type: ignore[arg-type]

    def subgraphs(self) -> Sequence[CompiledGraph[Any]]:
        """None."""
        return ()


class SubgraphNode:
    """A compiled graph used as a node.

    Projection (graph-engine §2), fixed at compile time into two lists of
    field pairs:

    - default (nothing declared): nothing in; out by field-name matching.
    - explicit maps: ``inputs`` {sub field: parent field} copies in;
      ``outputs`` {parent field: sub field} replaces name matching on the way out.
    - declared same-name sets: ``projects_in`` / ``projects_out`` name exactly
      the fields crossing each way (an omitted set is empty).

    The merge of projected values goes through the parent's reducers, like any
    node's update.
    """

    def __init__(
        self,
        graph: CompiledGraph[Any],
        *,
        inputs: Mapping[str, str] | None = None,
        outputs: Mapping[str, str] | None = None,
        projects_in: Collection[str] | None = None,
        projects_out: Collection[str] | None = None,
    ) -> None:
        self.graph = graph
        self.inputs = dict(inputs) if inputs is not None else None
        self.outputs = dict(outputs) if outputs is not None else None
        self.projects_in = list(projects_in) if projects_in is not None else None
        self.projects_out = list(projects_out) if projects_out is not None else None
        self.name = ""
        self.in_pairs: tuple[tuple[str, str], ...] = ()  # (sub field, parent field)
        self.out_pairs: tuple[tuple[str, str], ...] = ()  # (parent field, sub field)
        self._entry_where = ""  # the entry check's error prefix, fixed once the name is

    def bind(self, name: str, schema: Schema) -> Sequence[GraphCompileWarning]:
        """Resolve the projection into field pairs, checking every named field."""
        self.name = name
        self._entry_where = f"subgraph node {name!r} entry"
        parent = schema.fields
        sub_schema = self.graph.schema
        sub = sub_schema.fields
        declared = self.projects_in is not None or self.projects_out is not None
        maps = self.inputs is not None or self.outputs is not None
        if declared and maps:
            raise ConflictingProjectionForms(
                f"subgraph node {name!r} declares both projects_in/projects_out and "
                "inputs/outputs; use one projection form"
            )
        if declared:
            sets = (("projects_in", self.projects_in), ("projects_out", self.projects_out))
            for what, names in sets:
                for f in names or ():
                    need_field(schema, f, "parent", name, what)
                    need_field(sub_schema, f, "subgraph", name, what)
            ins = tuple((f, f) for f in self.projects_in or ())
            outs = tuple((f, f) for f in self.projects_out or ())
        else:
            for s, p in (self.inputs or {}).items():
                need_field(sub_schema, s, "subgraph", name, "inputs")
                need_field(schema, p, "parent", name, "inputs")
            for p, s in (self.outputs or {}).items():
                need_field(schema, p, "parent", name, "outputs")
                need_field(sub_schema, s, "subgraph", name, "outputs")
            ins = tuple((self.inputs or {}).items())
            if self.outputs is not None:
                outs = tuple(self.outputs.items())
            else:
                outs = tuple((f, f) for f in sub if f in parent)
        self.in_pairs, self.out_pairs = ins, outs
        warnings: list[GraphCompileWarning] = []
        out_set = set(outs)
        for s, p in ins:
            red = parent[p].reducer
            if (p, s) in out_set and not red.round_trip_idempotent:
                warnings.append(
                    GraphCompileWarning(
                        "projection_reducer_round_trip",
                        f"subgraph node {name!r} projects parent field {p!r} in and back out "
                        f"through reducer {red.name}, which is not round-trip-idempotent: the "
                        "value would be merged twice",
                    )
                )
        return warnings

    def _enter(self, state: Any) -> Any:
        cls = self.graph.schema.cls
        if not self.in_pairs:
            sub_state = cls()
        else:
            sub_state = cls(**{s: getattr(state, p) for s, p in self.in_pairs})
        self.graph.schema.validate(sub_state, where=self._entry_where)
        return sub_state

    def _exit(self, final: Any) -> dict[str, Any]:
        return {p: getattr(final, s) for p, s in self.out_pairs}

    def plain(self) -> Inner:
        """Project in, run the subgraph unobserved, project out."""
        graph = self.graph
        enter, exit_ = self._enter, self._exit

        async def inner(state: Any) -> Any:
            return exit_(await run_plain(graph, enter(state)))

        return inner

    def observed(self, step: Step) -> Inner:
        """The same, the subgraph running at a child level of ``step``'s."""
        graph = self.graph
        enter, exit_ = self._enter, self._exit

        async def inner(state: Any) -> Any:
            level = step.level.child(self.name, step.state, graph)
            durable = level.run.durable
            plan = durable.plan if durable is not None else None
            taken = plan.take(level) if plan is not None else None
            if taken is None:
                return exit_(await run_observed(graph, enter(state), level))
            sub_state, start, done = taken  # a resume re-entering this subgraph (§10.4)
            node = graph._nodes[start] if start is not None else None
            return exit_(await run_observed(graph, sub_state, level, start=node, done=done))

        return inner

    def subgraphs(self) -> Sequence[CompiledGraph[Any]]:
        """The one subgraph."""
        return (self.graph,)


def _bracketed(fn: Callable[[Any], Awaitable[Any]], current: Callable[[], Step]) -> Inner:
    """``fn`` between ``step.begin`` and, if it raises, ``step.fail``; ``current()``
    gives the step (called once per dispatch). The observed loop inlines the same
    bracket for a function node without middleware (``run_observed``): change both.
    ``in_node_body`` is set only in a run with a checkpointer, the only case in
    which ``suspend()`` reads it."""

    async def inner(state: Any) -> Any:
        step = current()
        step.begin(state)
        token = in_node_body.set(True) if step.level.run.durable is not None else None
        try:
            return await fn(state)
        except Exception as exc:
            step.fail(exc)
            raise
        finally:
            if token is not None:
                in_node_body.reset(token)

    return inner


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004
    )


def _in_thread(fn: Callable[[Any], Any]) -> Callable[[Any], Awaitable[Any]]:
    """``fn`` as an async callable running it in a worker thread."""
    run_sync = anyio.to_thread.run_sync

    async def call(state: Any) -> Any:
        result = await run_sync(fn, state)
        if inspect.isawaitable(result):  # a sync callable handing back a coroutine
            result = await result
        return result

    call.__qualname__ = getattr(fn, "__qualname__", call.__qualname__)
    return call
