"""Observer and span costs, as ratios measured in one run (issue 13 targets).

Per node step of a linear graph of ``async def`` nodes, per loop (asyncio, trio):

- ``bare``: no observer (the unobserved step);
- ``noop``: one no-op ``async def`` observer attached for the invocation (every
  event is built, queued and delivered to it);
- ``otel``: the :class:`OTelObserver` on a recording SDK (``SimpleSpanProcessor``
  into an exporter that drops the spans);
- ``sdk_floor``: the bare OpenTelemetry SDK starting and ending one span per step
  with the node span's attributes: the least any span-per-node tracer can cost.

An invocation costs a fixed part (the run's set-up: for an observed run, the
delivery worker's task and the invocation span) plus a part per step. Both are
separated by timing graphs of 1 and 101 steps: ``per step`` is the slope
(t(101) - t(1)) / 100, ``fixed`` the intercept. ``at 20 steps`` is the whole
invocation divided by 20 (fixed cost included), for comparison with earlier runs.
Each figure is the median of ``K`` invokes, including delivery to the observer
(``invoke()`` returns once its events are delivered when no runner is open).

Targets (issue 13): the observer's cost per step (``noop`` minus ``bare``) at most
3x the unobserved step; the span middleware within 1.5x of the SDK floor.

Per LLM call (no I/O: the handler returns a canned response), in the same child:

- ``span_mw``: :class:`SpanMiddleware` around the call on a recording SDK;
- ``span_floor``: the bare SDK starting and ending one span with the same attributes.

Run: ``python bench/observer_bench.py [--k 300] [--repeats 3] [--json out.json]``.
Every row runs in a fresh child process, repeats interleaved; medians and the
[min-max] spread over the repeats are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C

STEPS = (1, 101)
LEGACY = 20
ROWS = ("bare", "noop", "otel", "sdk_floor")


# --- child ---------------------------------------------------------------------------


def _linear(steps: int) -> Any:
    from openarmature_nodes.graph import END, GraphBuilder, State

    class S(State):
        n: int = 0

    b = GraphBuilder(S)

    async def node(state: S) -> dict[str, int]:
        return {"n": state.n + 1}

    for i in range(steps):
        b.add_node(f"n{i}", node)
    for i in range(steps - 1):
        b.add_edge(f"n{i}", f"n{i + 1}")
    b.add_edge(f"n{steps - 1}", END)
    return b.set_entry("n0").compile(), S


def _provider() -> Any:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class NoopExporter(SpanExporter):
        """Accepts every span and drops it (the SDK's own work is still measured)."""

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(NoopExporter()))
    return provider


