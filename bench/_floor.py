"""The floor: the least Python that can make our chat completion, per event loop.

Nothing but a keep-alive connection per worker, the exact request bytes our
``OpenAIProvider`` sends (:func:`request_bytes`), ``httptools`` to parse the
HTTP reply and ``msgspec`` to decode its JSON into a typed struct: no
provider, no pool bookkeeping beyond a LIFO list of idle connections, no
timeouts, no size limit, no error categories. What our ``complete()`` costs
above these rows is the price of everything it adds.

Per loop:

``floor``       asyncio: an ``asyncio.Protocol`` (the loop's own callback
                transport; one future per request). trio: ``trio.socket``
                (``send`` / ``recv`` on the raw non-blocking socket).
``floor_sock``  asyncio only: ``loop.sock_sendall`` / ``loop.sock_recv`` on a
                raw non-blocking socket (the awaitable-socket shape, closest
                to our transport's).

Also the streaming floor (:func:`stream_floor`): the same connection, reading
a ``text/event-stream`` body, one ``data:`` line at a time decoded by msgspec.

bench/ only: ``httptools`` is pinned in ``requirements-peers.lock.txt`` for
these rows (the package itself depends on it too, for ``FastTransport``).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import _common as C
import httptools
import msgspec

__all__ = ["STREAM_PATH", "Reply", "make_floor", "request_bytes", "sse_texts", "stream_floor"]

STREAM_PATH = "/stream"  # base-URL prefix of the stub's 256-delta SSE reply


# --- what the floor decodes (the fields a caller reads of a chat completion) --------------
class _Message(msgspec.Struct):
    role: str
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message
    finish_reason: str | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int


class Reply(msgspec.Struct):
    id: str
    model: str
    choices: list[_Choice]
    usage: _Usage | None = None


class _Delta(msgspec.Struct):
    content: str | None = None


class _ChunkChoice(msgspec.Struct):
    delta: _Delta
    finish_reason: str | None = None


class Chunk(msgspec.Struct):
    choices: list[_ChunkChoice]


_decode_reply = msgspec.json.Decoder(Reply).decode
_decode_chunk = msgspec.json.Decoder(Chunk).decode


def request_bytes(base_url: str, *, stream: bool = False, max_tokens: int = 64) -> bytes:
    """The exact bytes our provider puts on the wire for the bench's request.

    Built by the provider's own encoder and transport (private helpers,
    bench-only): the floor must send what we send, byte for byte.
    """
    from openarmature_nodes import llm
    from openarmature_nodes.llm.transport.fast import FastTransport
    from openarmature_nodes.llm.wire.encode import encode_chat_request

    p = llm.OpenAIProvider(base_url, "bench-model", api_key=C.API_KEY)
    msgs = [llm.SystemMessage(content=C.SYSTEM), llm.UserMessage(content=C.USER)]
    config = llm.RuntimeConfig(temperature=0, max_tokens=max_tokens)
    req = llm.CompletionRequest(msgs, config=config, stream=stream)
    body = encode_chat_request(p.model, req, stream=stream, dialect=p._dialect)
    headers = p._stream_headers if stream else p._headers
    _, data, _ = FastTransport()._encode("POST", p._chat_url, headers, body)
    return data


def _addr(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    return parts.hostname or "127.0.0.1", parts.port or 80


class _Reader:
    """httptools callbacks for one connection: status, body pieces, completion."""

    __slots__ = ("body", "complete", "ok", "parser")

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []
        self.complete = False
        self.ok = False

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        parser = self.parser
        self.ok = parser.get_status_code() == 200 and parser.should_keep_alive()
        self.complete = True

    def take(self) -> bytes:
        """The finished reply's body (after checking status and keep-alive)."""
        if not self.ok:
            raise RuntimeError("floor: not a 200 reply allowing keep-alive")
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body = []
        self.complete = False
        return body


def _content(body: bytes) -> str:
    return _decode_reply(body).choices[0].message.content or ""


# --- asyncio: Protocol ---------------------------------------------------------------------
def _asyncio_protocol(base_url: str, data: bytes) -> tuple[Callable[[], Awaitable[str]], Any]:
    import asyncio

    host, port = _addr(base_url)

    class Proto(asyncio.Protocol, _Reader):
        __slots__ = ("transport", "waiter")

        def __init__(self) -> None:
            _Reader.__init__(self)
            self.waiter: asyncio.Future[bytes] | None = None

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, chunk: bytes) -> None:
            self.parser.feed_data(chunk)
            if self.complete and self.waiter is not None:
                self.waiter.set_result(self.take())

        def connection_lost(self, exc: Exception | None) -> None:
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(ConnectionError("floor: connection lost"))

    idle: list[Proto] = []
    opened: list[Proto] = []

    async def call() -> str:
        loop = asyncio.get_running_loop()
        if idle:
            conn = idle.pop()
        else:
            _, conn = await loop.create_connection(Proto, host, port)
            opened.append(conn)
        conn.waiter = waiter = loop.create_future()
        conn.transport.write(data)
        body = await waiter
        idle.append(conn)
        return _content(body)

    async def close() -> None:
        for conn in opened:
            conn.transport.close()

    return call, close


