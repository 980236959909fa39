"""Observability helpers shared by the span layer and the observers.

:mod:`openarmature_nodes.observability.genai` maps an LLM call (provider,
request, response, error, attempt) to OpenTelemetry attributes: the GenAI
semantic conventions (``gen_ai.*``, ``server.*``, ``error.type``) and the
``openarmature.llm.*`` names of the observability spec §5.5.
"""

from .genai import (
    LLM_SPAN_NAME,
    attempt_attributes,
    error_attributes,
    payload_attributes,
    request_attributes,
    response_attributes,
    sampling_attributes,
)

__all__ = [
    "LLM_SPAN_NAME",
    "attempt_attributes",
    "error_attributes",
    "payload_attributes",
    "request_attributes",
    "response_attributes",
    "sampling_attributes",
]
