"""Privacy by default: the API key, the Authorization header and payloads appear in no
exported span attribute, span event, log record or metric attribute, even when the
server echoes the key back in an error body."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from openarmature_nodes.events import LlmFailedEvent
from openarmature_nodes.graph import GraphRuntimeError
from openarmature_nodes.llm import OpenAIProvider, RuntimeConfig, UserMessage
from openarmature_nodes.middleware import RetryMiddleware, WarmupGate
from openarmature_nodes.nodes import build_agent, default_onion, tool
from openarmature_nodes.observability.otel import OTelObserver
from openarmature_nodes.retrying import constant_backoff
from openarmature_nodes.testing import CHAT_PATH, EmbeddedServer, ReceivedRequest

pytestmark = pytest.mark.anyio

SECRET = "sk-test-PRIVACY-0123456789abcdef"
PROMPT = "my private question about Paris"


@tool
async def lookup(city: str) -> str:
    """Look a city up."""
    return f"{city}: sunny"


def texts(value: Any) -> list[str]:
    """Every string inside an attribute value (scalars and sequences)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in texts(v)]
    return [str(value)]


class Logs(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        self.lines.extend(texts(getattr(record, "__dict__", {})))


async def run_agent(server: EmbeddedServer, *, echo: bool) -> tuple[list[str], list[Any]]:
    """Run the agent with the OTel observer; return every exported string and the events."""
    if echo:  # the server answers with an error body that quotes the credential
        def script(request: ReceivedRequest) -> Any:
            if request.path == CHAT_PATH and request.json.get("max_tokens") != 1:
                auth = request.headers.get("authorization", "")
                return (400, {"error": {"message": f"bad request; you sent {auth}",
                                        "type": "invalid_request_error"}})
            return None

        server.set_script(script)
    exporter = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    otel = OTelObserver(span_processors=[SimpleSpanProcessor(exporter)], enable_metrics=True,
                        metric_readers=[reader])
    events: list[Any] = []

    async def collect(event: Any) -> None:
        events.append(event)

    logs = Logs()
    root = logging.getLogger()
    root.addHandler(logs)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        async with OpenAIProvider(server.base_url, server.model, api_key=SECRET,
                                  genai_system="vllm") as provider:
            onion = default_onion(
                provider, retry=RetryMiddleware(max_attempts=1, backoff=constant_backoff(0)),
                warmup=WarmupGate(provider, backoff=constant_backoff(0)))
            graph = build_agent(provider, [lookup], config=RuntimeConfig(max_tokens=32),
                                middleware=onion)
            try:
                await graph.invoke({"messages": [UserMessage(content=PROMPT)]},
                                   observers=[otel, collect])
            except GraphRuntimeError as exc:
                assert echo, exc
                logging.getLogger("test").error("run failed: %s", exc)
                logs.lines.append(str(exc))
    finally:
        root.removeHandler(logs)
        root.setLevel(old_level)
    out: list[str] = list(logs.lines)
    for span in exporter.get_finished_spans():
        out.append(span.name)
        for value in (span.attributes or {}).values():
            out.extend(texts(value))
        for ev in span.events:
            out.append(ev.name)
            for value in (ev.attributes or {}).values():
                out.extend(texts(value))
        out.append(span.status.description or "")
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    for value in (point.attributes or {}).values():
                        out.extend(texts(value))
    return out, events


def assert_clean(strings: list[str]) -> None:
    blob = "\n".join(strings)
    assert SECRET not in blob
    assert f"Bearer {SECRET}" not in blob
    assert "authorization" not in blob.lower() or "Bearer [REDACTED]" in blob


async def test_successful_run_exports_no_key_header_or_payload() -> None:
    async with EmbeddedServer(model="m", api_key=SECRET) as server:
        strings, events = await run_agent(server, echo=False)
    assert strings, "nothing was exported"
    assert_clean(strings)
    blob = "\n".join(strings)
    assert PROMPT not in blob  # payloads are off by default
    assert "sunny" not in blob  # no tool result either
    assert any(e.__class__.__name__ == "LlmCompletionEvent" for e in events)


async def test_server_echoing_the_key_in_an_error_body_leaks_nowhere() -> None:
    async with EmbeddedServer(model="m", api_key=SECRET) as server:
        strings, events = await run_agent(server, echo=True)
    failed = [e for e in events if isinstance(e, LlmFailedEvent)]
    assert failed, "the echoing server should have failed the call"
    assert "you sent" in failed[0].error_message  # the message survives, minus the key
    assert SECRET not in failed[0].error_message
    assert_clean(strings)
    assert any("you sent" in s for s in strings)  # the error did reach the exports
