"""FastTransport against small loopback servers that misbehave on purpose.

Every test runs on asyncio and trio. Each server is a raw-bytes HTTP/1.1
responder written inline (anyio TCP listener), so a test can close early,
stall, send chunked or garbage bytes. Tests synchronise with anyio Events
(never sleeps); the only waiting on a clock is in the timeout tests, with
timeouts of a few tens of milliseconds.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream

from openarmature_nodes.llm.transport import _conn
from openarmature_nodes.llm.transport._base import (
    Timeouts,
    TransportConnectError,
    TransportDeadline,
    TransportProtocolError,
    TransportRequestMaybeSent,
    TransportTimeout,
)
from openarmature_nodes.llm.transport.fast import FastTransport, TransportClosed

pytestmark = pytest.mark.anyio

JSON = (("Content-Type", "application/json"),)


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


class Peer:
    """The server side of one accepted connection."""

    def __init__(self, stream: SocketStream, server: Server) -> None:
        self.stream = stream
        self.server = server
        self.buf = b""

    async def read_request(self) -> tuple[bytes, bytes] | None:
        """One request (head, body), or None if the client closed."""
        while b"\r\n\r\n" not in self.buf:
            try:
                self.buf += await self.stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return None
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += await self.stream.receive()
        self.buf = rest[length:]
        self.server.requests.append((head, rest[:length]))
        self.server.changed()
        return head, rest[:length]

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def wait_client_close(self) -> None:
        """Returns once the client has closed its end."""
        while True:
            try:
                await self.stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return


Handler = Callable[[Peer], Awaitable[None]]


class Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.url = ""
        self.accepted = 0
        self.closed = 0
        self.open = 0
        self.peak_open = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self._changed = anyio.Event()

    def changed(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    async def _serve(self, stream: SocketStream) -> None:
        self.accepted += 1
        self.open += 1
        self.peak_open = max(self.peak_open, self.open)
        self.changed()
        try:
            await self.handler(Peer(stream, self))
        finally:
            await anyio.aclose_forcefully(stream)
            self.open -= 1
            self.closed += 1
            self.changed()


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[Server]:
    server = Server(handler)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    server.url = f"http://127.0.0.1:{listener.extra(SocketAttribute.local_port)}"
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server._serve)
        try:
            yield server
        finally:
            tg.cancel_scope.cancel()
    await listener.aclose()


def gated() -> tuple[anyio.Event, Handler]:
    """A handler answering every request of a connection with :func:`ok`, but only
    once the returned event is set (requests pile up at the server until then)."""
    release = anyio.Event()

    async def handler(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await release.wait()
            await peer.send(ok())

    return release, handler


async def keepalive(peer: Peer) -> None:
    """A well-behaved server: answers every request with its body echoed."""
    while (request := await peer.read_request()) is not None:
        await peer.send(ok(b"echo:" + request[1]))


# -- the happy path -------------------------------------------------------------


async def test_keepalive_reuses_one_connection_and_parses_the_response() -> None:
    async with serving(keepalive) as server:
        transport = FastTransport()
        for n in range(3):
            body = b'{"n":%d}' % n
            response = await transport.request(
                "POST", server.url + "/v1/chat?x=1", (("X-Trace", "a"), *JSON), body
            )
            assert response.status == 200
            assert response.body == b"echo:" + body
            assert response.headers == {"content-length": str(len(body) + 5)}
        assert server.accepted == 1
        assert transport.connection_count == 1 and transport.idle_count == 1
        head, _ = server.requests[0]
        assert head.split(b"\r\n") == [
            b"POST /v1/chat?x=1 HTTP/1.1",
            b"Host: " + server.url.removeprefix("http://").encode(),
            b"X-Trace: a",
            b"Content-Type: application/json",
            b"Content-Length: 7",
        ]
        await transport.aclose()
        await server.wait_until(lambda: server.closed == 1)  # aclose closed the idle socket
        assert transport.connection_count == 0


async def test_get_without_body_sends_no_content_length() -> None:
    async with serving(keepalive) as server:
        transport = FastTransport()
        response = await transport.request("GET", server.url, [("Accept", "*/*")], None)
        assert response.body == b"echo:"
        head, _ = server.requests[0]
        assert head.split(b"\r\n")[0] == b"GET / HTTP/1.1"
        assert b"content-length" not in head.lower()
        await transport.request("POST", server.url + "/p", [], None)
        assert b"Content-Length: 0" in server.requests[1][0]
        await transport.aclose()


async def test_header_names_are_lowercased_and_repeats_joined() -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(
            b"HTTP/1.1 429 Too Many\r\nRetry-After: 1\r\nX-A: 1\r\nx-a: 2\r\n"
            b"Content-Length: 2\r\n\r\nno"
        )
        await peer.wait_client_close()

    async with serving(handler) as server:
        transport = FastTransport()
        response = await transport.request("POST", server.url, JSON, b"{}")
        assert response.status == 429
        assert response.headers == {"retry-after": "1", "x-a": "1, 2", "content-length": "2"}
        assert response.body == b"no"
        await transport.aclose()


async def test_chunked_body_across_many_writes() -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b"hello", b" ", b"chunked world"):
            await peer.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        await peer.send(b"0\r\n\r\n")
        await keepalive(peer)

    async with serving(handler) as server:
        transport = FastTransport()
        response = await transport.request("POST", server.url, JSON, b"{}")
        assert response.body == b"hello chunked world"
        # The connection stays usable after a chunked response.
        assert (await transport.request("POST", server.url, JSON, b"2")).body == b"echo:2"
        assert server.accepted == 1
        await transport.aclose()


async def test_read_until_close_body() -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ")
        await peer.send(b"part two")

    async with serving(handler) as server:
        transport = FastTransport()
        response = await transport.request("GET", server.url, [], None)
        assert response.body == b"part one, part two"
        assert transport.connection_count == 0  # delimited by the close: never reused
        await transport.aclose()


async def test_interim_100_continue_is_skipped() -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        await peer.send(ok(b"final"))
        await keepalive(peer)

    async with serving(handler) as server:
        transport = FastTransport()
        response = await transport.request("POST", server.url, JSON, b"{}")
        assert (response.status, response.body) == (200, b"final")
        assert transport.idle_count == 1
        await transport.aclose()


async def test_head_response_has_no_body_and_is_not_reused() -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        await peer.wait_client_close()

    async with serving(handler) as server:
        transport = FastTransport()
        response = await transport.request("HEAD", server.url, [], None)
        assert (response.status, response.body) == (200, b"")
        await server.wait_until(lambda: server.closed == 1)
        assert transport.connection_count == 0
        await transport.aclose()


# -- pool limits ----------------------------------------------------------------


async def test_concurrent_requests_use_parallel_connections() -> None:
    release, handler = gated()

    async with serving(handler) as server:
        transport = FastTransport(max_connections=5)
        results: list[int] = []

        async def call() -> None:
            results.append((await transport.request("POST", server.url, JSON, b"{}")).status)

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(call)
            # All five reach the server before any is answered: not serialized.
            await server.wait_until(lambda: len(server.requests) == 5)
            release.set()
        assert results == [200] * 5
        assert server.accepted == 5 and transport.idle_count == 5
        await transport.aclose()


async def test_max_connections_limits_and_queues() -> None:
    release, handler = gated()

    async with serving(handler) as server:
        transport = FastTransport(max_connections=2)
        done: list[int] = []

        async def call() -> None:
            done.append((await transport.request("POST", server.url, JSON, b"{}")).status)

        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(call)
            await server.wait_until(lambda: len(server.requests) == 2)
            assert server.accepted == 2 and not done  # four are queued in the pool
            release.set()
        assert done == [200] * 6
        assert server.accepted == 2 and server.peak_open == 2
        assert transport.connection_count == 2
        await transport.aclose()


async def test_pool_timeout() -> None:
    release, handler = gated()

    async with serving(handler) as server:
        transport = FastTransport(max_connections=1, timeouts=Timeouts(pool=0.02))
        async with anyio.create_task_group() as tg:
            tg.start_soon(transport.request, "POST", server.url, JSON, b"{}")
            await server.wait_until(lambda: len(server.requests) == 1)
            with pytest.raises(TransportTimeout, match="pool timeout"):
                await transport.request("POST", server.url, JSON, b"{}")
            release.set()
        # The one connection is still fine and reused.
        await transport.request("POST", server.url, JSON, b"{}")
        assert server.accepted == 1 and transport.connection_count == 1
        await transport.aclose()


# -- server-closed keep-alive ---------------------------------------------------


async def test_connection_close_header_is_honoured() -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(ok(extra=b"Connection: close\r\n"))
        await peer.wait_client_close()

    async with serving(handler) as server:
        transport = FastTransport()
        for _ in range(2):
            assert (await transport.request("POST", server.url, JSON, b"{}")).status == 200
            assert transport.connection_count == 0
        assert server.accepted == 2
        await transport.aclose()


@pytest.mark.parametrize(
    ("status_line", "extra", "reused"),
    [
        (b"HTTP/1.0 200 OK", b"", False),
        (b"HTTP/1.0 200 OK", b"Connection: keep-alive\r\n", True),
    ],
)
async def test_http_1_0_keepalive_semantics(status_line: bytes, extra: bytes, reused: bool) -> None:
    async def handler(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.send(status_line + b"\r\nContent-Length: 2\r\n" + extra + b"\r\nok")

    async with serving(handler) as server:
        transport = FastTransport()
        for _ in range(2):
            assert (await transport.request("GET", server.url, [], None)).body == b"ok"
        assert server.accepted == (1 if reused else 2)
        await transport.aclose()


async def test_stale_idle_connection_is_retried_on_a_fresh_one() -> None:
    async def handler(peer: Peer) -> None:
        # Answer once with keep-alive, then close the idle connection (as a
        # server's keep-alive timeout would). Later connections behave.
        await peer.read_request()
        await peer.send(ok(b"first"))
        if peer.server.accepted > 1:
            await keepalive(peer)

    async with serving(handler) as server:
        transport = FastTransport()
        assert (await transport.request("POST", server.url, JSON, b"{}")).body == b"first"
        await server.wait_until(lambda: server.closed == 1)
        # The pooled connection is dead; the request goes out again on a new one.
        assert (await transport.request("POST", server.url, JSON, b"x")).body == b"first"
        assert server.accepted == 2
        assert transport.connection_count == 1
        await transport.aclose()


async def test_request_read_then_closed_on_reused_connection_is_not_sent_again() -> None:
    async def handler(peer: Peer) -> None:
        if peer.server.accepted == 1:
            await peer.read_request()
            await peer.send(ok(b"one"))
        await peer.read_request()  # then close without a byte of response

    async with serving(handler) as server:
        transport = FastTransport()
        await transport.request("POST", server.url, JSON, b"{}")
        with pytest.raises(TransportRequestMaybeSent, match="may have received the request"):
            # The server read the whole request: it may have acted on it, so
            # it is not sent again (issue 12, defect 7).
            await transport.request("POST", server.url, JSON, b"{}")
        assert server.accepted == 1 and len(server.requests) == 2
        assert transport.connection_count == 0
        await transport.aclose()


async def test_no_retry_once_part_of_the_response_was_read() -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(ok(b"one"))
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")

    async with serving(handler) as server:
        transport = FastTransport()
        await transport.request("POST", server.url, JSON, b"{}")
        with pytest.raises(TransportProtocolError, match="before the response was complete"):
            await transport.request("POST", server.url, JSON, b"{}")
        assert server.accepted == 1 and len(server.requests) == 2
        assert transport.connection_count == 0
        await transport.aclose()


async def test_no_retry_on_a_fresh_connection() -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()

    async with serving(handler) as server:
        transport = FastTransport()
        with pytest.raises(TransportProtocolError, match="without sending a response"):
            await transport.request("POST", server.url, JSON, b"{}")
        assert server.accepted == 1 and transport.connection_count == 0
        await transport.aclose()


async def test_idle_connections_expire() -> None:
    async with serving(keepalive) as server:
        transport = FastTransport(keepalive_expiry=0)
        await transport.request("GET", server.url, [], None)
        await transport.request("GET", server.url, [], None)
        await server.wait_until(lambda: server.closed == 1)  # the expired one was closed
        assert server.accepted == 2 and transport.connection_count == 1
        await transport.aclose()


async def test_server_keepalive_timeout_hint_shortens_expiry() -> None:
    async def handler(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.send(ok(extra=b"Keep-Alive: timeout=1\r\n"))

    async with serving(handler) as server:
        transport = FastTransport()  # expiry 4 s, but the server says 1 s (minus a margin)
        await transport.request("GET", server.url, [], None)
        await transport.request("GET", server.url, [], None)
        assert server.accepted == 2
        await transport.aclose()


async def test_bytes_after_the_response_prevent_reuse() -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(ok(b"fine") + b"HTTP/1.1 200 OK\r\nContent-")
        await peer.wait_client_close()

    async with serving(handler) as server:
        transport = FastTransport()
        assert (await transport.request("GET", server.url, [], None)).body == b"fine"
        assert transport.connection_count == 0
        await transport.aclose()


# -- failures ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTQ/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
async def test_malformed_responses(reply: bytes) -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(reply)
        await peer.wait_client_close()

    async with serving(handler) as server:
        transport = FastTransport()
        with pytest.raises(TransportProtocolError, match="malformed HTTP response"):
            await transport.request("GET", server.url, [], None)
        assert transport.connection_count == 0
        await server.wait_until(lambda: server.closed == 1)
        await transport.aclose()


async def test_close_mid_body() -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")

    async with serving(handler) as server:
        transport = FastTransport()
        with pytest.raises(TransportProtocolError, match="before the response was complete"):
            await transport.request("GET", server.url, [], None)
        assert transport.connection_count == 0
        await transport.aclose()


@pytest.mark.parametrize("chunked", [False, True])
async def test_response_size_cap(chunked: bool) -> None:
    body = b"x" * 1000

    async def handler(peer: Peer) -> None:
        while await peer.read_request() is not None:
            if chunked:
                await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for _ in range(10):
                    await peer.send(b"64\r\n" + body[:100] + b"\r\n")
                await peer.send(b"0\r\n\r\n")
            else:
                await peer.send(ok(body))

    async with serving(handler) as server:
        exact = FastTransport(max_response_bytes=1000)
        assert (await exact.request("GET", server.url, [], None)).body == body
        await exact.aclose()
        small = FastTransport(max_response_bytes=999)
        with pytest.raises(TransportProtocolError, match=r"max_response_bytes \(999\)"):
            await small.request("GET", server.url, [], None)
        assert small.connection_count == 0
        await small.aclose()


async def test_oversized_head_is_rejected() -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\n")
        with anyio.move_on_after(5):
            while True:
                await peer.send(b"X-Filler: " + b"a" * 1000 + b"\r\n")

    async with serving(handler) as server:
        transport = FastTransport()
        with pytest.raises(TransportProtocolError, match="response head larger"):
            await transport.request("GET", server.url, [], None)
        await transport.aclose()


async def test_connect_refused() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    await listener.aclose()
    transport = FastTransport()
    with pytest.raises(TransportConnectError, match=f"127.0.0.1:{port}"):
        await transport.request("GET", f"http://127.0.0.1:{port}/", [], None)
    assert transport.connection_count == 0
    # The failed connect gave its slot back.
    pool = next(iter(transport._pools.values()))
    assert pool.slots == 0
    await transport.aclose()


# -- file descriptors: one per connection, none left by a failed connect ---------

needs_proc = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="counts descriptors through /proc/self/fd"
)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def fds_connected_to(port: int) -> int:
    """How many of this process's descriptors are sockets connected to ``port``
    (the client side of connections to a loopback server in this process)."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            sock = socket.socket(fileno=int(name))
        except OSError:
            continue  # not a socket (or the listing's own, now closed, descriptor)
        try:
            count += sock.getpeername()[1] == port
        except (OSError, IndexError):
            pass
        finally:
            sock.detach()  # it is not ours to close
    return count


