"""One HTTP/1.1 client connection: write a request, read one response.

A :class:`Connection` owns an anyio byte stream and an ``httptools`` response
parser. The parser is created once per connection and fed whatever bytes the
socket yields; its callbacks fill in the response being read (status, a
lower-cased header dict, body chunks). llhttp resets itself after each
complete message, so the same parser serves every response on a keep-alive
connection.

The connection decides two things the pool needs to know afterwards:

* :attr:`Connection.reusable`: the response was complete, the server allowed
  keep-alive (HTTP/1.1 without ``Connection: close``, or HTTP/1.0 with
  ``Connection: keep-alive``) and sent nothing after the response.
* whether a failure is *safe to retry*: when a request was written on a
  connection that had already served a response and the server then closed or
  reset it before a single byte of the response arrived, the server almost
  certainly closed the idle connection as we reused it (the keep-alive race).
  That failure is raised as :class:`StaleConnection` so the caller can retry
  once on a fresh connection. Any other failure is final.

A connection can also hand a response out while its body is still arriving
(:meth:`Connection.open_stream`, then :meth:`Connection.receive_body` until it
returns ``b""``; the transport's ``stream()``). The body pieces are then not
kept: ``max_body`` bounds only what has been read but not yet taken.

Timeouts are enforced by the process-wide watchdog thread (``_watchdog.py``,
which explains why there is no cancel scope per request): the connection's
deadline is ``write`` seconds while sending, then ``read`` seconds from the
end of the send, pushed forward each time bytes arrive (``read`` bounds the
wait for the *next* bytes, not the whole response). Bytes that were only
partially exchanged leave the connection in an unknown state, so every
failure, timeout or cancellation means the caller must close it.
"""

from __future__ import annotations

import socket
import time

import anyio
import httptools
from anyio.abc import ByteStream, SocketAttribute

from ._base import RawResponse, Timeouts, TransportProtocolError, TransportTimeout
from ._watchdog import WATCHDOG, shutdown

__all__ = ["Connection", "StaleConnection"]

#: Requests up to this size are written without waiting (they fit in the
#: socket buffers; anyio on asyncio buffers up to 64 KiB before it waits), so
#: they get the read deadline at once and no separate write deadline.
SMALL_REQUEST = 64 * 1024

#: Response heads (status line + headers) larger than this are rejected.
MAX_HEAD_BYTES = 256 * 1024

_INF = float("inf")
_monotonic = time.monotonic

# Failures of the stream itself: the peer reset or closed the socket.
_BROKEN = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


class StaleConnection(Exception):
    """A reused keep-alive connection died before any response byte arrived.

    Internal to the transport: the request may be retried once on a fresh
    connection. Never raised for a connection's first request.
    """


# Header names seen on the wire -> lower-cased str. Servers send the same few
# names in every response, so a dict hit replaces a decode and a lower().
_NAMES: dict[bytes, str] = {}


def _lower_name(name: bytes) -> str:
    key = name.decode("latin-1").lower()
    if len(_NAMES) < 1024:
        _NAMES[name] = key
    return key


def _keepalive_hint(value: str) -> float | None:
    """The ``timeout=N`` of a ``Keep-Alive`` response header, if any."""
    for part in value.split(","):
        name, _, number = part.partition("=")
        if name.strip().lower() == "timeout":
            try:
                return float(number.strip())
            except ValueError:
                return None
    return None


