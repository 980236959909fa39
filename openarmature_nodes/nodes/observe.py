"""Typed LLM, token and tool-call events from inside a graph run (graph-engine §6).

Two instruments, both free when nobody observes the run (they ask the engine
for the current step's lineage first and do nothing without one):

- :class:`CallEventMiddleware`, a call-level middleware: per call it mints a
  ``call_id`` and puts on the observer queue one :class:`LlmTokenEvent` per
  streamed delta *as it arrives* (``stream=True`` calls only), then exactly one
  terminal :class:`LlmCompletionEvent` or :class:`LlmFailedEvent`. Put it
  outside the retry layer (the default onion of :class:`LLMNode` does): a
  call-level retry is then one call, one ``call_id``, one terminal event, and
  ``chunk_index`` runs on across wire attempts. The token deltas come through
  the LLM layer's :func:`~openarmature_nodes.llm.tokens.token_sink` hook, so
  ``on_token`` callbacks and token events are the same stream.
- :func:`tool_call` / :class:`ToolCallScope`: the tool-call instrumentation
  scope. It observes one tool execution that the caller runs and emits one
  :class:`ToolCallEvent` (the result) or :class:`ToolCallFailedEvent` (and
  re-raises). :class:`~openarmature_nodes.nodes.ToolNode` wraps every call it
  runs in it; use it yourself around tools you run in a node body.

Both carry the node's identity (``invocation_id``, ``namespace``,
``attempt_index``, fan-out / branch lineage, ``correlation_id``). The events
carry payloads (messages, arguments, results); the bundled OpenTelemetry
observer decides what to render.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from openarmature_nodes.context import current_lineage, emit_framework_event, run_scope
from openarmature_nodes.events import (
    LlmCompletionEvent,
    LlmFailedEvent,
    LlmTokenEvent,
    ToolCallEvent,
    ToolCallFailedEvent,
    new_call_id,
)
from openarmature_nodes.llm.call_events import completion_fields, failure_fields, request_fields
from openarmature_nodes.llm.tokens import TokenDelta, token_sink

__all__ = ["CallEventMiddleware", "ToolCallScope", "scrub_error", "tool_call"]


def _identity() -> dict[str, Any] | None:
    lineage = current_lineage()
    if lineage is None:
        return None
    return {
        "invocation_id": lineage.invocation_id,
        "namespace": lineage.namespace,
        "attempt_index": lineage.attempt_index,
        "fan_out_index": lineage.fan_out_index,
        "branch_name": lineage.branch_name,
        "fan_out_index_chain": lineage.fan_out_index_chain,
        "branch_name_chain": lineage.branch_name_chain,
        "correlation_id": getattr(run_scope.get(), "correlation_id", None),
        "node_name": lineage.namespace[-1] if lineage.namespace else "",
    }


_BEARER = re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=-]+")
_REDACTED = "[REDACTED]"


def _provider_secrets(provider: Any) -> tuple[str, ...]:
    """The credential ``provider`` sends, read from its Authorization header."""
    found: list[str] = []
    for headers in (getattr(provider, "_probe_headers", None) or (),):
        for name, value in headers:
            if name.lower() == "authorization" and " " in value:
                found.append(value.split(" ", 1)[1])
    return tuple(s for s in found if s)


def _scrub_text(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, _REDACTED)
    return _BEARER.sub(f"Bearer {_REDACTED}", text)


def scrub_error(exc: BaseException, secrets: tuple[str, ...]) -> None:
    """Remove ``secrets`` (and any bearer token) from ``exc`` and its causes, in place:
    a server that echoes the key in an error body must not put it in an event, a
    span, a log or the error the caller sees."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        current.args = tuple(_scrub_text(a, secrets) if isinstance(a, str) else a
                             for a in current.args)
        for attr in ("message", "body"):
            value = getattr(current, attr, None)
            if isinstance(value, str):
                with contextlib.suppress(AttributeError):
                    setattr(current, attr, _scrub_text(value, secrets))
        current = current.__cause__
        seen += 1