async def _per_invoke(graph: Any, state_cls: Any, k: int, observers: list[Any]) -> float:
    for _ in range(max(20, k // 10)):
        await graph.invoke(state_cls(), observers=observers)
    times = []
    for _ in range(k):
        t0 = time.perf_counter()
        await graph.invoke(state_cls(), observers=observers)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def _sdk_floor(steps: int, k: int) -> float:
    """One root span plus one node-shaped span per step, nothing else."""
    tracer = _provider().get_tracer("floor")
    attrs = {"openarmature.node.name": "n0", "openarmature.node.namespace": ["n0"],
             "openarmature.node.step": 0, "openarmature.node.attempt_index": 0,
             "openarmature.correlation_id": "c0ffee00-0000-4000-8000-000000000000"}
    from opentelemetry import trace

    def once() -> None:
        root = tracer.start_span("openarmature.invocation", attributes=attrs)
        ctx = trace.set_span_in_context(root)
        for _ in range(steps):
            tracer.start_span("n0", context=ctx, attributes=attrs).end()
        root.end()

    for _ in range(max(20, k // 10)):
        once()
    times = []
    for _ in range(k):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


async def _span_call(k: int) -> tuple[float, float]:
    from opentelemetry.trace import SpanKind

    from openarmature_nodes.llm import AssistantMessage, CompletionRequest, Response, UserMessage
    from openarmature_nodes.llm.response import Usage
    from openarmature_nodes.middleware import SpanMiddleware
    from openarmature_nodes.onion import compose

    class FakeProvider:
        model = "bench-model"
        genai_system = "vllm"
        server_address = "127.0.0.1"
        server_port = 8000

    response = Response(AssistantMessage("ok"), "stop", Usage(5, 1, 6),
                        {"id": "cc-1", "model": "bench-model"})

    async def answer(request: Any) -> Response:
        return response

    provider = _provider()
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


def child(row: str, backend: str, k: int) -> None:
    C.pin_cpu0()
    out: dict[str, Any] = {}

    async def main() -> None:
        if row == "sdk_floor":
            t = {s: _sdk_floor(s, k) for s in (*STEPS, LEGACY)}
        else:
            observers: list[Any] = []
            if row == "noop":

                async def noop(event: Any) -> None:
                    return None

                observers = [noop]
            elif row == "otel":
                from openarmature_nodes.observability.otel import OTelObserver

                observers = [OTelObserver(tracer_provider=_provider())]
            t = {}
            for s in (*STEPS, LEGACY):
                graph, state_cls = _linear(s)
                t[s] = await _per_invoke(graph, state_cls, k, observers)
        lo, hi = STEPS
        slope = (t[hi] - t[lo]) / (hi - lo)
        out.update(per_step_us=slope, fixed_us=t[lo] - slope * lo, at20_us=t[LEGACY] / LEGACY)
        if row == "bare":
            mw, floor = await _span_call(k * 10)
            out.update(span_mw_us=mw, span_floor_us=floor)

    C.run_loop(backend, main)
    C.emit(out)


# --- parent ----------------------------------------------------------------------------


def report(runs: list[dict[str, Any]], backends: Sequence[str]) -> str:
    def rows(row: str, be: str) -> list[dict[str, Any]]:
        return [r for r in runs if r.get("row") == row and r.get("backend") == be
                and "per_step_us" in r]

    def cell(rs: list[dict[str, Any]], key: str, digits: int = 2) -> str:
        if not rs:
            return "—"
        return f"{C.median_of(rs, key):.{digits}f} [{C.spread(rs, key, digits)}]"

    lines = ["## Observer cost per node step (µs; median [min-max] of the repeats)", ""]
    body = []
    for be in backends:
        bare = rows("bare", be)
        base = C.median_of(bare, "per_step_us") if bare else None
        for row in ROWS:
            rs = rows(row, be)
            if not rs:
                continue
            med = C.median_of(rs, "per_step_us")
            vs = f"{med / base:.2f}x" if base else "—"
            own = (f"{(med - base) / base:.2f}x" if base and row != "bare"
                   and row != "sdk_floor" else "")
            body.append([be, row, cell(rs, "per_step_us"), vs, own, cell(rs, "fixed_us", 1),
                         cell(rs, "at20_us")])
    lines.append(C.table(["loop", "row", "per step", "vs bare", "(row - bare) / bare",
                          "fixed per invocation", "at 20 steps, per step"], body))
    lines += ["", "## Span middleware per LLM call (µs)", ""]
    body = []
    for be in backends:
        rs = [r for r in rows("bare", be) if "span_mw_us" in r]
        if rs:
            mw, floor = C.median_of(rs, "span_mw_us"), C.median_of(rs, "span_floor_us")
            body.append([be, cell(rs, "span_mw_us"), cell(rs, "span_floor_us"),
                         f"{mw / floor:.2f}x"])
    lines.append(C.table(["loop", "SpanMiddleware", "SDK floor (one span)", "ratio"], body))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description="observer / span cost ratios")
    ap.add_argument("--k", type=int, default=300, help="invokes per graph size")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backends", default="asyncio,trio")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", nargs=2, metavar=("ROW", "BACKEND"))
    a = ap.parse_args()
    if a.child:
        child(a.child[0], a.child[1], a.k)
        return
    backends = a.backends.split(",")
    cells = [
        ({"row": row, "backend": be, "repeat": rep},
         ["--child", row, be, "--k", str(a.k)])
        for rep in range(a.repeats) for be in backends for row in ROWS
    ]
    runs = C.run_cells(
        os.path.abspath(__file__), cells, 600, measured="per_step_us",
        label=lambda lb: f"{lb['backend']:7} {lb['row']:9} #{lb['repeat']}",
        figures=lambda r: f"{r['per_step_us']:.2f} µs/step, fixed {r['fixed_us']:.1f} µs",
    )
    C.save_json(a.json, {"runs": runs, "versions": C.versions()})
    print(report(runs, backends))


if __name__ == "__main__":
    main()
