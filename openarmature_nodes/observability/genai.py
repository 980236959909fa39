"""LLM call -> OpenTelemetry attributes, in one place.

Two vocabularies are emitted side by side:

- the OpenTelemetry GenAI semantic conventions, which every GenAI-aware
  backend reads: ``gen_ai.operation.name``, ``gen_ai.system`` and
  ``gen_ai.provider.name`` (both from the provider's ``genai_system``),
  ``gen_ai.request.*`` sampling parameters, ``gen_ai.response.id`` /
  ``.model`` / ``.finish_reasons``, ``gen_ai.usage.input_tokens`` /
  ``.output_tokens``, plus the general ``server.address`` / ``server.port``
  and ``error.type``;
- the ``openarmature.llm.*`` names of the observability spec §5.5 (model,
  finish reason, usage, attempt index, retry reason).

Each function returns a fresh ``dict`` of attribute values and reads its
inputs duck-typed (provider: ``model``, ``genai_system``, ``server_address``,
``server_port``; request: ``config``, ``messages``; response: ``message``,
``finish_reason``, ``usage``, ``raw``), so any layer (the span middleware, an
observer working from events) can reuse it.

Nothing here ever reads credentials, and message payloads are only produced by
:func:`payload_attributes`, which callers must opt into.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import msgspec

__all__ = [
    "LLM_SPAN_NAME",
    "attempt_attributes",
    "dialect_attributes",
    "error_attributes",
    "payload_attributes",
    "request_attributes",
    "response_attributes",
    "sampling_attributes",
]

LLM_SPAN_NAME = "openarmature.llm.complete"
"""The LLM provider span's name (observability §4.5)."""

Attributes = dict[str, Any]

_SAMPLING: tuple[tuple[str, str], ...] = (
    ("temperature", "gen_ai.request.temperature"),
    ("max_tokens", "gen_ai.request.max_tokens"),
    ("top_p", "gen_ai.request.top_p"),
    ("seed", "gen_ai.request.seed"),
    ("frequency_penalty", "gen_ai.request.frequency_penalty"),
    ("presence_penalty", "gen_ai.request.presence_penalty"),
)

_encoder = msgspec.json.Encoder(order="sorted")


def request_attributes(
    provider: Any, request: Any = None, *, operation: str = "chat"
) -> Attributes:
    """What is known before the call: operation, system, model, server, and
    (when ``request`` is given) its sampling parameters."""
    system = getattr(provider, "genai_system", None) or "openai"
    model = getattr(provider, "model", None)
    attrs: Attributes = {
        "gen_ai.operation.name": operation,
        "gen_ai.system": system,
        "gen_ai.provider.name": system,
    }
    if isinstance(model, str):
        attrs["gen_ai.request.model"] = model
        attrs["openarmature.llm.model"] = model
    address = getattr(provider, "server_address", None)
    if isinstance(address, str) and address:
        attrs["server.address"] = address
    port = getattr(provider, "server_port", None)
    if isinstance(port, int) and not isinstance(port, bool):
        attrs["server.port"] = port
    if request is not None:
        attrs.update(sampling_attributes(getattr(request, "config", None)))
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


def sampling_attributes(config: Any) -> Attributes:
    """``gen_ai.request.*`` for each sampling field the config sets (a field
    left unset emits nothing: absence means "not supplied")."""
    attrs: Attributes = {}
    if config is None:
        return attrs
    for field, name in _SAMPLING:
        value = getattr(config, field, None)
        if value is not None and not isinstance(value, bool):
            attrs[name] = value
    stop = getattr(config, "stop_sequences", None)
    if stop is not None and not isinstance(stop, str):
        attrs["gen_ai.request.stop_sequences"] = [str(s) for s in stop]
    return attrs


def _usage_count(usage: Any, name: str) -> int | None:
    value = getattr(usage, name, None)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def response_attributes(response: Any) -> Attributes:
    """What the reply tells: id, response model, finish reason, token usage."""
    attrs: Attributes = {}
    raw = getattr(response, "raw", None)
    if isinstance(raw, dict):
        rid = raw.get("id")
        if isinstance(rid, str) and rid:
            attrs["gen_ai.response.id"] = rid
        rmodel = raw.get("model")
        if isinstance(rmodel, str) and rmodel:
            attrs["gen_ai.response.model"] = rmodel
    finish = getattr(response, "finish_reason", None)
    if isinstance(finish, str):
        attrs["gen_ai.response.finish_reasons"] = [finish]
        attrs["openarmature.llm.finish_reason"] = finish
    usage = getattr(response, "usage", None)
    if usage is not None:
        prompt = _usage_count(usage, "prompt_tokens")
        completion = _usage_count(usage, "completion_tokens")
        total = _usage_count(usage, "total_tokens")
        if prompt is not None:
            attrs["gen_ai.usage.input_tokens"] = prompt
            attrs["openarmature.llm.usage.prompt_tokens"] = prompt
        if completion is not None:
            attrs["gen_ai.usage.output_tokens"] = completion
            attrs["openarmature.llm.usage.completion_tokens"] = completion
        if total is not None:
            attrs["openarmature.llm.usage.total_tokens"] = total
    return attrs


def error_attributes(exc: BaseException) -> Attributes:
    """``error.type``: the error's category when it has one (llm-provider §7),
    else its class's qualified name. Never the message."""
    category = getattr(exc, "category", None)
    if isinstance(category, str) and category:
        return {"error.type": category, "openarmature.error.category": category}
    cls = type(exc)
    return {"error.type": f"{cls.__module__}.{cls.__qualname__}"}


def attempt_attributes(index: int, retry_reason: str | None) -> Attributes:
    """``openarmature.llm.attempt_index`` and, on retries, ``retry_reason``."""
    attrs: Attributes = {"openarmature.llm.attempt_index": index}
    if retry_reason is not None and index > 0:
        attrs["openarmature.llm.retry_reason"] = retry_reason
    return attrs


def _content_text(content: Any) -> str | None:
    if isinstance(content, str):
        return content or None
    if isinstance(content, Sequence):
        parts = [getattr(b, "text", None) for b in content]
        text = "".join(p for p in parts if isinstance(p, str))
        return text or None
    return None


def payload_attributes(request: Any, response: Any = None) -> Attributes:
    """Opt-in payloads (observability §5.5.1): the request's messages as sorted-key
    JSON, and the reply's text content. Never emitted unless a caller asks."""
    attrs: Attributes = {}
    messages = getattr(request, "messages", None)
    if messages is not None:
        with contextlib.suppress(TypeError, msgspec.EncodeError):
            attrs["openarmature.llm.input.messages"] = _encoder.encode(list(messages)).decode()
    if response is not None:
        text = _content_text(getattr(getattr(response, "message", None), "content", None))
        if text is not None:
            attrs["openarmature.llm.output.content"] = text
    return attrs
