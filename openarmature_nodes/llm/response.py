"""The result of a completion (spec llm-provider §6).

A :class:`Response` carries the normalized view (``message``,
``finish_reason``, ``usage``, ``parsed``) *and* the provider's reply as parsed
JSON in ``raw``, untouched: anything the normalized view leaves out (logprobs,
``system_fingerprint``, vLLM's ``prompt_logprobs``, a server's timing stats)
is still there.
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import msgspec

from .messages import AssistantMessage

__all__ = ["FinishReason", "Response", "Usage"]

FinishReason: TypeAlias = Literal["stop", "length", "tool_calls", "content_filter", "error"]


class Usage(msgspec.Struct, frozen=True, omit_defaults=True):
    """Token counts. Each is a non-negative ``int`` or ``None`` (not reported).

    The first three are ``None`` together when the server sent no usage. A
    counter the server sent in a malformed shape (a string, a negative number,
    a boolean) is ``None`` as well; its verbatim value stays on ``Response.raw``.
    ``cached_tokens`` is the prompt-prefix cache hit count when the server
    reports one (``0`` is a reported miss); ``cache_creation_tokens`` is never
    reported by OpenAI-compatible servers.
    """

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None
    cache_creation_tokens: int | None = None


class Response(msgspec.Struct, frozen=True):
    """One completion.

    - ``message``: the assistant message (text content and/or ``tool_calls``).
    - ``finish_reason``: ``stop``, ``length``, ``tool_calls``,
      ``content_filter`` or ``error`` (a degraded reply whose tool calls may be
      partial; see the spec §3).
    - ``usage``: a :class:`Usage`, always present.
    - ``raw``: the server's JSON reply, verbatim.
    - ``parsed``: with a ``response_schema``, the validated value (plain data
      for a JSON Schema dict, an instance for a ``msgspec.Struct`` type);
      ``None`` otherwise and on tool-call replies.
    """

    message: AssistantMessage
    finish_reason: FinishReason
    usage: Usage
    raw: dict[str, Any]
    parsed: Any = None
