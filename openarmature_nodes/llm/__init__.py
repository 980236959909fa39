"""The LLM layer: messages, the OpenAI-compatible provider, and its transports.

Everything a caller needs is importable from here::

    from openarmature_nodes.llm import OpenAIProvider, RuntimeConfig, UserMessage

The layer knows nothing of graphs. Its pieces, bottom up:

- :mod:`.messages`, :mod:`.config`, :mod:`.request`, :mod:`.response`: the
  data types (frozen ``msgspec.Struct``\\ s);
- :mod:`.errors`: the nine error categories;
- :mod:`.dialects`: what each server family accepts (the table; the encoding
  follows it) and :mod:`.dialect_probe`, the ``dialect="auto"`` probe;
- :mod:`.tokens`: token deltas of streamed calls and the sinks that get them;
- :mod:`.genai`: the one LLM-call -> OpenTelemetry attribute mapping (GenAI
  semantic conventions, ``openarmature.llm.*``), shared by the span middleware
  and the OTel observer (imported on its own; it needs only the OTel
  semantic-conventions package);
- :mod:`.wire`: the sans-IO mapping (pre-send validation, schemas, request
  encoding, reply / error / stream decoding, SSE); it imports no I/O library;
- :mod:`.transport`: the seam to the network;
- :mod:`.provider`: :class:`OpenAIProvider`, which ties them together.

The provider and the transports are imported on first use (a module
``__getattr__``), so importing this package, or :mod:`.wire` alone, loads no
network library: the data types and the wire mapping stay usable without
httpx, anyio or httptools loaded.
"""

from typing import TYPE_CHECKING

from .config import RuntimeConfig
from .dialects import Dialect
from .errors import (
    TRANSIENT_CATEGORIES,
    ProviderAuthentication,
    ProviderDegradedResponse,
    ProviderError,
    ProviderInvalidModel,
    ProviderInvalidRequest,
    ProviderInvalidResponse,
    ProviderModelNotLoaded,
    ProviderRateLimit,
    ProviderTimeout,
    ProviderUnavailable,
    ProviderUnsupportedContentBlock,
    StructuredOutputInvalid,
)
from .messages import (
    AssistantBlock,
    AssistantMessage,
    ContentBlock,
    ImageBlock,
    ImageDetail,
    ImageSource,
    InlineSource,
    Message,
    RedactedThinkingBlock,
    SystemMessage,
    TextBlock,
    ThinkingBlock,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceForce,
    ToolMessage,
    UrlSource,
    UserBlock,
    UserMessage,
)
from .request import CompletionRequest
from .response import FinishReason, Response, Usage
from .tokens import DeltaKind, TokenCallback, TokenDelta, token_sink
from .wire.error_reply import HTTPErrorReply
from .wire.structured import validate_structured

if TYPE_CHECKING:  # imported on first use: see __getattr__
    from .provider import OpenAIProvider
    from .transport import (
        FastTransport,
        HttpxTransport,
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

_TRANSPORT_NAMES = frozenset({
    "FastTransport",
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
})


def __getattr__(name: str) -> object:
    """Import the provider and the transports (httpx, anyio, httptools) on first use."""
    if name == "OpenAIProvider":
        from .provider import OpenAIProvider

        value: object = OpenAIProvider
    elif name in _TRANSPORT_NAMES:
        from . import transport

        value = getattr(transport, name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "TRANSIENT_CATEGORIES",
    "AssistantBlock",
    "AssistantMessage",
    "CompletionRequest",
    "ContentBlock",
    "DeltaKind",
    "Dialect",
    "FastTransport",
    "FinishReason",
    "HTTPErrorReply",
    "HttpxTransport",
    "ImageBlock",
    "ImageDetail",
    "ImageSource",
    "InlineSource",
    "Message",
    "OpenAIProvider",
    "ProviderAuthentication",
    "ProviderDegradedResponse",
    "ProviderError",
    "ProviderInvalidModel",
    "ProviderInvalidRequest",
    "ProviderInvalidResponse",
    "ProviderModelNotLoaded",
    "ProviderRateLimit",
    "ProviderTimeout",
    "ProviderUnavailable",
    "ProviderUnsupportedContentBlock",
    "RawResponse",
    "RedactedThinkingBlock",
    "Response",
    "RuntimeConfig",
    "StreamingResponse",
    "StreamingTransport",
    "StructuredOutputInvalid",
    "SystemMessage",
    "TextBlock",
    "ThinkingBlock",
    "Timeouts",
    "TokenCallback",
    "TokenDelta",
    "Tool",
    "ToolCall",
    "ToolChoice",
    "ToolChoiceForce",
    "ToolMessage",
    "Transport",
    "TransportConnectError",
    "TransportError",
    "TransportProtocolError",
    "TransportTimeout",
    "UrlSource",
    "Usage",
    "UserBlock",
    "UserMessage",
    "token_sink",
    "validate_structured",
]
