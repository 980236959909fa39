"""The connection pool for one origin (scheme, host, port).

Bookkeeping is in *slots*: a slot is the right to hold one connection, open
or being opened. ``slots`` never exceeds ``max_connections``. A request
either takes an idle connection (its slot comes with it), or takes a free
slot and connects, or waits in a FIFO queue until someone hands it a
connection or a slot. Everything here except connecting, waiting and closing
is synchronous, so the pool's state cannot change under a caller between two
lines: there is no lock.

Idle connections are a LIFO list: the most recently used connection is the
one most likely to still be open on the server side, and under light load the
connections at the bottom expire (``keepalive_expiry``) and get closed, so the
pool shrinks back. Nothing probes the idle list: the cost of taking a
connection does not grow with the size of the pool. The connection taken is
checked for a pending end-of-stream just before the request is written, and
replaced by a fresh one if the server closed it (see
:class:`~._conn.StaleConnection`).

Invariants, checked by the tests through :attr:`Pool.conns`:
``len(conns) == len(idle) + connections in use`` and every connection in
``conns`` is an open socket.
"""

from __future__ import annotations

import time
from collections import deque

import anyio

from ._base import Timeouts, TransportConnectError, TransportTimeout
from ._conn import Connection, open_socket

__all__ = ["Pool", "TransportClosed"]

_monotonic = time.monotonic
_INF = float("inf")


def _bound(limit: float | None, deadline: float) -> float | None:
    """``limit`` seconds, cut short so as to end by ``deadline`` (monotonic)."""
    if deadline == _INF:
        return limit
    left = max(deadline - _monotonic(), 0.0)
    return left if limit is None or left < limit else limit


class TransportClosed(TransportConnectError, RuntimeError):
    """The transport was closed: it sends no more requests.

    A :class:`TransportConnectError` (as the httpx transport raises after
    ``aclose()``), so the provider reports it like any other unusable
    transport; also a ``RuntimeError``, as using a closed client is.
    """


class _Waiter:
    __slots__ = ("conn", "event", "granted")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.granted = False
        self.conn: Connection | None = None


