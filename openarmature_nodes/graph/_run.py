"""Per-invocation runtime records and the two halves of a graph step.

A step is: dispatch the node (its middleware chain around its kind's inner
call), :func:`merge` the partial update, then :func:`route` along the outgoing
edge. This module owns running a graph: the two loops (:func:`run_plain` for
unobserved runs, :func:`run_observed` with the §6 event bookkeeping, both
called by the compiled graph and by node kinds that run nested graphs) and
what they need:

- :class:`Run` — one outermost invocation: the step counter, the delivery
  queue (``None`` when nobody observes) and the invocation-scoped observers.
- :class:`Level` — one graph executing inside a run: its namespace prefix,
  parent-state stack, lineage chains and observer list. Subgraph, fan-out and
  parallel-branch kinds make child levels with :meth:`Level.child`.
- :class:`Step` — one node step of an observed run: emits the node's
  ``started``/``completed`` pair per attempt, stamped with the innermost
  retry's ``attempt_index``.

Unobserved runs use none of the last two: they cost a dispatch, a merge and a
route per step, nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import anyio.lowlevel
from msgspec.structs import force_setattr as _force_setattr
from msgspec.structs import replace as _struct_replace

from openarmature_nodes.context import Lineage, attempt_index, mint_uuid4, run_scope

from ._inplace import APPEND as _APPEND
from ._inplace import ENABLED as _INPLACE
from ._inplace import LIST_REFS as _LIST_REFS
from ._inplace import MIN_LENGTH as _INPLACE_MIN
from ._inplace import STATE_REFS as _STATE_REFS
from ._inplace import refcount as _refcount
from .errors import (
    EdgeException,
    GraphRuntimeError,
    NodeException,
    ReducerError,
    RoutingError,
    StateValidationError,
    StepLimitExceeded,
)
from .events import INSTANCE_PHASE, FanOutInstanceEvent, NodeError, NodeEvent
from .state import FieldSpec, MergePlan, State, _type_name
from .suspension import SuspendSignal, find_suspension, in_node_body

if TYPE_CHECKING:
    from ._durable import Durable
    from .compiled import CompiledGraph, _Node
    from .observers import Invocation, Subscription

_STATE_POST_INIT = State.__post_init__
_NO_UPDATE: Any = MappingProxyType({})  # a node that returned None, on its completed event

__all__ = [
    "END", "Level", "Run", "Step", "current_correlation_id", "current_invocation_id",
    "current_run", "merge", "node_failure", "report_instance", "route", "run_observed",
    "run_plain",
]


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


def current_run() -> Run | None:
    """The graph invocation running the calling code (``None`` outside one)."""
    scope = run_scope.get()
    if scope is None:
        return None
    if isinstance(scope, Step):
        return scope.level.run
    return scope if isinstance(scope, Run) else None


def current_invocation_id() -> str:
    """The ``invocation_id`` of the graph invocation running the calling code.

    Call it from a node (or middleware): e.g. to pass to
    ``graph.drain_events_for(...)``. Raises ``LookupError`` outside a run.
    """
    scope = run_scope.get()
    if scope is None:
        raise LookupError("current_invocation_id() called outside a graph invocation")
    return scope.invocation_id


DEFAULT_STEP_LIMIT = 10_000
"""How many steps one graph run (the outermost graph, or one run of a subgraph or
fan-out instance) may take in an invocation before ``step_limit_exceeded``."""

_YIELD_MASK = 31
"""The loops pass a cancellation checkpoint every 32 steps, so a run of nodes
that never await still notices cancellation (at ~1 µs per step, within tens of
microseconds)."""


def current_correlation_id() -> str | None:
    """The correlation id of the running invocation (observability §3.1): the
    caller's, or a UUIDv4 minted for an observed invocation; ``None`` outside a run."""
    value = getattr(run_scope.get(), "correlation_id", None)
    return value if isinstance(value, str) else None


