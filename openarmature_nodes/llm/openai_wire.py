"""Sans-IO OpenAI Chat Completions mapping (spec llm-provider §8.1).

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

Decoding. The body is decoded once into plain data (kept as ``raw``) and then
converted to small typed Structs; fields are typed loosely (``Any``) where
real servers differ, and checked by hand with clear errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from .config import RuntimeConfig
from .errors import (
    ProviderInvalidModel,
    ProviderInvalidRequest,
    ProviderInvalidResponse,
    ProviderModelNotLoaded,
)
from .jsonschema import json_equal, validator_for
from .messages import (
    AssistantMessage,
    ImageBlock,
    InlineSource,
    Message,
    SystemMessage,
    TextBlock,
    Tool,
    ToolCall,
    ToolChoiceForce,
    ToolMessage,
    UrlSource,
    UserMessage,
)
from .openai_errors import error_from_reply
from .request import CompletionRequest
from .response import FinishReason, Response, Usage
from .structured import inject_schema_directive, schema_info, validate_structured

__all__ = [
    "build_chat_body",
    "check_models_response",
    "decode_chat_response",
    "encode_chat_request",
]

ENCODER = msgspec.json.Encoder(order="deterministic")
_decode_any = msgspec.json.Decoder()

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


_SAMPLING = ("temperature", "max_tokens", "top_p", "seed", "frequency_penalty", "presence_penalty")
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


def build_chat_body(
    model: str, request: CompletionRequest, *, fallback: bool = False, stream: bool = False
) -> dict[str, Any]:
    """The request body as a dict (Structs inside), ready for :data:`ENCODER`.

    ``fallback`` selects the prompt-augmentation path for ``response_schema``
    (§8.1.5.1): no ``response_format``; the schema goes into a system
    directive. Extras are merged last under the managed-field rules (§6):
    raises :class:`ProviderInvalidRequest` for a conflicting extras value.
    """
    messages: Sequence[Message] = request.messages
    schema = request.response_schema
    info = schema_info(schema) if schema is not None else None
    if info is not None and fallback:
        messages = inject_schema_directive(messages, info.json_text)
    body: dict[str, Any] = {"model": model, "messages": [_wire_message(m) for m in messages]}
    if request.tools:
        body["tools"] = [_WireTool(t) for t in request.tools]
    choice = request.tool_choice
    if choice is not None:
        body["tool_choice"] = (
            {"type": "function", "function": {"name": choice.name}}
            if isinstance(choice, ToolChoiceForce)
            else choice
        )
    config = request.config
    if config is not None:
        for name in _SAMPLING:
            value = getattr(config, name)
            if value is not None:
                body[name] = value
        if config.stop_sequences is not None:
            body["stop"] = list(config.stop_sequences)
    if info is not None and not fallback:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": info.name, "schema": info.wire_schema, "strict": info.strict},
        }
    if stream:
        body["stream"] = True
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
    model: str, request: CompletionRequest, *, fallback: bool = False, stream: bool = False
) -> bytes:
    """The JSON bytes of ``POST /v1/chat/completions`` for ``request``."""
    return ENCODER.encode(build_chat_body(model, request, fallback=fallback, stream=stream))


# --- inbound wire shapes ---------------------------------------------------------------


class _InFunction(msgspec.Struct):
    name: Any = None
    arguments: Any = None


class _InToolCall(msgspec.Struct):
    id: Any = None
    function: _InFunction | None = None


class _InMessage(msgspec.Struct):
    content: Any = None
    tool_calls: list[_InToolCall] | None = None


class _InChoice(msgspec.Struct):
    message: _InMessage | None = None
    finish_reason: Any = None


class _InChat(msgspec.Struct):
    choices: list[_InChoice] | None = None


_FINISH: dict[Any, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "function_call": "tool_calls",
    "error": "error",
}


def _invalid(reason: str, cause: BaseException | None = None) -> ProviderInvalidResponse:
    err = ProviderInvalidResponse(f"unusable chat completion reply: {reason}")
    if cause is not None:
        err.__cause__ = cause
    return err


def decode_chat_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tools: Mapping[str, Tool] | None = None,
    response_schema: Any = None,
    url: str = "",
) -> Response:
    """Map one reply of ``POST /v1/chat/completions`` to a :class:`Response`.

    Raises the categorized error for a non-2xx status, and
    :class:`ProviderInvalidResponse` for a 2xx body that is not a usable
    completion. Tool calls are checked against ``tools`` (names, JSON
    arguments matching the parameters schema) unless ``finish_reason`` is
    ``error``, where partial tool calls are surfaced as they are (§3).
    With ``response_schema``, content is validated into ``parsed``.
    """
    if not 200 <= status < 300:
        raise error_from_reply(status, headers, body, url=url)
    try:
        raw = _decode_any.decode(body)
    except msgspec.DecodeError as exc:
        raise _invalid(f"body is not JSON ({exc})", exc) from exc
    if not isinstance(raw, dict):
        raise _invalid("body is not a JSON object")
    try:
        typed = msgspec.convert(raw, _InChat)
    except msgspec.ValidationError as exc:
        raise _invalid(str(exc), exc) from exc
    if not typed.choices or typed.choices[0].message is None:
        raise _invalid("no choices[0].message")
    choice = typed.choices[0]
    msg = choice.message
    assert msg is not None
    finish: FinishReason = _FINISH.get(choice.finish_reason, "error")
    content = _content(msg.content)
    calls = None
    if msg.tool_calls:
        calls = [
            _tool_call(c, i, tools or {}, lenient=finish == "error")
            for i, c in enumerate(msg.tool_calls)
        ]
    usage = _usage(raw.get("usage"))
    parsed = None
    if response_schema is not None and not calls and finish != "tool_calls":
        parsed = validate_structured(content, response_schema, finish_reason=finish, usage=usage)
    return Response(AssistantMessage(content, calls), finish, usage, raw, parsed)


def _content(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):  # some servers answer with text parts
        texts = [p.get("text") for p in value if isinstance(p, dict) and p.get("type") == "text"]
        if all(isinstance(t, str) for t in texts):
            return "".join(t for t in texts if isinstance(t, str))
    raise _invalid(f"message.content has an unexpected shape ({type(value).__name__})")


def _tool_call(call: _InToolCall, i: int, tools: Mapping[str, Tool], *, lenient: bool) -> ToolCall:
    fn = call.function or _InFunction()
    name, cid, args = fn.name, call.id, fn.arguments
    if isinstance(args, str):
        try:
            args = _decode_any.decode(args)
        except msgspec.DecodeError as exc:
            if not lenient:
                raise _invalid(
                    f"tool_calls[{i}] arguments are not valid JSON ({exc})", exc
                ) from exc
            args = None
    if lenient:
        return ToolCall(
            cid if isinstance(cid, str) else "",
            name if isinstance(name, str) else "",
            args if isinstance(args, dict) else None,
        )
    if not isinstance(cid, str) or not cid:
        raise _invalid(f"tool_calls[{i}] has no id")
    if not isinstance(name, str) or name not in tools:
        raise _invalid(f"tool_calls[{i}] names {name!r}, which is not among the tools sent")
    if not isinstance(args, dict):
        raise _invalid(f"tool_calls[{i}] ({name}) arguments are not a JSON object")
    error = validator_for(tools[name].parameters).error(args)
    if error is not None:
        raise _invalid(f"tool_calls[{i}] ({name}) arguments do not match its parameters: {error}")
    return ToolCall(cid, name, args)


def _count(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


_NO_USAGE = Usage()


def _usage(value: Any) -> Usage:
    if not isinstance(value, dict):
        return _NO_USAGE
    details = value.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else None
    return Usage(
        _count(value.get("prompt_tokens")),
        _count(value.get("completion_tokens")),
        _count(value.get("total_tokens")),
        cached,
    )


# --- GET /v1/models ------------------------------------------------------------------------


class _InModel(msgspec.Struct):
    id: Any = None
    status: Any = None
    state: Any = None


class _InModels(msgspec.Struct):
    data: list[_InModel]


_NOT_LOADED = frozenset(
    {
        "loading",
        "not_loaded",
        "not-loaded",
        "unloaded",
        "not loaded",
        "downloading",
        "pending",
        "starting",
    }
)


def check_models_response(
    status: int, headers: Mapping[str, str], body: bytes, model: str, *, url: str = ""
) -> None:
    """Check a ``GET /v1/models`` reply for ``ready()``: the bound ``model``
    must be listed (else :class:`ProviderInvalidModel`) and must not report a
    loading state (else :class:`ProviderModelNotLoaded`). Entries without a
    ``status`` (OpenAI, vLLM, llama.cpp) count as loaded."""
    if not 200 <= status < 300:
        raise error_from_reply(status, headers, body, url=url)
    try:
        listing = msgspec.json.decode(body, type=_InModels)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProviderInvalidResponse(f"unusable /v1/models reply: {exc}") from exc
    ids = []
    for entry in listing.data:
        ids.append(entry.id)
        if entry.id != model:
            continue
        state = entry.status if entry.status is not None else entry.state
        if isinstance(state, dict):
            state = state.get("value", state.get("status"))
        if isinstance(state, str) and state.strip().lower() in _NOT_LOADED:
            raise ProviderModelNotLoaded(
                f"model {model!r} is listed but not loaded (status {state!r})"
            )
        return
    shown = ", ".join(repr(i) for i in ids[:20]) + (" ..." if len(ids) > 20 else "")
    raise ProviderInvalidModel(
        f"model {model!r} is not served here; the server lists: {shown or '(nothing)'}"
    )
