"""LLM call -> OpenTelemetry attributes: the one mapping (observability §5.5).

Both the span middleware (:class:`~middleware.SpanMiddleware`, working from the
request and response objects) and the OpenTelemetry observer (working from the
typed events) build their attributes here, from plain values, so the two can
never disagree. It lives in the LLM layer (it describes an LLM call, and imports
nothing of the package) so both import it downward: the middleware sits on the
LLM layer, the observer above everything.

Two vocabularies are emitted side by side:

- the ``openarmature.llm.*`` names of the spec (model, finish reason, usage,
  attempt index, cache counters, tool-call identity projections, and the
  opt-in payloads);
- the OpenTelemetry GenAI semantic conventions, by the constants of
  ``opentelemetry-semantic-conventions`` (``gen_ai.system`` and, beside it,
  the current ``gen_ai.provider.name``; ``gen_ai.request.*`` parameters the
  caller supplied; ``gen_ai.response.*``; ``gen_ai.usage.*``), unless
  ``semconv=False`` (the spec's ``disable_genai_semconv``).

**Convention generation** (:class:`GenAIConvention`). The GenAI conventions
are still moving; dashboards key on one generation or the other:

- ``"spec"`` (default): the spec's names plus ``gen_ai.provider.name``;
- ``"legacy"``: the spec's names only (no ``gen_ai.provider.name``);
- ``"latest"``: ``"spec"`` plus the newest upstream names the spec leaves out
  or mirrors under ``openarmature.*`` (``gen_ai.operation.name``,
  ``gen_ai.usage.cache_read.input_tokens``,
  ``gen_ai.usage.cache_creation.input_tokens``).

:func:`convention_from_env` reads the OpenTelemetry switch
``OTEL_SEMCONV_STABILITY_OPT_IN``: ``gen_ai_latest_experimental`` selects
``"latest"``; otherwise ``"spec"``.

Payloads (messages, output text, tool-call arguments, extras) come only from
:func:`payload_attributes`, which callers opt into; each is capped per §5.5.5
(:func:`truncate`). Inline image bytes never appear (the records arriving here
already carry the redacted placeholder). Nothing here reads credentials.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as G
from opentelemetry.semconv.attributes import error_attributes as E
from opentelemetry.semconv.attributes import server_attributes as SRV

__all__ = [
    "DEFAULT_PAYLOAD_CAP",
    "LLM_SPAN_NAME",
    "MIN_PAYLOAD_CAP",
    "TOOL_SPAN_NAME",
    "GenAIConvention",
    "attempt_attributes",
    "convention_from_env",
    "dialect_attributes",
    "error_attributes",
    "json_text",
    "param_attributes",
    "payload_attributes",
    "request_attributes",
    "response_attributes",
    "tool_attributes",
    "truncate",
]

LLM_SPAN_NAME = "openarmature.llm.complete"
"""The LLM provider span's name (observability §4.5)."""

TOOL_SPAN_NAME = "openarmature.tool.call"
"""The tool-execution span's name (observability §5.5.11)."""

DEFAULT_PAYLOAD_CAP = 65_536
"""Per-attribute byte cap on payload attributes (§5.5.5)."""

MIN_PAYLOAD_CAP = 256
"""The smallest cap an observer accepts (§5.5.5)."""

GenAIConvention = Literal["spec", "legacy", "latest"]

Attributes = dict[str, Any]

_PARAMS: tuple[tuple[str, str], ...] = (
    ("temperature", G.GEN_AI_REQUEST_TEMPERATURE),
    ("max_tokens", G.GEN_AI_REQUEST_MAX_TOKENS),
    ("top_p", G.GEN_AI_REQUEST_TOP_P),
    ("seed", G.GEN_AI_REQUEST_SEED),
    ("frequency_penalty", G.GEN_AI_REQUEST_FREQUENCY_PENALTY),
    ("presence_penalty", G.GEN_AI_REQUEST_PRESENCE_PENALTY),
    ("stop_sequences", G.GEN_AI_REQUEST_STOP_SEQUENCES),
)

_encoder = msgspec.json.Encoder(order="sorted")


