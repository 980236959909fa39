"""Span layer: one OpenTelemetry span per LLM call.

A call-level middleware that opens a span named ``openarmature.llm.complete``
(kind ``CLIENT``) around the rest of the chain, as a child of whatever span is
current (the calling node's span, when the graph is traced), and records the
GenAI semantic-convention attributes of :mod:`openarmature_nodes.llm.genai`:
operation, system/provider name, request model and sampling parameters, server
address and port; then the response id, model, finish reasons and token usage,
or, on failure, ``error.type`` (the error category), ``ERROR`` status and an
exception event. Placed inside a retry it records one span per attempt, with
``openarmature.llm.attempt_index`` and ``retry_reason``.

It uses the OpenTelemetry *API* only: without an SDK configured, every call is
a no-op. Pass ``tracer_provider`` (or ``tracer``) to keep spans off the global
provider. Message payloads are not recorded unless ``record_payloads=True``;
API keys and headers never are (the layer never sees them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, TracerProvider

from openarmature_nodes.context import call_attempt
from openarmature_nodes.llm.call_events import (
    completion_fields,
    failure_fields,
    message_records,
    request_params,
)
from openarmature_nodes.llm.genai import (
    DEFAULT_PAYLOAD_CAP,
    LLM_SPAN_NAME,
    GenAIConvention,
    attempt_attributes,
    convention_from_env,
    dialect_attributes,
    error_attributes,
    param_attributes,
    payload_attributes,
    request_attributes,
    response_attributes,
)

__all__ = ["SpanMiddleware"]

_SCOPE = "openarmature_nodes"


class SpanMiddleware:
    """Emit one span per call through ``provider``.

    ``provider`` supplies ``model``, ``genai_system``, ``server_address`` and
    ``server_port`` (read once, here). ``operation`` is ``gen_ai.operation.name``
    (default ``"chat"``). ``convention`` picks the GenAI naming generation
    (default: from ``OTEL_SEMCONV_STABILITY_OPT_IN``, see
    :mod:`openarmature_nodes.llm.genai`).
    """

    __slots__ = ("_cap", "_convention", "_provider", "_static", "_static_attempt0",
                 "record_payloads", "span_name", "tracer")

    def __init__(
        self,
        provider: Any,
        *,
        tracer: Tracer | None = None,
        tracer_provider: TracerProvider | None = None,
        record_payloads: bool = False,
        payload_cap: int = DEFAULT_PAYLOAD_CAP,
        span_name: str = LLM_SPAN_NAME,
        operation: str = "chat",
        convention: GenAIConvention | None = None,
    ) -> None:
        self.tracer = tracer or trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        self.record_payloads = record_payloads
        self.span_name = span_name
        self._cap = payload_cap
        self._convention: GenAIConvention = convention or convention_from_env()
        self._static: dict[str, Any] = request_attributes(
            str(getattr(provider, "genai_system", None) or "openai"),
            getattr(provider, "model", None),
            operation=operation,
            convention=self._convention,
            server_address=getattr(provider, "server_address", None),
            server_port=getattr(provider, "server_port", None),
        )

        self._static_attempt0 = {**self._static, **attempt_attributes(0)}
        self._provider = provider

    def __repr__(self) -> str:
        return f"SpanMiddleware(span_name={self.span_name!r})"

    async def __call__(self, request: Any, next: Callable[[Any], Awaitable[Any]], /) -> Any:
        # One attribute dict at start and one at end: the SDK locks per set_attributes
        # call, so fewer, larger calls keep this layer near the SDK's own floor.
        attempt = call_attempt.get()
        attrs = self._static
        config = getattr(request, "config", None)
        if config is not None or attempt.index:
            attrs = {**attrs, **attempt_attributes(attempt.index, attempt.retry_reason)}
            if config is not None:
                attrs.update(param_attributes(request_params(config)))
        else:
            attrs = self._static_attempt0
        dialect = dialect_attributes(self._provider)  # "auto" settles at warm-up: read per call
        if dialect:
            attrs = {**attrs, **dialect}
        span = self.tracer.start_span(self.span_name, kind=SpanKind.CLIENT, attributes=attrs)
        recording = span.is_recording()
        if not recording and not span.get_span_context().is_valid:
            return await next(request)  # no tracing configured: nothing to record or propagate
        if recording and self.record_payloads:
            span.set_attributes(payload_attributes(
                input_messages=message_records(request.messages),
                request_extras=getattr(config, "extras", None), cap=self._cap))
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            response = await next(request)
        except Exception as exc:
            if recording:
                failure = failure_fields(exc)
                category = failure["error_category"] if failure else None
                cls = type(exc)
                failed = error_attributes(category, f"{cls.__module__}.{cls.__qualname__}")
                span.set_attributes(failed)
                span.record_exception(exc, escaped=True)
                span.set_status(Status(StatusCode.ERROR, str(failed["error.type"])))
            span.end()
            raise
        finally:
            otel_context.detach(token)
        if recording:
            done = completion_fields(response)
            end = response_attributes(
                response_model=done["response_model"], response_id=done["response_id"],
                finish_reason=done["finish_reason"], usage=done["usage"],
                tool_calls=done["output_tool_calls"], convention=self._convention)
            end.update(dialect_attributes(self._provider))  # "auto" may have settled
            if self.record_payloads:
                end.update(payload_attributes(
                    output_content=done["output_content"],
                    output_tool_calls=done["output_tool_calls"], cap=self._cap))
            span.set_attributes(end)
        span.end()
        return response
