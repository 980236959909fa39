"""Issue 12's defects, one test group each, over both transports and both loops.

Each test here failed (or hung, or raised the wrong kind of error) on the code
before the fix; the comment above each group says how. The servers are real
(the embedded server on loopback); hostile behaviour comes from its
``raw_fault`` knob, which writes bytes exactly as given.
"""

from __future__ import annotations

import logging
import math
import socket
import time
import traceback
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from openarmature_nodes.llm import (
    CompletionRequest,
    ProviderAuthentication,
    ProviderDegradedResponse,
    ProviderInvalidRequest,
    ProviderInvalidResponse,
    ProviderRateLimit,
    ProviderTimeout,
    ProviderUnavailable,
    RuntimeConfig,
    Tool,
    UserMessage,
)
from openarmature_nodes.llm.transport import HttpxTransport, Timeouts
from openarmature_nodes.llm.wire.error_reply import HTTPErrorReply
from openarmature_nodes.middleware import (
    Cooldown,
    CooldownMiddleware,
    RetryMiddleware,
    SpanMiddleware,
    WarmupGate,
)
from openarmature_nodes.nodes import default_onion
from openarmature_nodes.onion import compose
from openarmature_nodes.retrying import RetryConfig, constant_backoff
from openarmature_nodes.testing import CHAT_PATH, MODELS_PATH, RawBytes, Reply, completion_body
from tests.reliability import (  # noqa: F401  (kind_fixture: the fixture `kind`)
    MODEL,
    Kind,
    checked_out,
    kind_fixture,
    leak_check,
    make_provider,
    server_and_provider,
)

pytestmark = pytest.mark.anyio

HI = [UserMessage(content="hi")]
HANG_GUARD = 20  # seconds: only so that a regression fails instead of hanging


def onion_call(provider: Any, **layers: Any) -> Any:
    """The default onion around ``provider.call``, fast retries, no warm-up."""
    layers.setdefault("span", False)
    layers.setdefault("warmup", False)
    layers.setdefault("cooldown", CooldownMiddleware(Cooldown()))
    layers.setdefault("retry", RetryConfig(max_attempts=3, backoff=constant_backoff(0.0)))
    return compose(default_onion(provider, **layers), provider.call)


def json_head(length: int | None, extra: bytes = b"") -> bytes:
    framing = b"Content-Length: %d\r\n" % length if length is not None else b"Connection: close\r\n"
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + framing + extra + b"\r\n"


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"


# --- 1. a total deadline per call; a stalled stream is a timeout ------------------------
# Before: a byte every 50 ms (or ": ping" forever) kept complete() running: hang guard hit.


async def test_deadline_bounds_a_dripping_reply(kind: Kind) -> None:
    async with server_and_provider(kind, deadline=0.5) as (server, provider):
        server.raw_fault(RawBytes((json_head(100_000),), interval=0.05, repeat=b" "))
        async with leak_check(server, provider):
            with anyio.fail_after(HANG_GUARD), pytest.raises(ProviderTimeout) as info:
                await provider.complete(HI)
        assert info.value.category == "provider_unavailable" and info.value.deadline == 0.5


async def test_per_call_deadline_keyword_and_request_field(kind: Kind) -> None:
    async with server_and_provider(kind) as (server, provider):
        server.hold()
        async with leak_check(server, provider):
            with anyio.fail_after(HANG_GUARD):
                with pytest.raises(ProviderTimeout, match=r"deadline of 0\.2 s"):
                    await provider.complete(HI, deadline=0.2)
                with pytest.raises(ProviderTimeout):
                    await provider.call(CompletionRequest(HI, deadline=0.2))
        server.release()
        assert provider.deadline == 300.0  # the finite, documented default


