"""Observer registration and delivery, off the execution path (graph-engine §6).

Each observed invocation gets its own delivery queue and one worker task that
delivers the queue's events strictly in order: event *e* reaches every
subscribed observer (in the spec's order) before event *e+1* reaches any. The
graph never awaits the worker; it appends to a deque and, if the worker is
idle, sets an :class:`anyio.Event`. An observer that raises is reported with
:func:`warnings.warn` (:class:`ObserverErrorWarning`) and delivery goes on.

Where the worker runs (structured concurrency, no hidden background tasks):

- inside ``async with graph:`` the graph owns a task group for the lifetime of
  the block; workers are started there and ``invoke()`` returns as soon as the
  graph finishes, while delivery continues. Leaving the block waits for
  delivery (call :meth:`Delivery.drain` with a timeout first to bound it).
- otherwise ``invoke()`` opens a task group of its own around the run and
  returns once its events are delivered, so a short script loses nothing.

Either way no task outlives the block, the invocation, or a timed-out drain.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec

from .events import INSTANCE_PHASE, INVOCATION_PHASES, PHASES

__all__ = [
    "DrainSummary",
    "Observer",
    "ObserverErrorWarning",
    "Subscription",
    "subscribe",
]

Observer = Callable[[Any], Awaitable[None]]
"""``async def observer(event) -> None``. Plain functions are accepted and wrapped."""


class ObserverErrorWarning(RuntimeWarning):
    """An observer raised while receiving an event; the graph run was not affected."""


class DrainSummary(msgspec.Struct, frozen=True):
    """Outcome of :meth:`drain` / :meth:`drain_events_for`."""

    undelivered_count: int = 0
    timeout_reached: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class Subscription:
    """An observer plus the node-event phases it wants (default: both)."""

    fn: Observer
    phases: frozenset[str]
    original: Any


def subscribe(observer: Any, phases: Iterable[str] | None = None) -> Subscription:
    """Wrap ``observer`` with a phase subscription (``{"started"}``, ``{"completed"}``).

    Without ``phases``, an observer object's ``observer_phases`` attribute (if
    any) is used: how an observer opts in to ``"fan_out_instance"`` events.
    """
    if isinstance(observer, Subscription):
        if phases is None:
            return observer
        observer = observer.original
    if not callable(observer):
        raise TypeError(f"observer must be callable, got {observer!r}")
    if phases is None:
        phases = getattr(observer, "observer_phases", None)
    if phases is None:
        wanted = PHASES
    else:
        if isinstance(phases, str):
            raise TypeError("phases must be a collection of phase names, not a string")
        wanted = frozenset(phases)
        if not wanted:
            raise ValueError("phases must not be empty (an observer would receive nothing)")
        unknown = wanted - PHASES - INVOCATION_PHASES - {"suspended", INSTANCE_PHASE}
        if unknown:
            raise ValueError(f"unknown phase(s) {sorted(unknown)}; use 'started'/'completed'")
    return Subscription(_as_async(observer), wanted, observer)


def _as_async(fn: Any) -> Observer:
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004
    ):
        return fn  # type: ignore[no-any-return]

    async def call(event: Any) -> None:
        result = fn(event)
        if inspect.isawaitable(result):
            await result

    return call


def check_timeout(timeout: float | None) -> None:
    """Reject negative / NaN timeouts before any work (``TypeError`` for non-numbers)."""
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r}")
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"timeout must be a non-negative number of seconds, got {timeout!r}")


class Invocation:
    """Delivery state of one observed invocation: its queue, counters and worker."""

    __slots__ = (
        "_queue", "_waiters", "_wakeup", "closed", "dead", "delivered",
        "emitted", "finished", "invocation_id", "scope",
    )

    def __init__(self, invocation_id: str) -> None:
        self.invocation_id = invocation_id
        self._queue: deque[tuple[Any, tuple[Subscription, ...]]] = deque()
        self._wakeup: anyio.Event | None = None
        self._waiters: list[tuple[int, anyio.Event]] = []
        self.emitted = 0
        self.delivered = 0
        self.closed = False  # the run is over: no more events will come
        self.dead = False  # the worker was cancelled: events are dropped
        self.finished = anyio.Event()
        self.scope = anyio.CancelScope()

    # --- producer side (the graph run; synchronous, never blocks) -------------

    def emit(self, event: Any, targets: tuple[Subscription, ...]) -> None:
        """Queue ``event`` for ``targets`` (dropped once the worker is dead)."""
        if self.dead:
            return
        self._queue.append((event, targets))
        self.emitted += 1
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set()

    def close(self) -> None:
        """The run is over: the worker ends once the queue is delivered."""
        self.closed = True
        self._kick()

    def _kick(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set()

    # --- consumer side ----------------------------------------------------------

    async def run(self, on_exit: Callable[[Invocation], None]) -> None:
        """The worker: deliver until the run is closed and the queue is empty."""
        try:
            with self.scope:
                queue = self._queue
                popleft = queue.popleft
                waiters = self._waiters  # the list object; _release keeps it
                while True:
                    while queue:
                        # Inlined delivery (the hot loop: one pass per event, no helper
                        # call); the event leaves the queue before it is delivered, and
                        # counts as delivered once every observer has had it.
                        event, targets = popleft()
                        phase = getattr(event, "phase", None)
                        for sub in targets:
                            if phase is None or phase in sub.phases:
                                try:
                                    await sub.fn(event)
                                except Exception as exc:
                                    _warn(sub, event, exc)
                        self.delivered += 1
                        if waiters:
                            self._release()
                    if self.closed:
                        break
                    self._wakeup = anyio.Event()
                    await self._wakeup.wait()
        finally:
            self.dead = True
            self._queue.clear()
            for _, waiter in self._waiters:
                waiter.set()
            self._waiters.clear()
            on_exit(self)
            self.finished.set()

    def _release(self) -> None:
        keep = []
        for target, waiter in self._waiters:
            if self.delivered >= target:
                waiter.set()
            else:
                keep.append((target, waiter))
        self._waiters[:] = keep  # in place: the worker holds this list

    async def wait_delivered(self, timeout: float | None) -> DrainSummary:  # noqa: ASYNC109
        """Wait until every event emitted so far is delivered (snapshot semantics)."""
        target = self.emitted
        if self.delivered >= target or self.dead:
            return DrainSummary(max(0, target - self.delivered) if self.dead else 0, False)
        waiter = anyio.Event()
        self._waiters.append((target, waiter))
        with anyio.move_on_after(timeout) as scope:
            await waiter.wait()
        if scope.cancelled_caught and self.delivered < target:
            return DrainSummary(target - self.delivered, True)
        return DrainSummary(max(0, target - self.delivered) if self.dead else 0, False)


def _warn(sub: Subscription, event: Any, exc: Exception) -> None:
    warnings.warn(
        ObserverErrorWarning(
            f"observer {sub.original!r} raised {type(exc).__name__}: {exc} "
            f"(event {type(event).__name__} {getattr(event, 'namespace', '')})"
        ),
        stacklevel=1,
    )


class Delivery:
    """A compiled graph's delivery runner and its registry of live invocations."""

    def __init__(self) -> None:
        self._active: dict[int, Invocation] = {}
        self._by_id: dict[str, Invocation] = {}
        self._tg: Any = None  # anyio TaskGroup while ``async with graph`` is open

    @property
    def running(self) -> bool:
        """Whether the runner (``async with graph:``) is open."""
        return self._tg is not None

    async def open(self) -> None:
        """Enter the runner: invocations deliver in its task group from now on."""
        if self._tg is not None:
            raise RuntimeError("this graph's delivery runner is already open")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg

    async def close(self, exc_info: tuple[Any, Any, Any]) -> None:
        """Leave the runner: wait for delivery (clean exit) or cancel it (error exit).

        The block's own exception is never passed into the task group, so it
        propagates unchanged (not wrapped in an exception group).
        """
        tg, self._tg = self._tg, None
        try:
            if exc_info[0] is None:
                await self.drain(None)
        finally:
            if self._active:
                for inv in list(self._active.values()):
                    inv.dead = True
                    inv.scope.cancel()
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)

    def register(self, inv: Invocation) -> None:
        """Track ``inv`` for drains (by identity and by ``invocation_id``)."""
        self._active[id(inv)] = inv
        self._by_id[inv.invocation_id] = inv

    def _forget(self, inv: Invocation) -> None:
        self._active.pop(id(inv), None)
        if self._by_id.get(inv.invocation_id) is inv:
            del self._by_id[inv.invocation_id]

    def start(self, inv: Invocation, tg: Any) -> None:
        """Register ``inv`` and start its worker in ``tg`` (or the runner's group)."""
        self.register(inv)
        (tg or self._tg).start_soon(inv.run, self._forget)

    async def drain(self, timeout: float | None) -> DrainSummary:  # noqa: ASYNC109
        """See :meth:`CompiledGraph.drain`."""
        check_timeout(timeout)
        snapshot = list(self._active.values())
        if not snapshot:
            return DrainSummary()
        with anyio.move_on_after(timeout):
            for inv in snapshot:
                await inv.finished.wait()
        pending = [inv for inv in snapshot if not inv.finished.is_set()]
        if not pending:
            return DrainSummary()
        undelivered = sum(max(0, inv.emitted - inv.delivered) for inv in pending)
        for inv in pending:
            inv.dead = True
            inv.scope.cancel()
        with anyio.CancelScope(shield=True):
            for inv in pending:
                await inv.finished.wait()
        return DrainSummary(undelivered, True)

    async def drain_events_for(
        self, invocation_id: str, timeout: float | None  # noqa: ASYNC109
    ) -> DrainSummary:
        """See :meth:`CompiledGraph.drain_events_for`."""
        check_timeout(timeout)
        inv = self._by_id.get(invocation_id)
        if inv is None:
            return DrainSummary()
        return await inv.wait_delivered(timeout)