class Connection:
    """An open HTTP/1.1 connection to one origin (see the module docstring).

    ``max_body`` caps the size of a response body in bytes. ``expires_at`` is
    the ``time.monotonic()`` instant after which the pool will not reuse this
    connection once idle; ``server_idle`` is the idle timeout the server
    announced in a ``Keep-Alive`` header (``None`` if it did not).
    """

    __slots__ = (
        "__weakref__",
        "_body",
        "_complete",
        "_head_done",
        "_head_only",
        "_headers",
        "_informational",
        "_keep",
        "_max_body",
        "_parser",
        "_received",
        "_sent",
        "_size",
        "_sock",
        "_status",
        "_too_big",
        "deadline",
        "expires_at",
        "requests",
        "reusable",
        "server_idle",
        "stream",
        "timed_out",
    )

    def __init__(self, stream: ByteStream, max_body: int) -> None:
        self.stream = stream
        self.requests = 0
        self.reusable = False
        self.expires_at = _INF
        self.server_idle: float | None = None
        self.deadline = _INF
        self.timed_out = False
        self._sock: socket.socket | None = stream.extra(SocketAttribute.raw_socket, None)
        WATCHDOG.watch(self)
        self._max_body = max_body
        self._parser = httptools.HttpResponseParser(self)
        self._reset(False)

    def _reset(self, head_only: bool) -> None:
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._status = 0
        self._head_done = False
        self._complete = False
        self._keep = False
        self._too_big = False
        self._informational = False
        self._head_only = head_only
        self._sent = False
        self._received = 0
        # A watchdog shutdown that landed after the previous response was
        # complete is not this request's timeout: its EOF is a stale socket.
        self.timed_out = False

    # -- httptools callbacks -------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            # The server sent the start of another response after ours: it is
            # not speaking request/response any more. Never reuse.
            self._keep = False

    def on_header(self, name: bytes, value: bytes) -> None:
        key = _NAMES.get(name)
        if key is None:
            key = _lower_name(name)
        headers = self._headers
        if key in headers:  # a repeated header: join the values, as RFC 9110 allows
            headers[key] = f"{headers[key]}, {value.decode('latin-1')}"
        else:
            headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        self._status = status
        if status < 200:
            # 1xx interim response (e.g. 100 Continue): it has no body and the
            # real response follows on the same connection.
            self._informational = True
            return
        self._head_done = True
        if self._head_only:
            # A HEAD response announces a body it never sends; llhttp cannot be
            # told so, so stop here and do not reuse the connection.
            self._complete = True
            return
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            self._too_big = True

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._max_body:
            self._too_big = True
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            self._headers = {}
            return
        if not self._complete:
            self._complete = True
            self._keep = self._parser.should_keep_alive()

    # -- I/O -----------------------------------------------------------------

    def _complete_at_eof(self) -> bool:
        """EOF arrived: was the response delimited by the close itself?"""
        if not self._head_done or self._complete:
            return self._complete
        headers = self._headers
        if "content-length" in headers or "chunked" in headers.get("transfer-encoding", "").lower():
            return False  # framed body cut short
        self._complete = True  # read-until-close body
        self._keep = False
        return True

    def _timeout(self, write: float | None, read: float | None) -> TransportTimeout:
        phase, limit = ("read", read) if self._sent else ("write", write)
        return TransportTimeout(f"{phase} timeout: no progress within {limit} s")

    async def roundtrip(self, data: bytes, head_only: bool, timeouts: Timeouts) -> RawResponse:
        """Send ``data`` (a whole request) and read the response.

        Raises :class:`StaleConnection` (retry is safe), or
        :class:`TransportTimeout` / :class:`TransportProtocolError`. On any
        exception, including cancellation, the connection must be closed.
        """
        reused = self.requests != 0
        self.requests += 1
        self.reusable = False
        self._reset(head_only)
        write, read = timeouts.write, timeouts.read
        # A small request is written without waiting (it fits in the socket
        # buffers of an idle connection), so the read deadline can be armed
        # before sending: one clock read per request.
        split = False
        if write is not None and len(data) > SMALL_REQUEST:
            split = True
            WATCHDOG.arm(self, _monotonic() + write)
        elif read is not None:
            WATCHDOG.arm(self, _monotonic() + read)
        try:
            return await self._exchange(data, reused, split, read, write)
        finally:
            self.deadline = _INF

    async def _exchange(
        self,
        data: bytes,
        reused: bool,
        split: bool,
        read: float | None,
        write: float | None,
    ) -> RawResponse:
        stream = self.stream
        parser = self._parser
        try:
            await stream.send(data)
        except _BROKEN as exc:
            if self.timed_out:
                raise self._timeout(write, read) from None
            if reused:
                raise StaleConnection from exc
            raise TransportProtocolError("connection lost while sending the request") from exc
        self._sent = True
        if split:
            if read is None:
                self.deadline = _INF
            else:
                WATCHDOG.arm(self, _monotonic() + read)
        received = 0
        while True:
            try:
                chunk = await stream.receive()
            except anyio.EndOfStream:
                if self.timed_out:
                    raise self._timeout(write, read) from None
                if self._complete_at_eof():
                    break
                if received == 0:
                    if reused:
                        raise StaleConnection from None
                    raise TransportProtocolError(
                        "server closed the connection without sending a response"
                    ) from None
                raise TransportProtocolError(
                    "server closed the connection before the response was complete"
                ) from None
            except _BROKEN as exc:
                if self.timed_out:
                    raise self._timeout(write, read) from None
                if received == 0 and reused:
                    raise StaleConnection from exc
                raise TransportProtocolError("connection lost while reading the response") from exc
            received += len(chunk)
            try:
                parser.feed_data(chunk)
            except httptools.HttpParserUpgrade:
                raise TransportProtocolError("server switched protocols unexpectedly") from None
            except httptools.HttpParserError as exc:
                if not self._complete:
                    raise TransportProtocolError(f"malformed HTTP response: {exc}") from None
                self._keep = False  # junk after a complete response
            if self._too_big:
                raise TransportProtocolError(
                    f"response body larger than max_response_bytes ({self._max_body})"
                )
            if self._complete:
                break
            if not self._head_done and received > MAX_HEAD_BYTES:
                raise TransportProtocolError(f"response head larger than {MAX_HEAD_BYTES} bytes")
            if read is not None:
                # ``read`` bounds the wait for the next bytes: push it forward
                # (later than before, so the watchdog needs no poke).
                self.deadline = _monotonic() + read
        return self._finish()

    # -- streaming -----------------------------------------------------------

    async def open_stream(self, data: bytes, timeouts: Timeouts) -> None:
        """Send ``data`` (a whole request) and read until the response head is
        complete: :attr:`status` and :attr:`headers` are then set, and body
        bytes read with the head wait for :meth:`receive_body`.

        Raises like :meth:`roundtrip` (:class:`StaleConnection` included); on
        any exception, including cancellation, the connection must be closed.
        """
        reused = self.requests != 0
        self.requests += 1
        self.reusable = False
        self._reset(False)
        write, read = timeouts.write, timeouts.read
        if write is not None:
            WATCHDOG.arm(self, _monotonic() + write)
        try:
            await self.stream.send(data)
        except _BROKEN as exc:
            if self.timed_out:
                raise self._timeout(write, read) from None
            if reused:
                raise StaleConnection from exc
            raise TransportProtocolError("connection lost while sending the request") from exc
        finally:
            self.deadline = _INF
        self._sent = True
        while not self._head_done:
            await self._receive_some(read, reused)

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
        if self._complete and not self._body:
            self._finish()  # sets reusable and the keep-alive hint
            return self.reusable
        return False

    async def receive_body(self, timeouts: Timeouts) -> bytes:
        """The next piece of a streamed body (never empty), or ``b""`` once the
        body is complete (then see :meth:`end_stream`)."""
        while not self._body:
            if self._complete:
                return b""
            await self._receive_some(timeouts.read, False)
        pieces = self._body
        self._body = []
        self._size = 0  # the cap bounds what is buffered, not the whole stream
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def _receive_some(self, read: float | None, reused: bool) -> None:
        """One ``receive()`` fed to the parser, for the streaming path: the
        read deadline runs only while waiting here, not while the caller
        works on what it got."""
        if read is not None:
            WATCHDOG.arm(self, _monotonic() + read)
        try:
            chunk = await self.stream.receive()
        except anyio.EndOfStream:
            if self.timed_out:
                raise self._timeout(None, read) from None
            if self._complete_at_eof():
                return
            if self._received == 0:
                if reused:
                    raise StaleConnection from None
                raise TransportProtocolError(
                    "server closed the connection without sending a response"
                ) from None
            raise TransportProtocolError(
                "server closed the connection before the response was complete"
            ) from None
        except _BROKEN as exc:
            if self.timed_out:
                raise self._timeout(None, read) from None
            if self._received == 0 and reused:
                raise StaleConnection from exc
            raise TransportProtocolError("connection lost while reading the response") from exc
        finally:
            self.deadline = _INF
        self._received += len(chunk)
        try:
            self._parser.feed_data(chunk)
        except httptools.HttpParserUpgrade:
            raise TransportProtocolError("server switched protocols unexpectedly") from None
        except httptools.HttpParserError as exc:
            if not self._complete:
                raise TransportProtocolError(f"malformed HTTP response: {exc}") from None
            self._keep = False  # junk after a complete response
        if self._too_big:
            raise TransportProtocolError(
                f"response body larger than max_response_bytes ({self._max_body})"
            )
        if not self._head_done and self._received > MAX_HEAD_BYTES:
            raise TransportProtocolError(f"response head larger than {MAX_HEAD_BYTES} bytes")

    def shutdown_socket(self) -> None:
        """End both directions of the socket (called by the watchdog thread)."""
        shutdown(self._sock)

    def _finish(self) -> RawResponse:
        body = self._body
        headers = self._headers
        self.reusable = self._keep and not self._head_only and not self.timed_out
        hint = headers.get("keep-alive")
        if hint is not None:
            self.server_idle = _keepalive_hint(hint)
        return RawResponse(self._status, headers, body[0] if len(body) == 1 else b"".join(body))

    async def aclose(self) -> None:
        """Close the socket now, without a graceful shutdown.

        Shielded: the socket is released even if the caller is being
        cancelled (which is exactly when connections get closed mid-request).
        """
        WATCHDOG.forget(self)
        with anyio.CancelScope(shield=True):
            await anyio.aclose_forcefully(self.stream)
