"""Observability: the OpenTelemetry mapping of the spec.

- The one LLM-call -> attribute mapping (GenAI semantic conventions and
  ``openarmature.llm.*``) lives a layer down, in :mod:`openarmature_nodes.llm.genai`,
  so the span middleware and the observer both import it downward; its span
  names and convention switch are re-exported here.
- :mod:`.otel`: ``OTelObserver``, an observer that turns the engine's events
  into spans (and, opt-in, GenAI metrics) on its own private providers. It
  needs the OpenTelemetry SDK (extra ``otel``), so it is imported from there:
  ``from openarmature_nodes.observability.otel import OTelObserver``.
- :mod:`.logs`: ``RunLogHandler``, the stdlib logging handler that puts records
  written inside node steps on the observer queue, for the observer's log
  correlation (§7).
"""

from openarmature_nodes.llm.genai import (
    LLM_SPAN_NAME,
    TOOL_SPAN_NAME,
    GenAIConvention,
    convention_from_env,
)

__all__ = [
    "LLM_SPAN_NAME",
    "TOOL_SPAN_NAME",
    "GenAIConvention",
    "convention_from_env",
]