class Run:
    """State shared by every level of one outermost invocation."""

    __slots__ = (
        "_id", "correlation_id", "durable", "include_caller_metadata", "inv", "invocation_subs",
        "root_targets", "snapshot", "step", "step_limit",
    )

    def __init__(
        self,
        invocation_id: str | None,
        correlation_id: str | None,
        inv: Invocation | None = None,
        invocation_subs: tuple[Subscription, ...] = (),
        snapshot: dict[int, tuple[Subscription, ...]] | None = None,
        *,
        step_limit: int = DEFAULT_STEP_LIMIT,
        durable: Durable | None = None,
    ) -> None:
        self._id = invocation_id
        self.correlation_id = correlation_id
        self.inv = inv
        self.invocation_subs = invocation_subs
        self.snapshot = snapshot or {}
        self.root_targets: tuple[Subscription, ...] = invocation_subs
        self.step = 0
        self.step_limit = step_limit
        self.durable = durable
        self.include_caller_metadata = False  # an observer asked for metadata snapshots

    @property
    def invocation_id(self) -> str:
        """Minted (UUIDv4) on first use unless the caller supplied one."""
        if self._id is None:
            self._id = mint_uuid4()
        return self._id

    def next_step(self) -> int:
        """The next node-step number of this run (0-based, shared by every level)."""
        n = self.step
        self.step = n + 1
        return n

    # The RunScope protocol (openarmature_nodes.context) between steps:
    def lineage(self) -> Lineage | None:
        """No step is running, so no lineage."""
        return None

    def emit(self, event: object) -> bool:
        """Queue ``event`` for the invocation's own and the outermost graph's observers."""
        inv = self.inv
        if inv is None or not self.root_targets:
            return False
        inv.emit(event, self.root_targets)
        return True


class Level:
    """One graph executing within a run (the outermost graph, or a nested one)."""

    __slots__ = (
        "branch_chain", "branch_name", "fan_out_chain", "fan_out_index", "graph_subs",
        "parent_states", "prefix", "run", "subgraph_names", "targets",
    )

    def __init__(
        self,
        run: Run,
        graph_subs: tuple[Subscription, ...],
        prefix: tuple[str, ...] = (),
        parent_states: tuple[Any, ...] = (),
        fan_out_chain: tuple[int | None, ...] = (),
        branch_chain: tuple[str | None, ...] = (),
        fan_out_index: int | None = None,
        branch_name: str | None = None,
        subgraph_names: tuple[str, ...] = (),
    ) -> None:
        self.run = run
        self.graph_subs = graph_subs
        self.targets = graph_subs + run.invocation_subs
        self.prefix = prefix
        self.parent_states = parent_states
        self.fan_out_chain = fan_out_chain
        self.branch_chain = branch_chain
        self.fan_out_index = fan_out_index
        self.branch_name = branch_name
        self.subgraph_names = subgraph_names  # each nested graph's name, outermost first

    @classmethod
    def root(cls, run: Run, graph: Any) -> Level:
        """The outermost graph's level; its targets become the run's root targets."""
        level = cls(run, run.snapshot.get(id(graph), ()))
        run.root_targets = level.targets
        return level

    def child(
        self,
        node_name: str,
        parent_state: Any,
        graph: Any,
        *,
        fan_out_index: int | None = None,
        branch_name: str | None = None,
    ) -> Level:
        """The level of ``graph`` run by node ``node_name`` from ``parent_state``.

        Pass ``fan_out_index`` for a fan-out instance, ``branch_name`` for a
        parallel branch; a plain subgraph passes neither (a ``None`` link).
        """
        return Level(
            self.run,
            self.graph_subs + self.run.snapshot.get(id(graph), ()),
            (*self.prefix, node_name),
            (*self.parent_states, parent_state),
            (*self.fan_out_chain, fan_out_index),
            (*self.branch_chain, branch_name),
            fan_out_index if fan_out_index is not None else self.fan_out_index,
            branch_name if branch_name is not None else self.branch_name,
            (*self.subgraph_names, getattr(graph, "name", "")),  # "" for a callable
        )

    def started_event(
        self, node_name: str, step: int, attempt: int, pre_state: Any, extra: Mapping[str, Any]
    ) -> NodeEvent | None:
        """Build and queue a node's ``started`` event if anyone at this level listens
        (and return it; ``None`` when nobody does).

        The hot path of an observed run: the keywords are spelled out, because
        unpacking a mapping into a struct costs several times its construction."""
        run = self.run
        inv = run.inv
        if inv is None or not self.targets:
            return None
        event = NodeEvent(
            invocation_id=run._id,  # type: ignore[arg-type]  # minted when ``inv`` was made
            namespace=(*self.prefix, node_name),
            fan_out_index=self.fan_out_index,
            branch_name=self.branch_name,
            fan_out_index_chain=self.fan_out_chain,
            branch_name_chain=self.branch_chain,
            correlation_id=run.correlation_id,
            node_name=node_name,
            parent_states=self.parent_states,
            subgraph_name_chain=self.subgraph_names,
            phase="started",
            step=step,
            attempt_index=attempt,
            pre_state=pre_state,
        )
        if extra:
            event = _struct_replace(event, **extra)
        inv.emit(event, self.targets)
        return event