class Pool:
    """Connections to one origin, at most ``max_connections`` of them."""

    __slots__ = (
        "closed",
        "conns",
        "host",
        "idle",
        "keepalive_expiry",
        "max_body",
        "max_connections",
        "port",
        "slots",
        "waiters",
    )

    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_connections: int,
        keepalive_expiry: float | None,
        max_body: int,
    ) -> None:
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self.max_body = max_body
        self.idle: list[Connection] = []
        self.conns: set[Connection] = set()
        self.slots = 0
        self.waiters: deque[_Waiter] = deque()
        self.closed = False

    # -- taking and giving back ----------------------------------------------

    def take(self) -> Connection | None:
        """The hot path of :meth:`acquire`, without an await: the most recently
        used idle connection if there is one and nothing in the idle list has
        expired; otherwise ``None`` (then call :meth:`acquire`)."""
        idle = self.idle
        if idle:
            now = _monotonic()
            if idle[0].expires_at > now and idle[-1].expires_at > now and not self.closed:
                return idle.pop()
        return None

    async def acquire(self, timeouts: Timeouts, deadline: float = _INF) -> Connection | None:
        """An idle connection, or ``None`` meaning "you hold a slot: connect".

        Waits (at most ``timeouts.pool`` seconds, and not past ``deadline``, a
        ``time.monotonic()`` instant) when every slot is taken.
        """
        if self.closed:
            raise TransportClosed("the transport is closed")
        idle = self.idle
        if idle:
            now = _monotonic()
            conn = idle.pop()
            if conn.expires_at > now and (not idle or idle[0].expires_at > now):
                return conn  # the common case: nothing has expired
            expired: list[Connection] = []
            idle.append(conn)
            for candidate in list(idle):
                if candidate.expires_at <= now:
                    idle.remove(candidate)
                    expired.append(candidate)
            chosen = idle.pop() if idle else None
            for stale in expired:
                self.discard(stale)
            await _close_all(expired)
            if chosen is not None:
                return chosen
        if self.slots < self.max_connections:
            self.slots += 1
            return None
        return await self._wait(_bound(timeouts.pool, deadline))

    async def _wait(self, limit: float | None) -> Connection | None:
        waiter = _Waiter()
        self.waiters.append(waiter)
        try:
            with anyio.move_on_after(limit):
                await waiter.event.wait()
        except BaseException:
            orphan = self._abandon(waiter)
            if orphan is not None:
                await orphan.aclose()
            raise
        if waiter.granted:
            return waiter.conn
        self._abandon(waiter)
        if self.closed:
            raise TransportClosed("the transport was closed while waiting for a connection")
        raise TransportTimeout(
            f"pool timeout: no connection to {self.host}:{self.port} became free within "
            f"{limit} s (max_connections={self.max_connections})"
        )

    def _abandon(self, waiter: _Waiter) -> Connection | None:
        """A waiter gives up: pass on whatever it was handed, or leave the queue.

        Returns a connection the caller must close (handed over, but the pool
        has been closed since).
        """
        if not waiter.granted:
            if waiter in self.waiters:
                self.waiters.remove(waiter)
        elif waiter.conn is None:
            self.free_slot()
        elif not self.release(waiter.conn):
            self.discard(waiter.conn)
            return waiter.conn
        return None

    def release(self, conn: Connection) -> bool:
        """Give back a reusable connection after a complete response.

        Returns ``False`` if the pool is closed: the caller must then
        :meth:`discard` and close it.
        """
        if self.closed:
            return False
        if self.waiters:
            waiter = self.waiters.popleft()
            waiter.granted = True
            waiter.conn = conn
            waiter.event.set()
            return True
        expiry = self.keepalive_expiry
        hint = conn.server_idle
        if hint is not None:
            # Leave a margin before the server's own idle timeout.
            hint = max(hint - 1.0, 0.0)
            expiry = hint if expiry is None else min(expiry, hint)
        if expiry is not None:
            conn.expires_at = _monotonic() + expiry
        self.idle.append(conn)
        return True

    def free_slot(self) -> None:
        """A slot's connection was closed (or never opened): pass the slot on."""
        if self.waiters:
            waiter = self.waiters.popleft()
            waiter.granted = True
            waiter.conn = None
            waiter.event.set()
        else:
            self.slots -= 1

    def discard(self, conn: Connection) -> None:
        """Forget a connection that is about to be closed, freeing its slot."""
        self.conns.discard(conn)
        self.free_slot()

    # -- opening and closing -------------------------------------------------

    async def connect(self, timeouts: Timeouts, deadline: float = _INF) -> Connection:
        """Open a connection in a slot the caller holds (freed on failure), in
        at most ``timeouts.connect`` seconds and not past ``deadline``."""
        try:
            with anyio.fail_after(_bound(timeouts.connect, deadline)):
                sock = await open_socket(self.host, self.port)
        except TimeoutError:
            self.free_slot()
            raise TransportTimeout(
                f"connect timeout: {self.host}:{self.port} did not accept within "
                f"{timeouts.connect} s"
            ) from None
        except OSError as exc:
            self.free_slot()
            raise TransportConnectError(
                f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}"
            ) from exc
        except BaseException:
            self.free_slot()
            raise
        conn = Connection(sock, self.max_body)
        if self.closed:
            self.free_slot()
            await conn.aclose()
            raise TransportClosed("the transport was closed while connecting")
        self.conns.add(conn)
        return conn

    async def aclose(self) -> None:
        """Close idle connections and refuse new requests.

        Connections in use are closed by their requests when they finish.
        """
        self.closed = True
        waiters, self.waiters = self.waiters, deque()
        for waiter in waiters:
            waiter.event.set()  # not granted: they raise TransportClosed
        idle, self.idle = self.idle, []
        for conn in idle:
            self.conns.discard(conn)
            self.slots -= 1
        await _close_all(idle)


async def _close_all(conns: list[Connection]) -> None:
    with anyio.CancelScope(shield=True):
        for conn in conns:
            await conn.aclose()
