"""The compiled graph: an immutable, concurrently invocable plan.

``CompiledGraph.invoke(state)`` runs graph-engine §3: dispatch the current node,
merge its partial update, follow its outgoing edge, repeat until ``END``. All
lookups are resolved at compile time (each node holds its successor or its
routing table directly), so a step costs one dispatch, one merge and one edge.

The loops themselves live in :mod:`._run` (:func:`~._run.run_plain` when no
observer will see the invocation, :func:`~._run.run_observed` with the event
bookkeeping of §6); which one runs is decided once per invocation.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Generic, NoReturn, TypeVar

import anyio
import msgspec

from openarmature_nodes.context import mint_uuid4, run_scope
from openarmature_nodes.metadata import (
    bind_invocation_metadata,
    get_invocation_metadata,
    validate_metadata,
)
from openarmature_nodes.onion import Middleware, compose

from ._durable import Durable, ResumePlan, declared_version, plan_resume, resume_path
from ._run import (
    DEFAULT_STEP_LIMIT,
    END,
    Level,
    Run,
    Step,
    run_observed,
    run_plain,
)
from .checkpoint.errors import (
    CheckpointNotFound,
    CheckpointRecordInvalid,
    CheckpointSaveFailed,
    SuspensionPersistenceFailed,
    SuspensionRecordInvalid,
)
from .checkpoint.migrations import MigrationRegistry
from .checkpoint.protocol import Checkpointer
from .checkpoint.records import CheckpointRecord
from .errors import StateValidationError
from .events import InvocationEvent, NodeError
from .mermaid import to_mermaid
from .nodes import FunctionNode, Inner, NodeKind
from .observers import Delivery, DrainSummary, Invocation, Subscription, subscribe
from .state import Schema, State
from .streaming import GraphStream, resolve_modes
from .suspension import Completed, GraphSuspended, Suspended, SuspendSignal

__all__ = ["END", "CompiledGraph"]

S = TypeVar("S", bound=State)


class _Node:
    """A compiled node: its kind, middleware, and resolved outgoing edge."""

    __slots__ = (
        "call", "destinations", "fast", "kind", "middleware", "name", "next", "observed", "route",
        "route_async", "routes",
    )

    def __init__(self, name: str, kind: NodeKind, middleware: Sequence[Middleware[Any, Any]]):
        self.name = name
        self.kind = kind
        self.middleware = tuple(middleware)
        self.call: Inner = compose(self.middleware, kind.plain())
        # A kind whose observed inner finds its step in the run scope composes once; a
        # function node without middleware is bracketed by the observed loop itself.
        shared = getattr(kind, "observed_shared", None)
        self.fast: Inner | None = (
            kind.fn if isinstance(kind, FunctionNode) and not self.middleware else None
        )
        self.observed: Inner | None = (
            compose(self.middleware, shared()) if shared is not None and self.fast is None
            else None
        )
        self.next: _Node | None = None
        self.route: Callable[[Any], Any] | None = None
        self.route_async = False
        self.routes: dict[str, _Node] = {}
        self.destinations: tuple[Any, ...] | None = None  # as declared (END included)

    def observed_call(self, step: Step) -> Inner:
        """The chain for one observed step (composed once, when the kind allows)."""
        if self.observed is not None:
            return self.observed
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
        *,
        name: str = "",
    ) -> None:
        self.name = name
        """The graph's name (``GraphBuilder(..., name=...)``; ``""``: unnamed). Node
        events of a graph run as a subgraph carry it in ``subgraph_name_chain``."""
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
        self.checkpointer: Checkpointer | None = None
        self.migrations = MigrationRegistry()
        self.step_limit = DEFAULT_STEP_LIMIT

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

    # --- durability ------------------------------------------------------------------

    def with_checkpointer(self, checkpointer: Checkpointer | None) -> CompiledGraph[S]:
        """Register (or, with ``None``, remove) the graph's checkpointer (§10.1.1).

        Takes effect from the next invocation. Same as
        ``GraphBuilder.with_checkpointer``.
        """
        if checkpointer is not None and not isinstance(checkpointer, Checkpointer):
            raise TypeError(f"{checkpointer!r} does not implement the Checkpointer protocol")
        self.checkpointer = checkpointer
        return self

    # --- invocation -------------------------------------------------------------------

    async def invoke(
        self,
        initial_state: S | Any = None,
        *,
        observers: Iterable[Any] = (),
        invocation_id: str | None = None,
        correlation_id: str | None = None,
        resume_invocation: str | None = None,
        signal_payload: Mapping[str, Any] | None = None,
        step_limit: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> S:
        """Run the graph from ``initial_state`` (an instance or a mapping) to ``END``.

        Returns the final state. Raises a :class:`~.errors.GraphRuntimeError`
        subclass naming the failing node and carrying ``recoverable_state``;
        :class:`~.suspension.GraphSuspended` if a node suspends (use :meth:`run`
        to get that as a returned outcome). ``observers`` are
        invocation-scoped: they see this run only.

        ``resume_invocation`` continues a checkpointed invocation from its last
        save (``initial_state`` is then ignored; a fresh ``invocation_id`` is
        minted and the saved ``correlation_id`` kept); with ``signal_payload``
        it resumes a suspended one. ``step_limit`` bounds the steps of each
        graph run (default :data:`~._run.DEFAULT_STEP_LIMIT`).

        ``metadata``: caller key/values identifying the invocation on every span
        (observability §3.4; see :mod:`openarmature_nodes.metadata`); a reserved
        key or a bad value raises ``ValueError`` / ``TypeError`` before any work.
        """
        if metadata:
            with bind_invocation_metadata(validate_metadata(metadata)):
                return await self.invoke(
                    initial_state, observers=observers, invocation_id=invocation_id,
                    correlation_id=correlation_id, resume_invocation=resume_invocation,
                    signal_payload=signal_payload, step_limit=step_limit,
                )
        if (
            resume_invocation is None
            and self.checkpointer is None
            and not observers
            and not self._observed()
        ):
            state = self.schema.coerce(initial_state, where="invoke() initial state")
            run = Run(invocation_id, correlation_id, step_limit=step_limit or self.step_limit)
            token = run_scope.set(run)
            try:
                return await run_plain(self, state)  # type: ignore[no-any-return]
            finally:
                run_scope.reset(token)
        outcome = await self.run(
            initial_state, observers=observers, invocation_id=invocation_id,
            correlation_id=correlation_id, resume_invocation=resume_invocation,
            signal_payload=signal_payload, step_limit=step_limit,
        )
        if isinstance(outcome, Suspended):
            raise GraphSuspended(outcome)
        return outcome.state

    async def run(
        self,
        initial_state: S | Any = None,
        *,
        observers: Iterable[Any] = (),
        invocation_id: str | None = None,
        correlation_id: str | None = None,
        resume_invocation: str | None = None,
        signal_payload: Mapping[str, Any] | None = None,
        step_limit: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Completed[S] | Suspended[S]:
        """Like :meth:`invoke`, returning the outcome: :class:`~.suspension.Completed`
        (``.state`` is the final state) or :class:`~.suspension.Suspended`
        (suspension §5). Errors still raise."""
        if metadata:
            with bind_invocation_metadata(validate_metadata(metadata)):
                return await self.run(
                    initial_state, observers=observers, invocation_id=invocation_id,
                    correlation_id=correlation_id, resume_invocation=resume_invocation,
                    signal_payload=signal_payload, step_limit=step_limit,
                )
        limit = step_limit or self.step_limit
        if limit < 1:
            raise ValueError(f"step_limit must be >= 1, got {limit}")
        cp = self.checkpointer
        plan: ResumePlan | None = None
        positions: tuple[Any, ...] = ()
        if resume_invocation is not None:
            record = await self._load(resume_invocation, signal_payload is not None)
            plan = plan_resume(
                self, record, self.migrations, cp.supports_migration if cp else False,
                signal_payload,
            )
            correlation_id = record.correlation_id
            invocation_id = record.invocation_id if signal_payload is not None else None
            positions = record.completed_positions
            state: Any = plan.states[0]
        else:
            try:
                state = self.schema.coerce(initial_state, where="invoke() initial state")
            except StateValidationError as exc:
                if not observers and not self._observed():
                    raise
                # observed: the failure ends the invocation's window (observability §4.2)
                await self._entry_failed(exc, observers, invocation_id, correlation_id)
        durable: Durable | None = None
        if cp is not None:
            if correlation_id is None:
                correlation_id = mint_uuid4()
            durable = Durable(
                cp, declared_version(self.schema.cls), correlation_id, plan, positions
            )
        subs = tuple(subscribe(o) for o in observers) if observers else ()
        snapshot = {id(g): g._observers for g in self._graphs if g._observers}
        if (subs or snapshot) and correlation_id is None:
            correlation_id = mint_uuid4()  # observability §3.1: one per observed run
        run = Run(
            invocation_id, correlation_id, None, subs, snapshot, step_limit=limit,
            durable=durable,
        )
        if durable is not None:
            durable.run = run
        run.include_caller_metadata = any(
            getattr(sub.original, "include_caller_metadata", False)
            for group in (subs, *snapshot.values()) for sub in group
        )
        token = run_scope.set(run)
        try:
            if not subs and not snapshot:
                result, suspended = await self._drive(state, run, plan)
            else:
                result, suspended = await self._drive_observed(state, run, plan)
            if suspended is not None:
                return suspended
            return Completed(
                invocation_id=run.invocation_id, correlation_id=run.correlation_id or "",
                state=result,
            )
        finally:
            run_scope.reset(token)

    async def _entry_failed(self, error: StateValidationError, observers: Iterable[Any],
                            invocation_id: str | None, correlation_id: str | None) -> NoReturn:
        """The initial state was invalid in an observed run: no node runs, but the
        observers subscribed to the invocation phases see its window open and close
        with the error (a tracer's invocation span carries ``state_validation_error``);
        then it raises."""
        subs = tuple(subscribe(o) for o in observers)
        snapshot = {id(g): g._observers for g in self._graphs if g._observers}
        run = Run(invocation_id, correlation_id or mint_uuid4(), None, subs, snapshot,
                  step_limit=self.step_limit)
        token = run_scope.set(run)
        try:
            await self._drive_observed(None, run, None, failure=error)
        finally:
            run_scope.reset(token)
        raise error  # not reached: the bracket re-raises ``error``

    async def _load(self, invocation_id: str, signal: bool) -> CheckpointRecord:
        cp = self.checkpointer
        record = await cp.load(invocation_id) if cp is not None else None
        if signal:
            if record is None or record.status != "suspended":
                what = "no record" if record is None else f"status {record.status!r}"
                raise SuspensionRecordInvalid(
                    f"cannot resume invocation {invocation_id!r} with a signal: it is not "
                    f"suspended ({what}"
                    + (", and the graph has no checkpointer" if cp is None else "") + ")"
                )
            return record
        if record is None:
            raise CheckpointNotFound(
                f"no checkpoint for invocation {invocation_id!r}"
                + (" (the graph has no checkpointer registered)" if cp is None else "")
            )
        if record.status == "suspended":
            raise CheckpointRecordInvalid(
                f"invocation {invocation_id!r} is suspended, not checkpointed: resume it with "
                "a signal_payload"
            )
        return record

    async def _drive(
        self, state: Any, run: Run, plan: ResumePlan | None
    ) -> tuple[Any, Suspended[S] | None]:
        level = Level.root(run, self)
        start, done = None, False
        if plan is not None:
            taken = plan.take(level)
            if taken is not None:
                state, name, done = taken
                start = self._nodes[name] if name is not None else None
        try:
            return await run_observed(self, state, level, start=start, done=done), None
        except SuspendSignal as sig:  # saved here, while the observers still listen
            return None, await self._suspended(run, sig)

    async def _drive_observed(
        self, state: Any, run: Run, plan: ResumePlan | None,
        failure: Exception | None = None,
    ) -> tuple[Any, Suspended[S] | None]:
        inv = run.inv = Invocation(run.invocation_id)
        if self._delivery.running:
            self._delivery.start(inv, None)
            try:
                return await self._drive_bracketed(state, run, plan, failure)
            finally:
                inv.close()
        raised: Exception | None = None
        async with anyio.create_task_group() as tg:
            self._delivery.start(inv, tg)
            try:
                result = await self._drive_bracketed(state, run, plan, failure)
            except Exception as exc:
                raised = exc
            finally:
                inv.close()
        if raised is not None:
            raise raised
        return result

    async def _drive_bracketed(
        self, state: Any, run: Run, plan: ResumePlan | None,
        failure: Exception | None = None,
    ) -> tuple[Any, Suspended[S] | None]:
        """:meth:`_drive`, bracketed by :class:`InvocationEvent` s for the observers
        that subscribe to them (a tracer needs the invocation's window). ``failure``:
        the invocation failed before its first node (raised inside the bracket)."""
        inv = run.inv
        subs = run.invocation_subs + run.snapshot.get(id(self), ())
        targets = tuple(s for s in subs if "invocation_started" in s.phases)
        if not targets or inv is None:
            if failure is not None:
                raise failure
            return await self._drive(state, run, plan)
        entry = self._entry.name if self._entry is not None else ""
        started = InvocationEvent(
            invocation_id=run.invocation_id, namespace=(), correlation_id=run.correlation_id,
            entry_node=entry, phase="invocation_started", state=state,
            metadata=get_invocation_metadata(),
        )
        inv.emit(started, targets)
        try:
            if failure is not None:
                raise failure
            result = await self._drive(state, run, plan)
        except Exception as exc:
            category = str(getattr(exc, "category", None) or "node_exception")
            inv.emit(msgspec.structs.replace(started, phase="invocation_completed", state=None,
                                             error=NodeError(category, exc)), targets)
            raise
        inv.emit(msgspec.structs.replace(started, phase="invocation_completed",
                                         state=result[0]), targets)
        return result

    async def _suspended(self, run: Run, sig: SuspendSignal) -> Suspended[S]:
        assert sig.frame is not None and run.durable is not None
        level, node_name, state, done = sig.frame
        namespace = (*level.prefix, node_name)
        path, _ = resume_path(level, node_name)
        try:
            await run.durable.save(
                level, state, path, done, status="suspended", descriptor=sig.descriptor,
                suspended=namespace,
            )
        except CheckpointSaveFailed as exc:
            raise SuspensionPersistenceFailed(
                f"could not persist the paused invocation: {exc}", node_name=node_name,
                recoverable_state=state,
            ) from exc.__cause__
        return Suspended(
            invocation_id=run.invocation_id, correlation_id=run.correlation_id or "",
            state=state, descriptor=sig.descriptor, node_name=node_name, namespace=namespace,
        )

    def stream(
        self,
        initial_state: S | Any,
        *,
        mode: str | Iterable[str] | None = None,
        observers: Iterable[Any] = (),
        invocation_id: str | None = None,
        correlation_id: str | None = None,
        buffer: int = 64,
    ) -> GraphStream[S]:
        """Run the graph, yielding typed items as it goes (see :mod:`.streaming`)::

            async with graph.stream(state, mode={"updates", "tokens"}) as items:
                async for item in items:
                    ...

        ``mode``: ``"updates"``, ``"tokens"``, ``"values"`` (the final state),
        ``"events"``, or a set of them (default: the first three). ``buffer``:
        items held for a slow consumer before delivery waits for it.
        """
        return GraphStream(
            self, initial_state, modes=resolve_modes(mode), observers=observers,
            invocation_id=invocation_id, correlation_id=correlation_id, buffer=buffer,
        )

    def to_mermaid(self, *, direction: str = "TD") -> str:
        """This graph as a Mermaid flowchart (see :mod:`.mermaid`)."""
        return to_mermaid(self, direction=direction)

    def _observed(self) -> bool:
        return any(g._observers for g in self._graphs)


def is_async_callable(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` gives a coroutine (an ``async def``, or an object whose
    ``__call__`` is one)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004
    )
