"""Transports: the seam between the sans-IO wire mapping and the network.

See :mod:`openarmature_nodes.llm.transport._base` for the contract.
"""

from ._base import (
    RawResponse,
    StreamingResponse,
    StreamingTransport,
    Timeouts,
    Transport,
    TransportConnectError,
    TransportError,
    TransportProtocolError,
    TransportTimeout,
)
from .httpx_transport import HttpxTransport

__all__ = [
    "HttpxTransport",
    "RawResponse",
    "StreamingResponse",
    "StreamingTransport",
    "Timeouts",
    "Transport",
    "TransportConnectError",
    "TransportError",
    "TransportProtocolError",
    "TransportTimeout",
]
