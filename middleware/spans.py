"""Span layer: one OpenTelemetry span per LLM call.

A call-level middleware that opens a span named ``openarmature.llm.complete``
(kind ``CLIENT``) around the rest of the chain, as a child of whatever span is
current (the calling node's span, when the graph is traced), and records the
GenAI semantic-convention attributes of :mod:`openarmature_nodes.observability.genai`:
operation, system/provider name, request model and sampling parameters, server
address and port, the server dialect and structured-output mode
(``openarmature.llm.dialect``, ``openarmature.llm.structured_output_mode``);
then the response id, model, finish reasons and token usage, or, on failure,
``error.type`` (the error category), ``ERROR`` status and an exception event.
Placed inside a retry it records one span per attempt, with
``openarmature.llm.attempt_index`` and ``retry_reason``.

It uses the OpenTelemetry *API* only: without an SDK configured, every call is
a no-op. Pass ``tracer_provider`` (or ``tracer``) to keep spans off the global
provider. Message payloads are not recorded unless ``record_payloads=True``;
API keys and headers never are (the layer never sees them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, TracerProvider

from openarmature_nodes.context import call_attempt
from openarmature_nodes.observability.genai import (
    LLM_SPAN_NAME,
    attempt_attributes,
    dialect_attributes,
    error_attributes,
    payload_attributes,
    request_attributes,
    response_attributes,
    sampling_attributes,
)

__all__ = ["SpanMiddleware"]

_SCOPE = "openarmature_nodes"


class SpanMiddleware:
    """Emit one span per call through ``provider``.

    ``provider`` supplies ``model``, ``genai_system``, ``server_address`` and
    ``server_port`` (read once, here). ``operation`` is ``gen_ai.operation.name``
    (default ``"chat"``).
    """

    __slots__ = ("_provider", "_static", "record_payloads", "span_name", "tracer")

    def __init__(
        self,
        provider: Any,
        *,
        tracer: Tracer | None = None,
        tracer_provider: TracerProvider | None = None,
        record_payloads: bool = False,
        span_name: str = LLM_SPAN_NAME,
        operation: str = "chat",
    ) -> None:
        self.tracer = tracer or trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        self.record_payloads = record_payloads
        self.span_name = span_name
        self._static = request_attributes(provider, None, operation=operation)
        self._provider = provider

    def __repr__(self) -> str:
        return f"SpanMiddleware(span_name={self.span_name!r})"

    async def __call__(self, request: Any, next: Callable[[Any], Awaitable[Any]], /) -> Any:
        span = self.tracer.start_span(self.span_name, kind=SpanKind.CLIENT,
                                      attributes=self._static)
        recording = span.is_recording()
        if not recording and not span.get_span_context().is_valid:
            return await next(request)  # no tracing configured: nothing to record or propagate
        if recording:
            span.set_attributes(sampling_attributes(getattr(request, "config", None)))
            span.set_attributes(dialect_attributes(self._provider))
            attempt = call_attempt.get()
            span.set_attributes(attempt_attributes(attempt.index, attempt.retry_reason))
            if self.record_payloads:
                span.set_attributes(payload_attributes(request))
        with trace.use_span(span, end_on_exit=True, record_exception=False,
                            set_status_on_exception=False):
            try:
                response = await next(request)
            except Exception as exc:
                if recording:
                    failure = error_attributes(exc)
                    span.set_attributes(failure)
                    span.record_exception(exc, escaped=True)
                    span.set_status(Status(StatusCode.ERROR, str(failure["error.type"])))
                raise
            if recording:
                span.set_attributes(response_attributes(response))
                span.set_attributes(dialect_attributes(self._provider))  # "auto" may have settled
                if self.record_payloads:
                    span.set_attributes(payload_attributes(None, response))
            return response
