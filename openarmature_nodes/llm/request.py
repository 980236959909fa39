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

    ``stream``: read the reply as a stream of Server-Sent Events and report
    its text to the token sinks in scope as it arrives
    (:mod:`~openarmature_nodes.llm.tokens`); the result is the same whole
    ``Response`` either way. It is part of the request so that every layer
    of a call-level onion sees, and passes on, the mode the caller chose.

    ``deadline``: seconds this call's attempt may take in all (waiting for a
    place under the endpoint's in-flight limit, connecting, sending, and
    reading the whole reply, streamed or not); ``None`` uses the provider's
    default (``OpenAIProvider(deadline=...)``, 300 s unless set). When it
    elapses the call fails with ``ProviderTimeout`` (``provider_unavailable``).
    """

    messages: Sequence[Message]
    tools: Sequence[Tool] | None = None
    config: RuntimeConfig | None = None
    response_schema: Any = None
    tool_choice: ToolChoice | None = None
    stream: bool = False
    deadline: float | None = None
