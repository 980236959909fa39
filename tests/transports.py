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
    (:class:`~tests.loopback_server.LoopbackServer`: anyio listener on ``127.0.0.1:0``, requests
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

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Literal
from urllib.parse import urlsplit

import anyio
import anyio.abc
import httpx
import pytest

from openarmature_nodes.llm.transport import (
    HttpxTransport,
    RawResponse,
    StreamingResponse,
    Timeouts,
    Transport,
)
from openarmature_nodes.llm.transport.fast import FastTransport
from tests.loopback_server import ORIGIN_HEADER, Handler, LoopbackServer

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

#: Timeouts of the fast transports made here. ``read`` is what turns a handler's
#: ``httpx.ReadTimeout`` into a real read timeout, so it is short (such a test
#: waits for it); it is still far above the time any scripted handler takes.
FAST_TIMEOUTS = Timeouts(connect=10.0, read=1.0, write=10.0, pool=10.0)


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
