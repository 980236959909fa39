"""The fast transport: HTTP/1.1 keep-alive pools on anyio-driven sockets + httptools.

:class:`FastTransport` is for the hot path: many concurrent requests to one
plain-HTTP endpoint (a vLLM or llama.cpp service inside a cluster). It does
one thing, HTTP/1.1 with keep-alive, and does it with as little Python per
request as possible:

* the request is encoded with a single ``bytes.join`` (the request-line
  prefix and ``Host`` header are computed once per URL and cached);
* the response is parsed by llhttp (through ``httptools``), with the header
  names lower-cased into a dict once, while parsing;
* a connection is taken from a per-origin LIFO idle list in O(1), with no
  socket probing, and given back with no await.

What it does not do: TLS (``https://`` URLs are refused; use the httpx
transport), proxies, HTTP/2, compression (no ``Accept-Encoding`` is sent; the
body is returned as received) or cookies.

Reliability rules (see ``_pool.py`` and ``_conn.py`` for the details):

* at most ``max_connections`` connections per origin; further requests wait
  up to ``timeouts.pool`` seconds for one to become free;
* a connection is reused only after a complete response that allowed
  keep-alive; idle connections expire after ``keepalive_expiry`` seconds (or
  sooner if the server announces ``Keep-Alive: timeout=N``);
* a request is never sent twice. Before reusing an idle connection it is
  checked for a pending end-of-stream (the server closed it while idle);
  such a connection, or one whose write fails part-way, is replaced by a
  fresh one and the request goes there (the server cannot have acted on
  it). A reused connection that closes after the whole request was written
  and before any response byte raises ``TransportRequestMaybeSent`` (the
  server may have received it: it is not re-sent; the provider reports it
  as transient ``provider_unavailable``). Idle connections expire before
  the server would close them (``keepalive_expiry``, and one second under
  a ``Keep-Alive: timeout=N`` the server announces), so that case is rare;
* on any error or cancellation the connection is closed, never pooled;
* ``stream()`` hands the response out once its head has arrived; its body
  is read as the caller asks for it. A body read to its end gives the
  connection back to the pool; one left unread (an early exit, an error,
  cancellation) closes the connection;
* read and write timeouts are enforced by one watchdog thread per process
  (``_watchdog.py``), not by a cancel scope per request, which would cost
  more than the rest of the request's own Python; connect and pool timeouts
  use ordinary anyio timeouts (they are rare: once per connection, or only
  when the pool is full).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar
from urllib.parse import urlsplit

from ._base import ClosesOnExit, RawResponse, Timeouts
from ._conn import Connection, StaleConnection
from ._fast_stream import FastStream
from ._pool import Pool, TransportClosed

__all__ = ["FastTransport", "TransportClosed"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_MANAGED = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})
_CACHE_LIMIT = 512
_END = b"\r\n"
_INF = float("inf")
_R = TypeVar("_R")


def _route_prefix(target: str, host_header: str) -> bytes:
    return f" {target} HTTP/1.1\r\nHost: {host_header}\r\n".encode("ascii")


class FastTransport(ClosesOnExit):
    """An HTTP/1.1 client transport for plain-HTTP endpoints (see the module).

    ``timeouts``: connect/read/write/pool limits (:class:`Timeouts`).
    ``max_connections``: the most connections open to one origin at once.
    ``max_response_bytes``: a response body (or all the pieces of a streamed
    one) larger than this fails with ``TransportResponseTooLarge`` while it is
    being read (64 MiB by default).
    ``keepalive_expiry``: seconds an idle connection may be kept for reuse
    (``None``: until the server closes it). The default, 4 s, stays under the
    5 s idle timeout of uvicorn (and so of vLLM), making the keep-alive race
    rare; it is handled anyway.

    Use one instance for many requests and close it with :meth:`aclose`;
    later requests raise :class:`TransportClosed` (a ``TransportConnectError``).
    """

    __slots__ = (
        "_closed",
        "_header_names",
        "_heads",
        "_keepalive_expiry",
        "_max_connections",
        "_max_response_bytes",
        "_methods",
        "_pools",
        "_routes",
        "_timeouts",
    )

    def __init__(
        self,
        *,
        timeouts: Timeouts | None = None,
        max_connections: int = 100,
        max_response_bytes: int = 64 * 1024 * 1024,
        keepalive_expiry: float | None = 4.0,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if max_response_bytes < 0:
            raise ValueError("max_response_bytes must not be negative")
        if keepalive_expiry is not None and keepalive_expiry < 0:
            raise ValueError("keepalive_expiry must not be negative")
        self._timeouts = timeouts if timeouts is not None else Timeouts()
        self._max_connections = max_connections
        self._max_response_bytes = max_response_bytes
        self._keepalive_expiry = keepalive_expiry
        self._pools: dict[tuple[str, int], Pool] = {}
        self._routes: dict[str, tuple[Pool, bytes]] = {}
        self._methods: dict[str, bytes] = {}
        self._header_names: set[str] = set()
        # Encoded header blocks of tuple headers (hashable, immutable): a
        # caller passing the same headers every time encodes them once.
        self._heads: dict[tuple[tuple[str, str], ...], bytes] = {}
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"FastTransport(max_connections={self._max_connections}, "
            f"connections={self.connection_count}, idle={self.idle_count})"
        )

    @property
    def connection_count(self) -> int:
        """Open connections (idle or in use) across all origins."""
        return sum(len(pool.conns) for pool in self._pools.values())

    @property
    def idle_count(self) -> int:
        """Open connections waiting in the pools for reuse."""
        return sum(len(pool.idle) for pool in self._pools.values())

    # -- encoding --------------------------------------------------------------

    def _route(self, url: str) -> tuple[Pool, bytes]:
        """Parse and validate ``url``; cache its pool and request-line prefix."""
        if self._closed:
            raise TransportClosed("the transport is closed")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"invalid URL: {exc}") from None
        if parts.scheme != "http":
            raise ValueError(
                f"FastTransport speaks plain http only, not {parts.scheme or 'a relative URL'!r}; "
                "use HttpxTransport for https"
            )
        host = parts.hostname
        if not host:
            raise ValueError("URL has no host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("credentials in the URL are not supported; send a header")
        target = parts.path or "/"
        if parts.query:
            target = f"{target}?{parts.query}"
        if not target.isascii() or any(c in target for c in " \r\n\t\x00#"):
            raise ValueError("URL path must be ASCII without spaces or control characters")
        port = port or 80
        host_header = f"[{host}]" if ":" in host else host
        if port != 80:
            host_header = f"{host_header}:{port}"
        pool = self._pools.get((host, port))
        if pool is None:
            pool = self._pools[(host, port)] = Pool(
                host,
                port,
                max_connections=self._max_connections,
                keepalive_expiry=self._keepalive_expiry,
                max_body=self._max_response_bytes,
            )
        if len(self._routes) >= _CACHE_LIMIT:
            self._routes.clear()
        route = self._routes[url] = (pool, _route_prefix(target, host_header))
        return route

    def _method(self, method: str) -> bytes:
        if not _TOKEN.fullmatch(method):
            raise ValueError(f"invalid HTTP method {method!r}")
        if len(self._methods) >= _CACHE_LIMIT:
            self._methods.clear()
        encoded = self._methods[method] = method.encode("ascii")
        return encoded

    def _check_names(self, headers: Sequence[tuple[str, str]]) -> None:
        known = self._header_names
        for name, _ in headers:
            if name in known:
                continue
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"invalid header name {name!r}")
            if name.lower() in _MANAGED:
                raise ValueError(f"header {name!r} is set by the transport; do not pass it")
            if len(known) >= _CACHE_LIMIT:
                known.clear()
            known.add(name)

    def _encode_headers(self, headers: Sequence[tuple[str, str]]) -> bytes:
        self._check_names(headers)
        text = "".join([f"{name}: {value}\r\n" for name, value in headers])
        count = len(headers)
        if text.count("\n") != count or text.count("\r") != count:
            bad = next(n for n, v in headers if "\r" in v or "\n" in v)
            raise ValueError(f"value of header {bad!r} contains CR or LF")
        try:
            return text.encode("latin-1")
        except UnicodeEncodeError:
            bad = next(n for n, v in headers if not v.isascii() and not _is_latin1(v))
            raise ValueError(f"value of header {bad!r} is not latin-1 text") from None

    # -- the request -----------------------------------------------------------

    async def request(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        *,
        deadline: float | None = None,
    ) -> RawResponse:
        """Send one request and return the whole response.

        ``deadline``: a ``time.monotonic()`` instant by which the whole
        exchange (a free connection, connecting, sending, the whole response)
        must be over, else ``TransportDeadline``. It is enforced by the same
        watchdog as the read and write timeouts, so it costs no cancel scope
        (the provider passes its per-call deadline this way).

        Raises ``ValueError`` for a request that cannot be sent (bad URL,
        method or header; nothing is sent), :class:`TransportClosed` after
        :meth:`aclose`, and the ``TransportError`` family for network or
        protocol failures.
        """
        pool, data, head_only = self._encode(method, url, headers, body)
        conn, response = await self._exchange(
            pool, Connection.roundtrip, data, head_only, _INF if deadline is None else deadline
        )
        conn.call_deadline = _INF
        if not (conn.reusable and pool.release(conn)):
            await self._drop(pool, conn)
        return response

    def stream(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        *,
        deadline: float | None = None,
    ) -> FastStream:
        """Send one request; hand out the response while its body arrives.

        ``async with transport.stream(...) as response:`` (see
        :class:`~openarmature_nodes.llm.transport.StreamingTransport`). Bad
        requests raise ``ValueError`` when the context is entered, before
        anything is sent.

        ``deadline``: as for :meth:`request`, a ``time.monotonic()`` instant
        by which the whole exchange must be over, the body included: a wait
        for the connection, the head or the next piece of the body that would
        end after it fails with ``TransportDeadline``.
        """
        return FastStream(self, method, url, headers, body, deadline)

    async def _exchange(
        self,
        pool: Pool,
        send: Callable[[Connection, bytes, bool, Timeouts], Awaitable[_R]],
        data: bytes,
        head_only: bool,
        deadline: float = float("inf"),
    ) -> tuple[Connection, _R]:
        """``send(conn, data, head_only, timeouts)`` on a pooled (or new)
        connection; returns the connection (the caller gives it back or
        closes it) and what ``send`` returned. On any failure the connection
        is closed. If a *reused* connection turns out stale before the
        request was fully written (see :class:`StaleConnection`), the request
        goes, once, on a fresh connection in the same slot: the server cannot
        have acted on an incomplete request."""
        timeouts = self._timeouts
        conn = pool.take()
        if conn is None:
            conn = await pool.acquire(timeouts, deadline)
            if conn is None:
                conn = await pool.connect(timeouts, deadline)
        conn.call_deadline = deadline
        try:
            return conn, await send(conn, data, head_only, timeouts)
        except StaleConnection:
            pass
        except BaseException:
            await self._drop(pool, conn)
            raise
        conn = await self._replace(pool, conn, deadline)
        conn.call_deadline = deadline
        try:
            return conn, await send(conn, data, head_only, timeouts)
        except BaseException:
            await self._drop(pool, conn)
            raise

    async def _replace(self, pool: Pool, conn: Connection, deadline: float) -> Connection:
        """A fresh connection in the slot of ``conn``, which went stale."""
        pool.conns.discard(conn)  # its slot is kept for the replacement
        try:
            await conn.aclose()
        except BaseException:
            pool.free_slot()
            raise
        return await pool.connect(self._timeouts, deadline)

    def _encode(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
    ) -> tuple[Pool, bytes, bool]:
        """-> (the origin's pool, the request bytes, whether it is a HEAD)."""
        route = self._routes.get(url)
        pool, prefix = route if route is not None else self._route(url)
        verb = self._methods.get(method) or self._method(method)
        if type(headers) is tuple:
            try:
                head = self._heads.get(headers)
            except TypeError:  # unhashable items inside
                head = None
            if head is None:
                head = self._encode_headers(headers)
                if len(self._heads) >= _CACHE_LIMIT:
                    self._heads.clear()
                with contextlib.suppress(TypeError):
                    self._heads[headers] = head
        else:
            head = self._encode_headers(headers) if headers else b""
        if body is not None:
            length = b"Content-Length: %d\r\n\r\n" % len(body)
            data = b"".join((verb, prefix, head, length, body))
        elif verb in _BODY_METHODS:
            data = b"".join((verb, prefix, head, b"Content-Length: 0\r\n\r\n"))
        else:
            data = b"".join((verb, prefix, head, _END))
        return pool, data, verb == b"HEAD"

    @staticmethod
    async def _drop(pool: Pool, conn: Connection) -> None:
        pool.discard(conn)
        await conn.aclose()

    async def aclose(self) -> None:
        """Close every idle connection; later requests raise :class:`TransportClosed`.

        Requests in flight finish normally and then close their connections.
        """
        self._closed = True
        self._routes.clear()
        for pool in self._pools.values():
            await pool.aclose()


def _is_latin1(text: str) -> bool:
    return all(ord(c) < 256 for c in text)
