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

The limiter is a plain counter plus a FIFO of waiters
(:class:`~openarmature_nodes.llm.transport._limiter.InFlightLimiter`), not an
``anyio.CapacityLimiter``: it is shared process-wide and must work for any
event loop that uses it, and taking a free place costs two integer
operations, no await.
"""

from __future__ import annotations

from typing import ClassVar

from .transport._limiter import InFlightLimiter, check_limit

__all__ = ["DEFAULT_MAX_IN_FLIGHT", "EndpointLimiter"]

DEFAULT_MAX_IN_FLIGHT = 256


class EndpointLimiter(InFlightLimiter):
    """The in-flight bound of one endpoint (see the module docstring)."""

    __slots__ = ("key",)

    _registry: ClassVar[dict[str, EndpointLimiter]] = {}

    def __init__(self, key: str, limit: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        super().__init__(limit)
        self.key = key

    @classmethod
    def for_endpoint(cls, key: str, limit: int | None = None) -> EndpointLimiter:
        """The process-wide limiter of ``key`` (``"host:port"``); ``limit``, when
        given, becomes its limit (for every provider of that endpoint)."""
        found = cls._registry.get(key)
        if found is None:
            found = cls._registry[key] = cls(key)
        if limit is not None:
            check_limit(limit)
            found.limit = limit
        return found

    def __repr__(self) -> str:
        return (
            f"EndpointLimiter({self.key!r}, limit={self.limit}, in_flight={self.in_flight}, "
            f"waiting={self.waiting})"
        )
