"""Streaming over real loopback sockets, on both shipped transports
(``HttpxTransport`` and ``FastTransport``), under asyncio and trio.

What is checked here is the fate of connections, which mocks cannot show:
a stream read to its end gives its connection back for reuse (chunked and
Content-Length bodies alike), an abandoned or cancelled stream closes it, a
stale keep-alive connection is replaced, and a stalled stream times out.

The server is a small scripted HTTP/1.1 server on an anyio listener
(:class:`SSEServer`) plus the project's ``EmbeddedServer``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
import anyio.abc
import msgspec
import pytest

from openarmature_nodes.llm import (
    OpenAIProvider,
    ProviderUnavailable,
    Tool,
    ToolChoiceForce,
    UserMessage,
)
from openarmature_nodes.llm.tokens import TokenDelta
from openarmature_nodes.llm.transport import (
    HttpxTransport,
    StreamingTransport,
    Timeouts,
    TransportTimeout,
)
from openarmature_nodes.llm.transport.fast import FastTransport
from openarmature_nodes.testing import EmbeddedServer

pytestmark = pytest.mark.anyio

KINDS = ["httpx", "fast"]
HI = [UserMessage("hi")]
WEATHER = Tool(
    "get_weather",
    "Weather for a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def _event(delta: dict[str, Any] | None, finish: Any = None, **top: Any) -> bytes:
    body: dict[str, Any] = {"id": "cc-1", "object": "chat.completion.chunk", "model": "m"}
    body["choices"] = (
        [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    )
    body.update(top)
    return b"data: " + msgspec.json.encode(body) + b"\n\n"


EVENTS = [
    _event({"role": "assistant", "content": "Hello"}),
    _event({"content": ", "}),
    _event({"content": "world."}, "stop"),
    _event(None, usage=USAGE),
    b"data: [DONE]\n\n",
]


def make_transport(kind: str, timeouts: Timeouts | None = None) -> StreamingTransport:
    if kind == "httpx":
        return HttpxTransport(timeouts=timeouts)
    return FastTransport(timeouts=timeouts)


def make_provider(kind: str, base_url: str, model: str = "m", **kw: Any) -> OpenAIProvider:
    return OpenAIProvider(base_url, model, transport=make_transport(kind, **kw))


def open_connections(provider: OpenAIProvider) -> int | None:
    """Open connections of a FastTransport (``None`` for httpx: not exposed)."""
    transport = provider.transport
    return transport.connection_count if isinstance(transport, FastTransport) else None


Mode = Literal["complete", "length", "hang", "stall", "close_after"]


class SSEServer:
    """A loopback HTTP/1.1 server answering every request with the ``EVENTS``
    stream, in the manner of ``mode``:

    - ``complete``: chunked transfer encoding, then keep-alive;
    - ``length``: one Content-Length body, then keep-alive;
    - ``hang``: the first event, then it waits for the client to leave;
    - ``stall``: the first event, then silence (the client must time out);
    - ``close_after``: ``complete``, then it closes the idle connection.

    ``closed`` is set whenever a connection ends; ``connections`` counts them.
    """

    def __init__(self) -> None:
        self.mode: Mode = "complete"
        self.connections = 0
        self.closed_count = 0
        self.closed = anyio.Event()
        self.port = 0

    async def _read_request(self, stream: anyio.abc.ByteStream, buf: bytes) -> bytes:
        while b"\r\n\r\n" not in buf:
            buf += await stream.receive()
        head, _, buf = buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(buf) < length:
            buf += await stream.receive()
        return buf[length:]

    async def serve(self, stream: anyio.abc.ByteStream) -> None:
        self.connections += 1
        try:
            async with stream:
                buf = b""
                while True:
                    buf = await self._read_request(stream, buf)
                    mode = self.mode
                    if mode == "length":
                        body = b"".join(EVENTS)
                        await stream.send(
                            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                            b"content-length: %d\r\n\r\n%s" % (len(body), body)
                        )
                        continue
                    await stream.send(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                        b"transfer-encoding: chunked\r\n\r\n"
                    )
                    events = EVENTS[:1] if mode in ("hang", "stall") else EVENTS
                    for event in events:
                        await stream.send(b"%x\r\n%s\r\n" % (len(event), event))
                    if mode == "hang":
                        while await stream.receive():
                            pass
                    if mode == "stall":
                        await anyio.sleep_forever()
                    await stream.send(b"0\r\n\r\n")
                    if mode == "close_after":
                        return
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            pass
        finally:
            self.closed_count += 1
            self.closed.set()
            self.closed = anyio.Event()

    async def wait_closed(self, count: int) -> None:
        with anyio.fail_after(5):
            while self.closed_count < count:
                await self.closed.wait()


@asynccontextmanager
async def sse_server() -> AsyncIterator[tuple[SSEServer, str]]:
    server = SSEServer()
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server.serve)
        yield server, f"http://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("kind", KINDS)
async def test_complete_streams_reuse_one_connection(kind: str) -> None:
    async with sse_server() as (server, url), make_provider(kind, url) as provider:
        for mode in ("complete", "length", "complete", "length"):
            server.mode = mode
            got: list[TokenDelta] = []
            r = await provider.complete(HI, stream=True, on_token=got.append)
            assert r.message.content == "Hello, world." and r.usage.total_tokens == 10
            assert [d.text for d in got] == ["Hello", ", ", "world."]
        assert server.connections == 1 and server.closed_count == 0
        assert open_connections(provider) in (None, 1)


@pytest.mark.parametrize("kind", KINDS)
async def test_cancelling_mid_stream_closes_the_connection(kind: str) -> None:
    async with sse_server() as (server, url), make_provider(kind, url) as provider:
        await provider.complete(HI, stream=True)  # one pooled connection
        server.mode = "hang"  # the next stream stops after its first event
        got: list[TokenDelta] = []
        with anyio.CancelScope() as scope:

            def on_token(delta: TokenDelta) -> None:
                got.append(delta)
                scope.cancel()

            await provider.complete(HI, stream=True, on_token=on_token)
        assert scope.cancelled_caught and [d.text for d in got] == ["Hello"]
        await server.wait_closed(1)  # the client closed the abandoned connection
        assert open_connections(provider) in (None, 0)

        server.mode = "complete"  # and the provider carries on, on a new connection
        r = await provider.complete(HI, stream=True)
        assert r.message.content == "Hello, world."
        assert server.connections == 2


@pytest.mark.parametrize("kind", KINDS)
async def test_transport_stream_contract(kind: str) -> None:
    async with sse_server() as (server, url):
        transport = make_transport(kind)
        try:
            target = f"{url}/v1/chat/completions"
            async with transport.stream("POST", target, [], b"{}") as response:
                assert response.status == 200
                assert response.headers["content-type"] == "text/event-stream"
                assert await response.aread() == b"".join(EVENTS)
            # left without reading the body: the connection is closed, not reused
            async with transport.stream("POST", target, [], b"{}") as response:
                assert response.status == 200
            await server.wait_closed(1)
            if isinstance(transport, FastTransport):
                assert transport.connection_count == 0
            async with transport.stream("POST", target, [], b"{}") as response:
                pieces = [p async for p in response.aiter_bytes()]
            assert b"".join(pieces) == b"".join(EVENTS) and all(pieces)
            assert server.connections == 2
        finally:
            await transport.aclose()


@pytest.mark.parametrize("kind", KINDS)
async def test_stale_keepalive_connection_is_replaced(kind: str) -> None:
    async with sse_server() as (server, url), make_provider(kind, url) as provider:
        server.mode = "close_after"  # the server drops each connection once idle
        await provider.complete(HI, stream=True)
        await server.wait_closed(1)
        r = await provider.complete(HI, stream=True)
        assert r.message.content == "Hello, world."
        assert server.connections == 2


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stalled_stream_times_out(kind: str) -> None:
    async with sse_server() as (server, url):
        server.mode = "stall"
        provider = make_provider(kind, url, timeouts=Timeouts(read=0.05))
        got: list[TokenDelta] = []
        async with provider:
            with anyio.fail_after(5), pytest.raises(ProviderUnavailable) as info:
                await provider.complete(HI, stream=True, on_token=got.append)
        assert [d.text for d in got] == ["Hello"]
        assert isinstance(info.value.__cause__, TransportTimeout)


@pytest.mark.parametrize("kind", KINDS)
async def test_embedded_server_streamed_equals_atomic(kind: str) -> None:
    async with EmbeddedServer(model="emb") as srv:
        async with make_provider(kind, srv.base_url, "emb") as provider:
            msgs = [UserMessage("what is the weather like")]
            got: list[TokenDelta] = []
            streamed = await provider.complete(msgs, stream=True, on_token=got.append)
            atomic = await provider.complete(msgs)
            assert streamed.message == atomic.message
            assert streamed.finish_reason == atomic.finish_reason
            assert isinstance(atomic.message.content, str) and len(got) > 1
            assert "".join(d.text for d in got) == atomic.message.content
            choice = ToolChoiceForce("get_weather")
            streamed = await provider.complete(
                msgs, tools=[WEATHER], tool_choice=choice, stream=True
            )
            atomic = await provider.complete(msgs, tools=[WEATHER], tool_choice=choice)
            assert streamed.message.content == atomic.message.content
            s_calls, a_calls = streamed.message.tool_calls, atomic.message.tool_calls
            assert s_calls and a_calls  # ids carry the server's request number
            assert [(c.name, c.arguments) for c in s_calls] == [
                (c.name, c.arguments) for c in a_calls
            ]
        assert srv.connections_opened == 1  # every streamed body was read to its end