class Step:
    """One node step of an observed run: the started/completed bookkeeping.

    A node kind's inner call invokes :meth:`begin` right before the node body
    (after every middleware pre-phase) and :meth:`fail` if the body raises. A
    retry middleware calling the inner again starts a new attempt: the failed
    attempt's ``completed`` (with ``error``) is dispatched first. The loop
    calls :meth:`finish_ok` after the merge and the edge succeed, or
    :meth:`finish_error`; a step whose body never ran (a middleware
    short-circuit) dispatches nothing.

    This is the observed loop's per-step cost, so it is kept lean: the
    ``completed`` event is the attempt's ``started`` event with the outcome
    fields replaced, and nothing is built when no observer listens here.
    """

    __slots__ = (
        "attempt", "level", "node_name", "number", "open", "pending", "started", "state",
    )

    def __init__(self, level: Level, node_name: str, state: Any) -> None:
        self.level = level
        self.advance(node_name, state)

    def advance(self, node_name: str, state: Any) -> None:
        """Stand for the next step of the same level: node ``node_name`` from ``state``."""
        self.node_name = node_name
        self.state = state  # the engine's state at dispatch (pre-merge)
        self.number = -1
        self.attempt = 0
        self.open = False
        self.pending: BaseException | None = None
        self.started: NodeEvent | None = None  # the open attempt's started event

    # The RunScope protocol (openarmature_nodes.context) while this step runs:
    @property
    def invocation_id(self) -> str:
        """The invocation this step belongs to."""
        return self.level.run.invocation_id

    @property
    def correlation_id(self) -> str | None:
        """The invocation's correlation id."""
        return self.level.run.correlation_id

    @property
    def include_caller_metadata(self) -> bool:
        """Whether an observer of the run asked for metadata snapshots on typed events."""
        return self.level.run.include_caller_metadata

    def lineage(self) -> Lineage:
        """This step's lineage, stamped with the current retry attempt."""
        level = self.level
        return Lineage(
            invocation_id=level.run.invocation_id,
            namespace=(*level.prefix, self.node_name),
            attempt_index=attempt_index.get(),
            fan_out_index=level.fan_out_index,
            branch_name=level.branch_name,
            fan_out_index_chain=level.fan_out_chain,
            branch_name_chain=level.branch_chain,
            subgraph_name_chain=level.subgraph_names,
        )

    def emit(self, event: object) -> bool:
        """Queue ``event`` for the observers of the graph running this step (outermost
        graph first) and the invocation's own."""
        level = self.level
        inv = level.run.inv
        if inv is None or not level.targets:
            return False
        inv.emit(event, level.targets)
        return True

    def begin(self, node_state: Any, **extra: Any) -> None:
        """Start an attempt: dispatch a pending failed attempt's ``completed``, then
        this attempt's ``started`` (``extra`` fields are repeated on ``completed``)."""
        if self.pending is not None:
            exc = self.pending
            err = node_failure(self.node_name, exc, self.state)
            self._close("completed", error=NodeError(err.category, err))
        if self.number < 0:
            self.number = self.level.run.next_step()
        self.attempt = attempt = attempt_index.get()
        self.open = True
        self.started = self.level.started_event(
            self.node_name, self.number, attempt, node_state, extra
        )

    def fail(self, exc: BaseException) -> None:
        """Record the attempt's failure. A next :meth:`begin` (a retry) reports it as
        this attempt's ``completed``; otherwise the step's finish closes the attempt."""
        self.pending = exc

    def finish_ok(self, post_state: Any, update: Any = None) -> None:
        """Dispatch the open attempt's ``completed`` with the merged state (and, for a
        graph node, the partial ``update`` it returned)."""
        if self.open:
            self._close("completed", post_state=post_state, update=update)

    def finish_error(self, err: GraphRuntimeError) -> None:
        """Dispatch the open attempt's ``completed`` carrying ``err``."""
        if self.open:
            self._close("completed", error=NodeError(err.category, err))

    def suspended(self, descriptor: Any) -> None:
        """Dispatch the open attempt's ``suspended`` event (instead of ``completed``)."""
        if self.open:
            self._close("suspended", descriptor=descriptor)

    def _close(
        self, phase: str, *, post_state: Any = None, update: Any = None, error: Any = None,
        descriptor: Any = None,
    ) -> None:
        """End the open attempt: its ``started`` event (lineage, step, attempt, pre-state
        and the kind's extra fields) with the phase and outcome replaced, queued where
        the ``started`` went (nothing when nobody listens at this level)."""
        self.open = False
        self.pending = None
        started = self.started
        if started is None:
            return
        self.started = None
        level = self.level
        level.run.inv.emit(  # type: ignore[union-attr]  # set, since ``started`` was built
            _struct_replace(started, phase=phase, post_state=post_state, update=update,
                            error=error, descriptor=descriptor),
            level.targets,
        )


