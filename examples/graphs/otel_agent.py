"""The tool-calling agent, traced: spans and GenAI metrics from the OpenTelemetry observer.

Run it (the embedded scripted endpoint by default, or a real server)::

    pip install 'openarmature-nodes[otel]'
    python examples/graphs/otel_agent.py
    python examples/graphs/otel_agent.py --base-url http://localhost:8000 --model M \\
        --genai-system vllm

Without configuration the spans and metrics are printed to the console. With
``OTEL_EXPORTER_OTLP_ENDPOINT`` set (e.g. ``http://localhost:4318``, an
OpenTelemetry Collector, Jaeger, Grafana Tempo, Phoenix ...) they are sent
there over OTLP/HTTP instead (``pip install 'openarmature-nodes[otlp]'``);
``OTEL_EXPORTER_OTLP_HEADERS`` is honoured by the exporter as usual.

What it shows:

* :class:`~openarmature_nodes.observability.otel.OTelObserver` attached like
  any observer, on its *own* tracer and meter providers (nothing global is
  touched, so auto-instrumentation elsewhere in the process is not duplicated);
* the trace: ``openarmature.invocation`` -> one span per node step ->
  ``openarmature.llm.complete`` (with ``gen_ai.system`` / ``gen_ai.provider.name``,
  ``gen_ai.request.model``, ``gen_ai.usage.*``) and ``openarmature.tool.call``;
* the metrics (``enable_metrics=True``): token usage and call duration
  histograms with the GenAI semantic-convention buckets;
* privacy by default: no prompt, completion, tool argument or key is recorded.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from _common import endpoint, make_parser, print_conversation, run
from agent import QUESTION, SYSTEM, get_time, get_weather, scripted_model
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanProcessor,
)

from openarmature_nodes.llm import OpenAIProvider, RuntimeConfig, ToolChoiceForce, UserMessage
from openarmature_nodes.middleware import RetryMiddleware, WarmupGate
from openarmature_nodes.nodes import AgentState, build_agent, default_onion
from openarmature_nodes.observability.otel import OTelObserver


def exporters() -> tuple[SpanExporter, MetricExporter, str]:
    """OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, else the console."""
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(), OTLPMetricExporter(), "otlp"
    return ConsoleSpanExporter(), ConsoleMetricExporter(), "console"


def make_observer(span_exporter: SpanExporter, metric_reader: MetricReader, *,
                  batch: bool = True) -> OTelObserver:
    """The observer with its private providers wired to ``span_exporter`` / ``metric_reader``."""
    processor: SpanProcessor = (BatchSpanProcessor(span_exporter) if batch
                                else SimpleSpanProcessor(span_exporter))
    return OTelObserver(span_processors=[processor], enable_metrics=True,
                        metric_readers=[metric_reader])


async def run_agent(provider: OpenAIProvider, observer: OTelObserver, *, question: str,
                    max_turns: int = 4, max_tokens: int = 128,
                    force_first_tool: str | None = None,
                    warmup_deadline: float = 300.0,
                    also: Sequence[Any] = ()) -> AgentState:
    """One agent run under ``observer`` (and the observers in ``also``); returns the
    final state."""
    gate = WarmupGate(provider, deadline=warmup_deadline)
    onion: Sequence[Any] = default_onion(
        provider, retry=RetryMiddleware(max_attempts=4, deadline=60.0), warmup=gate)

    def choose_tool(state: AgentState) -> Any:
        if force_first_tool and state.llm_turns == 0:
            return ToolChoiceForce(name=force_first_tool)
        return "auto"

    graph = build_agent(
        provider, [get_weather, get_time], system=SYSTEM,
        config=RuntimeConfig(max_tokens=max_tokens, temperature=0.0),
        tool_choice=choose_tool, max_turns=max_turns, middleware=onion,
    )
    await gate.open()
    final: AgentState = await graph.invoke({"messages": [UserMessage(content=question)]},
                                           observers=[observer, *also])
    return final


async def main(args: argparse.Namespace) -> int:
    span_exporter, metric_exporter, where = exporters()
    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=3_600_000)
    observer = make_observer(span_exporter, reader)
    async with endpoint(args, script=scripted_model) as ep, OpenAIProvider(
        ep.base_url, ep.model, api_key=ep.api_key, genai_system=args.genai_system
    ) as provider:
        final = await run_agent(provider, observer, question=args.question,
                                max_turns=args.max_turns, max_tokens=args.max_tokens,
                                force_first_tool=args.force_first_tool)
    print("--- conversation ---")
    print_conversation(final.messages, system=SYSTEM)
    print(f"--- telemetry ({where}) ---")
    observer.shutdown()  # flushes the spans and the metrics to the exporters
    return 0


def parse_args() -> argparse.Namespace:
    parser = make_parser("The tool-calling agent with OpenTelemetry spans and metrics.")
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("--max-turns", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--force-first-tool", choices=("get_weather", "get_time"))
    parser.add_argument("--genai-system", default="openai",
                        help="backend name on the spans: vllm, llama.cpp, openai ...")
    return parser.parse_args()


if __name__ == "__main__":
    run(main, parse_args())
