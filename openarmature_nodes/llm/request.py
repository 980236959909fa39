"""The value that flows through call-level middleware.

``OpenAIProvider.complete(...)`` packs its arguments into one frozen
:class:`CompletionRequest` and hands it to ``OpenAIProvider.call``, the
innermost handler. Middleware composed around ``call`` (retry, spans,
structured-output re-ask ...) receives the request, may pass along a modified
copy (``msgspec.structs.replace(request, messages=...)``), and gets the
``Response`` back. Being frozen, a request can be shared between attempts
without defensive copies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from .config import RuntimeConfig
from .messages import Message, Tool, ToolChoice

__all__ = ["CompletionRequest"]


class CompletionRequest(msgspec.Struct, frozen=True):
    """Everything one ``complete()`` call sends.

    ``response_schema`` is a JSON Schema ``dict`` (root ``type: object``) or a
    ``msgspec.Struct`` type; ``None`` asks for free-form text.
    """

    messages: Sequence[Message]
    tools: Sequence[Tool] | None = None
    config: RuntimeConfig | None = None
    response_schema: Any = None
    tool_choice: ToolChoice | None = None
