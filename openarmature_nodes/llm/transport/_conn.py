"""One HTTP/1.1 client connection: write a request, read one response.

A :class:`Connection` is the I/O half of the fast transport's connection; the
parsing half, :class:`~._response.ResponseReader`, is its base class. It owns
one plain non-blocking ``socket.socket``, opened by :func:`open_socket` (no
anyio stream), does its own ``send``/``recv`` on it, and waits only when the
kernel has nothing to give (or no room to take): ``anyio.wait_readable`` /
``anyio.wait_writable``. Why not an anyio stream: on asyncio, its reads go
through an asyncio transport that is resumed and paused around every receive
(two ``epoll_ctl`` calls) and reads 256 KiB at a time, above glibc's ``mmap``
threshold, so every receive also cost an ``mmap`` + ``mremap`` + ``munmap`` and
a page fault: about half the CPU of a whole ``complete()`` at concurrency 32
(see ``bench/fast_transport_micro.py``). And asyncio will not let anyone else
watch a descriptor one of its transports owns, so reading beside a stream
would need a second, duplicated descriptor per connection. A socket we open
ourselves belongs to no transport: one descriptor per connection, on both
backends. After sending, :meth:`Connection.roundtrip` lets the other tasks run
once (one checkpoint) and then simply reads: under concurrency the response is
there by then, and no wait is registered at all.

The connection decides two things the pool needs to know afterwards:

* :attr:`reusable`: see :class:`~._response.ResponseReader`; never after a
  timeout.
* whether a failure is *safe to retry*: only when nothing of the request
  could have been acted on. Before writing on a reused connection it looks
  for a pending end-of-stream (a non-blocking ``MSG_PEEK``: the server
  closed the idle connection); a write that fails part-way leaves the server
  an incomplete request. Both raise :class:`StaleConnection`, and the caller
  sends the request on a fresh connection. A connection that closes after
  the *whole* request was written and before any response byte (the
  keep-alive race lost after all) raises
  :class:`~._base.TransportRequestMaybeSent`: the server may have received
  the request, so it is never sent again silently; the provider reports it
  as transient (``provider_unavailable``) for a retry layer to count.

A connection can also hand a response out while its body is still arriving
(:meth:`Connection.open_stream`, then :meth:`Connection.receive_body` until it
returns ``b""``; the transport's ``stream()``). The body pieces are then not
kept: ``max_body`` bounds only what has been read but not yet taken.

Timeouts are enforced by the process-wide watchdog thread (``_watchdog.py``,
which explains why there is no cancel scope per request). A deadline is armed
only while the connection actually waits: ``write`` seconds for the socket to
take more of the request, ``read`` seconds for the next bytes of the response
(it bounds each wait, not the whole response). The watchdog's
``shutdown()`` of the socket wakes the wait, which then finds end-of-stream
or a broken pipe and reports a :class:`TransportTimeout`. Bytes that were only
partially exchanged leave the connection in an unknown state, so every
failure, timeout or cancellation means the caller must close it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel

from ._base import (
    RawResponse,
    Timeouts,
    TransportDeadline,
    TransportProtocolError,
    TransportRequestMaybeSent,
    TransportTimeout,
)
from ._response import ResponseReader
from ._watchdog import WATCHDOG, shutdown

__all__ = ["Connection", "StaleConnection", "open_socket"]

#: The most bytes taken from the socket at once. Below glibc's ``mmap``
#: threshold (128 KiB), so the buffer comes from the heap.
RECEIVE_SIZE = 64 * 1024

_INF = float("inf")
_monotonic = time.monotonic
_wait_readable = anyio.wait_readable
_wait_writable = anyio.wait_writable
_checkpoint = anyio.lowlevel.checkpoint

# What a broken socket raises: the OSError family (reset, broken pipe), and
# anyio's errors should a wait find the socket closed under it.
_BROKEN = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)

# What a non-blocking ``connect_ex`` returns while the handshake goes on.
_IN_PROGRESS = frozenset({errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN})


class StaleConnection(Exception):
    """A reused keep-alive connection was found closed before the request
    was fully written (a pending end-of-stream, or a failed write).

    Internal to the transport: the request may be sent once on a fresh
    connection, since the server cannot have acted on it. Never raised for a
    connection's first request.
    """


async def open_socket(host: str, port: int) -> socket.socket:
    """A connected, non-blocking TCP socket to ``host``:``port``.

    Resolves the name, then tries each address in the order the resolver gave
    them (no happy eyeballs: one attempt at a time) and returns the first that
    accepts. Raises the last attempt's ``OSError`` if none does (the
    resolver's own ``OSError`` if the name does not resolve). A socket that did
    not connect is closed before the next attempt, and on cancellation, so a
    failed or abandoned connect leaves no descriptor behind. The caller
    bounds the whole thing with its connect timeout.
    """
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    error: OSError = OSError(f"no address found for {host}")
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code = sock.connect_ex(address)
            if code in _IN_PROGRESS:
                # Writable once the handshake is over, however it ended.
                await _wait_writable(sock)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, os.strerror(code))
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:  # cancelled (or the connect timeout) mid-way
            sock.close()
            raise
        return sock
    raise error


class Connection(ResponseReader):
    """An open HTTP/1.1 connection to one origin (see the module docstring).

    ``max_body`` caps the size of a response body in bytes. ``expires_at`` is
    the ``time.monotonic()`` instant after which the pool will not reuse this
    connection once idle; ``server_idle`` is the idle timeout the server
    announced in a ``Keep-Alive`` header (``None`` if it did not).
    """

    __slots__ = (
        "__weakref__",
        "_sock",
        "call_deadline",
        "deadline",
        "expires_at",
        "requests",
        "timed_out",
    )

    def __init__(self, sock: socket.socket, max_body: int) -> None:
        super().__init__(max_body)
        self._sock = sock
        self.requests = 0
        self.expires_at = _INF
        self.deadline = _INF
        self.call_deadline = _INF
        self.timed_out = False
        WATCHDOG.watch(self)

    def _begin(self, head_only: bool) -> bool:
        """Reset for a new request; returns whether the connection is reused."""
        reused = self.requests != 0
        self.requests += 1
        self.reusable = False
        # A watchdog shutdown that landed after the previous response was
        # complete is not this request's timeout: its EOF is a stale socket.
        self.timed_out = False
        self._reset(head_only)
        return reused

    # -- whole responses -----------------------------------------------------

    async def roundtrip(self, data: bytes, head_only: bool, timeouts: Timeouts) -> RawResponse:
        """Send ``data`` (a whole request) and read the response.

        Raises :class:`StaleConnection` (retry is safe), or
        :class:`TransportTimeout` / :class:`TransportProtocolError`. On any
        exception, including cancellation, the connection must be closed.
        """
        reused = self._begin(head_only)
        await self._send(data, reused, timeouts)
        read = timeouts.read
        # Let the other tasks run once, then look: under concurrency the
        # response has usually arrived by then, and the read needs no wait.
        # (Measured: waiting straight away instead is no cheaper at
        # concurrency 1, and far dearer at 32.)
        await _checkpoint()
        wait = False
        while not self._complete:
            if not await self._receive_some(read, reused, wait):
                break  # end-of-stream completed a read-until-close body
            wait = False
        response = self._finish()
        if self.timed_out:
            self.reusable = False
        return response

    # -- streamed responses --------------------------------------------------

    async def open_stream(self, data: bytes, head_only: bool, timeouts: Timeouts) -> None:
        """Send ``data`` (a whole request) and read until the response head is
        complete: :attr:`status` and :attr:`headers` are then set, and body
        bytes read with the head wait for :meth:`receive_body`.

        Raises like :meth:`roundtrip` (:class:`StaleConnection` included); on
        any exception, including cancellation, the connection must be closed.
        ``head_only`` must be false (it keeps the signature of :meth:`roundtrip`).
        """
        reused = self._begin(head_only)
        await self._send(data, reused, timeouts)
        read = timeouts.read
        wait = True
        while not self._head_done:
            await self._receive_some(read, reused, wait)
            wait = False

    @property
    def status(self) -> int:
        """The status code of the response being streamed."""
        return self._status

    @property
    def headers(self) -> dict[str, str]:
        """The headers (lower-cased names) of the response being streamed."""
        return self._headers

    def end_stream(self) -> bool:
        """After a streamed response: may the connection serve another request?
        Only if the body was read to its end (and keep-alive allows it)."""
        if self._complete and not self._body and not self.timed_out:
            self._finish()  # sets reusable and the keep-alive hint
            return self.reusable
        return False

    async def receive_body(self, timeouts: Timeouts) -> bytes:
        """The next piece of a streamed body (never empty), or ``b""`` once the
        body is complete (then see :meth:`end_stream`)."""
        while not self._body:
            if self._complete:
                return b""
            await self._receive_some(timeouts.read, False, False)
        pieces = self._body
        self._body = []  # (the size cap counts the whole stream: _size is kept)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    # -- I/O -----------------------------------------------------------------

    async def _send(self, data: bytes, reused: bool, timeouts: Timeouts) -> None:
        """Write all of ``data``. A request that fits in the socket's buffer
        (the usual case) goes out in one ``send`` without waiting."""
        sock = self._sock
        if reused:
            # The server may have closed the idle connection: a pending
            # end-of-stream (or stray bytes) shows without blocking.
            try:
                sock.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                pass  # nothing pending: the connection is open
            except OSError as exc:
                raise StaleConnection from exc
            else:
                raise StaleConnection  # end-of-stream, or bytes nobody asked for
        try:
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            if sent < len(data):
                await self._send_rest(memoryview(data)[sent:], timeouts.write)
        except _BROKEN as exc:
            if self.timed_out:
                raise self._timeout(
                    f"write timeout: no progress within {timeouts.write} s"
                ) from None
            if reused:
                raise StaleConnection from exc
            raise TransportProtocolError("connection lost while sending the request") from exc

    async def _wait(
        self, until_ready: Callable[[socket.socket], Awaitable[None]], limit: float | None
    ) -> None:
        """Wait for the socket, at most ``limit`` seconds and never past
        :attr:`call_deadline` (the watchdog then shuts it down, which ends
        the wait)."""
        ends = self.call_deadline
        if limit is not None:
            at = _monotonic() + limit
            WATCHDOG.arm(self, at if at < ends else ends)
        elif ends != _INF:
            WATCHDOG.arm(self, ends)
        try:
            await until_ready(self._sock)
        finally:
            self.deadline = _INF

    async def _send_rest(self, view: memoryview, write: float | None) -> None:
        """The rest of a large request: wait (``write`` seconds at most each
        time) until the socket takes more of it."""
        sock = self._sock
        while view:
            await self._wait(_wait_writable, write)
            with contextlib.suppress(BlockingIOError):
                view = view[sock.send(view) :]

    async def _receive_some(self, read: float | None, reused: bool, wait: bool) -> bool:
        """Read one chunk and feed it to the parser (``wait``: wait for the
        socket to be readable first). Returns ``False`` at an end-of-stream
        that completed a read-until-close body; raises for any other one."""
        sock = self._sock
        try:
            while True:
                if wait:
                    await self._wait(_wait_readable, read)
                try:
                    chunk = sock.recv(RECEIVE_SIZE)
                    break
                except BlockingIOError:
                    wait = True
        except _BROKEN as exc:
            if self.timed_out:
                raise self._timeout(f"read timeout: no progress within {read} s") from None
            if self._received == 0 and reused:
                raise _maybe_sent() from exc
            raise TransportProtocolError("connection lost while reading the response") from exc
        if chunk:
            self._feed(chunk)
            return True
        # End-of-stream.
        if self.timed_out:
            raise self._timeout(f"read timeout: no progress within {read} s")
        if self._complete_at_eof():
            return False
        if self._received == 0:
            if reused:
                raise _maybe_sent()
            raise TransportProtocolError("server closed the connection without sending a response")
        raise TransportProtocolError(
            "server closed the connection before the response was complete"
        )

    def _timeout(self, message: str) -> TransportTimeout:
        """The watchdog shut the socket down: the call's deadline, or a phase timeout."""
        if _monotonic() >= self.call_deadline:
            return TransportDeadline("the call's deadline passed before the response was complete")
        return TransportTimeout(message)

    # -- closing -------------------------------------------------------------

    def shutdown_socket(self) -> None:
        """End both directions of the socket (called by the watchdog thread)."""
        shutdown(self._sock)

    async def aclose(self) -> None:
        """Close the socket now, without a graceful shutdown.

        Idempotent. Nothing in it can be interrupted (it does not even yield),
        so the socket is released even if the caller is being cancelled, which
        is exactly when connections get closed mid-request. A task still
        waiting on the socket is woken first (``anyio.notify_closing``; it
        then sees ``ClosedResourceError``, a broken connection), so the event
        loop never watches a closed, possibly reused, descriptor.
        """
        WATCHDOG.forget(self)
        sock = self._sock
        if sock.fileno() >= 0:
            anyio.notify_closing(sock)
            sock.close()


def _maybe_sent() -> TransportRequestMaybeSent:
    return TransportRequestMaybeSent(
        "the server closed a reused keep-alive connection after the whole request was "
        "written and before any response byte; it may have received the request, so it "
        "was not sent again"
    )
