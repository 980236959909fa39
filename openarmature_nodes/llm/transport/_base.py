"""The transport seam: the only place where bytes meet sockets.

The provider builds a request with the sans-IO wire mapping (pure functions:
request -> bytes, ``(status, headers, body)`` -> Response or categorized
error) and hands the bytes to a :class:`Transport`. A transport only moves
bytes. It knows nothing of OpenAI, JSON or error categories; its failures are
the small :class:`TransportError` family below, which the provider maps to
``ProviderUnavailable``.

Two implementations ship: :class:`~openarmature_nodes.llm.transport.HttpxTransport`
(general purpose: TLS, proxies, anything httpx supports) and the fast HTTP/1.1
keep-alive pool on non-blocking sockets (driven by anyio) with the httptools parser.

Streaming (``complete(stream=True)``) needs one more method, ``stream()``,
described by :class:`StreamingTransport`. It is a separate protocol so that a
custom transport written for whole responses stays a valid :class:`Transport`;
the provider checks for ``stream()`` before sending a streaming request and
says so clearly when it is missing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol, Self, runtime_checkable

import msgspec

__all__ = [
    "ClosesOnExit",
    "RawResponse",
    "StreamingResponse",
    "StreamingTransport",
    "Timeouts",
    "Transport",
    "TransportConnectError",
    "TransportError",
    "TransportProtocolError",
    "TransportTimeout",
]


class Timeouts(msgspec.Struct, frozen=True):
    """Per-phase timeouts in seconds; ``None`` waits forever.

    ``connect``: establishing a TCP (and TLS) connection. ``read``: the longest
    wait for the next bytes of a response (LLM replies can be slow: the default
    is generous). ``write``: sending the request. ``pool``: waiting for a free
    connection when the pool is at its limit.
    """

    connect: float | None = 10.0
    read: float | None = 600.0
    write: float | None = 60.0
    pool: float | None = 60.0


class RawResponse:
    """A complete HTTP response as bytes: status, headers (names lower-cased),
    and the whole body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"RawResponse(status={self.status}, body={len(self.body)} bytes)"


class ClosesOnExit:
    """``async with transport: ...`` closes the transport (:meth:`aclose`) on the way out.

    Mixed into the shipped transports; a custom one needs only :meth:`aclose`.
    """

    __slots__ = ()

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class TransportError(Exception):
    """A transport-level failure: no usable HTTP response was obtained."""


class TransportConnectError(TransportError):
    """The connection could not be established (refused, DNS, TLS)."""


class TransportTimeout(TransportError):
    """A connect, read, write or pool timeout elapsed."""


class TransportProtocolError(TransportError):
    """The peer broke HTTP: a malformed response, a connection closed mid-response,
    or a body larger than the configured cap."""


@runtime_checkable
class Transport(Protocol):
    """Moves one HTTP request and its response.

    ``url`` is absolute. ``headers`` are sent as given (the transport adds
    ``Host``, ``Content-Length`` and connection management headers). Concurrent
    calls must proceed concurrently (never serialized), sharing one connection
    pool. Cancellation must propagate and must never leak a connection.
    """

    async def request(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
    ) -> RawResponse: ...

    async def aclose(self) -> None: ...


class StreamingResponse(Protocol):
    """A response whose body is still arriving.

    ``status`` and ``headers`` (names lower-cased) are known when the context
    of :meth:`StreamingTransport.stream` is entered. The body is read either
    piece by piece with :meth:`aiter_bytes` (pieces as they come off the
    wire, transfer-decoded, never empty) or all at once with :meth:`aread`.
    Read failures raise the :class:`TransportError` family.
    """

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def aread(self) -> bytes: ...


@runtime_checkable
class StreamingTransport(Transport, Protocol):
    """A :class:`Transport` that can also hand out a response while its body
    is still arriving (Server-Sent Events for ``complete(stream=True)``)::

        async with transport.stream("POST", url, headers, body) as response:
            if response.status != 200:
                error_body = await response.aread()
            async for piece in response.aiter_bytes():
                ...

    Entering the context sends the request and waits for the status line and
    headers. Leaving it releases the connection *whatever happened*: a body
    read to its end lets the connection be reused; a body left unread
    (``break``, an exception, cancellation) closes the connection, because
    it is still carrying the rest of the response.
    """

    def stream(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
    ) -> AbstractAsyncContextManager[StreamingResponse]: ...