def node_failure(node_name: str, exc: BaseException, state: Any) -> NodeException:
    """The ``node_exception`` for ``exc`` escaping node ``node_name``'s dispatch.

    A node kind may raise its own ``node_exception`` subtype for its node (e.g.
    ``parallel_branches_branch_failed``): one with ``raised_for_node = True``,
    this ``node_name`` and this ``state`` as recoverable state is returned as is.
    """
    if getattr(exc, "passes_through", False):  # an invocation-level error, raised as is
        if getattr(exc, "recoverable_state", None) is None:
            exc.recoverable_state = state  # type: ignore[attr-defined]
            exc.node_name = getattr(exc, "node_name", None) or node_name  # type: ignore[attr-defined]
        return exc  # type: ignore[return-value]
    if (
        isinstance(exc, NodeException)
        and getattr(exc, "raised_for_node", False)
        and exc.node_name == node_name
        and exc.recoverable_state is state
    ):
        return exc
    err = NodeException(
        f"node {node_name!r} raised {type(exc).__name__}: {exc}",
        node_name=node_name,
        recoverable_state=state,
    )
    err.__cause__ = exc
    return err


def merge(
    plan: Mapping[str, MergePlan], state: Any, update: Any, node_name: str, sole: bool = False
) -> Any:
    """Merge ``update`` into ``state`` field by field through each field's reducer.

    ``plan`` is :attr:`Schema.plan`. Only the fields named in the update are
    reduced and validated; the rest of the state is shared with the new
    instance, not copied.

    ``sole``: the caller holds ``state`` in exactly one local variable and
    replaces it with the result (the plain loop). An ``append`` field whose old
    state and list nobody else holds is then extended in place rather than
    copied (see :mod:`._inplace`); no one can tell the difference. Positional,
    not keyword-only: CPython 3.11-3.12 specialize only positional calls, and
    the plain loop makes this call once per step.
    """
    if update.__class__ is not dict and not isinstance(update, Mapping):
        raise StateValidationError(
            f"node {node_name!r} returned {type(update).__name__}; a node must return a "
            "mapping of field names to values (or None)",
            node_name=node_name,
            recoverable_state=state,
        )
    changes: dict[str, Any] = {}
    grow: list[tuple[list[Any], list[Any]]] | None = None  # in-place appends, once all pass
    for key, value in update.items():
        entry = plan.get(key)
        if entry is None:
            raise StateValidationError(
                f"node {node_name!r} returned field {key!r}, which the state schema "
                f"{type(state).__name__} does not declare",
                fields=(key,), node_name=node_name, recoverable_state=state,
            )
        fn, check, delta, spec = entry
        if fn is None:  # last_write_wins
            if check is not None and not check(value):
                raise _wrong_type(spec, value, node_name, state)
            changes[key] = value
            continue
        if fn is _APPEND and sole and _INPLACE:
            prior = getattr(state, key)
            if (
                prior.__class__ is list
                and len(prior) >= _INPLACE_MIN
                and value.__class__ is list
                and _refcount(prior) == _LIST_REFS
                and _refcount(state) == _STATE_REFS
                and state.__class__.__post_init__ is _STATE_POST_INIT
            ):
                if check is not None and not check(value):
                    raise _wrong_type(spec, value, node_name, state)
                if grow is None:
                    grow = []
                grow.append((prior, value))
                changes[key] = prior
                continue
        try:
            new = fn(getattr(state, key), value)
        except Exception as exc:
            name = spec.reducer.name
            raise ReducerError(
                f"reducer {name} of field {key!r} rejected node {node_name!r}'s update: {exc}",
                field=key, reducer_name=name, node_name=node_name, recoverable_state=state,
            ) from exc
        if check is not None and not check(new if delta is None else delta(value)):
            raise _wrong_type(spec, value, node_name, state)
        changes[key] = new
    if not changes:
        return state
    if state.__class__.__post_init__ is _STATE_POST_INIT:
        # The changed fields are checked above: skip State's whole-state check.
        if grow is not None:
            for prior, value in grow:
                prior.extend(value)
        new = state.__copy__()
        for key, value in changes.items():
            _force_setattr(new, key, value)
        return new
    return _struct_replace(state, **changes)  # runs the subclass's own __post_init__


