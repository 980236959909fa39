"""A small HTTP/1.1 server on loopback that answers with an httpx handler.

Test support for ``tests/transports.py`` (read its docstring first): the
``"fast"`` transport kind sends real HTTP over real TCP to a
:class:`LoopbackServer`, which parses each request with the embedded
server's httptools glue (:mod:`openarmature_nodes.testing._http`), rebuilds the
``httpx.Request`` the provider meant (its original URL travels in the
:data:`ORIGIN_HEADER` header), calls the handler and writes the
``httpx.Response`` back: ``Content-Length`` for a body given whole, chunked
(one chunk per piece, sent as soon as it is produced) for a streamed one.
Handler exceptions become connection failures as described there.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import suppress
from typing import Any

import anyio
import anyio.abc
import httpx
from anyio.abc import SocketAttribute

from openarmature_nodes.testing._http import ReceivedRequest, RequestParser

__all__ = ["ORIGIN_HEADER", "Handler", "LoopbackServer"]

Handler = (
    Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
)

#: The header by which ``tests.transports.LoopbackFastTransport`` tells the server the
#: origin the provider asked for (removed before the handler sees the request).
ORIGIN_HEADER = "x-loopback-original-origin"

# A reply cut short: a status line, then the connection closes.
_BROKEN_REPLY = b"HTTP/1.1 502 Bad Gateway\r\n"
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})
_GONE = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError)


# --- the server ----------------------------------------------------------------------------


class _Incoming:
    """The requests of one connection, parsed by the embedded server's own
    :class:`~openarmature_nodes.testing._http.RequestParser` (one copy of the
    httptools glue for both test servers)."""

    def __init__(self) -> None:
        self.parser = RequestParser(0)
        self.ready: deque[ReceivedRequest] = deque()

    def feed(self, data: bytes) -> None:
        self.ready.extend(self.parser.feed(data))


def _to_httpx(request: ReceivedRequest) -> httpx.Request:
    """The request as the handler would have seen it through MockTransport:
    the URL the provider asked for, the headers it sent, the body."""
    headers = dict(request.headers)
    origin = headers.pop(ORIGIN_HEADER, None)
    host = headers.pop("host", "")
    if origin is None:
        origin = f"http://{host}"
    has_body = "content-length" in headers or "transfer-encoding" in headers
    target = request.path + (f"?{request.query}" if request.query else "")
    return httpx.Request(
        request.method,
        origin + target,
        headers=list(headers.items()),
        content=request.body if has_body else None,
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
        self, stream: anyio.abc.SocketStream, incoming: _Incoming, request: ReceivedRequest
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

    async def _respond(self, stream: anyio.abc.SocketStream, request: ReceivedRequest) -> bool:
        try:
            reply: Any = self.handler(_to_httpx(request))
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
    request: ReceivedRequest,
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