async def test_deadline_bounds_a_stream_too(kind: Kind) -> None:
    async with server_and_provider(kind, deadline=0.5, stream_idle_timeout=None) as (
        server,
        provider,
    ):
        chunk = b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'
        server.raw_fault(RawBytes((SSE_HEAD,), interval=0.05, repeat=chunk))
        async with leak_check(server, provider):
            with anyio.fail_after(HANG_GUARD), pytest.raises(ProviderTimeout):
                await provider.complete(HI, stream=True)


async def test_stream_of_only_comments_is_a_stall(kind: Kind) -> None:
    async with server_and_provider(kind, stream_idle_timeout=0.3) as (server, provider):
        server.raw_fault(RawBytes((SSE_HEAD,), interval=0.05, repeat=b": ping\n\n"))
        async with leak_check(server, provider):
            with anyio.fail_after(HANG_GUARD), pytest.raises(ProviderTimeout, match="stalled"):
                await provider.complete(HI, stream=True)


# --- 2. warm-up: a short start-up budget, logged, on the span, says what it tried --------
# Before: no budget= (a dead port was polled for 600 s), no log, no span event.


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def tracing() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    yield tp, exporter
    tp.shutdown()


async def test_warmup_against_a_dead_port_gives_up_within_its_budget(
    kind: Kind,
    caplog: pytest.LogCaptureFixture,
    tracing: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    tp, exporter = tracing
    provider = make_provider(kind, f"http://127.0.0.1:{free_port()}")
    gate = WarmupGate(provider, budget=0.5, backoff=constant_backoff(0.05))
    assert WarmupGate(provider).budget == 30.0  # the documented default, well under a minute
    call = compose(
        [SpanMiddleware(provider, tracer_provider=tp), RetryMiddleware(
            max_attempts=3, backoff=constant_backoff(0.0)), gate],
        provider.call,
    )
    caplog.set_level(logging.INFO, logger="openarmature_nodes.middleware.warmup")
    with anyio.fail_after(HANG_GUARD), pytest.raises(ProviderUnavailable) as info:
        await call(CompletionRequest(HI))
    text = str(info.value)
    assert "gave up after" in text and "GET /v1/models" in text and "budget 0.5 s" in text
    assert "budget=" in text  # says how to ask for a longer wait
    # one state change, one INFO record: probing, not_up, failed (not one per poll)
    states = [r.getMessage().split(": ")[1].split(" after")[0] for r in caplog.records]
    assert states == ["probing", "not_up", "failed"]
    # the retry layer's later attempts met the remembered failure at once
    assert gate.state == "failed"
    span = exporter.get_finished_spans()[0]
    events = [e for e in span.events if e.name == "openarmature.warmup.state"]
    assert [e.attributes["state"] for e in events if e.attributes] == [
        "probing",
        "not_up",
        "failed",
    ]
    await provider.aclose()


async def test_warmup_auth_failure_is_raised_at_once(kind: Kind) -> None:
    async with server_and_provider(kind, api_key="right") as (server, _):
        provider = make_provider(kind, server.base_url, api_key="wrong")
        gate = WarmupGate(provider, budget=5.0)
        with anyio.fail_after(HANG_GUARD), pytest.raises(ProviderAuthentication):
            await gate.open()
        assert server.counts[MODELS_PATH] == 1 and gate.state == "closed"
        await provider.aclose()


# --- 3. Retry-After beyond the cap fails at once; the cooldown does not stack holds -------
# Before: the call slept max_delay (60 s) and retried into the same refusal (hang guard
# hit); the cooldown held everyone for 60 s; each later 429 of the same wave extended it.


async def test_retry_after_beyond_the_cap_fails_at_once(kind: Kind) -> None:
    async with server_and_provider(kind) as (server, provider):
        cooldown = Cooldown()
        server.rate_limit(1, retry_after=86400)
        call = onion_call(provider, cooldown=CooldownMiddleware(cooldown))
        async with leak_check(server, provider):
            with anyio.fail_after(5), pytest.raises(ProviderRateLimit) as info:
                await call(CompletionRequest(HI))
        assert server.counts[CHAT_PATH] == 1
        assert info.value.retry_after == 86400
        assert info.value.retry_at is not None
        assert abs(info.value.retry_at - (time.time() + 86400)) < 60
        assert cooldown.remaining == 0.0  # nobody else is held for a refusal we will not wait


async def test_cooldown_holds_until_the_stated_time_without_stacking(kind: Kind) -> None:
    async with server_and_provider(kind) as (server, provider):
        refusal = {"error": {"message": "slow down", "type": "requests"}}
        server.enqueue(
            Reply(429, refusal, {"retry-after": "2"}),
            Reply(429, refusal, {"retry-after": "2"}, delay=0.3),
        )
        cooldown = Cooldown()
        call = compose([CooldownMiddleware(cooldown)], provider.call)
        failed_at: list[float] = []

        async def one() -> None:
            with pytest.raises(ProviderRateLimit):
                await call(CompletionRequest(HI))
            failed_at.append(time.monotonic())

        with anyio.fail_after(HANG_GUARD):
            async with anyio.create_task_group() as tg:
                tg.start_soon(one)
                tg.start_soon(one)
        assert cooldown._until is not None
        # The second refusal belongs to the wave already on hold: the hold ends two
        # seconds after the first refusal, not two seconds after the second one.
        assert cooldown._until <= failed_at[0] + 2.0
        assert cooldown._until < failed_at[1] + 2.0 - 0.1
        cooldown.clear()


# --- 4. secrets never echoed ------------------------------------------------------------
# Before: the key was in str(exc), the error's message and body, and the span.

KEY = "sk-live-0123456789abcdefSECRET"


async def test_echoed_key_is_redacted_everywhere(
    kind: Kind, tracing: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    tp, exporter = tracing
    async with server_and_provider(kind, api_key=KEY) as (server, provider):
        server.enqueue(
            Reply(401, {"error": {"message": f"Incorrect API key provided: {KEY}."}}),
            Reply(500, f"proxy error; request headers: Authorization: Bearer {KEY}\n"),
            Reply(400, {"detail": f"bad token Bearer abc.def-ghi and key {KEY}"}),
        )
        call = compose([SpanMiddleware(provider, tracer_provider=tp)], provider.call)
        errors = []
        for _ in range(3):
            with pytest.raises((ProviderAuthentication, ProviderUnavailable,
                                ProviderInvalidRequest)) as info:
                await call(CompletionRequest(HI))
            errors.append(info.value)
        for exc in errors:
            rendered = "".join(traceback.format_exception(exc))
            cause = exc.__cause__
            assert isinstance(cause, HTTPErrorReply)
            for text in (str(exc), repr(exc.args), exc.message, rendered, repr(cause.body),
                         cause.message):
                assert KEY not in text and "abc.def-ghi" not in text
            assert KEY.encode() in cause.raw_body()  # the explicit accessor keeps it
        for span in exporter.get_finished_spans():
            spans_text = repr([(e.name, dict(e.attributes or {})) for e in span.events])
            assert KEY not in spans_text and KEY not in repr(dict(span.attributes or {}))
        assert KEY not in repr(provider)


async def test_key_echoed_in_a_successful_reply_is_redacted(kind: Kind) -> None:
    # A hostile or debugging server may echo the request's credentials into a 2xx
    # body: a debug field, or the completion text itself.
    async with server_and_provider(kind, api_key=KEY) as (server, provider):
        body = completion_body(f"your key is {KEY}; header was Bearer abc.def-ghi")
        body["debug"] = {"authorization": f"Bearer {KEY}", "echo": KEY}
        server.enqueue(Reply(200, body))
        response = await provider.call(CompletionRequest(HI))
        for text in (repr(response), repr(response.raw), str(response.message.content)):
            assert KEY not in text and "abc.def-ghi" not in text
        assert "[REDACTED]" in str(response.message.content)
        server.enqueue(Reply(200, completion_body("nothing secret here")))
        clean = await provider.call(CompletionRequest(HI))
        assert clean.message.content == "nothing secret here"


async def test_key_echoed_in_a_stream_is_redacted(kind: Kind) -> None:
    # The same over a streamed reply: echoed in one event's debug field, and split
    # across two deltas (it reassembles only in the final text).
    import json

    half = len(KEY) // 2

    def event(obj: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(obj).encode() + b"\n\n"

    def delta(text: str) -> dict[str, Any]:
        return {"id": "c1", "choices": [{"index": 0, "delta": {"content": text}}]}

    pieces = (
        SSE_HEAD,
        event({**delta("key: "), "debug": f"Authorization: Bearer {KEY}"}),
        event(delta(KEY[:half])),
        event(delta(KEY[half:] + f" and {KEY}")),
        event({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        b"data: [DONE]\n\n",
    )
    async with server_and_provider(kind, api_key=KEY) as (server, provider):
        server.raw_fault(RawBytes(pieces))
        tokens: list[Any] = []
        response = await provider.complete(HI, stream=True, on_token=tokens.append)
        for text in (repr(response), repr(response.raw), str(response.message.content)):
            assert KEY not in text
        assert response.message.content == "key: [REDACTED] and [REDACTED]"
        # each delta is scrubbed as it arrives; the split halves alone are not the key
        assert len(tokens) == 3 and all(KEY not in t.text for t in tokens)
        assert "[REDACTED]" in tokens[2].text


# --- 5. bad arguments: categorized, before anything is sent ------------------------------
# Before: AttributeError / TypeError / msgspec errors, some after the request was sent.


class Opaque:
    pass


async def test_bad_call_arguments_are_invalid_requests(kind: Kind) -> None:
    async with server_and_provider(kind) as (server, provider):
        bad_calls: list[dict[str, Any]] = [
            {"config": 42},
            {"config": {"extras": {"x": Opaque()}}},
            {"retry": "yes"},
            {"stream": "yes"},
            {"deadline": -1},
            {"deadline": "soon"},
        ]
        for kwargs in bad_calls:
            with pytest.raises(ProviderInvalidRequest):
                await provider.complete(HI, **kwargs)
        with pytest.raises(ProviderInvalidRequest):
            await provider.call("not a request")  # type: ignore[arg-type]
        assert server.counts[CHAT_PATH] == 0


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda k, url: make_provider(k, url, api_key="cl\u00e9-\u20ac"), ValueError),
        (lambda k, url: make_provider(k, url, api_key=" padded"), ValueError),
        (lambda k, url: make_provider(k, "http://local host:8000"), ValueError),
        (lambda k, url: make_provider(k, url, deadline=-1), ValueError),
        (lambda k, url: make_provider(k, url, deadline="soon"), TypeError),
        (lambda k, url: Timeouts(read="soon"), TypeError),  # type: ignore[arg-type]
        (lambda k, url: Timeouts(read=-1.0), ValueError),
        (lambda k, url: Timeouts(connect=math.nan), ValueError),
    ],
)
async def test_bad_construction_fails_at_once(kind: Kind, make: Any, error: type) -> None:
    with pytest.raises(error):
        make(kind, "http://127.0.0.1:1")


# --- 6. nonsense values are refused, not sent ---------------------------------------------
# Before: NaN went out as null, ranges and the tool-name pattern were not checked.


@pytest.mark.parametrize(
    "request_",
    [
        CompletionRequest(HI, config=RuntimeConfig(temperature=math.nan)),
        CompletionRequest(HI, config=RuntimeConfig(top_p=math.inf)),
        CompletionRequest(HI, config=RuntimeConfig(max_tokens=-5)),
        CompletionRequest(HI, config=RuntimeConfig(top_p=7.0)),
        CompletionRequest(HI, config=RuntimeConfig(temperature=-0.1)),
        CompletionRequest(HI, config=RuntimeConfig(presence_penalty=3.0)),
        CompletionRequest(HI, config=RuntimeConfig(extras={"min_p": math.nan})),
        CompletionRequest(HI, config=RuntimeConfig(extras={"x": {"deep": [1.0, -math.inf]}})),
        CompletionRequest(HI, tools=[Tool(name="my tool", description="", parameters={})]),
        CompletionRequest(HI, tools=[Tool(name="x" * 65, description="", parameters={})]),
    ],
)
async def test_nonsense_values_are_refused_before_sending(
    kind: Kind, request_: CompletionRequest
) -> None:
    async with server_and_provider(kind) as (server, provider):
        with pytest.raises(ProviderInvalidRequest):
            await provider.call(request_)
        assert server.counts[CHAT_PATH] == 0


# --- 7. a POST the server read in full is never sent again silently -----------------------
# Before (fast transport): the dropped request was re-sent on a new connection: 3 POSTs.


async def test_request_read_then_dropped_is_not_resent(kind: Kind) -> None:
    async with server_and_provider(kind) as (server, provider), leak_check(server, provider):
        await provider.complete(HI)  # leaves a keep-alive connection in the pool
        server.drop(1, path=CHAT_PATH)
        with pytest.raises(ProviderUnavailable):
            await provider.complete(HI)
        assert server.counts[CHAT_PATH] == 2
        # A retry layer counts it as an attempt of its own: visible, never silent.
        server.drop(1, path=CHAT_PATH)
        attempts: list[int] = []

        async def on_retry(exc: Exception, index: int) -> None:
            attempts.append(index)

        retry = RetryConfig(max_attempts=2, backoff=constant_backoff(0), on_retry=on_retry)
        assert (await provider.complete(HI, retry=retry)).message.content == "echo: hi"
        assert attempts == [0] and server.counts[CHAT_PATH] == 4


async def test_idle_connection_closed_by_the_server_is_replaced_not_failed(kind: Kind) -> None:
    async with server_and_provider(kind) as (server, provider):
        server.idle_timeout = 0.05  # the server closes idle keep-alive connections
        await provider.complete(HI)
        with anyio.fail_after(HANG_GUARD):
            await server.wait_for(lambda: server.open_connections == 0)
        assert (await provider.complete(HI)).message.content == "echo: hi"
        assert server.counts[CHAT_PATH] == 2


# --- 8. finish_reason "error" is a transient failure in the default onion -----------------
# Before: the degraded partial reply was returned as a success, no retry.


async def test_degraded_reply_is_retried_then_raised(kind: Kind) -> None:
    async with server_and_provider(kind) as (server, provider):
        degraded = completion_body("half an ans", finish_reason="mystery")
        server.enqueue(degraded, completion_body("whole answer"))
        call = onion_call(provider)
        response = await call(CompletionRequest(HI))
        assert response.message.content == "whole answer" and server.counts[CHAT_PATH] == 2
        server.enqueue(degraded, degraded, degraded)
        with pytest.raises(ProviderDegradedResponse) as info:
            await call(CompletionRequest(HI))
        assert info.value.response.message.content == "half an ans"
        assert info.value.category == "provider_unavailable"
        assert server.counts[CHAT_PATH] == 5
        server.enqueue(degraded)  # opted out: the degraded reply is returned as it is
        kept = await onion_call(provider, degraded=False)(CompletionRequest(HI))
        assert kept.finish_reason == "error"


# --- 9. cancellation is prompt and leaves nothing behind -----------------------------------
# Before (httpx): 200 queued calls sat in httpcore's pool queue, which it rescans per
# cancelled request (0.3-1 s to cancel a fan-out); now they wait in our own FIFO.


async def test_cancelling_a_fan_out_leaves_nothing_behind(kind: Kind) -> None:
    async with server_and_provider(kind) as (server, provider):
        server.hold()
        async with leak_check(server, provider):
            with anyio.fail_after(HANG_GUARD):
                async with anyio.create_task_group() as tg:
                    for i in range(200):
                        tg.start_soon(provider.complete, [UserMessage(content=f"t{i}")])
                    await server.wait_in_flight(100)
                    await wait_all_tasks_blocked()
                    transport = provider.transport
                    if isinstance(transport, HttpxTransport):
                        pool = transport.client._transport._pool  # type: ignore[attr-defined]
                        assert len(pool._requests) <= 100  # nothing queued inside httpcore
                    tg.cancel_scope.cancel()
            assert checked_out(provider) == 0
        server.release()


# --- 10. head-size limit and duplicate Content-Length: the same on both transports --------
# Before: the fast transport accepted a 150 KB head (httpx refused it) and refused a
# repeated identical Content-Length (httpx accepted it).


async def test_large_head_is_refused_by_both(kind: Kind) -> None:
    async with server_and_provider(kind) as (server, provider):
        bulk = b"".join(b"X-Filler-%05d: %s\r\n" % (i, b"v" * 80) for i in range(1600))
        server.raw_fault(RawBytes((json_head(2, bulk) + b"{}",)))
        async with leak_check(server, provider):
            with pytest.raises(ProviderUnavailable) as info:
                await provider.complete(HI)
        assert not isinstance(info.value, ProviderTimeout)


async def test_repeated_equal_content_length_is_read_by_both(kind: Kind) -> None:
    async with server_and_provider(kind) as (server, provider):
        data = _json(completion_body("fine"))
        head = json_head(len(data), b"Content-Length: %d\r\n" % len(data))
        server.raw_fault(RawBytes((head + data,)))
        assert (await provider.complete(HI)).message.content == "fine"
        conflicting = json_head(len(data), b"Content-Length: %d\r\n" % (len(data) + 1))
        server.raw_fault(RawBytes((conflicting + data,)))
        with pytest.raises(ProviderUnavailable):
            await provider.complete(HI)


def _json(value: Any) -> bytes:
    import msgspec

    return msgspec.json.encode(value)


# --- also: a maximum response size, enforced while reading ---------------------------------


async def test_response_size_cap_while_reading(kind: Kind) -> None:
    async with (
        server_and_provider(kind, max_response_bytes=4096) as (server, provider),
        leak_check(server, provider),
    ):
        if True:
            # announced too large: refused from the head
            server.raw_fault(RawBytes((json_head(1_000_000), b"{" * 1000), then="hang"))
            with anyio.fail_after(HANG_GUARD), pytest.raises(ProviderInvalidResponse):
                await provider.complete(HI)
            # no length announced: refused once 4 KiB have been read, without the rest
            server.raw_fault(RawBytes((json_head(None),), repeat=b" " * 1024, interval=0.01))
            with anyio.fail_after(HANG_GUARD), pytest.raises(ProviderInvalidResponse):
                await provider.complete(HI)
            # a stream: the cap counts all of it, not what is buffered
            chunk = b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'
            server.raw_fault(RawBytes((SSE_HEAD,), repeat=chunk, interval=0.001))
            with anyio.fail_after(HANG_GUARD), pytest.raises(ProviderInvalidResponse):
                await provider.complete(HI, stream=True)


# --- also: backpressure, a per-endpoint in-flight limit ---------------------------------


async def test_in_flight_limit_is_shared_by_every_provider_of_the_endpoint(kind: Kind) -> None:
    async with server_and_provider(kind, max_in_flight=5) as (server, first):
        second = make_provider(kind, server.base_url)
        assert second.limiter is first.limiter and first.limiter.limit == 5
        server.latency = 0.02
        try:
            with anyio.fail_after(HANG_GUARD):
                async with anyio.create_task_group() as tg:
                    for i in range(40):
                        tg.start_soon((first if i % 2 else second).complete, HI)
            assert server.counts[CHAT_PATH] == 40
            assert server.max_in_flight == 5
            assert first.limiter.in_flight == 0 and first.limiter.waiting == 0
        finally:
            first.limiter.limit = 256
            await second.aclose()
