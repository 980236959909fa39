"""Request encoding: the outbound half of the sans-IO OpenAI Chat Completions mapping (§8.1).

Pure functions, no sockets: a :class:`CompletionRequest` becomes request
bytes, and ``(status, headers, body)`` becomes a :class:`Response` or a
categorized error. The provider glues these to a transport; tests drive them
directly.

Encoding. The body is a dict at the root (so extras can sit beside
``model``) holding Structs; it is encoded by one ``msgspec`` encoder with
``order="deterministic"``: every JSON object the caller supplies (tool
schemas, tool-call arguments, extras, the response schema) is written with
sorted keys, and every Struct in its fixed field order. Structurally equal
inputs therefore give byte-identical bodies, whatever order the caller built
their dicts in (spec §8 wire-byte stability). Messages whose Python shape
already equals the wire shape (string-content system/user messages, tool
messages, plain text blocks) are encoded as they are, without a copy.

Decoding lives in :mod:`.decode`; :mod:`openarmature_nodes.llm.wire` gathers
both halves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from openarmature_nodes.llm.config import RuntimeConfig
from openarmature_nodes.llm.dialects import DIALECTS, Dialect, StructuredMode
from openarmature_nodes.llm.errors import ProviderInvalidRequest
from openarmature_nodes.llm.messages import (
    AssistantMessage,
    ImageBlock,
    InlineSource,
    Message,
    SystemMessage,
    TextBlock,
    Tool,
    ToolChoiceForce,
    ToolMessage,
    UrlSource,
    UserMessage,
)
from openarmature_nodes.llm.request import CompletionRequest

from .dialects import structured_format
from .jsonschema import json_equal
from .structured import inject_schema_directive, schema_info

__all__ = ["ENCODER", "build_chat_body", "encode_chat_request", "structured_mode_for"]

ENCODER = msgspec.json.Encoder(order="deterministic")

# --- outbound wire shapes --------------------------------------------------------


class _WireFunctionCall(msgspec.Struct, frozen=True):
    name: str
    arguments: str


class _WireToolCall(msgspec.Struct, frozen=True, tag="function", tag_field="type"):
    id: str
    function: _WireFunctionCall


class _WireAssistant(msgspec.Struct, frozen=True, tag="assistant", tag_field="role"):
    content: str | list[TextBlock] | None
    tool_calls: list[_WireToolCall] | msgspec.UnsetType = msgspec.UNSET


class _WireImageUrl(msgspec.Struct, frozen=True):
    url: str
    detail: str | msgspec.UnsetType = msgspec.UNSET


class _WireImagePart(msgspec.Struct, frozen=True, tag="image_url", tag_field="type"):
    image_url: _WireImageUrl


class _WireUser(msgspec.Struct, frozen=True, tag="user", tag_field="role"):
    content: list[TextBlock | _WireImagePart]


class _WireTool(msgspec.Struct, frozen=True, tag="function", tag_field="type"):
    function: Tool


_OPENAI = DIALECTS["openai"]


def _wire_tool(tool: Tool, dialect: Dialect) -> _WireTool:
    # Tool encodes as the function object; its strict flag (omitted when False) goes only
    # to servers whose dialect understands it.
    if tool.strict and not dialect.tool_strict:
        tool = msgspec.structs.replace(tool, strict=False)
    return _WireTool(tool)


_SAMPLING = ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty")
_ALWAYS_MANAGED = frozenset({"model", "messages", "tools", "tool_choice"})


def _wire_message(msg: Message) -> Any:
    if isinstance(msg, UserMessage):
        if isinstance(msg.content, str):
            return msg
        return _WireUser([_wire_user_part(b) for b in msg.content])
    if isinstance(msg, ToolMessage | SystemMessage):
        return msg
    return _wire_assistant(msg)


def _wire_user_part(block: TextBlock | ImageBlock) -> TextBlock | _WireImagePart:
    if isinstance(block, TextBlock):
        return block if block.signature is None else TextBlock(block.text)
    source = block.source
    if isinstance(source, InlineSource):
        url = f"data:{block.media_type};base64,{source.base64_data}"
    else:
        assert isinstance(source, UrlSource)  # guaranteed by validation
        url = source.url
    detail: Any = msgspec.UNSET if block.detail is None else block.detail
    return _WireImagePart(_WireImageUrl(url, detail))


def _wire_assistant(msg: AssistantMessage) -> Any:
    calls = msg.tool_calls
    content = msg.content
    if calls is None and isinstance(content, str):
        return msg
    wire_content: str | list[TextBlock] | None
    if content is None or isinstance(content, str):
        wire_content = content
    else:  # thinking / redacted-thinking blocks are stripped (§8.1.1)
        texts = [b.text for b in content if isinstance(b, TextBlock)]
        if len(texts) == 1:
            wire_content = texts[0]
        elif texts:
            wire_content = [TextBlock(t) for t in texts]
        else:
            wire_content = None if calls else ""
    if not calls:
        return _WireAssistant(wire_content)
    wire_calls = [
        _WireToolCall(c.id, _WireFunctionCall(c.name, ENCODER.encode(c.arguments).decode()))
        for c in calls
    ]
    return _WireAssistant(wire_content, wire_calls)


def structured_mode_for(dialect: Dialect, *, fallback: bool = False) -> StructuredMode:
    """How a ``response_schema`` is sent to a ``dialect`` server (``fallback``
    forces the prompt directive)."""
    return "prompt" if fallback else dialect.structured_mode


def build_chat_body(
    model: str,
    request: CompletionRequest,
    *,
    fallback: bool = False,
    stream: bool = False,
    dialect: Dialect = _OPENAI,
) -> dict[str, Any]:
    """The request body as a dict (Structs inside), ready for :data:`ENCODER`.

    ``dialect`` (:mod:`.dialects`) decides how ``response_schema`` is sent,
    which key carries ``max_tokens`` and whether tools carry ``strict``; the
    default is the spec's OpenAI mapping (§8.1). ``fallback`` selects the
    prompt-augmentation path for ``response_schema`` (§8.1.5.1): no
    ``response_format``; the schema goes into a system directive. ``stream``
    adds ``stream: true`` and ``stream_options: {include_usage: true}``
    (§8.1.6). Extras are merged last under the managed-field rules (§6):
    raises :class:`ProviderInvalidRequest` for a conflicting extras value
    (``stream`` is managed on every call, ``stream_options`` only while
    streaming).
    """
    messages: Sequence[Message] = request.messages
    schema = request.response_schema
    info = schema_info(schema) if schema is not None else None
    mode = structured_mode_for(dialect, fallback=fallback)
    if info is not None and mode == "prompt":
        messages = inject_schema_directive(messages, info.json_text)
    body: dict[str, Any] = {"model": model, "messages": [_wire_message(m) for m in messages]}
    if request.tools:
        body["tools"] = [_wire_tool(t, dialect) for t in request.tools]
    choice = request.tool_choice
    if choice is not None:
        body["tool_choice"] = (
            {"type": "function", "function": {"name": choice.name}}
            if isinstance(choice, ToolChoiceForce)
            else choice
        )
    config = request.config
    if config is not None:
        if config.max_tokens is not None:
            body[dialect.max_tokens_field] = config.max_tokens
        for name in _SAMPLING:
            value = getattr(config, name)
            if value is not None:
                body[name] = value
        if config.stop_sequences is not None:
            body["stop"] = list(config.stop_sequences)
    if info is not None:
        sent = structured_format(mode, info.name, info.wire_schema, info.strict)
        if sent is not None:
            body[sent[0]] = sent[1]
    if stream:  # §8.1.6; both keys are managed (see _merge_extras)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if config is not None and config.extras:
        _merge_extras(body, config, stream=stream)
    return body


def _merge_extras(body: dict[str, Any], config: RuntimeConfig, *, stream: bool) -> None:
    for key in sorted(config.extras):
        value = config.extras[key]
        if key == "stop" and config.stop_sequences is not None:
            body["stop"] = _merge_stop(body["stop"], value)
        elif key == "stream":
            if not json_equal(value, stream):
                raise _conflict(key, value, stream)
        elif key in body:
            managed = msgspec.to_builtins(body[key])
            if not json_equal(managed, value):
                raise _conflict(key, value, managed)
        elif key in _ALWAYS_MANAGED:
            raise ProviderInvalidRequest(
                f"config.extras[{key!r}] names a field the provider manages; pass {key} as the "
                f"complete() argument instead"
            )
        else:
            body[key] = value


def _merge_stop(declared: list[str], extra: Any) -> list[str]:
    if isinstance(extra, str):
        extra = [extra]
    if not isinstance(extra, list) or not all(isinstance(s, str) for s in extra):
        return declared  # malformed for the merge: treated as absent (§6)
    out: list[str] = []
    for s in (*declared, *extra):
        if s not in out:
            out.append(s)
    return out


def _conflict(key: str, value: Any, managed: Any) -> ProviderInvalidRequest:
    shown = repr(value)
    if len(shown) > 200:
        shown = shown[:197] + "..."
    return ProviderInvalidRequest(
        f"config.extras[{key!r}] = {shown} conflicts with the value the provider sends for "
        f"{key!r}; remove it from extras (or set it through the declared parameter)"
    )


def encode_chat_request(
    model: str,
    request: CompletionRequest,
    *,
    fallback: bool = False,
    stream: bool = False,
    dialect: Dialect = _OPENAI,
) -> bytes:
    """The JSON bytes of ``POST /v1/chat/completions`` for ``request``."""
    return ENCODER.encode(
        build_chat_body(model, request, fallback=fallback, stream=stream, dialect=dialect)
    )
