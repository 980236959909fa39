"""Client-side backpressure: at most N calls in flight per endpoint.

vLLM does not answer 429 when it is busy: it queues. A 100,000-item fan-out
through a provider would otherwise open (or queue for) 100,000 requests
against one server, each holding memory on both sides and each eating into
its own deadline while it waits there. :class:`EndpointLimiter` bounds the
calls in flight to one endpoint (``host:port``) in this process; every
:class:`~openarmature_nodes.llm.OpenAIProvider` of that endpoint shares the
same limiter, whichever model or transport it uses. A call over the limit
waits (first come, first served) for a free place; the wait counts against
the call's deadline.

The default limit, :data:`DEFAULT_MAX_IN_FLIGHT` (256), matches vLLM's default
``--max-num-seqs``: more concurrent requests than that would only queue on
the server. Set it per endpoint with ``OpenAIProvider(max_in_flight=N)`` or
:meth:`EndpointLimiter.for_endpoint` ``(...).limit = N``.

The limiter is a plain counter plus a FIFO of waiters, not an
``anyio.CapacityLimiter``: it is shared process-wide and must work for any
event loop that uses it (an anyio limiter belongs to one loop), and taking a
free place costs two integer operations, no await.
"""

from __future__ import annotations

from collections import deque
from typing import ClassVar

import anyio

__all__ = ["DEFAULT_MAX_IN_FLIGHT", "EndpointLimiter"]

DEFAULT_MAX_IN_FLIGHT = 256


class _Waiter:
    __slots__ = ("event", "granted")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.granted = False


class EndpointLimiter:
    """The in-flight bound of one endpoint (see the module docstring)."""

    __slots__ = ("_waiters", "in_flight", "key", "limit")

    _registry: ClassVar[dict[str, EndpointLimiter]] = {}

    def __init__(self, key: str, limit: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        _check_limit(limit)
        self.key = key
        self.limit = limit
        self.in_flight = 0
        self._waiters: deque[_Waiter] = deque()

    @classmethod
    def for_endpoint(cls, key: str, limit: int | None = None) -> EndpointLimiter:
        """The process-wide limiter of ``key`` (``"host:port"``); ``limit``, when
        given, becomes its limit (for every provider of that endpoint)."""
        found = cls._registry.get(key)
        if found is None:
            found = cls._registry[key] = cls(key)
        if limit is not None:
            _check_limit(limit)
            found.limit = limit
        return found

    @property
    def waiting(self) -> int:
        """Calls waiting for a place."""
        return len(self._waiters)

    def __repr__(self) -> str:
        return (
            f"EndpointLimiter({self.key!r}, limit={self.limit}, in_flight={self.in_flight}, "
            f"waiting={self.waiting})"
        )

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
        while waiters and self.in_flight <= self.limit:
            waiter = waiters.popleft()
            waiter.granted = True
            waiter.event.set()  # the place passes on: in_flight unchanged
            return
        self.in_flight -= 1


def _check_limit(limit: object) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"max_in_flight must be an int, got {limit!r}")
    if limit < 1:
        raise ValueError(f"max_in_flight must be at least 1, got {limit}")
