"""``FastTransport.stream()``: a response handed out while its body arrives.

Entering :class:`FastStream` encodes the request with the transport's own
encoder, takes a pooled connection (or opens one), sends the request and
reads the response head (a stale keep-alive connection is replaced once,
as for whole responses). The body is then read piece by piece as the caller
asks for it (:meth:`Connection.receive_body
<openarmature_nodes.llm.transport._conn.Connection.receive_body>`). Leaving
gives the connection back to the pool when its body was read to the end and
keep-alive allows it, and closes it otherwise: after an early exit, an error
or cancellation it may still be carrying the rest of the response.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING

from ._base import Timeouts, TransportProtocolError
from ._conn import Connection
from ._pool import Pool
from ._stream_context import StreamContext

if TYPE_CHECKING:
    from .fast import FastTransport

__all__ = ["FastStream"]

_INF = float("inf")


class FastStream(StreamContext["FastTransport", "_FastStreamingResponse"]):
    """The ``async with`` of :meth:`FastTransport.stream`."""

    __slots__ = ("_deadline",)

    def __init__(
        self,
        owner: FastTransport,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        deadline: float | None = None,
    ) -> None:
        super().__init__(owner, method, url, headers, body)
        self._deadline = _INF if deadline is None else deadline

    async def _open(
        self, method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes | None
    ) -> _FastStreamingResponse:
        owner = self._owner
        pool, data, head_only = owner._encode(method, url, headers, body)
        if head_only:
            raise ValueError("stream() does not do HEAD requests; use request()")
        # The connection keeps the deadline (``call_deadline``) while the body
        # is read: the watchdog bounds every wait by it, until aclose().
        conn, _ = await owner._exchange(pool, Connection.open_stream, data, False, self._deadline)
        return _FastStreamingResponse(pool, conn, owner._timeouts)


class _FastStreamingResponse:
    """A :class:`~openarmature_nodes.llm.transport.StreamingResponse` on one
    pooled connection, which it gives back (or closes) in :meth:`aclose`."""

    __slots__ = ("_conn", "_pool", "_timeouts", "headers", "status")

    def __init__(self, pool: Pool, conn: Connection, timeouts: Timeouts) -> None:
        self._pool = pool
        self._conn: Connection | None = conn
        self._timeouts = timeouts
        self.status: int = conn.status
        self.headers: Mapping[str, str] = conn.headers

    async def _next(self) -> bytes:
        conn = self._conn
        if conn is None:
            raise TransportProtocolError("the response was closed")
        return await conn.receive_body(self._timeouts)

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        return _Body(self)

    async def aread(self) -> bytes:
        pieces = []
        while piece := await self._next():
            pieces.append(piece)
        return b"".join(pieces)

    async def aclose(self) -> None:
        """Give the connection back if its body was read to the end, else close it."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.call_deadline = _INF
        pool = self._pool
        if not (conn.end_stream() and pool.release(conn)):
            pool.discard(conn)
            await conn.aclose()

    def __repr__(self) -> str:
        return f"<streaming response {self.status}>"


class _Body:
    """The body of a :class:`_FastStreamingResponse`, piece by piece."""

    __slots__ = ("_response",)

    def __init__(self, response: _FastStreamingResponse) -> None:
        self._response = response

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        piece = await self._response._next()
        if not piece:
            raise StopAsyncIteration
        return piece