def convention_from_env(environ: Mapping[str, str] | None = None) -> GenAIConvention:
    """The convention ``OTEL_SEMCONV_STABILITY_OPT_IN`` asks for (see module docs)."""
    env = os.environ if environ is None else environ
    opted = {v.strip() for v in env.get("OTEL_SEMCONV_STABILITY_OPT_IN", "").split(",")}
    return "latest" if "gen_ai_latest_experimental" in opted else "spec"


def json_text(value: Any) -> str:
    """Sorted-key, whitespace-free JSON (non-JSON values via ``str``)."""
    return _encoder.encode(msgspec.to_builtins(value, str_keys=True, enc_hook=str)).decode()


def truncate(text: str, cap: int) -> str:
    """``text`` cut to at most ``cap`` UTF-8 bytes with the §5.5.5 marker."""
    data = text.encode()
    if len(data) <= cap:
        return text
    marker = f"…[truncated, {len(data)} bytes total]"
    keep = cap - len(marker.encode())
    while keep > 0 and (data[keep] & 0xC0) == 0x80:  # do not split a code point
        keep -= 1
    return data[:max(keep, 0)].decode() + marker


def request_attributes(
    system: str,
    model: str | None,
    params: Mapping[str, Any] | None = None,
    *,
    operation: str = "chat",
    semconv: bool = True,
    convention: GenAIConvention = "spec",
    server_address: str | None = None,
    server_port: int | None = None,
) -> Attributes:
    """What is known before the call: model, system, the caller's request
    parameters (absent key: not supplied), server.

    ``gen_ai.operation.name`` is emitted only by the ``"latest"`` convention: the
    spec treats it as peripheral (§5.5 adoption carve-out) and mirrors it as the
    metric dimension ``openarmature.gen_ai.operation``."""
    attrs: Attributes = {}
    if model:
        attrs["openarmature.llm.model"] = model
    if not semconv:
        return attrs
    attrs[G.GEN_AI_SYSTEM] = system
    if convention == "latest":
        attrs[G.GEN_AI_OPERATION_NAME] = operation
    if convention != "legacy":
        attrs[G.GEN_AI_PROVIDER_NAME] = system
    if model:
        attrs[G.GEN_AI_REQUEST_MODEL] = model
    if params:
        attrs.update(param_attributes(params))
    if server_address:
        attrs[SRV.SERVER_ADDRESS] = server_address
    if isinstance(server_port, int) and not isinstance(server_port, bool):
        attrs[SRV.SERVER_PORT] = server_port
    return attrs


def param_attributes(params: Mapping[str, Any]) -> Attributes:
    """``gen_ai.request.*`` for each request parameter the caller supplied."""
    attrs: Attributes = {}
    for key, name in _PARAMS:
        value = params.get(key)
        if value is not None and not isinstance(value, bool):
            attrs[name] = list(value) if key == "stop_sequences" else value
    return attrs


def dialect_attributes(provider: Any) -> Attributes:
    """The provider's server dialect and structured-output mode (read per call:
    ``dialect="auto"`` settles them at warm-up), when it has them:
    ``openarmature.llm.dialect`` and ``openarmature.llm.structured_output_mode``."""
    attrs: Attributes = {}
    dialect = getattr(getattr(provider, "dialect", None), "name", None)
    if isinstance(dialect, str):
        attrs["openarmature.llm.dialect"] = dialect
    mode = getattr(provider, "structured_output_mode", None)
    if isinstance(mode, str):
        attrs["openarmature.llm.structured_output_mode"] = mode
    return attrs


