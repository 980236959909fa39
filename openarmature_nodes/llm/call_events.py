"""What an LLM call contributes to its typed events (graph-engine §6), as plain fields.

The typed events (:mod:`openarmature_nodes.events`) describe a call in the
spec's *typed-event-native* form: messages as plain records, the GenAI request
parameters the caller actually supplied, the extras bag, the reply's content,
tool calls and usage. This module turns the LLM layer's own types into those
fields; whoever knows *where* the call ran (the node, the lineage) adds the
identity and builds the event. Nothing here knows about graphs: only the ground-floor run context.

:class:`CallEventMiddleware` is the layer that emits the events: it asks the
run context (:mod:`openarmature_nodes.context`) where the call runs and hands
the events to it; outside an observed graph run it does nothing at all.
:meth:`OpenAIProvider.complete` runs every call through it, and the LLM node's
default onion has it outermost.

Inline image bytes never leave this module: an inline image source becomes
``{"type": "inline_redacted", "byte_count": N}`` (observability §5.5.5), the
block's ``media_type`` and ``detail`` kept.
Credentials are not part of a request, so they cannot appear either.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import msgspec

from openarmature_nodes.context import current_lineage, emit_framework_event, run_scope
from openarmature_nodes.events import (
    LlmAttempt,
    LlmCompletionEvent,
    LlmFailedEvent,
    LlmTokenEvent,
    new_call_id,
)
from openarmature_nodes.metadata import get_invocation_metadata

from .config import RuntimeConfig
from .messages import ImageBlock, InlineSource
from .redact import Redactor
from .tokens import TokenDelta, token_sink

__all__ = [
    "CallEventMiddleware",
    "attempt_log",
    "completion_fields",
    "failure_fields",
    "message_records",
    "request_fields",
    "request_params",
    "scrub_error",
    "step_identity",
    "tool_call_records",
]


_replace = msgspec.structs.replace

_PARAMS = ("temperature", "max_tokens", "top_p", "seed", "frequency_penalty", "presence_penalty")


def _block(block: Any) -> Any:
    if isinstance(block, ImageBlock) and isinstance(block.source, InlineSource):
        record = msgspec.to_builtins(block)
        record["source"] = {"type": "inline_redacted", "byte_count": len(block.source.base64_data)}
        return record
    return msgspec.to_builtins(block)


def tool_call_records(calls: Sequence[Any] | None) -> tuple[dict[str, Any], ...] | None:
    """``[{id, name, arguments}]`` for ``calls``; ``None`` when there are none."""
    if not calls:
        return None
    return tuple({"id": c.id, "name": c.name, "arguments": c.arguments} for c in calls)


def message_records(messages: Sequence[Any]) -> tuple[dict[str, Any], ...]:
    """The messages as ``{role, content, tool_calls?, tool_call_id?}`` records."""
    out: list[dict[str, Any]] = []
    for m in messages:
        content = getattr(m, "content", None)
        if content is not None and not isinstance(content, str):
            content = [_block(b) for b in content]
        record: dict[str, Any] = {"role": m.role, "content": content}
        calls = tool_call_records(getattr(m, "tool_calls", None))
        if calls is not None:
            record["tool_calls"] = list(calls)
        call_id = getattr(m, "tool_call_id", None)
        if call_id is not None:
            record["tool_call_id"] = call_id
        out.append(record)
    return tuple(out)


def request_params(config: RuntimeConfig | None) -> dict[str, Any]:
    """The §5.5.2 parameters the caller supplied (absent key: not supplied)."""
    params: dict[str, Any] = {}
    if config is None:
        return params
    for name in _PARAMS:
        value = getattr(config, name)
        if value is not None:
            params[name] = value
    if config.stop_sequences is not None:
        params["stop_sequences"] = list(config.stop_sequences)
    return params


def request_fields(request: Any) -> dict[str, Any]:
    """``input_messages``, ``request_params`` and ``request_extras`` of a request."""
    config = getattr(request, "config", None)
    extras: Mapping[str, Any] = getattr(config, "extras", None) or {}
    return {
        "input_messages": message_records(request.messages),
        "request_params": request_params(config),
        "request_extras": dict(extras),
    }


def _raw_str(raw: Any, key: str) -> str | None:
    if isinstance(raw, dict):
        value = raw.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _content_text(content: Any) -> str | None:
    if content is None or isinstance(content, str):
        return content or None
    parts = [b.text for b in content if type(b).__name__ == "TextBlock"]
    return "".join(parts) or None


def completion_fields(response: Any) -> dict[str, Any]:
    """The response side of a completion: model, id, usage, finish reason, output."""
    message = response.message
    return {
        "response_model": _raw_str(response.raw, "model"),
        "response_id": _raw_str(response.raw, "id"),
        "usage": response.usage,
        "finish_reason": response.finish_reason,
        "output_content": _content_text(message.content),
        "output_tool_calls": tool_call_records(message.tool_calls),
    }


def _vendor_type(exc: BaseException) -> str | None:
    """The server's own error type / code (``error.type`` / ``error.code`` of an
    OpenAI-style error body), when the failure came with one."""
    cause = exc.__cause__
    for name in ("type", "code"):
        value = getattr(cause, name, None)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            return str(value)
    return None


def failure_fields(exc: BaseException) -> dict[str, Any] | None:
    """``error_category`` / ``error_type`` / ``error_message`` of an llm-provider §7
    error, plus the response side for ``structured_output_invalid``; ``None`` when
    ``exc`` is not a categorized provider error (no failure event then)."""
    category = getattr(exc, "category", None)
    if not isinstance(category, str) or not category:
        return None
    fields: dict[str, Any] = {
        "error_category": category,
        "error_type": _vendor_type(exc),
        "error_message": str(exc),
    }
    if category == "structured_output_invalid":
        fields["output_content"] = getattr(exc, "output_content", None)
        fields["finish_reason"] = getattr(exc, "finish_reason", None)
        fields["usage"] = getattr(exc, "usage", None)
        fields["response_id"] = getattr(exc, "response_id", None)
        fields["response_model"] = getattr(exc, "response_model", None)
    return fields


def step_identity(*, require_invocation: bool = True) -> dict[str, Any] | None:
    """The running node step's identity fields for a typed §6 event.

    ``None`` outside an observed node step, and also (with the default
    ``require_invocation=True``) when the lineage carries no ``invocation_id``.
    The one source of the identity shape shared by the LLM call events here and
    the tool-call events of :mod:`openarmature_nodes.nodes.observe`.
    """
    lineage = current_lineage()
    if lineage is None or (require_invocation and lineage.invocation_id is None):
        return None
    scope = run_scope.get()
    return {
        "invocation_id": lineage.invocation_id,
        "namespace": lineage.namespace,
        "attempt_index": lineage.attempt_index,
        "fan_out_index": lineage.fan_out_index,
        "branch_name": lineage.branch_name,
        "fan_out_index_chain": lineage.fan_out_index_chain,
        "branch_name_chain": lineage.branch_name_chain,
        "subgraph_name_chain": lineage.subgraph_name_chain,
        "correlation_id": getattr(scope, "correlation_id", None),
        "caller_invocation_metadata": (get_invocation_metadata()
                                       if getattr(scope, "include_caller_metadata", False)
                                       else None),
        "node_name": lineage.namespace[-1] if lineage.namespace else "",
    }


def _provider_secrets(provider: Any) -> tuple[str, ...]:
    """The credential ``provider`` sends, read from its Authorization header."""
    found: list[str] = []
    for headers in (getattr(provider, "_probe_headers", None) or (),):
        for name, value in headers:
            if name.lower() == "authorization" and " " in value:
                found.append(value.split(" ", 1)[1])
    return tuple(s for s in found if s)


def scrub_error(exc: BaseException, secrets: tuple[str, ...]) -> None:
    """Remove ``secrets`` (and any bearer token) from ``exc`` and its causes, in place:
    a server that echoes the key in an error body must not put it in an event, a
    span, a log or the error the caller sees (the provider's :class:`.redact.Redactor`
    rule, for callers that hold only the secrets)."""
    Redactor(secrets).scrub_error(exc)


class AttemptLog:
    """The attempts of one observed call, noted by the call-level retry loop
    (:mod:`.call_retry`) and reported on the call's terminal event (``attempts``)."""

    __slots__ = ("records", "redactor")

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self.records: list[LlmAttempt] = []

    def note(self, index: int, reason: str | None, start_ns: int,
             error: BaseException | None = None) -> None:
        """Record attempt ``index`` (started at ``start_ns``), ending now; ``error``:
        how it failed (its message with the provider's credential removed)."""
        failure = failure_fields(error) if error is not None else None
        if error is not None and failure is None:
            failure = {"error_category": None, "error_type": type(error).__name__,
                       "error_message": str(error)}
        self.records.append(LlmAttempt(
            attempt_index=index, retry_reason=reason, start_ns=start_ns, end_ns=time.time_ns(),
            error_category=failure["error_category"] if failure else None,
            error_type=failure["error_type"] if failure else None,
            error_message=(self.redactor.text(str(failure["error_message"]))
                           if failure else None),
        ))


