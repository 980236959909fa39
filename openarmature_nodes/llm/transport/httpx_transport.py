"""The general-purpose transport: one ``httpx.AsyncClient``.

httpx brings TLS, proxies (``HTTPS_PROXY`` and friends), HTTP/2 if you
install it, custom CA bundles, and a connection pool shared by every
concurrent call. This wrapper only moves bytes and translates httpx's
exceptions into the small :class:`~openarmature_nodes.llm.transport.TransportError`
family, keeping the original as ``__cause__``.

Bring your own client (custom limits, certificates, event hooks) or an httpx
transport (``httpx.MockTransport`` in tests)::

    HttpxTransport(client=httpx.AsyncClient(limits=httpx.Limits(max_connections=500)))
    HttpxTransport(transport=httpx.MockTransport(handler))

A client you pass in stays yours: ``aclose()`` closes it only when this
object created it (override with ``owns_client``).

``stream()`` (for ``complete(stream=True)``) is ``httpx.AsyncClient.send(...,
stream=True)`` behind the same exception translation; leaving its context
closes the response, which hands a fully read connection back to httpx's pool
and closes one whose body was not read to the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence

import httpx

from ._base import (
    ClosesOnExit,
    RawResponse,
    Timeouts,
    TransportConnectError,
    TransportProtocolError,
    TransportTimeout,
)
from ._stream_context import StreamContext

__all__ = ["HttpxTransport"]

# httpx's own defaults (100 connections, 20 kept alive). More idle keep-alive
# connections make httpcore slower under concurrency, not faster: it probes every
# idle pooled socket on each request. Measured at concurrency 32 against the
# bench stub: keep-alive 100 cost ~+750 µs CPU per call over keep-alive 20.
DEFAULT_LIMITS = httpx.Limits(
    max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0
)


def _httpx_timeout(t: Timeouts) -> httpx.Timeout:
    return httpx.Timeout(connect=t.connect, read=t.read, write=t.write, pool=t.pool)


def _translate(exc: Exception, client: httpx.AsyncClient | None = None) -> Exception:
    """The one mapping of httpx failures to :class:`TransportError`\\ s.

    Timeouts, connect failures and every other httpx error become their
    transport category; httpx's ``RuntimeError`` for a request on a closed
    ``client`` becomes a connect error. Anything else is returned as it is
    (the caller re-raises it unchanged).
    """
    if isinstance(exc, httpx.TimeoutException):
        return TransportTimeout(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, httpx.ConnectError):
        return TransportConnectError(f"cannot connect: {exc}")
    if isinstance(exc, httpx.HTTPError | httpx.StreamError):
        return TransportProtocolError(f"{type(exc).__name__}: {exc}")
    if client is not None and isinstance(exc, RuntimeError) and client.is_closed:
        return TransportConnectError("the HTTP client is closed")
    return exc


class HttpxTransport(ClosesOnExit):
    """A :class:`~openarmature_nodes.llm.transport.Transport` over ``httpx.AsyncClient``."""

    __slots__ = ("_client", "_closed", "_owns")

    def __init__(
        self,
        *,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        limits: httpx.Limits | None = None,
        timeouts: Timeouts | None = None,
        owns_client: bool | None = None,
    ) -> None:
        if client is not None and (
            transport is not None or limits is not None or timeouts is not None
        ):
            raise ValueError(
                "pass either client=, or transport=/limits=/timeouts= to build one, not both"
            )
        if client is None:
            client = httpx.AsyncClient(
                transport=transport,
                limits=limits or DEFAULT_LIMITS,
                timeout=_httpx_timeout(timeouts or Timeouts()),
            )
            self._owns = True if owns_client is None else owns_client
        else:
            self._owns = False if owns_client is None else owns_client
        self._client = client
        self._closed = False

    @property
    def client(self) -> httpx.AsyncClient:
        """The underlying ``httpx.AsyncClient``."""
        return self._client

    async def request(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
    ) -> RawResponse:
        if self._closed:
            raise TransportConnectError("the transport is closed")
        try:
            response = await self._client.request(method, url, headers=headers, content=body)
        except Exception as exc:
            err = _translate(exc, self._client)
            if err is exc:
                raise
            raise err from exc
        return RawResponse(response.status_code, dict(response.headers.items()), response.content)

    def stream(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
    ) -> _HttpxStream:
        """Send a request and read its body as it arrives (see
        :class:`~openarmature_nodes.llm.transport.StreamingTransport`)."""
        return _HttpxStream(self, method, url, headers, body)

    async def aclose(self) -> None:
        self._closed = True
        if self._owns:
            await self._client.aclose()

    def __repr__(self) -> str:
        return f"HttpxTransport(closed={self._closed})"


class _HttpxStream(StreamContext["HttpxTransport", "_HttpxStreamingResponse"]):
    """The ``async with`` of :meth:`HttpxTransport.stream`."""

    __slots__ = ()

    async def _open(
        self, method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes | None
    ) -> _HttpxStreamingResponse:
        owner = self._owner
        if owner._closed:
            raise TransportConnectError("the transport is closed")
        client = owner.client
        try:
            request = client.build_request(method, url, headers=headers, content=body)
            response = await client.send(request, stream=True)
        except Exception as exc:
            err = _translate(exc, client)
            if err is exc:
                raise
            raise err from exc
        return _HttpxStreamingResponse(response)


class _HttpxStreamingResponse:
    """A :class:`~openarmature_nodes.llm.transport.StreamingResponse` over an
    ``httpx.Response`` opened with ``stream=True``."""

    __slots__ = ("_iterator", "_response", "headers", "status")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status: int = response.status_code
        self.headers: Mapping[str, str] = dict(response.headers.items())
        self._iterator: _HttpxBody | None = None

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        if self._iterator is not None:
            raise RuntimeError("the response body can only be iterated once")
        self._iterator = _HttpxBody(self._response.aiter_bytes())
        return self._iterator

    async def aread(self) -> bytes:
        try:
            return await self._response.aread()
        except Exception as exc:
            err = _translate(exc)
            if err is exc:
                raise
            raise err from exc

    async def aclose(self) -> None:
        if self._iterator is not None:
            await self._iterator.aclose()
        await self._response.aclose()

    def __repr__(self) -> str:
        return f"<streaming response {self.status}>"


class _HttpxBody:
    """httpx's body iterator with its exceptions translated. A class rather
    than an async generator, so that leaving a loop early leaves nothing for
    the garbage collector to finalize."""

    __slots__ = ("_inner",)

    def __init__(self, inner: AsyncIterator[bytes]) -> None:
        self._inner = inner

    def __aiter__(self) -> _HttpxBody:
        return self

    async def __anext__(self) -> bytes:
        while True:
            try:
                piece = await self._inner.__anext__()
            except StopAsyncIteration:
                raise
            except Exception as exc:
                err = _translate(exc)
                if err is exc:
                    raise
                raise err from exc
            if piece:
                return piece

    async def aclose(self) -> None:
        aclose = getattr(self._inner, "aclose", None)
        if aclose is not None:
            await aclose()
