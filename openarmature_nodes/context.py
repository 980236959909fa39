"""The run context: what the code running right now is part of.

This module is the ground floor: it imports nothing of the package, so the
graph engine, the LLM layer and the middleware can all read and write the same
context without importing one another. It holds four things, each in a
:class:`~contextvars.ContextVar` (they behave the same on asyncio and trio and
follow the task that sets them):

:data:`attempt_index`
    The node-level retry attempt (pipeline-utilities §5). A re-attempting
    middleware sets it before each call of ``next``; the engine stamps it on
    the node's ``started``/``completed`` events. The innermost retry wins: its
    ``set`` is the most recent in the context the node runs in.
:data:`call_attempt`
    The call-level attempt (llm-provider §7.1): index and retry reason, set by
    the provider's retry loop, read by the span layer.
:class:`Lineage`
    Where the running code sits in a graph invocation (the graph-engine §6
    event-source tuple). The one lineage type: the engine builds it, failure
    isolation puts it on its events.
:data:`run_scope`
    The running invocation (a :class:`RunScope`): the graph engine sets it for
    the invocation and for each observed node step. Code inside asks it for
    the current :func:`current_lineage` and hands it framework events with
    :func:`emit_framework_event`. Outside a graph run it is ``None`` and both answer
    "nothing": no lineage, the event dropped.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "CallAttempt",
    "Lineage",
    "RunScope",
    "attempt_index",
    "call_attempt",
    "current_lineage",
    "emit_framework_event",
    "mint_uuid4",
    "run_scope",
]


attempt_index: ContextVar[int] = ContextVar("openarmature_attempt_index", default=0)
"""The innermost node-level retry's attempt (0-based; 0 without retry)."""


@dataclass(frozen=True, slots=True)
class CallAttempt:
    """Which attempt of a call-level retry loop is running.

    ``retry_reason`` is why this attempt was scheduled: ``None`` for attempt 0,
    ``"transient"`` or ``"reask"`` after that (llm-provider §7.1).
    """

    index: int = 0
    retry_reason: str | None = None


call_attempt: ContextVar[CallAttempt] = ContextVar(
    "openarmature_call_attempt", default=CallAttempt()  # noqa: B039 - frozen, immutable
)
"""Set by the call-level retry loop around each attempt; read by layers inside it
(the span layer records ``openarmature.llm.attempt_index`` / ``retry_reason``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Lineage:
    """Where a node step runs: its invocation, namespace and retry attempt, and
    the fan-out instance / parallel branch it belongs to.

    ``fan_out_index`` / ``branch_name`` are the innermost ones; the ``*_chain``
    fields hold one entry per enclosing graph level (outermost first, ``None``
    where that level was neither); ``subgraph_name_chain`` holds the name of the
    graph entered at each of those levels (``""`` for an unnamed one).
    ``invocation_id`` is ``None`` outside a graph run.
    """

    invocation_id: str | None = None
    namespace: tuple[str, ...] = ()
    attempt_index: int = 0
    fan_out_index: int | None = None
    branch_name: str | None = None
    fan_out_index_chain: tuple[int | None, ...] = ()
    branch_name_chain: tuple[str | None, ...] = ()
    subgraph_name_chain: tuple[str, ...] = ()


class RunScope(Protocol):
    """The running invocation, as the engine exposes it to the code it runs."""

    @property
    def invocation_id(self) -> str:
        """The invocation's id."""
        ...

    def lineage(self) -> Lineage | None:
        """The current node step's lineage; ``None`` where no step is tracked
        (an unobserved run, or between steps)."""
        ...

    def emit(self, event: object) -> bool:
        """Queue ``event`` for the invocation's observers; ``False`` (dropped)
        when nobody observes."""
        ...


run_scope: ContextVar[RunScope | None] = ContextVar("openarmature_run_scope", default=None)
"""The innermost running graph invocation or observed node step (``None`` outside a run)."""


def current_lineage() -> Lineage | None:
    """The lineage of the node step running the calling code, in an observed run.

    ``None`` outside a graph run and in runs nobody observes (where the engine
    does not track steps, and an event would have no one to go to).
    """
    scope = run_scope.get()
    return scope.lineage() if scope is not None else None


def emit_framework_event(event: object) -> bool:
    """Queue a framework event (not a node event) for the running invocation's observers.

    It is delivered in order with the node events, to the observers of the
    graph running the current step (outermost graph first) and the
    invocation's own. Returns ``False`` (and drops the event) outside a graph
    run or when the invocation is not observed.
    """
    scope = run_scope.get()
    return scope.emit(event) if scope is not None else False


def mint_uuid4() -> str:
    """A new random (version 4, RFC 4122 variant) UUID as its canonical string.

    Same distribution and format as ``str(uuid.uuid4())`` (16 bytes from
    :func:`os.urandom`, version and variant bits set), without building a
    ``UUID`` object: an observed invocation mints two (its invocation and
    correlation ids), so this is on every observed ``invoke()``.
    """
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"