@asynccontextmanager
async def unresponsive_port() -> AsyncIterator[int]:
    """A port whose accept queue is full, so a connect to it hangs in the
    handshake (Linux drops the SYN rather than refusing it)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):  # fills the queue
            yield port


AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[str, int]]


@needs_proc
async def test_each_connection_uses_exactly_one_file_descriptor() -> None:
    n = 6
    release = anyio.Event()

    async def handler(peer: Peer) -> None:
        await peer.read_request()
        await release.wait()
        await peer.send(ok())
        await keepalive(peer)

    async with serving(handler) as server:
        port = int(server.url.rsplit(":", 1)[1])
        transport = FastTransport(max_connections=n)
        before = open_fds()
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(transport.request, "GET", server.url, [], None)
            await server.wait_until(lambda: len(server.requests) == n)
            # n requests in flight on n connections: n descriptors on our
            # side, and n on the server's (its accepted sockets).
            assert fds_connected_to(port) == n
            assert open_fds() - before == 2 * n
            release.set()
        assert transport.idle_count == n
        assert fds_connected_to(port) == n
        await transport.aclose()
        assert fds_connected_to(port) == 0
        await server.wait_until(lambda: server.closed == n)
        assert open_fds() == before


@needs_proc
async def test_refused_connect_leaves_no_descriptor() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    await listener.aclose()
    transport = FastTransport()
    before = open_fds()
    for _ in range(3):
        with pytest.raises(TransportConnectError, match="Connection refused"):
            await transport.request("GET", f"http://127.0.0.1:{port}/", [], None)
    assert open_fds() == before
    await transport.aclose()


@needs_proc
async def test_connect_timeout_leaves_no_descriptor() -> None:
    async with unresponsive_port() as port:
        transport = FastTransport(timeouts=Timeouts(connect=0.05))
        before = open_fds()
        with pytest.raises(TransportTimeout, match=f"connect timeout: 127.0.0.1:{port}"):
            await transport.request("GET", f"http://127.0.0.1:{port}/", [], None)
        assert open_fds() == before
        assert next(iter(transport._pools.values())).slots == 0
        await transport.aclose()


@needs_proc
async def test_connect_cancelled_mid_handshake_leaves_no_descriptor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waiting = anyio.Event()
    wait_writable = _conn._wait_writable

    async def signalling_wait(sock: socket.socket) -> None:
        waiting.set()  # the socket exists and its handshake is under way
        await wait_writable(sock)

    monkeypatch.setattr(_conn, "_wait_writable", signalling_wait)
    async with unresponsive_port() as port:
        transport = FastTransport()
        before = open_fds()
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(transport.request, "GET", f"http://127.0.0.1:{port}/", [], None)
                await waiting.wait()
                assert open_fds() == before + 1  # the connecting socket
                scope.cancel()
        assert scope.cancelled_caught
        assert open_fds() == before
        pool = next(iter(transport._pools.values()))
        assert pool.slots == 0 and transport.connection_count == 0
        await transport.aclose()


async def test_each_resolved_address_is_tried_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    dead_port = listener.extra(SocketAttribute.local_port)
    await listener.aclose()
    tried: list[int] = []

    async with serving(keepalive) as server:
        port = int(server.url.rsplit(":", 1)[1])

        async def two_addresses(host: str, port_: int, **kwargs: object) -> list[AddrInfo]:
            tried.append(port_)
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", dead_port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
            ]

        monkeypatch.setattr(anyio, "getaddrinfo", two_addresses)
        transport = FastTransport()
        response = await transport.request("POST", "http://service.test:8000/", JSON, b"x")
        assert response.body == b"echo:x" and tried == [8000]
        assert server.accepted == 1 and transport.connection_count == 1
        await transport.aclose()


async def test_read_timeout_before_any_byte() -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        await peer.wait_client_close()  # never answers

    async with serving(handler) as server:
        transport = FastTransport(timeouts=Timeouts(read=0.03))
        with pytest.raises(TransportTimeout, match="read timeout"):
            await transport.request("GET", server.url, [], None)
        assert transport.connection_count == 0
        await server.wait_until(lambda: server.closed == 1)
        await transport.aclose()


async def test_read_timeout_mid_body_and_recovery() -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        if peer.server.accepted == 1:
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            await peer.wait_client_close()
        else:
            await peer.send(ok(b"second"))
            await keepalive(peer)

    async with serving(handler) as server:
        transport = FastTransport(timeouts=Timeouts(read=0.03))
        with pytest.raises(TransportTimeout, match="read timeout"):
            await transport.request("GET", server.url, [], None)
        assert (await transport.request("GET", server.url, [], None)).body == b"second"
        assert transport.connection_count == 1
        await transport.aclose()


async def test_read_timeout_bounds_each_wait_not_the_whole_response() -> None:
    # Paced by the server (not a wait for an event): eight pieces 0.05 s apart,
    # 0.4 s in all, under a 0.3 s read timeout that no single gap comes near.
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(8):
            await anyio.sleep(0.05)
            await peer.send(b"1\r\n.\r\n")
        await peer.send(b"0\r\n\r\n")
        await keepalive(peer)

    async with serving(handler) as server:
        transport = FastTransport(timeouts=Timeouts(read=0.3))
        response = await transport.request("GET", server.url, [], None)
        assert response.body == b"." * 8
        assert transport.idle_count == 1
        await transport.aclose()


async def test_stream_deadline_bounds_the_whole_body_then_the_connection_is_pooled_again() -> None:
    # The first stream's body drips (a piece every 0.05 s, 2 s in all) under a 0.3 s deadline
    # that no single wait comes near the read timeout of; the next stream has none.
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        if peer.server.accepted == 1:
            await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(40):
                await anyio.sleep(0.05)
                await peer.send(b"1\r\n.\r\n")
            await peer.wait_client_close()
        else:
            await peer.send(ok(b"second"))
            await keepalive(peer)

    async with serving(handler) as server:
        transport = FastTransport(timeouts=Timeouts(read=5.0))
        with pytest.raises(TransportDeadline):
            stream = transport.stream("GET", server.url, [], None, deadline=time.monotonic() + 0.3)
            async with stream as response:
                assert response.status == 200
                await response.aread()
        async with transport.stream("GET", server.url, [], None) as response:
            assert await response.aread() == b"second"
        assert transport.idle_count == 1  # the second connection, back in the pool
        await transport.aclose()


async def test_late_watchdog_shutdown_of_a_pooled_connection_is_a_stale_retry() -> None:
    # The watchdog fired just as a response completed and the connection went
    # back to the pool: the next request must not report a timeout.
    async with serving(keepalive) as server:
        transport = FastTransport(timeouts=Timeouts(read=5))
        await transport.request("GET", server.url, [], None)
        (conn,) = next(iter(transport._pools.values())).idle
        conn.timed_out = True
        conn.shutdown_socket()
        assert (await transport.request("POST", server.url, JSON, b"ok")).body == b"echo:ok"
        assert server.accepted == 2 and transport.connection_count == 1
        await transport.aclose()


async def test_write_timeout_when_the_server_does_not_read() -> None:
    # A listening socket nobody accept()s: the kernel completes the handshake,
    # then the request fills the socket buffers and the send stalls. (An anyio
    # server that "never reads" would not do: on asyncio its accepted stream
    # keeps reading into memory.)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        transport = FastTransport(timeouts=Timeouts(write=0.05))
        with pytest.raises(TransportTimeout, match="write timeout"):
            await transport.request("POST", url, JSON, b"x" * (64 * 1024 * 1024))
        assert transport.connection_count == 0
        await transport.aclose()


# -- cancellation and closing --------------------------------------------------


async def test_cancelled_request_closes_its_connection() -> None:
    async def handler(peer: Peer) -> None:
        while await peer.read_request() is not None:
            if len(peer.server.requests) == 2:
                await peer.wait_client_close()  # stall the second request
                return
            await peer.send(ok())

    async with serving(handler) as server:
        transport = FastTransport()
        await transport.request("GET", server.url, [], None)
        assert transport.connection_count == 1
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(transport.request, "GET", server.url, [], None)
                await server.wait_until(lambda: len(server.requests) == 2)
                scope.cancel()
        assert scope.cancelled_caught
        assert transport.connection_count == 0 and transport.idle_count == 0
        await server.wait_until(lambda: server.closed == 1)  # the socket really closed
        pool = next(iter(transport._pools.values()))
        assert pool.slots == 0
        await transport.aclose()


async def test_cancelled_waiter_leaves_the_queue() -> None:
    release, handler = gated()

    async with serving(handler) as server:
        transport = FastTransport(max_connections=1)
        pool_waiters: list[int] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(transport.request, "GET", server.url, [], None)
            await server.wait_until(lambda: len(server.requests) == 1)
            with anyio.CancelScope() as waiting:
                async with anyio.create_task_group() as inner:
                    inner.start_soon(transport.request, "GET", server.url, [], None)
                    await anyio.wait_all_tasks_blocked()
                    pool = next(iter(transport._pools.values()))
                    pool_waiters.append(len(pool.waiters))
                    waiting.cancel()
            pool_waiters.append(len(pool.waiters))
            release.set()
        assert pool_waiters == [1, 0]
        assert (await transport.request("GET", server.url, [], None)).status == 200
        assert server.accepted == 1 and transport.connection_count == 1
        await transport.aclose()


async def test_aclose_closes_idle_and_refuses_new_requests() -> None:
    release = anyio.Event()

    async def handler(peer: Peer) -> None:
        while (request := await peer.read_request()) is not None:
            if request[1] == b"slow":
                await release.wait()
            await peer.send(ok())

    async with serving(handler) as server:
        transport = FastTransport(max_connections=2)
        async with anyio.create_task_group() as tg:
            tg.start_soon(transport.request, "POST", server.url, JSON, b"slow")
            await server.wait_until(lambda: len(server.requests) == 1)
            await transport.request("POST", server.url, JSON, b"fast")  # a second connection
            assert transport.connection_count == 2 and transport.idle_count == 1
            await transport.aclose()  # closes the idle one; the slow one is in flight
            await server.wait_until(lambda: server.closed == 1)
            release.set()
        # The in-flight request finished, and its connection was closed, not pooled.
        await server.wait_until(lambda: server.closed == 2)
        assert transport.connection_count == 0
        with pytest.raises(TransportClosed):
            await transport.request("POST", server.url, JSON, b"{}")
        # Same family as the httpx transport's "closed" error: the provider
        # maps it to ProviderUnavailable.
        with pytest.raises(TransportConnectError, match="closed"):
            await transport.request("POST", server.url + "/other", JSON, b"{}")


async def test_aclose_wakes_pool_waiters() -> None:
    release, handler = gated()

    async with serving(handler) as server:
        transport = FastTransport(max_connections=1)
        errors: list[BaseException] = []

        async def waiter() -> None:
            try:
                await transport.request("GET", server.url, [], None)
            except TransportClosed as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(transport.request, "GET", server.url, [], None)
            await server.wait_until(lambda: len(server.requests) == 1)
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            await transport.aclose()
            release.set()
        assert len(errors) == 1
        assert transport.connection_count == 0


# -- bad input: refused before anything is sent -----------------------------------


@pytest.mark.parametrize(
    ("method", "path", "headers", "message"),
    [
        ("POST", "/", [("X-Bad", "a\r\nInjected: 1")], "'X-Bad' contains CR or LF"),
        ("POST", "/", [("Bad Name", "a")], "invalid header name"),
        ("POST", "/", [("Content-Length", "5")], "set by the transport"),
        ("POST", "/", [("Host", "elsewhere")], "set by the transport"),
        ("POST", "/", [("X-Snow", "\u2603")], "'X-Snow' is not latin-1"),
        ("GE T", "/", [], "invalid HTTP method"),
        ("GET", "/a b", [], "without spaces"),
    ],
)
async def test_bad_requests_are_refused_before_sending(
    method: str, path: str, headers: list[tuple[str, str]], message: str
) -> None:
    async with serving(keepalive) as server:
        transport = FastTransport()
        with pytest.raises(ValueError, match=message):
            await transport.request(method, server.url + path, headers, b"{}")
        assert server.accepted == 0
        await transport.aclose()


async def test_secret_header_values_stay_out_of_errors() -> None:
    transport = FastTransport()
    with pytest.raises(ValueError) as info:
        await transport.request(
            "POST", "http://127.0.0.1:9/", [("Authorization", "Bearer sk-secret\n")], None
        )
    assert "sk-secret" not in str(info.value)
    await transport.aclose()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://example.com/", "plain http only"),
        ("/relative", "plain http only"),
        ("http:///nohost", "no host"),
        ("http://user:pw@example.com/", "credentials"),
        ("http://example.com:99999/", "invalid URL"),
    ],
)
async def test_bad_urls(url: str, message: str) -> None:
    transport = FastTransport()
    with pytest.raises(ValueError, match=message):
        await transport.request("GET", url, [], None)
    await transport.aclose()


def test_constructor_validation_and_repr() -> None:
    with pytest.raises(ValueError):
        FastTransport(max_connections=0)
    assert repr(FastTransport()) == "FastTransport(max_connections=100, connections=0, idle=0)"
