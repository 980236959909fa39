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
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from ._base import (
    RawResponse,
    Timeouts,
    TransportConnectError,
    TransportProtocolError,
    TransportTimeout,
)

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


class HttpxTransport:
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
        except httpx.TimeoutException as exc:
            raise TransportTimeout(f"{type(exc).__name__}: {exc}") from exc
        except httpx.ConnectError as exc:
            raise TransportConnectError(f"cannot connect: {exc}") from exc
        except (httpx.HTTPError, httpx.StreamError) as exc:
            raise TransportProtocolError(f"{type(exc).__name__}: {exc}") from exc
        except RuntimeError as exc:
            if self._client.is_closed:
                raise TransportConnectError("the HTTP client is closed") from exc
            raise
        return RawResponse(response.status_code, dict(response.headers.items()), response.content)

    async def aclose(self) -> None:
        self._closed = True
        if self._owns:
            await self._client.aclose()

    def __repr__(self) -> str:
        return f"HttpxTransport(closed={self._closed})"
