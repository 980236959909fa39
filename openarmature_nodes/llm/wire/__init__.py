"""The sans-IO OpenAI Chat Completions mapping: bytes and values in, bytes and values out.

Nothing in this package opens a socket, waits, or imports an I/O library
(httpx, anyio, httptools, ssl, socket): a test can import it alone and drive
every rule with plain bytes (``tests/test_llm_wire_alone.py`` checks that it
stays so). The provider (:mod:`openarmature_nodes.llm.provider`) glues it to a
transport. Its modules, in the order a call meets them:

- :mod:`.validation`: pre-send checks; bad input raises ``ProviderInvalidRequest``
  before anything is sent;
- :mod:`.structured`, :mod:`.jsonschema`: response schemas, their wire form and
  the compiled validator for replies and tool schemas;
- :mod:`.encode`: a request becomes deterministic JSON bytes;
- :mod:`.decode`: a 2xx body becomes a ``Response`` (or a categorized error);
- :mod:`.error_reply`: a non-2xx reply becomes its error category;
- :mod:`.sse`, :mod:`.stream`: a streamed body becomes events, deltas and,
  at the end, the same ``Response``.
"""

from .decode import check_models_response, decode_chat_response, decode_models_response
from .encode import build_chat_body, encode_chat_request
from .error_reply import HTTPErrorReply, error_from_reply, parse_retry_after
from .jsonschema import SchemaError, Validator, compile_schema, validator_for
from .sse import SSEEvent, SSEParser
from .stream import ChatStreamAssembler, Delta
from .structured import schema_info, validate_structured
from .validation import normalize_tool_choice, validate_request

__all__ = [
    "ChatStreamAssembler",
    "Delta",
    "HTTPErrorReply",
    "SSEEvent",
    "SSEParser",
    "SchemaError",
    "Validator",
    "build_chat_body",
    "check_models_response",
    "compile_schema",
    "decode_chat_response",
    "decode_models_response",
    "encode_chat_request",
    "error_from_reply",
    "normalize_tool_choice",
    "parse_retry_after",
    "schema_info",
    "validate_request",
    "validate_structured",
    "validator_for",
]