def _wrong_type(spec: FieldSpec, value: Any, node_name: str, state: Any) -> StateValidationError:
    return StateValidationError(
        f"node {node_name!r} set field {spec.name!r} to {value!r:.80}, which is not a "
        f"{_type_name(spec.type)}",
        fields=(spec.name,), node_name=node_name, recoverable_state=state,
    )


# --- the loops -------------------------------------------------------------------------


async def run_plain(graph: CompiledGraph[Any], state: Any) -> Any:
    """Run ``graph`` from ``state`` to ``END`` with no event bookkeeping; return the final state."""
    fields = graph.schema.plan
    node: _Node | None = graph._entry
    run = current_run()
    limit = run.step_limit if run is not None else DEFAULT_STEP_LIMIT
    recent: list[str] = []  # the last node names, kept from step limit - 4 on
    n, near = 0, limit - 4
    while node is not None:
        n += 1
        if not n & _YIELD_MASK:
            await anyio.lowlevel.checkpoint()
        if n >= near:
            _near_limit(node, n, limit, recent, state)
        try:
            update = await node.call(state)
        except Exception as exc:
            raise node_failure(node.name, exc, state)  # noqa: B904 (cause set by node_failure)
        if update:
            state = merge(fields, state, update, node.name, True)  # sole: see merge()
        if node.route is None:
            node = node.next
        else:
            node = await route(node, state)
    return state


