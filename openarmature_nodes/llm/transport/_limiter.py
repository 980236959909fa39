"""A counting limit on requests in flight, with a FIFO of waiters.

A plain counter plus a queue of ``anyio.Event`` waiters rather than an
``anyio.CapacityLimiter``: it may be shared process-wide and must work for
whichever event loop uses it (an anyio limiter belongs to one loop), and
taking a free place costs two integer operations and no await. Used by the
httpx transport (to keep httpcore's pool queue empty, see
``httpx_transport.py``) and, shared per endpoint, by the provider
(:mod:`openarmature_nodes.llm.limits`).
"""

from __future__ import annotations

from collections import deque

import anyio

__all__ = ["InFlightLimiter", "check_limit"]


class _Waiter:
    __slots__ = ("event", "granted")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.granted = False


class InFlightLimiter:
    """At most ``limit`` holders at once; the others wait, first come first served."""

    __slots__ = ("_waiters", "in_flight", "limit")

    def __init__(self, limit: int) -> None:
        check_limit(limit)
        self.limit = limit
        self.in_flight = 0
        self._waiters: deque[_Waiter] = deque()

    @property
    def waiting(self) -> int:
        """Callers waiting for a place."""
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take a free place without waiting; ``False`` when none is free."""
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return True
        return False

    async def acquire(self) -> None:
        """Take a place, waiting for one if all ``limit`` are taken."""
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return
        waiter = _Waiter()
        self._waiters.append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                self.release()  # handed a place while being cancelled: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a place back (to the first waiter, if any)."""
        waiters = self._waiters
        if waiters and self.in_flight <= self.limit:
            waiter = waiters.popleft()
            waiter.granted = True
            waiter.event.set()  # the place passes on: in_flight unchanged
            return
        self.in_flight -= 1


def check_limit(limit: object) -> None:
    """``TypeError``/``ValueError`` unless ``limit`` is an int >= 1."""
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"max_in_flight must be an int, got {limit!r}")
    if limit < 1:
        raise ValueError(f"max_in_flight must be at least 1, got {limit}")
