"""Observability §7: log records written inside node steps carry their step's span."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from openarmature_nodes.graph import END, GraphBuilder, State
from openarmature_nodes.observability.logs import RunLogHandler
from openarmature_nodes.observability.otel import OTelObserver

pytestmark = pytest.mark.anyio

LOGGER = "tests.observability.logs"


class S(State):
    x: int = 0


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger(LOGGER)
    handler = RunLogHandler()
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield log
    log.removeHandler(handler)


async def test_records_carry_their_node_span_and_correlation_id(logger: logging.Logger) -> None:
    spans, logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
    otel = OTelObserver(span_processors=[SimpleSpanProcessor(spans)],
                        log_processors=[SimpleLogRecordProcessor(logs)])

    def step(name: str, value: int) -> Any:
        async def node(state: S) -> dict[str, Any]:
            logger.warning("node %s ran", name)
            return {"x": value}
        return node

    graph = (GraphBuilder(S).add_node("a", step("a", 1)).add_node("b", step("b", 2))
             .add_edge("a", "b").add_edge("b", END).set_entry("a").compile())
    graph.attach(otel)
    await graph.invoke(S(), correlation_id="corr-7", metadata={"tenant": "t1"})
    logger.warning("outside any run")  # not correlated: no record from the bridge
    await graph.drain()
    otel.shutdown()
    records = [item.log_record for item in logs.get_finished_logs()]
    by_name = {s.name: s for s in spans.get_finished_spans()}
    assert [r.body for r in records] == ["node a ran", "node b ran"]
    for record, node in zip(records, ("a", "b"), strict=True):
        assert record.span_id == by_name[node].context.span_id
        assert record.trace_id == by_name["openarmature.invocation"].context.trace_id
        assert record.severity_text == "WARNING"
        attrs = dict(record.attributes or {})
        assert attrs["openarmature.correlation_id"] == "corr-7"
        assert attrs["openarmature.user.tenant"] == "t1"


async def test_without_log_processors_records_are_ignored(logger: logging.Logger) -> None:
    spans = InMemorySpanExporter()
    otel = OTelObserver(span_processors=[SimpleSpanProcessor(spans)])

    async def node(state: S) -> dict[str, Any]:
        logger.warning("quiet")
        return {"x": 1}

    graph = GraphBuilder(S).add_node("a", node).add_edge("a", END).set_entry("a").compile()
    graph.attach(otel)
    await graph.invoke(S())
    await graph.drain()
    assert otel.logger_provider is None
    assert [s.name for s in spans.get_finished_spans()] == ["a", "openarmature.invocation"]
