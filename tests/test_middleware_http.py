"""Retry, cooldown and warm-up gate against a real local HTTP server (the
embedded OpenAI-compatible server), on asyncio and trio.

Waits are asserted as *scheduled* (virtual clock and sleep injected into the
layers), never by sleeping in the test.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from openarmature_nodes.llm import (
    CompletionRequest,
    OpenAIProvider,
    ProviderAuthentication,
    ProviderInvalidModel,
    ProviderModelNotLoaded,
    ProviderRateLimit,
    ProviderUnavailable,
    Response,
    UserMessage,
)
from openarmature_nodes.llm.call_retry import complete_with_retry
from openarmature_nodes.middleware import (
    Cooldown,
    CooldownMiddleware,
    RetryMiddleware,
    WarmupGate,
    compose,
)
from openarmature_nodes.retrying import RetryConfig, constant_backoff, exponential_full_jitter
from openarmature_nodes.testing import CHAT_PATH, MODELS_PATH, EmbeddedServer
from tests.embedded_fixtures import MODEL

from .middleware_fakes import ManualTime, VirtualTime

pytestmark = pytest.mark.anyio



def request(text: str = "hello") -> CompletionRequest:
    return CompletionRequest(messages=[UserMessage(content=text)])


# --- Retry-After -------------------------------------------------------------------


async def test_retry_after_2s_is_waited_even_when_jitter_is_shorter(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    vt = VirtualTime()
    server.rate_limit(1, retry_after=2)
    cfg = RetryConfig(
        backoff=exponential_full_jitter(rng=lambda: 0.05),  # jitter would say 0.05 s
        clock=vt.clock,
        sleep=vt.sleep,
    )
    retry = compose([RetryMiddleware(cfg)], provider.call)
    response = await retry(request())
    assert response.message.content == "echo: hello"
    assert vt.sleeps == [2.0]
    assert server.counts[CHAT_PATH] == 2


async def test_http_date_retry_after(server: EmbeddedServer, provider: OpenAIProvider) -> None:
    vt = VirtualTime()
    server.rate_limit(1, retry_after=3, form="http-date")
    seen: list[float | None] = []

    async def on_retry(exc: Exception, index: int) -> None:
        assert isinstance(exc, ProviderRateLimit)
        seen.append(exc.retry_after)

    cfg = RetryConfig(
        backoff=constant_backoff(0.01), on_retry=on_retry, clock=vt.clock, sleep=vt.sleep
    )
    response = await complete_with_retry(provider.call, request(), cfg)
    assert response.finish_reason == "stop"
    (after,) = seen
    assert after is not None and 2.0 < after <= 4.0  # a date has whole-second resolution
    assert vt.sleeps == [after]


async def test_deadline_raises_the_last_error_instead_of_sleeping(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    vt = VirtualTime()
    server.rate_limit(5, retry_after=4)
    cfg = RetryConfig(
        max_attempts=5, backoff=constant_backoff(0.1), deadline=6.0, clock=vt.clock,
        sleep=vt.sleep,
    )
    with pytest.raises(ProviderRateLimit):
        await complete_with_retry(provider.call, request(), cfg)
    # attempt 0 at t=0, wait 4 s (ends at 4 <= 6), attempt 1 at t=4; another 4 s would pass 6
    assert vt.sleeps == [4.0]
    assert server.counts[CHAT_PATH] == 2


async def test_5xx_then_success_through_complete_retry(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    vt = VirtualTime()
    server.fail_5xx(2, status=503)
    cfg = RetryConfig(backoff=constant_backoff(0.5), clock=vt.clock, sleep=vt.sleep)
    response = await complete_with_retry(provider.call, request("again"), cfg)
    assert response.message.content == "echo: again"
    assert vt.sleeps == [0.5, 0.5] and server.counts[CHAT_PATH] == 3


async def test_no_retry_by_default(server: EmbeddedServer, provider: OpenAIProvider) -> None:
    server.fail_5xx(1, status=503)
    with pytest.raises(ProviderUnavailable):
        await provider.call(request())
    assert server.counts[CHAT_PATH] == 1


# --- shared cooldown ----------------------------------------------------------------


def cooled_onion(provider: OpenAIProvider, cooldown: Cooldown, clock: ManualTime) -> Any:
    cfg = RetryConfig(backoff=constant_backoff(0.05), clock=clock.clock, sleep=clock.sleep)
    return compose([RetryMiddleware(cfg), CooldownMiddleware(cooldown)], provider.call)


async def test_100_callers_meeting_429_hold_for_the_second_then_all_succeed(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    clock = ManualTime()
    cooldown = Cooldown(clock=clock.clock, sleep=clock.sleep)
    call = cooled_onion(provider, cooldown, clock)
    server.rate_limit(100, retry_after=1)
    results: list[Response] = []

    async def caller(i: int) -> None:
        results.append(await call(request(f"caller {i}")))

    server.hold()
    async with anyio.create_task_group() as tg:
        for i in range(100):
            tg.start_soon(caller, i)
        await server.wait_in_flight(100)  # every caller's first request is out
        server.release()
        await clock.wait_sleepers(100)  # every caller met its 429 and now holds
        assert server.counts[CHAT_PATH] == 100  # nothing more went out during the second
        assert all(s >= 1.0 for s in clock.sleeps)
        assert cooldown.remaining == pytest.approx(1.0)
        clock.advance(1.0)
    assert len(results) == 100
    assert all(r.finish_reason == "stop" for r in results)
    assert server.counts[CHAT_PATH] == 200


async def test_one_429_holds_every_other_caller_of_the_endpoint(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    clock = ManualTime()
    cooldown = Cooldown(clock=clock.clock, sleep=clock.sleep)
    call = cooled_onion(provider, cooldown, clock)
    server.rate_limit(1, retry_after=1)
    done: list[str] = []

    async def caller(i: int) -> None:
        response = await call(request(f"caller {i}"))
        assert isinstance(response.message.content, str)
        done.append(response.message.content)

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller, 0)
        await clock.wait_sleepers(1)  # the first caller learned "retry after 1 s"
        for i in range(1, 100):
            tg.start_soon(caller, i)
        await clock.wait_sleepers(100)  # the 99 others hold without sending
        assert server.counts[CHAT_PATH] == 1
        clock.advance(1.0)
    assert len(done) == 100 and server.counts[CHAT_PATH] == 101
    assert cooldown.remaining == 0.0


async def test_cooldown_costs_nothing_when_no_hold(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    cooldown = Cooldown()
    call = compose([CooldownMiddleware(cooldown)], provider.call)
    await call(request())
    assert cooldown.remaining == 0.0 and server.counts[CHAT_PATH] == 1


def test_cooldown_shared_per_endpoint() -> None:
    class P:
        server_address = "gateway.local"
        server_port = 8000

    class Q:
        server_address = "other.local"
        server_port = 8000

    assert Cooldown.for_endpoint(P()) is Cooldown.for_endpoint(P())
    assert Cooldown.for_endpoint(P()) is not Cooldown.for_endpoint(Q())


# --- warm-up gate --------------------------------------------------------------------


async def test_50_callers_through_a_cold_gate_one_probe_one_warmup(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    gate = WarmupGate(provider)
    call = compose([gate], provider.call)
    results: list[Response] = []

    async def caller(i: int) -> None:
        results.append(await call(request(f"caller {i}")))

    server.hold()
    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(caller, i)
        await server.wait_in_flight(1)  # the probe is out and held
        await wait_all_tasks_blocked()  # the 49 others are waiting at the gate
        assert server.counts[MODELS_PATH] == 1 and server.counts[CHAT_PATH] == 0
        server.release()
    assert len(results) == 50 and gate.is_open
    assert server.counts[MODELS_PATH] == 1
    assert server.counts[CHAT_PATH] == 51  # one warm-up completion + 50 calls
    warmup = next(r for r in server.requests if r.path == CHAT_PATH)
    assert warmup.json["max_tokens"] == 1


async def test_auth_rejected_warmup_raises_to_all_50_and_opens_nothing() -> None:
    async with (
        EmbeddedServer(model=MODEL, api_key="the-right-key") as srv,
        OpenAIProvider(srv.base_url, MODEL, api_key="sk-wrong-key") as provider,
    ):
        gate = WarmupGate(provider)
        call = compose([gate], provider.call)
        errors: list[BaseException] = []

        async def caller() -> None:
            try:
                await call(request())
            except ProviderAuthentication as exc:
                errors.append(exc)

        srv.hold()
        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(caller)
            await srv.wait_in_flight(1)
            await wait_all_tasks_blocked()
            srv.release()
        assert len(errors) == 50
        assert not gate.is_open
        assert srv.counts[MODELS_PATH] == 1 and srv.counts[CHAT_PATH] == 0
        assert all("sk-wrong-key" not in str(e) for e in errors)


async def test_unknown_model_is_not_polled(server: EmbeddedServer) -> None:
    async with OpenAIProvider(server.base_url, "no-such-model") as provider:
        vt = VirtualTime()
        gate = WarmupGate(provider, clock=vt.clock, sleep=vt.sleep)
        with pytest.raises(ProviderInvalidModel):
            await gate.open()
        assert vt.sleeps == [] and not gate.is_open


async def test_loading_model_is_polled_until_ready(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    vt = VirtualTime()
    server.slow_load(probes=3)
    gate = WarmupGate(provider, backoff=constant_backoff(2.0), clock=vt.clock, sleep=vt.sleep)
    await gate.open()
    assert gate.is_open
    assert server.counts[MODELS_PATH] == 4 and vt.sleeps == [2.0, 2.0, 2.0]
    # once open, the gate sends nothing more of its own
    await compose([gate], provider.call)(request())
    assert server.counts[MODELS_PATH] == 4


async def test_loading_model_past_the_deadline_raises(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    vt = VirtualTime()
    server.slow_load()
    gate = WarmupGate(
        provider, deadline=5.0, backoff=constant_backoff(2.0), clock=vt.clock, sleep=vt.sleep
    )
    with pytest.raises((ProviderModelNotLoaded, ProviderUnavailable)):
        await gate.open()
    assert vt.sleeps == [2.0, 2.0] and not gate.is_open


async def test_reset_rewarms(server: EmbeddedServer, provider: OpenAIProvider) -> None:
    gate = WarmupGate(provider)
    await gate.open()
    gate.reset()
    await compose([gate], provider.call)(request())
    assert server.counts[MODELS_PATH] == 2 and server.counts[CHAT_PATH] == 3