def _count(usage: Any, name: str) -> int | None:
    value = getattr(usage, name, None) if not isinstance(usage, Mapping) else usage.get(name)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def response_attributes(
    *,
    response_model: str | None = None,
    response_id: str | None = None,
    finish_reason: str | None = None,
    usage: Any = None,
    tool_calls: Sequence[Mapping[str, Any]] | None = None,
    semconv: bool = True,
    convention: GenAIConvention = "spec",
) -> Attributes:
    """What the reply tells: finish reason, usage (a counter not reported emits
    nothing), cache counters, response id / model, requested tool identities."""
    attrs: Attributes = {}
    if finish_reason is not None:
        attrs["openarmature.llm.finish_reason"] = finish_reason
    prompt = _count(usage, "prompt_tokens")
    completion = _count(usage, "completion_tokens")
    total = _count(usage, "total_tokens")
    if prompt is not None:
        attrs["openarmature.llm.usage.prompt_tokens"] = prompt
    if completion is not None:
        attrs["openarmature.llm.usage.completion_tokens"] = completion
    if total is not None:
        attrs["openarmature.llm.usage.total_tokens"] = total
    if tool_calls:
        attrs["openarmature.llm.output.tool_calls.count"] = len(tool_calls)
        attrs["openarmature.llm.output.tool_calls.names"] = [str(c["name"]) for c in tool_calls]
        attrs["openarmature.llm.output.tool_calls.ids"] = [str(c["id"]) for c in tool_calls]
    if not semconv:
        return attrs
    cached = _count(usage, "cached_tokens")
    created = _count(usage, "cache_creation_tokens")
    if cached is not None:
        attrs["openarmature.llm.cache_read.input_tokens"] = cached
    if created is not None:
        attrs["openarmature.llm.cache_creation.input_tokens"] = created
    if convention == "latest":
        if cached is not None:
            attrs[G.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = cached
        if created is not None:
            attrs[G.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = created
    if response_model:
        attrs[G.GEN_AI_RESPONSE_MODEL] = response_model
    if response_id:
        attrs[G.GEN_AI_RESPONSE_ID] = response_id
    if finish_reason is not None:
        attrs[G.GEN_AI_RESPONSE_FINISH_REASONS] = [finish_reason]
    if prompt is not None:
        attrs[G.GEN_AI_USAGE_INPUT_TOKENS] = prompt
    if completion is not None:
        attrs[G.GEN_AI_USAGE_OUTPUT_TOKENS] = completion
    return attrs


def error_attributes(category: str | None, error_type: str | None = None) -> Attributes:
    """``error.type`` (the §7 category when there is one, else the error's type)
    and ``openarmature.error.category``. Never the message."""
    attrs: Attributes = {}
    if category:
        attrs[E.ERROR_TYPE] = category
        attrs["openarmature.error.category"] = category
    elif error_type:
        attrs[E.ERROR_TYPE] = error_type
    return attrs


def attempt_attributes(index: int, retry_reason: str | None = None) -> Attributes:
    """``openarmature.llm.attempt_index`` and, on retries, ``retry_reason``."""
    attrs: Attributes = {"openarmature.llm.attempt_index": index}
    if retry_reason is not None and index > 0:
        attrs["openarmature.llm.retry_reason"] = retry_reason
    return attrs


def payload_attributes(
    *,
    input_messages: Sequence[Any] | None = None,
    output_content: str | None = None,
    output_tool_calls: Sequence[Any] | None = None,
    request_extras: Mapping[str, Any] | None = None,
    cap: int = DEFAULT_PAYLOAD_CAP,
) -> Attributes:
    """The opt-in payload attributes (§5.5.1), each truncated to ``cap`` bytes.

    ``input_messages`` are the message records of
    :func:`openarmature_nodes.llm.call_events.message_records` (inline images
    already redacted)."""
    attrs: Attributes = {}
    if input_messages is not None:
        attrs["openarmature.llm.input.messages"] = truncate(json_text(list(input_messages)), cap)
    if output_content:
        attrs["openarmature.llm.output.content"] = truncate(output_content, cap)
    if output_tool_calls:
        attrs["openarmature.llm.output.tool_calls"] = truncate(
            json_text(list(output_tool_calls)), cap)
    if request_extras:
        attrs["openarmature.llm.request.extras"] = truncate(json_text(dict(request_extras)), cap)
    return attrs


def tool_attributes(
    tool_name: str,
    tool_call_id: str | None,
    *,
    arguments: Any = None,
    result: Any = None,
    payload: bool = False,
    has_result: bool = False,
    cap: int = DEFAULT_PAYLOAD_CAP,
) -> Attributes:
    """The tool-execution span's attributes (§5.5.11); payload only when asked."""
    attrs: Attributes = {"openarmature.tool.name": tool_name}
    if tool_call_id is not None:
        attrs["openarmature.tool.call.id"] = tool_call_id
    if payload:
        if arguments is not None:
            attrs["openarmature.tool.call.arguments"] = truncate(json_text(arguments), cap)
        if has_result:
            attrs["openarmature.tool.call.result"] = truncate(json_text(result), cap)
    return attrs