class CallEventMiddleware:
    """Emit the typed LLM events of each call through this layer (see module docs).

    ``provider`` supplies the event's ``provider`` (its ``genai_system``) and
    ``model``, and the credential to keep out of everything: a failure passing
    through this layer has the provider's key (and any bearer token) removed from
    its message before the failure event is built and before it propagates.
    """

    __slots__ = ("_secrets", "model", "system")

    def __init__(self, provider: Any) -> None:
        self.system = str(getattr(provider, "genai_system", None) or "openai")
        self.model = str(getattr(provider, "model", "") or "")
        self._secrets = _provider_secrets(provider)

    def __repr__(self) -> str:
        return f"CallEventMiddleware(system={self.system!r}, model={self.model!r})"

    async def __call__(self, request: Any, next: Callable[[Any], Awaitable[Any]], /) -> Any:
        identity = _identity()
        if identity is None:
            return await next(request)
        call = {**identity, "call_id": new_call_id(), "provider": self.system,
                "model": self.model}
        started = time.perf_counter()
        try:
            if getattr(request, "stream", False):

                def on_delta(delta: TokenDelta) -> None:
                    emit_framework_event(LlmTokenEvent(
                        **call, chunk_index=delta.index, delta_kind=delta.kind,
                        delta=delta.text,
                    ))

                with token_sink(on_delta):
                    response = await next(request)
            else:
                response = await next(request)
        except Exception as exc:
            scrub_error(exc, self._secrets)
            failure = failure_fields(exc)
            if failure is not None:
                emit_framework_event(LlmFailedEvent(
                    **call, **request_fields(request), **failure,
                    latency_ms=(time.perf_counter() - started) * 1000.0,
                ))
            raise
        emit_framework_event(LlmCompletionEvent(
            **call, **request_fields(request), **completion_fields(response),
            latency_ms=(time.perf_counter() - started) * 1000.0,
        ))
        return response


class ToolCallScope:
    """One observed tool execution, entered when the tool is started.

    The identity is captured at construction (scope entry), so a deferred
    outcome reported later is still attributed to the node that started it.
    Report the outcome with :meth:`succeeded` or :meth:`failed` (exactly once).
    """

    __slots__ = ("_done", "_identity", "_started", "arguments", "tool_call_id", "tool_name")

    def __init__(
        self,
        tool_name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        tool_call_id: str | None = None,
    ) -> None:
        self.tool_name = tool_name
        self.arguments = arguments
        self.tool_call_id = tool_call_id
        self._identity = _identity()
        self._started = time.perf_counter()
        self._done = False

    def _fields(self) -> dict[str, Any] | None:
        if self._done:
            raise RuntimeError(f"tool call {self.tool_name!r}: outcome already reported")
        self._done = True
        if self._identity is None:
            return None
        return {
            **self._identity, "call_id": new_call_id(), "tool_name": self.tool_name,
            "tool_call_id": self.tool_call_id,
            "arguments": dict(self.arguments) if self.arguments else None,
            "latency_ms": (time.perf_counter() - self._started) * 1000.0,
        }

    def succeeded(self, result: Any) -> None:
        """Report the tool's result (as the tool produced it)."""
        fields = self._fields()
        if fields is not None:
            emit_framework_event(ToolCallEvent(**fields, result=result))

    def failed(self, exc: BaseException) -> None:
        """Report that the tool raised ``exc``."""
        fields = self._fields()
        if fields is not None:
            emit_framework_event(ToolCallFailedEvent(
                **fields, error_type=type(exc).__name__, error_message=str(exc),
            ))


async def tool_call(
    tool_name: str,
    run: Callable[[], Awaitable[Any]],
    *,
    arguments: Mapping[str, Any] | None = None,
    tool_call_id: str | None = None,
) -> Any:
    """``await run()`` as one observed tool execution; returns its result.

    Emits :class:`ToolCallEvent` with the result, or :class:`ToolCallFailedEvent`
    and re-raises. It does not choose, retry or feed back anything.
    """
    scope = ToolCallScope(tool_name, arguments, tool_call_id=tool_call_id)
    try:
        result = await run()
    except Exception as exc:
        scope.failed(exc)
        raise
    scope.succeeded(result)
    return result