_ATTEMPT_LOG: ContextVar[AttemptLog | None] = ContextVar("openarmature_llm_attempts",
                                                         default=None)


def attempt_log() -> AttemptLog | None:
    """The attempt log of the observed call running here, if any (the retry loop
    notes its attempts in it; nothing is recorded for an unobserved call)."""
    return _ATTEMPT_LOG.get()


class CallEventMiddleware:
    """Emit the typed LLM events of each call through this layer (see module docs).

    ``provider`` supplies the event's ``provider`` (its ``genai_system``) and
    ``model``, and the credential to keep out of everything: a failure passing
    through this layer has the provider's key (and any bearer token) removed from
    its message before the failure event is built and before it propagates.
    """

    __slots__ = ("_redactor", "model", "system")

    def __init__(self, provider: Any) -> None:
        self.system = str(getattr(provider, "genai_system", None) or "openai")
        self.model = str(getattr(provider, "model", "") or "")
        self._redactor = Redactor(_provider_secrets(provider))

    def __repr__(self) -> str:
        return f"CallEventMiddleware(system={self.system!r}, model={self.model!r})"

    async def __call__(self, request: Any, next: Callable[[Any], Awaitable[Any]], /) -> Any:
        identity = step_identity()
        if identity is None:
            return await next(request)
        call = {**identity, "call_id": new_call_id(), "provider": self.system,
                "model": self.model}
        started = time.perf_counter()
        log = AttemptLog(self._redactor)
        log_token = _ATTEMPT_LOG.set(log)
        try:
            if getattr(request, "stream", False):
                # One event built in full per call; each delta's is a copy with
                # its three fields replaced (about 4x cheaper than every field by keyword).
                template = LlmTokenEvent(**call, chunk_index=0, delta_kind="content", delta="")
                # The step's run scope, looked up once: the deltas are reported
                # from this same task, inside the same step.
                scope = run_scope.get()
                emit = scope.emit if scope is not None else emit_framework_event

                def on_delta(delta: TokenDelta) -> None:
                    emit(_replace(
                        template, chunk_index=delta.index, delta_kind=delta.kind,
                        delta=delta.text,
                    ))

                with token_sink(on_delta):
                    response = await next(request)
            else:
                response = await next(request)
        except Exception as exc:
            self._redactor.scrub_error(exc)
            failure = failure_fields(exc)
            if failure is not None:
                emit_framework_event(LlmFailedEvent(
                    **call, **request_fields(request), **failure,
                    latency_ms=(time.perf_counter() - started) * 1000.0,
                    attempts=_retried(log),
                ))
            raise
        finally:
            _ATTEMPT_LOG.reset(log_token)
        emit_framework_event(LlmCompletionEvent(
            **call, **request_fields(request), **completion_fields(response),
            latency_ms=(time.perf_counter() - started) * 1000.0,
            attempts=_retried(log),
        ))
        return response


def _retried(log: AttemptLog) -> tuple[LlmAttempt, ...]:
    """The attempts to report: all of them when the call was retried, else none."""
    return tuple(log.records) if len(log.records) > 1 else ()


