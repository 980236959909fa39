"""Suspension: a node pauses the invocation until a signal arrives (suspension spec).

Inside a node body (not middleware), ``await suspend(...)`` ends the node's
attempt; the engine saves a paused-invocation record through the graph's
checkpointer and ``graph.run(...)`` returns a :class:`Suspended` outcome::

    async def ask_approval(state):
        await suspend(SignalDescriptor(signal_id=f"approve-{state.call_id}",
                                       metadata={"tool": state.tool}))

    outcome = await graph.run(start)            # Completed | Suspended
    if isinstance(outcome, Suspended):
        ...                                     # store outcome.invocation_id, ask a human
    # later, in any process with the same checkpoint store:
    outcome = await graph.run(None, resume_invocation=invocation_id,
                              signal_payload={"approved": True})

``graph.invoke(...)`` (which returns the final state) raises
:class:`GraphSuspended`, carrying the :class:`Suspended` outcome, instead.

Mechanism (suspension §3 asks implementations to say): ``suspend()`` raises an
internal ``BaseException`` subclass, so ``except Exception`` in user code,
retry and failure-isolation middleware does not catch it; the middleware's
code after ``next()`` does not run. With ``mark_node_completed=True`` (the
default) the resume continues after the node (routing from it with the
payload merged); with ``False`` the node body runs again on resume. The
payload overwrites the fields it names, without reducers (§6), in the state of
the graph level that suspended and of each graph containing it that declares
them (fields nobody declares are dropped). A suspended invocation keeps its
``invocation_id`` across the resume (§7).

A tool may suspend too: the tool node suspends (its other calls are cancelled);
suspend with ``mark_node_completed=False`` so the tool node runs its calls again
on resume (a tool reads the human's answer from wherever the application keeps
it; the simpler pattern is a gate node before the tool node, see
``examples/graphs/approval_agent.py``).

In a fan-out instance or a parallel branch the whole node suspends (siblings
are cancelled) and the descriptor's metadata gains ``fan_out_index`` /
``branch_name``; in a ``collect``-mode node, or from middleware, or outside a
run, ``suspend()`` raises ``suspension_in_unsupported_context``. Without a
registered checkpointer it raises ``suspension_persistence_failed``.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Generic, Literal, NoReturn, TypeVar

import msgspec

from .checkpoint.errors import SuspensionInUnsupportedContext, SuspensionPersistenceFailed
from .checkpoint.records import SignalDescriptor

__all__ = [
    "Completed",
    "GraphSuspended",
    "Outcome",
    "SignalDescriptor",
    "Suspended",
    "suspend",
]

S = TypeVar("S")

in_node_body: ContextVar[bool] = ContextVar("openarmature_in_node_body", default=False)
"""Set by the node kinds while a node body (not its middleware) runs."""


class Completed(msgspec.Struct, Generic[S], frozen=True, kw_only=True):
    """The run reached ``END``: ``state`` is the final state."""

    invocation_id: str
    correlation_id: str
    state: S
    outcome: Literal["completed"] = "completed"


class Suspended(msgspec.Struct, Generic[S], frozen=True, kw_only=True):
    """The run paused (suspension §5). Resume with ``resume_invocation=invocation_id``.

    ``state`` is the state of the graph level that suspended, at the suspension
    point; ``node_name`` the suspending node, ``namespace`` its path from the
    outermost graph (for a fan-out instance: the fan-out node).
    """

    invocation_id: str
    correlation_id: str
    state: S
    descriptor: SignalDescriptor
    node_name: str
    namespace: tuple[str, ...]
    outcome: Literal["suspended"] = "suspended"


Outcome = Completed[S] | Suspended[S]


class GraphSuspended(Exception):
    """Raised by ``invoke()`` (which returns a final state) when the run suspends.

    ``outcome`` is the :class:`Suspended` that ``run()`` would have returned.
    """

    def __init__(self, outcome: Suspended[Any]) -> None:
        super().__init__(
            f"invocation {outcome.invocation_id} suspended at {'/'.join(outcome.namespace)} "
            f"awaiting signal {outcome.descriptor.signal_id!r}"
        )
        self.outcome = outcome


class SuspendSignal(BaseException):
    """Internal control flow of ``suspend()``: not part of the API, never catch it."""

    def __init__(
        self, descriptor: SignalDescriptor, mark_node_completed: bool,
        update: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(descriptor.signal_id)
        self.descriptor = descriptor
        self.mark_node_completed = mark_node_completed
        self.update = update
        self.attributed = False
        # Set by the level that attributes it: (level, node name, state, done).
        self.frame: tuple[Any, str, Any, bool] | None = None


def find_suspension(exc: BaseException) -> SuspendSignal | None:
    """The suspension inside ``exc``: itself, or one raised in a task group's child
    (a tool, a branch) and delivered inside a ``BaseExceptionGroup``."""
    if isinstance(exc, SuspendSignal):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find_suspension(inner)
            if found is not None:
                return found
    return None


async def suspend(
    descriptor: SignalDescriptor | str,
    *,
    metadata: dict[str, Any] | None = None,
    mark_node_completed: bool = True,
) -> NoReturn:
    """Pause the invocation at the calling node (see the module documentation).

    ``descriptor`` is a :class:`SignalDescriptor` or just its ``signal_id``
    (then ``metadata`` is its metadata). Never returns.
    """
    from ._run import current_run

    if isinstance(descriptor, str):
        descriptor = SignalDescriptor(signal_id=descriptor, metadata=metadata)
    elif not isinstance(descriptor, SignalDescriptor):
        raise TypeError(f"descriptor must be a SignalDescriptor or a str, got {descriptor!r}")
    run = current_run()
    if run is None:
        raise SuspensionInUnsupportedContext("suspend() called outside a graph invocation")
    if run.durable is None:
        raise SuspensionPersistenceFailed(
            "suspend() needs a checkpointer to persist the paused invocation: register one "
            "with GraphBuilder.with_checkpointer(...)"
        )
    if not in_node_body.get():
        raise SuspensionInUnsupportedContext(
            "suspend() called outside a node body (middleware must not suspend; put the "
            "suspending logic in a node before the one it gates)"
        )
    raise SuspendSignal(descriptor, mark_node_completed)
