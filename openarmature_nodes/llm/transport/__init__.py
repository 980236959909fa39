"""Transports: the seam between the sans-IO wire mapping and the network.

See :mod:`openarmature_nodes.llm.transport._base` for the contract. Two
implementations ship:

- :class:`FastTransport`: an HTTP/1.1 keep-alive pool on anyio-driven sockets with the
  httptools parser, for plain ``http://`` endpoints (a vLLM service inside a
  cluster, a local llama.cpp). The provider's default for ``http://`` URLs.
- :class:`HttpxTransport`: ``httpx.AsyncClient`` underneath, for everything
  else: TLS, proxies, custom auth flows. The provider's default for
  ``https://`` URLs, and what ``http_client=`` plugs into.
"""

from ._base import (
    RawResponse,
    StreamingResponse,
    StreamingTransport,
    Timeouts,
    Transport,
    TransportConnectError,
    TransportDeadline,
    TransportError,
    TransportProtocolError,
    TransportRequestMaybeSent,
    TransportResponseTooLarge,
    TransportTimeout,
)
from .fast import FastTransport, TransportClosed
from .httpx_transport import HttpxTransport

__all__ = [
    "FastTransport",
    "HttpxTransport",
    "RawResponse",
    "StreamingResponse",
    "StreamingTransport",
    "Timeouts",
    "Transport",
    "TransportConnectError",
    "TransportDeadline",
    "TransportError",
    "TransportProtocolError",
    "TransportClosed",
    "TransportRequestMaybeSent",
    "TransportResponseTooLarge",
    "TransportTimeout",
]
