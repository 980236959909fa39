"""Run provider tests over either transport: the httpx one or the fast one.

The provider tests script their server as an httpx handler, a function
``httpx.Request -> httpx.Response`` (sync or async), exactly what they would
give ``httpx.MockTransport``. This module turns such a handler into a
:class:`~openarmature_nodes.llm.transport.Transport` for each transport kind:

``"httpx"``
    ``HttpxTransport(transport=httpx.MockTransport(handler))``: the handler
    runs inside the client call, no socket involved (what the tests always did).

``"fast"``
    a real :class:`~openarmature_nodes.llm.transport.fast.FastTransport`
    talking HTTP/1.1 over real loopback TCP to a small server of ours
    (:class:`LoopbackServer`: anyio listener on ``127.0.0.1:0``, requests
    parsed by httptools). The server rebuilds the ``httpx.Request`` with the
    URL the provider asked for, calls the handler and writes its
    ``httpx.Response`` back: ``Content-Length`` for a body given whole,
    chunked when the handler streams one (each piece of its body stream
    becomes one chunk, sent as soon as it is produced). Between the provider
    and the ``FastTransport`` sits :class:`LoopbackFastTransport`, which only
    rewrites the origin of each URL to the loopback server.

What a handler *raises* becomes, on the fast path, what a real server would
do to the connection, so the client meets a genuine network failure:

* ``httpx.TimeoutException`` (``ReadTimeout`` ...): the server never answers;
  the client's read timeout (:data:`FAST_TIMEOUTS`, 1 s) fires and it hangs up;
* any other httpx error (``ConnectError``, ``RemoteProtocolError`` ...), raised
  by the handler or while its body streams: the server sends a truncated reply
  (or stops mid-body) and closes the connection. Some bytes of a response
  were read, so the transport's safe stale-connection retry does not apply,
  and the handler is called exactly once per request, as with httpx;
* anything else (an ``AssertionError`` in a handler): a test bug; the
  connection is broken the same way and the exception is re-raised when the
  :func:`loopback_transports` context ends, so the test fails.

The client side is checked too: when the context ends every fast transport
made in it is closed and must have no connection left open.

Differences a test may notice on the fast path: the request carries the
provider's own headers only (no httpx client defaults such as
``accept-encoding``); the exception a provider error is chained to is a
``TransportError`` raised by ``FastTransport``, not the handler's exception;
response bodies are sent as they are (no content-encoding is undone).

Use in a test module::

    pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("transports")]

    def make(handler):
        return OpenAIProvider("http://llm.test", "m", transport=loopback_transport(handler))

and every test runs once per transport kind (``transport_kind`` fixture);
pin a test to httpx with :data:`httpx_only`.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Any, Literal
from urllib.parse import urlsplit

import anyio
import anyio.abc
import httptools
import httpx
import pytest
from anyio.abc import SocketAttribute

from openarmature_nodes.llm.transport import (
    HttpxTransport,
    RawResponse,
    StreamingResponse,
    Timeouts,
    Transport,
)
from openarmature_nodes.llm.transport.fast import FastTransport

__all__ = [
    "FAST_TIMEOUTS",
    "KINDS",
    "LoopbackFastTransport",
    "LoopbackServer",
    "TransportFactory",
    "TransportKind",
    "fast_only",
    "httpx_only",
    "loopback_transport",
    "loopback_transports",
    "transport_kind",
    "transports",
    "with_transports",
]

TransportKind = Literal["httpx", "fast"]
KINDS: tuple[TransportKind, ...] = ("httpx", "fast")

Handler = (
    Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
)

#: Timeouts of the fast transports made here. ``read`` is what turns a handler's
#: ``httpx.ReadTimeout`` into a real read timeout, so it is short (such a test
#: waits for it); it is still far above the time any scripted handler takes.
FAST_TIMEOUTS = Timeouts(connect=10.0, read=1.0, write=10.0, pool=10.0)

#: The header by which :class:`LoopbackFastTransport` tells the server the
#: origin the provider asked for (removed before the handler sees the request).
ORIGIN_HEADER = "x-loopback-original-origin"
_ORIGIN_HEADER_B = ORIGIN_HEADER.encode("ascii")

# A reply cut short: a status line, then the connection closes.
_BROKEN_REPLY = b"HTTP/1.1 502 Bad Gateway\r\n"
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})
_GONE = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError)


# --- the server ----------------------------------------------------------------------------


class _Incoming:
    """httptools callbacks: turns the bytes of a connection into requests."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.ready: deque[_Request] = deque()
        self._method = b""
        self._url = bytearray()
        self._headers: list[tuple[bytes, bytes]] = []
        self._body = bytearray()

    def feed(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self._url = bytearray()
        self._headers = []
        self._body = bytearray()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._method = self.parser.get_method()

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.ready.append(
            _Request(
                self._method.decode("ascii"),
                bytes(self._url).decode("ascii"),
                self._headers,
                bytes(self._body),
                self.parser.should_keep_alive(),
            )
        )


class _Request:
    """One parsed request, as it came off the wire."""

    def __init__(
        self,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        keep_alive: bool,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive

    def to_httpx(self) -> httpx.Request:
        """The request as the handler would have seen it through MockTransport:
        the URL the provider asked for, the headers it sent, the body."""
        origin = None
        host = ""
        headers: list[tuple[str, str]] = []
        has_body = False
        for name, value in self.headers:
            lower = name.lower()
            if lower == _ORIGIN_HEADER_B:
                origin = value.decode("ascii")
            elif lower == b"host":
                host = value.decode("ascii")
            else:
                has_body = has_body or lower in (b"content-length", b"transfer-encoding")
                headers.append((name.decode("latin-1"), value.decode("latin-1")))
        if origin is None:
            origin = f"http://{host}"
        return httpx.Request(
            self.method,
            origin + self.target,
            headers=headers,
            content=self.body if has_body else None,
        )


class LoopbackServer:
    """An HTTP/1.1 server on ``127.0.0.1`` answering every request with ``handler``.

    Keep-alive: a connection serves requests one after another until the
    client closes it or asks to. While the handler runs (and while a streamed
    body is being sent), the connection is watched: if the client hangs up,
    the handler is cancelled, just as a cancelled call cancels a
    MockTransport handler. Unexpected handler exceptions are appended to
    ``errors``.
    """

    def __init__(self, handler: Handler, errors: list[BaseException]) -> None:
        self.handler = handler
        self.errors = errors
        self.port = 0
        self.connections = 0
        self.requests = 0
        self._ready = anyio.Event()

    async def run(self) -> None:
        """Listen and serve until cancelled."""
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        async with listener:
            self.port = listener.extra(SocketAttribute.local_port)
            self._ready.set()
            await listener.serve(self._connection)

    async def origin(self) -> str:
        """``http://127.0.0.1:<port>``, once the server listens."""
        if not self._ready.is_set():
            await self._ready.wait()
        return f"http://127.0.0.1:{self.port}"

    async def _connection(self, stream: anyio.abc.SocketStream) -> None:
        self.connections += 1
        async with stream:
            incoming = _Incoming()
            try:
                while True:
                    while not incoming.ready:
                        try:
                            data = await stream.receive()
                        except _GONE:
                            return
                        incoming.feed(data)
                    request = incoming.ready.popleft()
                    self.requests += 1
                    if not await self._answer(stream, incoming, request):
                        return
            except Exception as exc:  # a malformed request, or a bug here
                self.errors.append(exc)

    async def _answer(
        self, stream: anyio.abc.SocketStream, incoming: _Incoming, request: _Request
    ) -> bool:
        """Answer one request; -> whether the connection may serve another."""
        keep = False
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                # Nothing should arrive before the response is sent (the
                # client does not pipeline); end-of-stream means it hung up.
                try:
                    while True:
                        incoming.feed(await stream.receive())
                except _GONE:
                    tg.cancel_scope.cancel()

            tg.start_soon(watch)
            keep = await self._respond(stream, request)
            tg.cancel_scope.cancel()
        return keep

    async def _respond(self, stream: anyio.abc.SocketStream, request: _Request) -> bool:
        try:
            reply: Any = self.handler(request.to_httpx())
            if inspect.isawaitable(reply):
                reply = await reply
            if not isinstance(reply, httpx.Response):
                raise TypeError(f"handler returned {type(reply).__name__}, not httpx.Response")
        except httpx.TimeoutException:
            # Never answer: the client's read timeout ends this (it hangs up
            # and the watcher cancels us), or the server's shutdown does.
            await anyio.sleep_forever()
            return False
        except (httpx.HTTPError, httpx.StreamError):
            return await _break(stream)
        except Exception as exc:
            self.errors.append(exc)
            return await _break(stream)
        try:
            return await _write_response(stream, request, reply, self.errors)
        except _GONE:
            return False


async def _break(stream: anyio.abc.SocketStream) -> bool:
    """Send the start of a reply and give up on the connection."""
    with suppress(*_GONE):
        await stream.send(_BROKEN_REPLY)
    return False


def _head(status: int, reason: str, headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason.encode("ascii") or b"Unknown")]
    lines.extend(b"%s: %s\r\n" % (name, value) for name, value in headers)
    lines.append(b"\r\n")
    return b"".join(lines)


async def _write_response(
    stream: anyio.abc.SocketStream,
    request: _Request,
    reply: httpx.Response,
    errors: list[BaseException],
) -> bool:
    """Serialize ``reply``: whole bodies with Content-Length, streamed ones chunked."""
    close = not request.keep_alive
    headers: list[tuple[bytes, bytes]] = []
    for name, value in reply.headers.raw:
        lower = name.lower()
        if lower == b"connection":
            close = close or b"close" in value.lower()
        elif lower not in _FRAMING:
            headers.append((name, value))
    if close:
        headers.append((b"connection", b"close"))
    status = reply.status_code
    bodiless = request.method == "HEAD" or status in (204, 304) or status < 200
    body_stream = reply.stream
    if isinstance(body_stream, httpx.ByteStream):
        body = b"".join(body_stream)
        if not (status in (204, 304) or status < 200):
            headers.append((b"content-length", b"%d" % len(body)))
        head = _head(status, reply.reason_phrase, headers)
        await stream.send(head if bodiless else head + body)
        return not close
    headers.append((b"transfer-encoding", b"chunked"))
    await stream.send(_head(status, reply.reason_phrase, headers))
    if bodiless:
        return not close
    try:
        async for piece in _pieces(body_stream):
            if piece:
                await stream.send(b"%x\r\n%s\r\n" % (len(piece), piece))
    except (httpx.HTTPError, httpx.StreamError):
        return False  # the body breaks off mid-way: the connection closes
    except _GONE:
        return False
    except Exception as exc:
        errors.append(exc)
        return False
    await stream.send(b"0\r\n\r\n")
    return not close


async def _pieces(body: Any) -> AsyncIterator[bytes]:
    """The pieces of a response body stream, sync or async; closed at the end."""
    try:
        if hasattr(body, "__aiter__"):
            async for piece in body:
                yield piece
        else:
            for piece in body:
                yield piece
    finally:
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()
        else:
            close = getattr(body, "close", None)
            if close is not None:
                close()


# --- the client side -----------------------------------------------------------------------


class LoopbackFastTransport:
    """A :class:`FastTransport` pointed at a :class:`LoopbackServer`.

    Test-only: it rewrites the origin (scheme, host, port) of each URL to the
    loopback server and tells the server the original origin in a header;
    everything else is the ``FastTransport``'s own doing. (So an ``https``
    base URL reaches the fast transport as plain http on loopback.)
    """

    def __init__(self, server: LoopbackServer, inner: FastTransport) -> None:
        self.server = server
        self.inner = inner

    async def _rewrite(
        self, url: str, headers: Sequence[tuple[str, str]]
    ) -> tuple[str, Sequence[tuple[str, str]]]:
        parts = urlsplit(url)
        if not parts.scheme or not parts.netloc:
            return url, headers  # not absolute: FastTransport refuses it itself
        origin = f"{parts.scheme}://{parts.netloc}"
        loopback = await self.server.origin()
        return loopback + url[len(origin) :], (*headers, (ORIGIN_HEADER, origin))

    async def request(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
    ) -> RawResponse:
        url, headers = await self._rewrite(url, headers)
        return await self.inner.request(method, url, headers, body)

    def stream(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
    ) -> AbstractAsyncContextManager[StreamingResponse]:
        return self._stream(method, url, headers, body)

    @asynccontextmanager
    async def _stream(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
    ) -> AsyncIterator[StreamingResponse]:
        url, headers = await self._rewrite(url, headers)
        async with self.inner.stream(method, url, headers, body) as response:
            yield response

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __repr__(self) -> str:
        return f"LoopbackFastTransport({self.inner!r})"


class TransportFactory:
    """Makes transports of one kind for handlers; see :func:`loopback_transports`."""

    def __init__(
        self, kind: TransportKind, task_group: anyio.abc.TaskGroup, timeouts: Timeouts
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown transport kind {kind!r}")
        self.kind = kind
        self.errors: list[BaseException] = []
        self.made: list[LoopbackFastTransport] = []
        self._task_group = task_group
        self._timeouts = timeouts

    def transport(self, handler: Handler) -> Transport:
        """A transport whose requests are answered by ``handler``."""
        if self.kind == "httpx":
            return HttpxTransport(transport=httpx.MockTransport(handler))
        server = LoopbackServer(handler, self.errors)
        self._task_group.start_soon(server.run)
        made = LoopbackFastTransport(server, FastTransport(timeouts=self._timeouts))
        self.made.append(made)
        return made

    async def _close(self) -> list[str]:
        """Close every fast transport; -> descriptions of leaked connections."""
        leaks = []
        for made in self.made:
            await made.aclose()
            if made.inner.connection_count:
                leaks.append(f"{made.inner!r} still has open connections after aclose()")
        return leaks


@asynccontextmanager
async def loopback_transports(
    kind: TransportKind, *, timeouts: Timeouts = FAST_TIMEOUTS
) -> AsyncIterator[TransportFactory]:
    """A :class:`TransportFactory` for ``kind``, with the loopback servers it
    starts running until the context ends.

    At the end every fast transport is closed (it must leave no connection
    open), the servers stop, and the first unexpected handler exception, if
    any, is raised (unless the body already failed).
    """
    failure: Exception | None = None
    leaks: list[str] = []
    async with anyio.create_task_group() as tg:
        factory = TransportFactory(kind, tg, timeouts)
        try:
            try:
                yield factory
            except Exception as exc:
                failure = exc  # raised below, outside the task group (not wrapped in a group)
        finally:
            with anyio.CancelScope(shield=True):
                leaks = await factory._close()
            tg.cancel_scope.cancel()
    if failure is not None:
        for error in factory.errors:
            failure.add_note(f"the loopback server's handler raised {error!r}")
        raise failure
    if factory.errors:
        raise factory.errors[0]
    assert not leaks, leaks


# --- pytest glue ---------------------------------------------------------------------------

_ACTIVE: list[TransportFactory] = []


def loopback_transport(handler: Handler) -> Transport:
    """A transport for ``handler`` of the current test's kind (needs the
    ``transports`` fixture active)."""
    if not _ACTIVE:
        raise RuntimeError("loopback_transport() needs the `transports` fixture")
    return _ACTIVE[-1].transport(handler)


@pytest.fixture(params=KINDS)
def transport_kind(request: pytest.FixtureRequest) -> TransportKind:
    """The transport kind a test runs with: each test runs once per kind."""
    kind: TransportKind = request.param
    return kind


@pytest.fixture
async def transports(transport_kind: TransportKind) -> AsyncIterator[TransportFactory]:
    """The :class:`TransportFactory` of this test (also behind :func:`loopback_transport`)."""
    async with loopback_transports(transport_kind) as factory:
        _ACTIVE.append(factory)
        try:
            yield factory
        finally:
            _ACTIVE.remove(factory)


#: Pins a test to the httpx transport (say why next to each use).
httpx_only = pytest.mark.parametrize("transport_kind", ["httpx"])

#: Pins a test to the fast transport (say why next to each use).
fast_only = pytest.mark.parametrize("transport_kind", ["fast"])

#: Runs a test once per transport kind (in a module where not every test
#: wants the ``transports`` fixture; otherwise put it in ``pytestmark``).
with_transports = pytest.mark.usefixtures("transports")
