"""Failure isolation (pipeline-utilities §6.3): degrade instead of failing.

The middleware catches what escapes the inner chain and returns a configured
*degraded* partial update; the engine never sees the exception and carries on
as if the node had returned it::

    isolate = FailureIsolationMiddleware(
        degraded_update={"summary": ""},
        event_name="summarize_degraded",
        catch={"provider_unavailable", "provider_rate_limit"},
    )
    builder.add_node("summarize", summarize, middleware=[isolate, RetryMiddleware()])

Order matters: isolation goes *outside* retry. Retry sees raw transient
failures first and re-runs them; isolation only sees what retry gave up on (or
what it never retried).

Which failures are caught:

- ``catch``: a set of categories matched against the *derived* category of the
  exception's cause chain (:func:`openarmature_nodes.middleware.causes.classify_causes`), i.e.
  resolved through the engine's ``node_exception`` carriers. An uncategorized
  failure has no derived category and is never caught by ``catch``.
- ``predicate``: ``(exception) -> bool`` on the surface exception.
- Both given: both must agree. Neither: every :class:`Exception` is caught.
  Cancellation and other :class:`BaseException` always propagate.

On a catch the middleware resolves the degraded update (a mapping, or a
callable of the input state), reports a :class:`FailureIsolationEvent` (event
name, the wrapped node's lineage, pre state, the degraded update, and the
cause chain) on the graph's observer queue, awaits ``on_caught(exc)`` if given,
and returns the update. It logs nothing itself.

The lineage's ``attempt_index`` is the attempt that failed: when a retry inside
gave up (``[isolation, retry]``), the index of its last attempt, the one the
node's last events carry (:class:`~.retry.GaveUp`), not the index the retry
restored on its way out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from openarmature_nodes.context import (
    Lineage,
    attempt_index,
    current_lineage,
    emit_framework_event,
)

from .causes import CauseChain, classify_causes
from .retry import GaveUp, gave_up

__all__ = ["FailureIsolationEvent", "FailureIsolationMiddleware", "Lineage"]


@dataclass(frozen=True, slots=True)
class FailureIsolationEvent:
    """Reported when a failure-isolation middleware degrades a failure.

    A framework event of its own kind, delivered on the same observer queue as
    node events. ``caught_exception`` is the §6.4 cause chain with its derived
    category and message.
    """

    event_name: str
    lineage: Lineage
    pre_state: Any
    post_state: Mapping[str, Any]
    caught_exception: CauseChain

    # The identity fields every observer event exposes, read from the lineage.
    @property
    def invocation_id(self) -> str | None:
        """The invocation the node ran in (``None`` outside a graph run)."""
        return self.lineage.invocation_id

    @property
    def namespace(self) -> tuple[str, ...]:
        """The wrapped node's namespace (outermost graph first)."""
        return self.lineage.namespace

    @property
    def attempt_index(self) -> int:
        """The attempt of the wrapped node that was degraded."""
        return self.lineage.attempt_index

    @property
    def fan_out_index(self) -> int | None:
        """The fan-out instance the node ran in, if any."""
        return self.lineage.fan_out_index

    @property
    def branch_name(self) -> str | None:
        """The parallel branch the node ran in, if any."""
        return self.lineage.branch_name


Emitter = Callable[[FailureIsolationEvent], Any]
"""Where events go: a callable taking the event (its result may be awaitable)."""

LineageSource = Callable[[], Lineage]


def _running_lineage() -> Lineage:
    """The running node step's lineage; outside an observed run, only the attempt."""
    return current_lineage() or Lineage(attempt_index=attempt_index.get())


class FailureIsolationMiddleware:
    """Catch failures of the wrapped chain and return ``degraded_update``.

    ``degraded_update``: a mapping, or ``(state) -> mapping`` called at catch
    time with the middleware's input state. ``event_name``: required, names
    this catch site in the reported event. ``catch``, ``predicate``: the gates
    (see the module doc). ``on_caught``: ``async (exception) -> None``.

    ``emit`` and ``lineage`` connect the middleware to the observer queue. By
    default both come from the run context (:mod:`openarmature_nodes.context`):
    the running invocation's observers and the node step's lineage. Pass them
    to send events elsewhere (a unit test calling the middleware directly).
    """

    __slots__ = ("_catch", "degraded_update", "emit", "event_name", "lineage", "on_caught",
                 "predicate")

    def __init__(
        self,
        *,
        degraded_update: Mapping[str, Any] | Callable[[Any], Mapping[str, Any]],
        event_name: str,
        catch: Collection[str] | None = None,
        predicate: Callable[[Exception], bool] | None = None,
        on_caught: Callable[[Exception], Awaitable[None]] | None = None,
        emit: Emitter | None = None,
        lineage: LineageSource | None = None,
    ) -> None:
        if not isinstance(event_name, str) or not event_name:
            raise ValueError("event_name is required: name this catch site")
        if isinstance(catch, str):
            raise TypeError("catch is a set of categories, not a single string")
        self.degraded_update = degraded_update
        self.event_name = event_name
        self._catch = frozenset(catch) if catch is not None else None
        self.predicate = predicate
        self.on_caught = on_caught
        self.emit = emit
        self.lineage = lineage

    @property
    def catch(self) -> frozenset[str] | None:
        """The categories this middleware catches (``None``: no category gate)."""
        return self._catch

    def __repr__(self) -> str:
        return f"FailureIsolationMiddleware(event_name={self.event_name!r})"

    async def __call__(self, value: Any, next: Callable[[Any], Awaitable[Any]], /) -> Any:
        record = GaveUp()  # a retry inside notes which attempt it gave up on
        token = gave_up.set(record)
        try:
            return await next(value)
        except Exception as exc:
            caught: Exception = exc
        finally:
            gave_up.reset(token)
        return await self._degrade(value, caught, record)

    async def _degrade(self, value: Any, exc: Exception, record: GaveUp) -> Any:
        chain: CauseChain | None = None
        if self._catch is not None:
            chain = classify_causes(exc)
            if chain.category is None or chain.category not in self._catch:
                raise exc
        if self.predicate is not None and not self.predicate(exc):
            raise exc
        update = self.degraded_update
        resolved = update(value) if callable(update) else update
        await self._report(value, resolved, chain or classify_causes(exc), record.attempt_of(exc))
        if self.on_caught is not None:
            await self.on_caught(exc)
        return resolved

    async def _report(self, state: Any, update: Mapping[str, Any], chain: CauseChain,
                      failed_attempt: int | None) -> None:
        lineage = (self.lineage or _running_lineage)()
        if failed_attempt is not None and isinstance(lineage, Lineage):
            # A retry inside gave up: the wrapped node's failed attempt, not the
            # attempt index the retry restored on its way out (pipeline-utilities §6.3).
            lineage = dataclasses.replace(lineage, attempt_index=failed_attempt)
        event = FailureIsolationEvent(self.event_name, lineage, state, update, chain)
        if self.emit is None:
            emit_framework_event(event)
            return
        result = self.emit(event)
        if isinstance(result, Awaitable):
            await result
