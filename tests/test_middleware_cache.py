"""The LLM-call cache: a hit sends no request (counted at the embedded server),
errors and ``finish_reason == "error"`` are never stored, the TTL expires
entries, both backends work, and hits / misses reach the span and the metric."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from openarmature_nodes.llm import (
    CompletionRequest,
    OpenAIProvider,
    ProviderUnavailable,
    RuntimeConfig,
    UserMessage,
)
from openarmature_nodes.middleware import CacheMiddleware, MemoryCache, SpanMiddleware, SqliteCache
from openarmature_nodes.middleware.cache import request_key
from openarmature_nodes.nodes import default_onion
from openarmature_nodes.onion import compose
from openarmature_nodes.testing import CHAT_PATH, EmbeddedServer, completion_body

pytestmark = pytest.mark.anyio

HI = CompletionRequest(messages=(UserMessage("hi"),), config=RuntimeConfig(max_tokens=5))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "memory":
        yield MemoryCache()
    else:
        with SqliteCache(str(tmp_path / "cache.sqlite3")) as cache:
            yield cache


async def test_a_hit_sends_no_request(
    server: EmbeddedServer, provider: OpenAIProvider, backend: Any
) -> None:
    cache = CacheMiddleware(provider, backend)
    call = compose([cache], provider.call)
    first = await call(HI)
    assert server.counts[CHAT_PATH] == 1
    second = await call(HI)
    assert server.counts[CHAT_PATH] == 1  # served from the cache: nothing sent
    assert second == first
    assert (cache.hits, cache.misses) == (1, 1)
    # any change to the request is another key: sent
    await call(msgspec.structs.replace(HI, config=RuntimeConfig(max_tokens=6)))
    assert server.counts[CHAT_PATH] == 2
    # streaming does not change the key: same response, nothing sent
    assert await call(msgspec.structs.replace(HI, stream=True)) == first
    assert server.counts[CHAT_PATH] == 2


async def test_errors_and_error_finishes_are_never_stored(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    cache = CacheMiddleware(provider, MemoryCache())
    call = compose([cache], provider.call)
    server.fail_5xx(1)
    with pytest.raises(ProviderUnavailable):
        await call(HI)
    server.enqueue(completion_body("partial", finish_reason="weird"))  # normalized to "error"
    degraded = await call(HI)
    assert degraded.finish_reason == "error"
    good = await call(HI)
    assert good.finish_reason == "stop"
    assert server.counts[CHAT_PATH] == 3  # nothing above was served from the cache
    assert await call(HI) == good
    assert server.counts[CHAT_PATH] == 3


async def test_entries_expire_after_the_ttl(
    server: EmbeddedServer, provider: OpenAIProvider, backend: Any
) -> None:
    clock = Clock()
    call = compose([CacheMiddleware(provider, backend, ttl=60, clock=clock)], provider.call)
    await call(HI)
    clock.now += 59
    await call(HI)
    assert server.counts[CHAT_PATH] == 1
    clock.now += 2
    await call(HI)
    assert server.counts[CHAT_PATH] == 2


async def test_a_struct_schema_round_trips_to_an_instance(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    class Person(msgspec.Struct):
        name: str

    server.enqueue(completion_body('{"name": "Ada"}'))
    call = compose([CacheMiddleware(provider)], provider.call)
    request = msgspec.structs.replace(HI, response_schema=Person)
    first = await call(request)
    second = await call(request)
    assert second.parsed == first.parsed == Person(name="Ada")
    assert server.counts[CHAT_PATH] == 1


async def test_hits_and_misses_reach_the_span_and_the_counter(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    cache = CacheMiddleware(provider, MemoryCache())
    cache._counter = meters.get_meter("test").create_counter("openarmature.llm.cache.lookups")
    span = SpanMiddleware(provider, tracer_provider=tp)
    onion = default_onion(provider, span=span, retry=False, cooldown=False, warmup=False,
                          structured=False, cache=cache)
    assert onion[onion.index(span) + 1] is cache  # right inside the span
    call = compose(onion, provider.call)
    await call(HI)
    await call(HI)
    spans = exporter.get_finished_spans()
    assert [dict(s.attributes or {})["openarmature.llm.cache.hit"] for s in spans] == [False, True]
    data = reader.get_metrics_data()
    points = {
        dict(p.attributes or {})["openarmature.llm.cache.result"]: p.value
        for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        for p in m.data.data_points
    }
    assert points == {"hit": 1, "miss": 1}
    tp.shutdown()
    meters.shutdown()


def test_the_key_covers_the_request_and_the_endpoint() -> None:
    base = request_key(HI, model="m")
    assert base == request_key(HI, model="m")
    assert base != request_key(HI, model="other")
    assert base != request_key(HI, model="m", endpoint="http://elsewhere")
    assert base != request_key(
        msgspec.structs.replace(HI, config=RuntimeConfig(max_tokens=5, extras={"top_k": 1})),
        model="m",
    )


def test_off_by_default_and_checked() -> None:
    provider = OpenAIProvider("http://127.0.0.1:9", "m")
    assert not any(isinstance(m, CacheMiddleware) for m in default_onion(provider))
    with pytest.raises(ValueError, match="ttl"):
        CacheMiddleware(provider, ttl=0)
    with pytest.raises(TypeError, match="model"):
        CacheMiddleware()