# --- asyncio: loop.sock_sendall / sock_recv --------------------------------------------------
def _asyncio_sock(base_url: str, data: bytes) -> tuple[Callable[[], Awaitable[str]], Any]:
    import asyncio

    host, port = _addr(base_url)
    idle: list[tuple[socket.socket, _Reader]] = []
    opened: list[socket.socket] = []

    async def call() -> str:
        loop = asyncio.get_running_loop()
        if idle:
            sock, reader = idle.pop()
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, (host, port))
            opened.append(sock)
            reader = _Reader()
        await loop.sock_sendall(sock, data)
        while not reader.complete:
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                raise ConnectionError("floor: connection closed")
            reader.parser.feed_data(chunk)
        body = reader.take()
        idle.append((sock, reader))
        return _content(body)

    async def close() -> None:
        for sock in opened:
            sock.close()

    return call, close


# --- trio: trio.socket ------------------------------------------------------------------------
def _trio_socket(base_url: str, data: bytes) -> tuple[Callable[[], Awaitable[str]], Any]:
    import trio

    host, port = _addr(base_url)
    idle: list[tuple[Any, _Reader]] = []
    opened: list[Any] = []

    async def call() -> str:
        if idle:
            sock, reader = idle.pop()
        else:
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await sock.connect((host, port))
            opened.append(sock)
            reader = _Reader()
        view = memoryview(data)
        while view:
            view = view[await sock.send(view) :]
        while not reader.complete:
            chunk = await sock.recv(65536)
            if not chunk:
                raise ConnectionError("floor: connection closed")
            reader.parser.feed_data(chunk)
        body = reader.take()
        idle.append((sock, reader))
        return _content(body)

    async def close() -> None:
        for sock in opened:
            sock.close()

    return call, close


def make_floor(kind: str, backend: str, base_url: str) -> tuple[Callable[[], Any], Any]:
    """(call, close) of a floor row: ``kind`` is ``floor`` or ``floor_sock``."""
    data = request_bytes(base_url)
    if backend == "trio":
        if kind != "floor":
            raise C.Skip(f"{kind} is an asyncio row")
        return _trio_socket(base_url, data)
    return (_asyncio_protocol if kind == "floor" else _asyncio_sock)(base_url, data)


# --- streaming floor ---------------------------------------------------------------------------
class _SSEReader(_Reader):
    """Body pieces split into events as they arrive; each ``data:`` line decoded by msgspec
    and its content delta handed to ``on_delta`` before the next line is looked at."""

    __slots__ = ("buf", "done", "on_delta", "pieces")

    def __init__(self, on_delta: Callable[[str], None]) -> None:
        super().__init__()
        self.buf = b""
        self.done = False
        self.on_delta = on_delta
        self.pieces: list[str] = []

    def on_body(self, body: bytes) -> None:
        buf = self.buf + body if self.buf else body
        pos = 0
        while (end := buf.find(b"\n\n", pos)) >= 0:  # one event at a time: no split up front
            event = buf[pos:end]
            pos = end + 2
            if event == b"data: [DONE]":
                self.done = True
                continue
            for choice in _decode_chunk(event[6:]).choices:
                text = choice.delta.content
                if text:
                    self.pieces.append(text)
                    self.on_delta(text)
        self.buf = buf[pos:]


def sse_texts(on_delta: Callable[[str], None]) -> tuple[Callable[[bytes], None], list[str]]:
    """The floor's SSE parser for another transport (raw httpx): ``feed(piece)`` and the
    list the deltas' text is collected in."""
    reader = _SSEReader(on_delta)
    return reader.on_body, reader.pieces


def stream_floor(
    backend: str, base_url: str, *, max_tokens: int = 512
) -> Callable[[Callable[[str], None]], Awaitable[str]]:
    """``await call(on_delta)`` -> the answer: one streamed reply over a raw socket + httptools.

    ``on_delta(text)`` is called for each content delta as its event is parsed
    (the bench takes the time of the first one). One keep-alive connection.
    """
    data = request_bytes(base_url, stream=True, max_tokens=max_tokens)
    host, port = _addr(base_url)
    state: dict[str, Any] = {}

    def finish(reader: _SSEReader) -> str:
        if not (reader.done and reader.ok):
            raise RuntimeError("floor: stream incomplete")
        return "".join(reader.pieces)

    if backend == "trio":
        import trio

        async def call_trio(on_delta: Callable[[str], None]) -> str:
            if "sock" not in state:
                sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await sock.connect((host, port))
                state["sock"] = sock
            sock = state["sock"]
            reader = _SSEReader(on_delta)
            await sock.send(data)
            while not reader.complete:
                chunk = await sock.recv(65536)
                if not chunk:
                    raise ConnectionError("floor: connection closed")
                reader.parser.feed_data(chunk)
            return finish(reader)

        return call_trio

    import asyncio

    async def call_asyncio(on_delta: Callable[[str], None]) -> str:
        loop = asyncio.get_running_loop()
        if "sock" not in state:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, (host, port))
            state["sock"] = sock
        sock = state["sock"]
        reader = _SSEReader(on_delta)
        await loop.sock_sendall(sock, data)
        while not reader.complete:
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                raise ConnectionError("floor: connection closed")
            reader.parser.feed_data(chunk)
        return finish(reader)

    return call_asyncio
