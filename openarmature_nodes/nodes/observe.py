"""Typed LLM, token and tool-call events from inside a graph run (graph-engine §6).

Two instruments, both free when nobody observes the run (they ask the engine
for the current step's lineage first and do nothing without one):

- :class:`CallEventMiddleware` (from the LLM layer, re-exported here), a
  call-level middleware: per call it mints a
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

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from openarmature_nodes.context import emit_framework_event
from openarmature_nodes.events import ToolCallEvent, ToolCallFailedEvent, new_call_id
from openarmature_nodes.llm.call_events import CallEventMiddleware, scrub_error, step_identity

__all__ = ["CallEventMiddleware", "ToolCallScope", "scrub_error", "tool_call"]


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
        self._identity = step_identity(require_invocation=False)
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
