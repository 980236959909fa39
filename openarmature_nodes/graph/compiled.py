"""The compiled graph: an immutable, concurrently invocable plan.

``CompiledGraph.invoke(state)`` runs graph-engine §3: dispatch the current node,
merge its partial update, follow its outgoing edge, repeat until ``END``. All
lookups are resolved at compile time (each node holds its successor or its
routing table directly), so a step costs one dispatch, one merge and one edge.

Two loops share that logic. :meth:`CompiledGraph._run_plain` is used when no
observer will see the invocation and builds nothing but the new state.
:meth:`CompiledGraph._run_observed` adds the event bookkeeping of §6. Which one
runs is decided once per invocation.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Generic, TypeVar

import anyio
import msgspec

from openarmature_nodes.context import attempt_index, run_scope
from openarmature_nodes.metadata import (
    bind_invocation_metadata,
    get_invocation_metadata,
    validate_metadata,
)
from openarmature_nodes.onion import Middleware, compose

from ._run import Level, Run, Step, merge, node_failure
from .errors import EdgeException, GraphRuntimeError, RoutingError
from .events import InvocationEvent, NodeError
from .nodes import Inner, NodeKind
from .observers import Delivery, DrainSummary, Invocation, Subscription, subscribe
from .state import Schema, State

__all__ = ["END", "CompiledGraph"]

S = TypeVar("S", bound=State)


class _End:
    """The ``END`` routing sentinel (a constant, not a node name)."""

    _instance: _End | None = None

    def __new__(cls) -> _End:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "END"

    def __reduce__(self) -> str:
        return "END"


END: Any = _End()
"""Route here to finish the run. A node may still be *named* ``"END"``."""


class _Node:
    """A compiled node: its kind, middleware, and resolved outgoing edge."""

    __slots__ = ("call", "kind", "middleware", "name", "next", "route", "route_async", "routes")

    def __init__(self, name: str, kind: NodeKind, middleware: Sequence[Middleware[Any, Any]]):
        self.name = name
        self.kind = kind
        self.middleware = tuple(middleware)
        self.call: Inner = compose(self.middleware, kind.plain())
        self.next: _Node | None = None
        self.route: Callable[[Any], Any] | None = None
        self.route_async = False
        self.routes: dict[str, _Node] = {}

    def observed_call(self, step: Step) -> Inner:
        return compose(self.middleware, self.kind.observed(step))


class CompiledGraph(Generic[S]):
    """An executable graph. Build one with :class:`~.builder.GraphBuilder`.

    The structure is immutable and holds no per-run state, so one compiled
    graph can be invoked from many tasks at once. Graph-attached observers and
    the optional delivery runner (``async with graph:``) are the only mutable
    parts; observer changes take effect from the next invocation.
    """

    def __init__(
        self,
        schema: Schema,
        nodes: dict[str, _Node],
        entry: _Node,
        warnings: Sequence[Any] = (),
    ) -> None:
        self.schema = schema
        self._nodes = nodes
        self._entry = entry
        self.warnings: tuple[Any, ...] = tuple(warnings)
        self._observers: tuple[Subscription, ...] = ()
        self._delivery = Delivery()
        graphs: dict[int, CompiledGraph[Any]] = {id(self): self}
        for node in nodes.values():
            for sub in node.kind.subgraphs():
                for g in sub._graphs:
                    graphs.setdefault(id(g), g)
        self._graphs: tuple[CompiledGraph[Any], ...] = tuple(graphs.values())

    @property
    def node_names(self) -> tuple[str, ...]:
        """The node names, in the order they were added."""
        return tuple(self._nodes)

    @property
    def state_type(self) -> type[S]:
        """The state class the graph runs over."""
        return self.schema.cls  # type: ignore[return-value]

    # --- observers ------------------------------------------------------------------

    def attach(self, observer: Any, *, phases: Iterable[str] | None = None) -> Subscription:
        """Register a graph-attached observer (fires on every invocation, also as a subgraph).

        ``phases`` restricts node events to ``{"started"}`` or ``{"completed"}``.
        Returns the subscription, which :meth:`detach` accepts too.
        """
        sub = subscribe(observer, phases)
        self._observers = (*self._observers, sub)
        return sub

    def detach(self, observer: Any) -> None:
        """Remove an observer (by the function or the returned subscription)."""
        self._observers = tuple(
            s for s in self._observers
            if not (s is observer or s.original is observer or s.original == observer)
        )

    # --- delivery runner and drains ---------------------------------------------------

    async def __aenter__(self) -> CompiledGraph[S]:
        await self._delivery.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._delivery.close((exc_type, exc, tb))

    async def drain(self, *, timeout: float | None = None) -> DrainSummary:  # noqa: ASYNC109
        """Wait until events of invocations live at call time are delivered.

        With ``timeout`` (seconds), give up after it: the summary counts the
        undelivered events and the workers still delivering are cancelled, so
        the graph is clean for later invocations. Worst case without a timeout:
        as long as the slowest observer takes for the remaining events.
        """
        return await self._delivery.drain(timeout)

    async def drain_events_for(
        self, invocation_id: str, *, timeout: float | None = None  # noqa: ASYNC109
    ) -> DrainSummary:
        """Wait until the events ``invocation_id`` has emitted *so far* are delivered.

        Safe to call from inside that invocation (e.g. a terminal node). On
        timeout nothing is cancelled: delivery goes on.
        """
        return await self._delivery.drain_events_for(invocation_id, timeout)

    # --- invocation -------------------------------------------------------------------

    async def invoke(
        self,
        initial_state: S | Any,
        *,
        observers: Iterable[Any] = (),
        invocation_id: str | None = None,
        correlation_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> S:
        """Run the graph from ``initial_state`` (an instance or a mapping) to ``END``.

        Returns the final state. Raises a :class:`~.errors.GraphRuntimeError`
        subclass naming the failing node and carrying ``recoverable_state``.
        ``observers`` are invocation-scoped: they see this run only.
        ``metadata``: caller key/values identifying the invocation on every span
        (observability §3.4; see :mod:`openarmature_nodes.metadata`); a reserved
        key or a bad value raises ``ValueError`` / ``TypeError`` before any work.
        """
        if metadata:
            checked = validate_metadata(metadata)
            with bind_invocation_metadata(checked):
                return await self.invoke(initial_state, observers=observers,
                                         invocation_id=invocation_id,
                                         correlation_id=correlation_id)
        state = self.schema.coerce(initial_state, where="invoke() initial state")
        subs = tuple(subscribe(o) for o in observers) if observers else ()
        if not subs and not self._observed():
            run = Run(invocation_id, correlation_id)
            token = run_scope.set(run)
            try:
                return await self._run_plain(state)  # type: ignore[no-any-return]
            finally:
                run_scope.reset(token)
        return await self._invoke_observed(state, subs, invocation_id, correlation_id)

    def _observed(self) -> bool:
        return any(g._observers for g in self._graphs)

    async def _invoke_observed(
        self,
        state: Any,
        subs: tuple[Subscription, ...],
        invocation_id: str | None,
        correlation_id: str | None,
    ) -> S:
        snapshot = {id(g): g._observers for g in self._graphs if g._observers}
        run = Run(invocation_id, correlation_id, None, subs, snapshot)
        run.include_caller_metadata = any(
            getattr(s.original, "include_caller_metadata", False)
            for group in (subs, *snapshot.values()) for s in group
        )
        inv = run.inv = Invocation(run.invocation_id)
        token = run_scope.set(run)
        try:
            if self._delivery.running:
                self._delivery.start(inv, None)
                try:
                    return await self._run_bracketed(state, run)  # type: ignore[no-any-return]
                finally:
                    inv.close()
            failure: Exception | None = None
            async with anyio.create_task_group() as tg:
                self._delivery.start(inv, tg)
                try:
                    result = await self._run_bracketed(state, run)
                except Exception as exc:
                    failure = exc
                finally:
                    inv.close()
            if failure is not None:
                raise failure
            return result  # type: ignore[no-any-return]
        finally:
            run_scope.reset(token)

    async def _run_bracketed(self, state: Any, run: Run) -> Any:
        """The observed run, bracketed by :class:`InvocationEvent` s for the observers
        that subscribe to them (a tracer needs the invocation's window)."""
        level = Level.root(run, self)
        inv = run.inv
        targets = tuple(s for s in level.targets if "invocation_started" in s.phases)
        if not targets or inv is None:
            return await self._run_observed(state, level)
        entry = self._entry.name if self._entry is not None else ""
        started = InvocationEvent(
            invocation_id=run.invocation_id, namespace=(), correlation_id=run.correlation_id,
            entry_node=entry, phase="invocation_started", state=state,
            metadata=get_invocation_metadata(),
        )
        inv.emit(started, targets)
        try:
            final = await self._run_observed(state, level)
        except Exception as exc:
            category = str(getattr(exc, "category", None) or "node_exception")
            inv.emit(msgspec.structs.replace(started, phase="invocation_completed", state=None,
                                             error=NodeError(category, exc)), targets)
            raise
        inv.emit(msgspec.structs.replace(started, phase="invocation_completed", state=final),
                 targets)
        return final

    # --- the loops ----------------------------------------------------------------------

    async def _run_plain(self, state: Any) -> Any:
        fields = self.schema.plan
        node: _Node | None = self._entry
        while node is not None:
            try:
                update = await node.call(state)
            except Exception as exc:
                raise node_failure(node.name, exc, state)  # noqa: B904 (cause set by node_failure)
            if update:
                state = merge(fields, state, update, node.name)
            if node.route is None:
                node = node.next
            else:
                node = await self._route(node, state)
        return state

    async def _run_observed(self, state: Any, level: Level) -> Any:
        fields = self.schema.plan
        base_attempt = attempt_index.get()
        node: _Node | None = self._entry
        while node is not None:
            step = Step(level, node.name, state)
            step_token = run_scope.set(step)
            try:
                update = await node.observed_call(step)(state)
            except Exception as exc:
                err = node_failure(node.name, exc, state)
                step.finish_error(err)
                raise err  # noqa: B904 (node_failure set __cause__; err may be exc itself)
            finally:
                run_scope.reset(step_token)
                if attempt_index.get() != base_attempt:
                    attempt_index.set(base_attempt)
            try:
                new = merge(fields, state, update, node.name) if update else state
                nxt = node.next if node.route is None else await self._route(node, new)
            except GraphRuntimeError as err:
                step.finish_error(err)
                raise
            step.finish_ok(new)
            state, node = new, nxt
        return state

    async def _route(self, node: _Node, state: Any) -> _Node | None:
        route = node.route
        assert route is not None
        try:
            dest = route(state)
            if node.route_async:
                dest = await dest
        except Exception as exc:
            raise EdgeException(
                f"edge function of node {node.name!r} raised {type(exc).__name__}: {exc}",
                node_name=node.name,
                recoverable_state=state,
            ) from exc
        if dest is END:
            return None
        target = node.routes.get(dest) if isinstance(dest, str) else None
        if target is None:
            raise RoutingError(
                f"conditional edge of node {node.name!r} returned {dest!r}, which is "
                f"neither END nor a node it may route to",
                destination=dest,
                node_name=node.name,
                recoverable_state=state,
            )
        return target


def is_async_callable(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` gives a coroutine (an ``async def``, or an object whose
    ``__call__`` is one)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004
    )
