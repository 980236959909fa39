"""Messages, content blocks, tool calls and tools (spec llm-provider §3, §4).

Everything here is a frozen :class:`msgspec.Struct`. The four message kinds are
tagged by ``role`` and the content blocks by ``type``, so a conversation
stored as JSON decodes straight back into these types::

    msgspec.json.decode(data, type=list[Message])

Construction does not validate (msgspec never type-checks ``__init__``
arguments). The provider validates every message at the ``complete()``
boundary, before anything is sent, and raises ``ProviderInvalidRequest``
naming the offending message. That keeps the rules in one place
(:mod:`openarmature_nodes.llm.wire.validation`) and lets a caller build a
conversation incrementally without fighting the constructor.

Three of the types double as their own OpenAI wire shape: a
:class:`SystemMessage` or :class:`UserMessage` with string content, a
:class:`ToolMessage` and a :class:`TextBlock` encode to exactly the bytes the
Chat Completions API expects, so the encoder passes them through untouched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, TypeAlias

import msgspec

__all__ = [
    "AssistantBlock",
    "AssistantMessage",
    "ContentBlock",
    "ImageBlock",
    "ImageDetail",
    "ImageSource",
    "InlineSource",
    "Message",
    "RedactedThinkingBlock",
    "SystemMessage",
    "TextBlock",
    "ThinkingBlock",
    "Tool",
    "ToolCall",
    "ToolChoice",
    "ToolChoiceForce",
    "ToolMessage",
    "UrlSource",
    "UserBlock",
    "UserMessage",
]

ImageDetail: TypeAlias = Literal["auto", "low", "high"]


# --- content blocks (§3.1) -----------------------------------------------------


class TextBlock(msgspec.Struct, frozen=True, tag="text", tag_field="type", omit_defaults=True):
    """A piece of text. One text block ``T`` is equivalent to the string ``T``.

    ``signature`` is an opaque provider-issued token (Gemini); callers never set it.
    """

    text: str
    signature: str | None = None


class UrlSource(msgspec.Struct, frozen=True, tag="url", tag_field="type"):
    """An image referenced by URL (``http(s)://``, ``data:`` ...), sent unchanged."""

    url: str


class InlineSource(msgspec.Struct, frozen=True, tag="inline", tag_field="type"):
    """An image given as base64 text; the block's ``media_type`` is then required."""

    base64_data: str


ImageSource: TypeAlias = UrlSource | InlineSource


class ImageBlock(msgspec.Struct, frozen=True, tag="image", tag_field="type", omit_defaults=True):
    """An image in a user message.

    ``source`` is exactly one of :class:`UrlSource` / :class:`InlineSource`.
    ``media_type`` (``image/png``, ``image/jpeg``, ``image/webp``) is required
    for inline images and ignored for URLs. ``detail`` is a fidelity hint; left
    at ``None`` nothing is sent and the provider's default (``auto``) applies.
    """

    source: ImageSource | None = None
    media_type: str | None = None
    detail: ImageDetail | None = None


class ThinkingBlock(
    msgspec.Struct, frozen=True, tag="thinking", tag_field="type", omit_defaults=True
):
    """Reasoning text a provider emitted. The OpenAI mapping strips it on send."""

    text: str
    signature: str | None = None


class RedactedThinkingBlock(msgspec.Struct, frozen=True, tag="redacted_thinking", tag_field="type"):
    """A provider-redacted reasoning slot (an opaque ``data`` blob)."""

    data: str


UserBlock: TypeAlias = TextBlock | ImageBlock
AssistantBlock: TypeAlias = TextBlock | ThinkingBlock | RedactedThinkingBlock
ContentBlock: TypeAlias = TextBlock | ImageBlock | ThinkingBlock | RedactedThinkingBlock


# --- tool calls and tools (§3, §4) -------------------------------------------------


class ToolCall(msgspec.Struct, frozen=True, omit_defaults=True):
    """A tool invocation requested by the model.

    ``id`` is the provider's identifier, preserved verbatim. ``arguments`` is
    the parsed JSON object; it is ``None`` only on a degraded
    ``finish_reason="error"`` response whose argument bytes did not parse (the
    original bytes stay available on ``Response.raw``).
    """

    id: str
    name: str
    arguments: dict[str, Any] | None
    signature: str | None = None


class Tool(msgspec.Struct, frozen=True, omit_defaults=True):
    """A function the model may call: a unique ``name``, a ``description`` for
    the model, and ``parameters``, a JSON Schema object describing the arguments.

    ``strict=True`` asks the server to constrain the model's arguments to
    ``parameters`` (sent as the function's ``strict`` flag to servers whose
    dialect supports it: OpenAI, vLLM, SGLang; see
    :mod:`~openarmature_nodes.llm.dialects`). vLLM constrains tool arguments
    only for strict tools. OpenAI additionally requires a strict schema to
    close every object (``additionalProperties: false``) and list all its
    properties in ``required``.

    Its encoding is exactly the ``function`` object of an OpenAI tool entry.
    """

    name: str
    description: str
    parameters: Mapping[str, Any]
    strict: bool = False


class ToolChoiceForce(msgspec.Struct, frozen=True, tag="tool", tag_field="type"):
    """``tool_choice`` form that forces a call of the named tool."""

    name: str


ToolChoice: TypeAlias = Literal["auto", "required", "none"] | ToolChoiceForce


# --- messages (§3) -----------------------------------------------------------------


class SystemMessage(msgspec.Struct, frozen=True, tag="system", tag_field="role"):
    """Instructions for the model. Only the first message may be a system message."""

    role: ClassVar[str] = "system"
    content: str


class UserMessage(msgspec.Struct, frozen=True, tag="user", tag_field="role"):
    """A user turn: non-empty text, or a non-empty sequence of text / image blocks."""

    role: ClassVar[str] = "user"
    content: str | Sequence[UserBlock]


class AssistantMessage(
    msgspec.Struct, frozen=True, tag="assistant", tag_field="role", omit_defaults=True
):
    """A model turn, as returned in ``Response.message`` or replayed as history.

    ``content`` is text (or text / thinking blocks); it may be ``None`` or empty
    when ``tool_calls`` is non-empty.
    """

    role: ClassVar[str] = "assistant"
    content: str | Sequence[AssistantBlock] | None = None
    tool_calls: Sequence[ToolCall] | None = None


class ToolMessage(msgspec.Struct, frozen=True, tag="tool", tag_field="role"):
    """A tool's result (a string; serialize structured results yourself),
    answering the earlier assistant tool call whose ``id`` is ``tool_call_id``."""

    role: ClassVar[str] = "tool"
    content: str
    tool_call_id: str


Message: TypeAlias = SystemMessage | UserMessage | AssistantMessage | ToolMessage
