"""The agent example's telemetry over the real OTLP/HTTP wire format.

A loopback receiver (a small HTTP server on a thread) accepts what the
OpenTelemetry OTLP/HTTP exporters POST and decodes the protobuf with
``opentelemetry-proto``; the test asserts the spans, their parentage and the
``gen_ai.*`` attributes arrive, and the GenAI metrics with them.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

from openarmature_nodes.llm import OpenAIProvider
from openarmature_nodes.testing import EmbeddedServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "graphs"
pytestmark = pytest.mark.anyio


class Receiver:
    """What the loopback collector received, decoded."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.metrics: list[Any] = []
        self.paths: list[str] = []


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    got = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            got.paths.append(self.path)
            if self.path == "/v1/traces":
                req = ExportTraceServiceRequest.FromString(body)
                for rs in req.resource_spans:
                    for ss in rs.scope_spans:
                        got.spans.extend(ss.spans)
            elif self.path == "/v1/metrics":
                mreq = ExportMetricsServiceRequest.FromString(body)
                for rm in mreq.resource_metrics:
                    for sm in rm.scope_metrics:
                        got.metrics.extend(sm.metrics)
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield got, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def attrs(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        value = kv.value
        kind = value.WhichOneof("value")
        if kind == "array_value":
            out[kv.key] = [getattr(v, v.WhichOneof("value")) for v in value.array_value.values]
        else:
            out[kv.key] = getattr(value, kind) if kind else None
    return out


async def test_agent_spans_and_metrics_arrive_over_otlp_http(
    receiver: tuple[Receiver, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    got, base = receiver
    monkeypatch.syspath_prepend(str(EXAMPLES))
    for name in ("otel_agent", "agent", "_common"):
        sys.modules.pop(name, None)
    import otel_agent  # the example, as shipped

    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{base}/v1/metrics"),
                                           export_interval_millis=3_600_000)
    observer = otel_agent.make_observer(OTLPSpanExporter(endpoint=f"{base}/v1/traces"), reader,
                                        batch=False)
    async with EmbeddedServer(model="m") as server, OpenAIProvider(
        server.base_url, "m", genai_system="vllm"
    ) as provider:
        server.set_script(otel_agent.scripted_model)
        final = await otel_agent.run_agent(provider, observer, question="weather?")
    observer.shutdown()
    assert final.stop_reason == "answer"
    assert "/v1/traces" in got.paths and "/v1/metrics" in got.paths

    by_id = {s.span_id: s for s in got.spans}
    (root,) = [s for s in got.spans if s.name == "openarmature.invocation"]
    assert root.parent_span_id == b""
    llm_nodes = [s for s in got.spans if s.name == "llm"]
    assert len(llm_nodes) == 2 and all(s.parent_span_id == root.span_id for s in llm_nodes)
    calls = [s for s in got.spans if s.name == "openarmature.llm.complete"]
    assert len(calls) == 2
    for call in calls:
        assert by_id[call.parent_span_id].name == "llm"
        a = attrs(call)
        assert a["gen_ai.system"] == a["gen_ai.provider.name"] == "vllm"
        assert a["gen_ai.request.model"] == "m"
        assert a["gen_ai.usage.input_tokens"] >= 1 and "gen_ai.usage.output_tokens" in a
    tools = [s for s in got.spans if s.name == "openarmature.tool.call"]
    assert {attrs(t)["openarmature.tool.name"] for t in tools} == {"get_weather", "get_time"}
    assert all(by_id[t.parent_span_id].name == "tools" for t in tools)
    assert len({s.trace_id for s in got.spans}) == 1
    names = {m.name for m in got.metrics}
    assert {"openarmature.gen_ai.client.token.usage",
            "openarmature.gen_ai.client.operation.duration"} <= names