async def run_observed(
    graph: CompiledGraph[Any],
    state: Any,
    level: Level,
    *,
    start: _Node | None = None,
    done: bool = False,
) -> Any:
    """Run ``graph`` from ``state`` at ``level``, emitting each step's §6 events.

    ``start`` re-enters at a node other than the entry (a resume); with
    ``done`` that node has already completed and the run routes on from it.
    With a checkpointer registered (``Run.durable``) every completed node is
    saved before the next one starts (pipeline-utilities §10.3).

    One :class:`Step` serves the whole loop as its run scope: it is advanced
    to each node in turn (:meth:`Step.advance`) rather than made and installed
    anew (a contextvar set and reset and an object per step saved). The steps of
    one graph run are sequential, so the cursor is never shared by two of them.
    """
    fields = graph.schema.plan
    base_attempt = attempt_index.get()
    run = level.run
    durable = run.durable
    limit = run.step_limit
    node: _Node | None = graph._entry if start is None else start
    if done and node is not None:
        node = node.next if node.route is None else await route(node, state)
    step = Step(level, "", state)
    scope = run_scope.set(step)
    try:
        recent: list[str] = []  # the last node names, kept from step limit - 4 on
        n, near = 0, limit - 4
        while node is not None:
            n += 1
            if not n & _YIELD_MASK:
                await anyio.lowlevel.checkpoint()
            if n >= near:
                _near_limit(node, n, limit, recent, state)
            step.advance(node.name, state)
            try:
                fn = node.fast
                if fn is not None:
                    # A function node without middleware: the bracket of
                    # FunctionNode.observed_shared, inlined. ``in_node_body`` only
                    # matters to suspend(), which needs a checkpointer first.
                    step.begin(state)
                    body = in_node_body.set(True) if durable is not None else None
                    try:
                        update = await fn(state)
                    except Exception as exc:
                        step.fail(exc)
                        raise
                    finally:
                        if body is not None:
                            in_node_body.reset(body)
                else:
                    update = await node.observed_call(step)(state)
            except SuspendSignal as sig:
                if not sig.attributed:
                    await _attribute(sig, fields, level, step, node.name, state)
                raise
            except Exception as exc:
                err = node_failure(node.name, exc, state)
                step.finish_error(err)
                if durable is not None:
                    await durable.node_failed(level, node.name, state)
                raise err  # noqa: B904 (node_failure set __cause__; err may be exc itself)
            except BaseExceptionGroup as group:  # e.g. a tool suspended in the node's task group
                found = find_suspension(group)
                if found is None:
                    raise
                if not found.attributed:
                    await _attribute(found, fields, level, step, node.name, state)
                raise found from None
            finally:
                if attempt_index.get() != base_attempt:
                    attempt_index.set(base_attempt)
            try:
                new = merge(fields, state, update, node.name) if update else state
                nxt = node.next if node.route is None else await route(node, new)
            except GraphRuntimeError as err:
                step.finish_error(err)
                raise
            step.finish_ok(new, update if update is not None else _NO_UPDATE)
            if durable is not None and step.number >= 0:
                await durable.node_done(
                    level, node.name, step.number, step.attempt, new, nxt is None
                )
            state, node = new, nxt
        return state
    finally:
        run_scope.reset(scope)


async def _attribute(
    sig: SuspendSignal, fields: Mapping[str, MergePlan], level: Level, step: Step,
    node_name: str, state: Any,
) -> None:
    """The node at ``level`` suspended: emit its ``suspended`` event, record the frame."""
    sig.attributed = True
    new = merge(fields, state, sig.update, node_name) if sig.update else state
    step.suspended(sig.descriptor)
    durable = level.run.durable
    if sig.mark_node_completed:
        if durable is not None:
            durable.position(level, node_name, max(step.number, 0), step.attempt)
        sig.frame = (level, node_name, new, True)
    else:
        sig.frame = (level, node_name, state, False)


def _near_limit(node: _Node, n: int, limit: int, recent: list[str], state: Any) -> None:
    """Step ``n`` of at most ``limit`` is within five of the limit: note ``node``
    for the error's ``last_nodes`` and raise :class:`StepLimitExceeded` once the
    limit is passed. The loops call it only from step ``limit - 4`` on, so the
    common step pays nothing for it."""
    recent.append(node.name)
    if n > limit:
        last = tuple(recent[-5:])
        raise StepLimitExceeded(
            f"the graph ran more than {limit} steps in one invocation (step_limit); the last "
            f"nodes were {' -> '.join(last)}: is a conditional edge looping? Raise the limit "
            "with invoke(..., step_limit=N) if the run is legitimately long",
            limit=limit, last_nodes=last, node_name=node.name, recoverable_state=state,
        )


async def route(node: _Node, state: Any) -> _Node | None:
    """Follow ``node``'s conditional edge from ``state``: the next node, or ``None`` at END."""
    fn = node.route
    assert fn is not None
    try:
        dest = fn(state)
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


def report_instance(step: Step, index: int, count: int, outcome: str) -> None:
    """Queue a :class:`FanOutInstanceEvent` for fan-out node ``step``'s instance
    ``index``, only to observers subscribed to its phase (progress reporters)."""
    level = step.level
    inv = level.run.inv
    if inv is None:
        return
    targets = tuple(t for t in level.targets if INSTANCE_PHASE in t.phases)
    if not targets:
        return
    inv.emit(
        FanOutInstanceEvent(
            invocation_id=level.run.invocation_id,
            namespace=(*level.prefix, step.node_name),
            fan_out_index=index,
            branch_name=level.branch_name,
            fan_out_index_chain=level.fan_out_chain,
            branch_name_chain=level.branch_chain,
            correlation_id=level.run.correlation_id,
            node_name=step.node_name,
            item_count=count,
            outcome=outcome,  # type: ignore[arg-type]
        ),
        targets,
    )
