"""Observer and span costs, as ratios measured in one run (issue 13 targets).

Rows (per node step of a 20-node linear graph, asyncio unless ``--backend trio``):

- ``bare``: no observer;
- ``noop``: one no-op observer attached (every event is built, queued, delivered);
- ``otel``: the :class:`OTelObserver` on a recording SDK with a no-op exporter.

Target: ``noop`` and ``otel`` at most 3x ``bare``... per step, measured as the
total wall time of ``invoke()`` *plus* draining the delivery, divided by steps.

And per LLM call (no I/O: the handler returns a canned response):

- ``span_mw``: :class:`SpanMiddleware` around the call on a recording SDK;
- ``floor``: the bare SDK starting and ending one span with the same attributes.

Target: ``span_mw`` within 1.5x of ``floor``.

Run: ``python bench/observer_bench.py [--steps 20] [--k 300] [--backend asyncio]``.
The numbers are wall-clock on a shared machine: compare the ratios, not the µs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from typing import Any

import anyio
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from openarmature_nodes.graph import END, GraphBuilder, State
from openarmature_nodes.llm import AssistantMessage, CompletionRequest, Response, UserMessage
from openarmature_nodes.llm.response import Usage
from openarmature_nodes.middleware import SpanMiddleware
from openarmature_nodes.observability.otel import OTelObserver
from openarmature_nodes.onion import compose


class NoopExporter(SpanExporter):
    """Accepts every span and does nothing (the SDK's own work is still measured)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class S(State):
    n: int = 0


def linear(steps: int) -> Any:
    b = GraphBuilder(S)

    async def node(state: S) -> dict[str, int]:
        return {"n": state.n + 1}

    for i in range(steps):
        b.add_node(f"n{i}", node)
    for i in range(steps - 1):
        b.add_edge(f"n{i}", f"n{i + 1}")
    b.add_edge(f"n{steps - 1}", END)
    return b.set_entry("n0").compile()


async def per_step(graph: Any, steps: int, k: int, observers: list[Any]) -> float:
    for _ in range(20):
        await graph.invoke(S(), observers=observers)
    times = []
    for _ in range(k):
        t0 = time.perf_counter()
        await graph.invoke(S(), observers=observers)  # returns once delivery is done
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / steps * 1e6


class FakeProvider:
    model = "bench-model"
    genai_system = "vllm"
    server_address = "127.0.0.1"
    server_port = 8000


RESPONSE = Response(AssistantMessage("ok"), "stop", Usage(5, 1, 6),
                    {"id": "cc-1", "model": "bench-model"})


async def answer(request: Any) -> Response:
    return RESPONSE


async def per_call(k: int) -> tuple[float, float]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(NoopExporter()))
    mw = SpanMiddleware(FakeProvider(), tracer_provider=provider)
    call = compose([mw], answer)
    request = CompletionRequest(messages=(UserMessage("hi"),))
    for _ in range(200):
        await call(request)
    t0 = time.perf_counter()
    for _ in range(k):
        await call(request)
    with_mw = (time.perf_counter() - t0) / k * 1e6

    tracer = provider.get_tracer("floor")
    attrs = dict(mw._static)
    attrs.update({"openarmature.llm.attempt_index": 0, "gen_ai.response.id": "cc-1",
                  "gen_ai.response.model": "bench-model", "gen_ai.response.finish_reasons":
                  ["stop"], "openarmature.llm.finish_reason": "stop",
                  "gen_ai.usage.input_tokens": 5, "gen_ai.usage.output_tokens": 1,
                  "openarmature.llm.usage.prompt_tokens": 5,
                  "openarmature.llm.usage.completion_tokens": 1,
                  "openarmature.llm.usage.total_tokens": 6})
    for _ in range(200):
        tracer.start_span("openarmature.llm.complete", kind=SpanKind.CLIENT,
                          attributes=attrs).end()
    t0 = time.perf_counter()
    for _ in range(k):
        tracer.start_span("openarmature.llm.complete", kind=SpanKind.CLIENT,
                          attributes=attrs).end()
    floor = (time.perf_counter() - t0) / k * 1e6
    return with_mw, floor


async def main(a: argparse.Namespace) -> None:
    graph = linear(a.steps)

    async def noop(event: Any) -> None:
        return None

    otel = OTelObserver(span_processors=[SimpleSpanProcessor(NoopExporter())])
    bare = await per_step(graph, a.steps, a.k, [])
    one = await per_step(graph, a.steps, a.k, [noop])
    traced = await per_step(graph, a.steps, a.k, [otel])
    mw, floor = await per_call(a.k * 10)
    print(f"backend={a.backend} steps={a.steps} k={a.k}")
    print(f"  bare   {bare:7.2f} µs/step")
    print(f"  noop   {one:7.2f} µs/step  ({one / bare:.2f}x bare)")
    print(f"  otel   {traced:7.2f} µs/step  ({traced / bare:.2f}x bare)")
    print(f"  span_mw {mw:6.2f} µs/call vs SDK floor {floor:.2f} µs ({mw / floor:.2f}x)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="observer / span cost ratios")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--k", type=int, default=300)
    ap.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = ap.parse_args()
    anyio.run(main, args, backend=args.backend)
