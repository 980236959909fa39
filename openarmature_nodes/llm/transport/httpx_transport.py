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

Requests beyond the pool's ``max_connections`` wait here, in a FIFO of our
own (:class:`~._limiter.InFlightLimiter`), not in httpcore's pool: httpcore
rescans every queued request against every connection whenever one request
ends or is cancelled, so cancelling a fan-out of a few hundred queued calls
took 0.3-1 s there; with its queue kept empty it is as quick as the fast
transport's. (A client you pass in keeps its own limits and gets no such
gate unless you also pass ``max_in_flight``.)

Both transports share the response rules of
:data:`~._base.MAX_HEAD_BYTES` and ``Content-Length`` (see :func:`check_head`)
and enforce ``max_response_bytes`` while reading.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence

import httpx

from ._base import (
    MAX_HEAD_BYTES,
    ClosesOnExit,
    RawResponse,
    Timeouts,
    TransportConnectError,
    TransportProtocolError,
    TransportResponseTooLarge,
    TransportTimeout,
)
from ._limiter import InFlightLimiter
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


DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024


def check_head(response: httpx.Response, max_body: int) -> None:
    """The response-head rules both transports share: a head of at most
    :data:`MAX_HEAD_BYTES`, at most one ``Content-Length`` (a repeated one,
    even with equal values, is refused, as llhttp does for the fast
    transport), and a declared length within ``max_body``."""
    raw = response.headers.raw
    size = 0
    lengths = 0
    for name, value in raw:
        size += len(name) + len(value) + 4
        if name.lower() == b"content-length":
            lengths += 1
    if size > MAX_HEAD_BYTES:
        raise TransportProtocolError(f"response head larger than {MAX_HEAD_BYTES} bytes")
    if lengths > 1 or b"," in (response.headers.get("content-length") or "").encode():
        raise TransportProtocolError("malformed HTTP response: duplicate Content-Length")
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise TransportResponseTooLarge(
            f"response body larger than max_response_bytes ({max_body}): "
            f"Content-Length {declared}"
        )


def _too_large(max_body: int) -> TransportResponseTooLarge:
    return TransportResponseTooLarge(f"response body larger than max_response_bytes ({max_body})")


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

    __slots__ = ("_client", "_closed", "_gate", "_max_body", "_owns")

    def __init__(
        self,
        *,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        limits: httpx.Limits | None = None,
        timeouts: Timeouts | None = None,
        owns_client: bool | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_in_flight: int | None = None,
    ) -> None:
        if max_response_bytes < 1:
            raise ValueError("max_response_bytes must be at least 1")
        self._max_body = max_response_bytes
        if max_in_flight is None and client is None:
            max_in_flight = (limits or DEFAULT_LIMITS).max_connections
        self._gate = InFlightLimiter(max_in_flight) if max_in_flight is not None else None
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
        client = self._client
        max_body = self._max_body
        gate = self._gate
        if gate is not None:
            await gate.acquire()
        try:
            request = client.build_request(method, url, headers=headers, content=body)
            response = await client.send(request, stream=True)
            try:
                check_head(response, max_body)
                pieces = []
                size = 0
                async for piece in response.aiter_bytes():
                    size += len(piece)
                    if size > max_body:
                        raise _too_large(max_body)
                    pieces.append(piece)
            finally:
                await response.aclose()
        except Exception as exc:
            err = _translate(exc, client)
            if err is exc:
                raise
            raise err from exc
        finally:
            if gate is not None:
                gate.release()
        return RawResponse(
            response.status_code, dict(response.headers.items()), b"".join(pieces)
        )

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
        gate = owner._gate
        if gate is not None:
            await gate.acquire()
        try:
            try:
                request = client.build_request(method, url, headers=headers, content=body)
                response = await client.send(request, stream=True)
            except Exception as exc:
                err = _translate(exc, client)
                if err is exc:
                    raise
                raise err from exc
            try:
                check_head(response, owner._max_body)
            except BaseException:
                await response.aclose()
                raise
        except BaseException:
            if gate is not None:
                gate.release()
            raise
        return _HttpxStreamingResponse(response, owner._max_body, gate)


class _HttpxStreamingResponse:
    """A :class:`~openarmature_nodes.llm.transport.StreamingResponse` over an
    ``httpx.Response`` opened with ``stream=True``."""

    __slots__ = ("_gate", "_iterator", "_max_body", "_response", "headers", "status")

    def __init__(
        self, response: httpx.Response, max_body: int, gate: InFlightLimiter | None
    ) -> None:
        self._response = response
        self._gate = gate
        self._max_body = max_body
        self.status: int = response.status_code
        self.headers: Mapping[str, str] = dict(response.headers.items())
        self._iterator: _HttpxBody | None = None

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        if self._iterator is not None:
            raise RuntimeError("the response body can only be iterated once")
        self._iterator = _HttpxBody(self._response.aiter_bytes(), self._max_body)
        return self._iterator

    async def aread(self) -> bytes:
        return b"".join([piece async for piece in self.aiter_bytes()])

    async def aclose(self) -> None:
        gate, self._gate = self._gate, None
        try:
            if self._iterator is not None:
                await self._iterator.aclose()
            await self._response.aclose()
        finally:
            if gate is not None:
                gate.release()

    def __repr__(self) -> str:
        return f"<streaming response {self.status}>"


class _HttpxBody:
    """httpx's body iterator with its exceptions translated. A class rather
    than an async generator, so that leaving a loop early leaves nothing for
    the garbage collector to finalize."""

    __slots__ = ("_inner", "_left")

    def __init__(self, inner: AsyncIterator[bytes], max_body: int) -> None:
        self._inner = inner
        self._left = max_body

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
                self._left -= len(piece)
                if self._left < 0:
                    raise TransportResponseTooLarge(
                        "response body larger than max_response_bytes"
                    )
                return piece

    async def aclose(self) -> None:
        aclose = getattr(self._inner, "aclose", None)
        if aclose is not None:
            await aclose()
