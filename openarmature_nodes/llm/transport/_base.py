"""The transport seam: the only place where bytes meet sockets.

The provider builds a request with the sans-IO wire mapping (pure functions:
request -> bytes, ``(status, headers, body)`` -> Response or categorized
error) and hands the bytes to a :class:`Transport`. A transport only moves
bytes. It knows nothing of OpenAI, JSON or error categories; its failures are
the small :class:`TransportError` family below, which the provider maps to
``ProviderUnavailable``.

Two implementations ship: :class:`~openarmature_nodes.llm.transport.HttpxTransport`
(general purpose: TLS, proxies, anything httpx supports) and the fast HTTP/1.1
keep-alive pool on anyio streams with the httptools parser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import msgspec

__all__ = [
    "RawResponse",
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
