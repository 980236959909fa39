"""Sans-IO decoding of OpenAI Chat Completions replies (spec llm-provider §8.1.2, §8.1.3).

``(status, headers, body)`` in, a :class:`Response` (or a categorized error)
out. The body is decoded once into plain data, kept verbatim as
``Response.raw``, and converted to small typed Structs whose fields are typed
loosely (``Any``) where real servers differ; those fields are then checked by
hand, so a surprising reply gives a clear ``ProviderInvalidResponse`` rather
than a ``KeyError``.

Also here: the ``GET /v1/models`` check behind ``ready()``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import msgspec

from openarmature_nodes.llm.errors import (
    ProviderInvalidModel,
    ProviderInvalidResponse,
    ProviderModelNotLoaded,
    StructuredOutputInvalid,
)
from openarmature_nodes.llm.messages import (
    AssistantBlock,
    AssistantMessage,
    TextBlock,
    ThinkingBlock,
    Tool,
    ToolCall,
)
from openarmature_nodes.llm.response import FinishReason, Response, Usage

from .error_reply import error_from_reply
from .jsonschema import validator_for
from .structured import validate_structured

__all__ = [
    "ModelEntry",
    "check_models_response",
    "decode_chat_response",
    "decode_json",
    "decode_models_response",
    "response_from_raw",
]

_decode_any = msgspec.json.Decoder()


def decode_json(data: bytes) -> Any:
    """Parse a JSON reply body (or one streamed chunk).

    msgspec refuses a number outside the float range (``1e400``), which is
    still valid JSON. A server can put one in an ancillary figure such as a
    usage counter, and that must not fail the whole reply (llm-provider §7
    *Malformed usage counter*: the counter is not reported, the value stays on
    ``raw``). Such a body is parsed again by the standard library, keeping an
    out-of-range number as a :class:`~decimal.Decimal` of its exact text.
    Anything else msgspec rejects is not JSON and raises ``msgspec.DecodeError``.
    """
    try:
        return _decode_any.decode(data)
    except msgspec.ValidationError as exc:
        if "out of range" not in str(exc):
            raise
        try:
            return json.loads(data, parse_float=_float_or_decimal)
        except ValueError:
            raise exc from None


def _float_or_decimal(text: str) -> float | Decimal:
    value = float(text)
    return value if math.isfinite(value) else Decimal(text)


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
    reasoning_content: Any = None  # DeepSeek, earlier vLLM
    reasoning: Any = None  # current vLLM


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
        raw = decode_json(body)
    except msgspec.DecodeError as exc:
        raise _invalid(f"body is not JSON ({exc})", exc) from exc
    if not isinstance(raw, dict):
        raise _invalid("body is not a JSON object")
    return response_from_raw(raw, tools=tools, response_schema=response_schema)


def response_from_raw(
    raw: dict[str, Any],
    *,
    tools: Mapping[str, Tool] | None = None,
    response_schema: Any = None,
) -> Response:
    """The :class:`Response` for a chat completion already parsed to ``raw``.

    Shared by the atomic path (:func:`decode_chat_response`) and the
    streaming assembler (:mod:`.stream`), which builds the equivalent
    ``raw`` from the chunks: one mapping, so both paths give structurally
    identical responses.

    Reasoning text a server returns beside the answer (``reasoning_content``
    on DeepSeek and earlier vLLM, ``reasoning`` on current vLLM) makes
    ``message.content`` a block sequence: a :class:`ThinkingBlock`, then the
    answer as a :class:`TextBlock` when there is one. Structured output is
    validated against the answer text only.
    """
    try:
        typed = msgspec.convert(raw, _InChat)
    except msgspec.ValidationError as exc:
        raise _invalid(str(exc), exc) from exc
    if not typed.choices or typed.choices[0].message is None:
        raise _invalid("no choices[0].message")
    choice = typed.choices[0]
    msg = choice.message
    assert msg is not None
    reason = choice.finish_reason  # any JSON: a list or an object is not hashable
    finish: FinishReason = _FINISH.get(reason, "error") if isinstance(reason, str) else "error"
    text = _content(msg.content)
    reasoning = _reasoning(msg)
    content: str | list[AssistantBlock] | None = text
    if reasoning is not None:
        content = [ThinkingBlock(reasoning)]
        if text:
            content.append(TextBlock(text))
    calls = None
    if msg.tool_calls:
        calls = [
            _tool_call(c, i, tools or {}, lenient=finish == "error")
            for i, c in enumerate(msg.tool_calls)
        ]
    usage = _usage(raw.get("usage"))
    parsed = None
    if response_schema is not None and not calls and finish != "tool_calls":
        try:
            parsed = validate_structured(text, response_schema, finish_reason=finish, usage=usage)
        except StructuredOutputInvalid as exc:  # the reply's identity, for the failure event
            rid, rmodel = raw.get("id"), raw.get("model")
            exc.response_id = rid if isinstance(rid, str) and rid else None
            exc.response_model = rmodel if isinstance(rmodel, str) and rmodel else None
            raise
    return Response(AssistantMessage(content, calls), finish, usage, raw, parsed)


def _reasoning(msg: _InMessage) -> str | None:
    for value in (msg.reasoning_content, msg.reasoning):
        if isinstance(value, str) and value:
            return value
    return None


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
    owned_by: Any = None
    max_model_len: Any = None


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


class ModelEntry(msgspec.Struct, frozen=True):
    """One ``/v1/models`` entry: its ``id`` and load ``status`` when the server
    reports one (``None`` for OpenAI, vLLM and llama.cpp, which do not);
    ``owned_by`` as given (vLLM says ``"vllm"``); ``max_model_len``, the
    context length vLLM and SGLang report (``None`` elsewhere)."""

    id: str
    status: str | None = None
    owned_by: str | None = None
    max_model_len: int | None = None


def decode_models_response(
    status: int, headers: Mapping[str, str], body: bytes, *, url: str = ""
) -> list[ModelEntry]:
    """The entries of a ``GET /v1/models`` reply; a non-2xx status raises its
    categorized error, an unusable body ``ProviderInvalidResponse``."""
    if not 200 <= status < 300:
        raise error_from_reply(status, headers, body, url=url)
    try:
        listing = msgspec.json.decode(body, type=_InModels)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProviderInvalidResponse(f"unusable /v1/models reply: {exc}") from exc
    out = []
    for entry in listing.data:
        state = entry.status if entry.status is not None else entry.state
        if isinstance(state, dict):  # llama.cpp router mode: {"value": "loaded", ...}
            state = state.get("value", state.get("status"))
        limit = entry.max_model_len
        out.append(
            ModelEntry(
                str(entry.id),
                state if isinstance(state, str) else None,
                entry.owned_by if isinstance(entry.owned_by, str) else None,
                limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0
                else None,
            )
        )
    return out


def check_models_response(
    status: int, headers: Mapping[str, str], body: bytes, model: str, *, url: str = ""
) -> ModelEntry:
    """Check a ``GET /v1/models`` reply for ``ready()`` and return the bound
    model's entry: the ``model`` must be listed (else
    :class:`ProviderInvalidModel`) and must not report a loading state (else
    :class:`ProviderModelNotLoaded`). Entries without a ``status`` (OpenAI,
    vLLM, llama.cpp) count as loaded."""
    entries = decode_models_response(status, headers, body, url=url)
    for entry in entries:
        if entry.id != model:
            continue
        if entry.status is not None and entry.status.strip().lower() in _NOT_LOADED:
            raise ProviderModelNotLoaded(
                f"model {model!r} is listed but not loaded (status {entry.status!r})"
            )
        return entry
    ids = [e.id for e in entries]
    shown = ", ".join(repr(i) for i in ids[:20]) + (" ..." if len(ids) > 20 else "")
    raise ProviderInvalidModel(
        f"model {model!r} is not served here; the server lists: {shown or '(nothing)'}"
    )
