"""The LLM layer: messages, the OpenAI-compatible provider, and its transports.

Everything a caller needs is importable from here::

    from openarmature_nodes.llm import OpenAIProvider, RuntimeConfig, UserMessage

The layer knows nothing of graphs. Its pieces, bottom up:

- :mod:`.messages`, :mod:`.config`, :mod:`.request`, :mod:`.response`: the
  data types (frozen ``msgspec.Struct``\\ s);
- :mod:`.errors`: the nine error categories;
- :mod:`.validation`, :mod:`.jsonschema`, :mod:`.structured`: checks;
- :mod:`.openai_wire`, :mod:`.openai_errors`: the sans-IO wire mapping;
  :mod:`.dialects`: what each server family accepts (the encoding follows it),
  and :mod:`.dialect_probe`, the ``dialect="auto"`` probe;
  :mod:`.sse` and :mod:`.openai_stream`: its streaming half;
- :mod:`.tokens`: token deltas of streamed calls and the sinks that get them;
- :mod:`.transport`: the seam to the network;
- :mod:`.provider`: :class:`OpenAIProvider`, which ties them together.
"""

from .config import RuntimeConfig
from .dialects import Dialect
from .errors import (
    TRANSIENT_CATEGORIES,
    ProviderAuthentication,
    ProviderError,
    ProviderInvalidModel,
    ProviderInvalidRequest,
    ProviderInvalidResponse,
    ProviderModelNotLoaded,
    ProviderRateLimit,
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
from .openai_errors import HTTPErrorReply
from .provider import OpenAIProvider
from .request import CompletionRequest
from .response import FinishReason, Response, Usage
from .structured import validate_structured
from .tokens import DeltaKind, TokenCallback, TokenDelta, token_sink
from .transport import (
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

__all__ = [
    "TRANSIENT_CATEGORIES",
    "AssistantBlock",
    "AssistantMessage",
    "CompletionRequest",
    "ContentBlock",
    "DeltaKind",
    "Dialect",
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
    "ProviderError",
    "ProviderInvalidModel",
    "ProviderInvalidRequest",
    "ProviderInvalidResponse",
    "ProviderModelNotLoaded",
    "ProviderRateLimit",
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
