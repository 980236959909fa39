"""Integration tests against a real vLLM server (``pytest -m real_vllm``), on asyncio and trio.

The server: ``../shared/tools/real-vllm-server.sh start 18400`` (vLLM 0.32.0 on the
CPU, Gemma 3 270M *base*: its text is junk, so these tests assert shapes, never
wording; structured output and strict tool arguments are real, xgrammar
enforces them). ``$OPENARMATURE_REAL_VLLM_URL`` points them elsewhere and makes
the server mandatory (see ``tests/real_vllm.py``). The 401 tests use a second
instance started with ``--api-key``.

Generation takes roughly 0.1-0.2 s per token on this machine: every call asks
for a handful of tokens. What vLLM does differently is recorded verbatim in
``shared/tools/real-vllm-server.md``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Annotated

import anyio
import httpx
import msgspec
import pytest

from openarmature_nodes.cli.probe import probe
from openarmature_nodes.llm import (
    OpenAIProvider,
    ProviderAuthentication,
    ProviderInvalidModel,
    ProviderInvalidRequest,
    RuntimeConfig,
    TokenDelta,
    Tool,
    ToolChoiceForce,
    ToolMessage,
    UserMessage,
)
from openarmature_nodes.llm.dialects import Choice, constraint_body
from openarmature_nodes.middleware import WarmupGate
from tests.real_vllm import (
    API_KEY,
    KEYED_URL,
    MAIN_KEY,
    MODEL,
    URL,
    requires_keyed_vllm,
    requires_vllm,
)
from tests.test_real_dialects import Record, extract_twelve_concurrently

pytestmark = [pytest.mark.anyio, *requires_vllm()]

WEATHER = Tool(
    "get_weather",
    "Current weather for a city.",
    {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "London", "Tokyo"]}},
        "required": ["city"],
    },
    strict=True,  # vLLM constrains the arguments to the schema only for strict tools
)


class Person(msgspec.Struct):
    """Bounded in every field, so the grammar always finishes it."""

    name: Annotated[str, msgspec.Meta(max_length=12)]
    adult: bool
    age: Annotated[int, msgspec.Meta(ge=0, le=120)]


def vllm(**kwargs: object) -> OpenAIProvider:
    return OpenAIProvider(  # type: ignore[arg-type]
        URL, MODEL, genai_system="vllm", api_key=MAIN_KEY, **kwargs
    )


def running_requests() -> float:
    """``vllm:num_requests_running`` from ``/metrics`` (summed over its label sets)."""
    text = httpx.get(f"{URL}/metrics", timeout=10.0).text
    values = re.findall(r"^vllm:num_requests_running(?:\{[^}]*\})? (\S+)$", text, re.M)
    assert values, "vllm:num_requests_running missing from /metrics"
    return sum(float(v) for v in values)


async def poll_until(predicate: object, *, deadline: float, what: str) -> None:
    """Poll ``predicate()`` (sync, blocking I/O in a thread) until true, within ``deadline`` s."""
    assert callable(predicate)
    with anyio.move_on_after(deadline) as scope:
        # The server is another process: there is no event to wait on, only its /metrics.
        while not await anyio.to_thread.run_sync(predicate):  # noqa: ASYNC110
            await anyio.sleep(0.1)
    if scope.cancelled_caught:
        pytest.fail(f"{what} did not happen within {deadline} s")


# --- readiness ------------------------------------------------------------------------------


async def test_ready_reads_max_model_len_and_warm_up_opens() -> None:
    async with vllm() as provider:
        assert provider.dialect.name == "vllm"  # from genai_system
        await provider.ready()
        assert provider.max_model_len == 2048  # the script's --max-model-len
        assert provider.health_url == f"{URL}/health"
        await provider.health()  # 200, empty body
        gate = WarmupGate(provider, deadline=120.0)
        await gate.open()
        assert gate.is_open


async def test_max_tokens_over_max_model_len_is_refused_before_sending() -> None:
    async with vllm() as provider:
        await provider.ready()
        with pytest.raises(ProviderInvalidRequest, match="max_model_len=2048") as info:
            await provider.complete([UserMessage("hi")], config=RuntimeConfig(max_tokens=5000))
        assert info.value.status is None  # nothing was sent


async def test_without_ready_the_server_rejects_the_same_request_with_its_message() -> None:
    async with vllm() as provider:
        with pytest.raises(ProviderInvalidRequest) as info:
            await provider.complete([UserMessage("hi")], config=RuntimeConfig(max_tokens=5000))
    assert info.value.status == 400
    assert "cannot be greater than max_model_len=2048" in info.value.message


# --- completions ----------------------------------------------------------------------------


async def test_completion_and_usage() -> None:
    async with vllm() as provider:
        r = await provider.complete(
            [UserMessage("Say hi.")], config=RuntimeConfig(temperature=0.0, max_tokens=3)
        )
    assert isinstance(r.message.content, str)
    assert r.finish_reason in ("length", "stop")
    assert r.raw["model"] == MODEL
    assert r.usage.completion_tokens is not None and 1 <= r.usage.completion_tokens <= 3
    assert r.usage.prompt_tokens is not None and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.raw["system_fingerprint"].startswith("vllm-")


async def test_unknown_model_is_provider_invalid_model() -> None:
    async with OpenAIProvider(
        URL, "gpt-4o-does-not-exist", genai_system="vllm", api_key=MAIN_KEY
    ) as provider:
        with pytest.raises(ProviderInvalidModel, match="gemma-3-270m"):
            await provider.ready()
        with pytest.raises(ProviderInvalidModel) as info:
            await provider.complete([UserMessage("hi")], config=RuntimeConfig(max_tokens=1))
    assert info.value.status == 404 and "does not exist" in info.value.message


async def test_a_request_vllm_rejects_is_categorized_with_its_message() -> None:
    async with vllm() as provider:
        with pytest.raises(ProviderInvalidRequest) as info:
            await provider.complete(
                [UserMessage("hi")], config=RuntimeConfig(temperature=-1.0, max_tokens=1)
            )
    assert info.value.status == 400 and not info.value.transient
    assert "temperature must be non-negative" in info.value.message


async def test_streaming_reports_tokens_and_usage() -> None:
    deltas: list[TokenDelta] = []
    async with vllm() as provider:
        r = await provider.complete(
            [UserMessage("Count: one, two,")],
            config=RuntimeConfig(temperature=0.0, max_tokens=4),
            stream=True,
            on_token=deltas.append,
        )
    assert deltas and "".join(d.text for d in deltas) == r.message.content
    assert r.usage.completion_tokens is not None and 1 <= r.usage.completion_tokens <= 4
    assert r.usage.prompt_tokens is not None and r.usage.prompt_tokens > 0


# --- structured output and tools ------------------------------------------------------------


async def test_structured_output_is_enforced() -> None:
    async with vllm() as provider:
        r = await provider.complete(
            [UserMessage("Ann is a 30 year old adult.")],
            response_schema=Person,
            config=RuntimeConfig(temperature=0.0, max_tokens=40),
        )
    assert isinstance(r.parsed, Person) and r.finish_reason == "stop"


async def test_choice_constraint_through_structured_outputs() -> None:
    async with vllm() as provider:
        extras = constraint_body(provider.dialect, Choice(("red", "green", "blue")))
        r = await provider.complete(
            [UserMessage("Pick a colour.")],
            config=RuntimeConfig(temperature=0.0, max_tokens=4, extras=extras),
        )
    assert r.message.content in ("red", "green", "blue")


async def test_forced_strict_tool_call_and_round_trip() -> None:
    async with vllm() as provider:
        history = [UserMessage("Weather in Paris?")]
        r = await provider.complete(
            history,
            tools=[WEATHER],
            tool_choice=ToolChoiceForce("get_weather"),
            config=RuntimeConfig(temperature=0.0, max_tokens=40),
        )
        assert r.message.tool_calls, r.raw
        call = r.message.tool_calls[0]
        assert call.name == "get_weather"
        assert call.arguments is not None and call.arguments["city"] in ("Paris", "London", "Tokyo")
        r2 = await provider.complete(
            [*history, r.message, ToolMessage('{"temp_c": 21}', call.id)],
            tools=[WEATHER],
            config=RuntimeConfig(temperature=0.0, max_tokens=4),
        )
    assert r2.finish_reason in ("stop", "length", "tool_calls")


async def test_automatic_tool_call() -> None:
    """``tool_choice="auto"``: this base model echoes the tool preamble, writes
    ``<tool_call>``, and the hermes parser plus the strict grammar do the rest."""
    async with vllm() as provider:
        r = await provider.complete(
            [UserMessage("Weather in Paris?")],
            tools=[WEATHER],
            tool_choice="auto",
            config=RuntimeConfig(temperature=0.0, max_tokens=64),
        )
    assert r.finish_reason == "tool_calls" and r.message.tool_calls, r.raw
    call = r.message.tool_calls[0]
    assert call.name == "get_weather" and call.arguments == {"city": "Paris"}


# --- concurrency and cancellation -----------------------------------------------------------


async def test_fifty_concurrent_calls_on_one_provider() -> None:
    results: list[int] = []
    async with vllm() as provider:

        async def one(i: int) -> None:
            r = await provider.complete(
                [UserMessage(f"Number {i}:")], config=RuntimeConfig(temperature=0.0, max_tokens=2)
            )
            assert r.usage.completion_tokens is not None
            results.append(i)

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(one, i)
    assert sorted(results) == list(range(50))


async def test_cancelling_a_stream_frees_the_server_slot() -> None:
    """Cancel mid-stream: the connection is dropped, vLLM aborts the request,
    and ``vllm:num_requests_running`` is back to 0 (polled, bounded)."""
    seen_running: list[float] = []
    async with vllm() as provider:
        got_token = anyio.Event()

        def on_token(delta: TokenDelta) -> None:
            got_token.set()

        async def stream() -> None:
            await provider.complete(
                [UserMessage("Write a long story.")],
                config=RuntimeConfig(temperature=0.0, max_tokens=400, extras={"ignore_eos": True}),
                stream=True,
                on_token=on_token,
            )
            pytest.fail("the stream finished before it was cancelled")

        async with anyio.create_task_group() as tg:
            tg.start_soon(stream)
            with anyio.fail_after(120):
                await got_token.wait()
            seen_running.append(await anyio.to_thread.run_sync(running_requests))
            tg.cancel_scope.cancel()
    assert seen_running == [1.0]  # the request was running when cancelled
    await poll_until(lambda: running_requests() == 0.0, deadline=30.0, what="slot release")


# --- auth (the --api-key instance) ----------------------------------------------------------


def keyed(test: object) -> object:
    """Marks for a test of the ``--api-key`` instance (``tests/real_vllm.py``)."""
    for mark in requires_keyed_vllm():
        test = mark(test)
    return test


@keyed
@pytest.mark.parametrize("key", [None, "sk-wrong"])
async def test_401_body_from_the_keyed_instance(key: str | None) -> None:
    """vLLM's 401 body is ``{"error": "Unauthorized"}`` (a string, not an object)."""
    async with OpenAIProvider(KEYED_URL, MODEL, api_key=key, genai_system="vllm") as provider:
        with pytest.raises(ProviderAuthentication) as info:
            await provider.ready()
        assert info.value.status == 401 and "Unauthorized" in info.value.message
        assert "sk-" not in str(info.value)  # the key never appears
        with pytest.raises(ProviderAuthentication):
            await provider.complete([UserMessage("hi")], config=RuntimeConfig(max_tokens=1))


@keyed
async def test_the_right_key_is_accepted_by_the_keyed_instance() -> None:
    async with OpenAIProvider(KEYED_URL, MODEL, api_key=API_KEY, genai_system="vllm") as p:
        await p.ready()
        r = await p.complete([UserMessage("hi")], config=RuntimeConfig(max_tokens=1))
    assert r.usage.completion_tokens == 1


# --- dialect auto and the probe -------------------------------------------------------------


async def test_auto_dialect_extracts_twelve_valid_records() -> None:
    """The issue's extraction on vLLM with dialect="auto": the probe keeps
    json_schema (enforced), and all 12 records are valid."""
    async with OpenAIProvider(URL, MODEL, dialect="auto", api_key=MAIN_KEY) as provider:
        await provider.ready()
        assert provider.dialect.name == "vllm" and provider.structured_output_mode == "json_schema"
        assert provider.max_model_len == 2048
        records = await extract_twelve_concurrently(provider)
    assert len(records) == 12 and all(isinstance(r, Record) for r in records)


async def test_probe_reports_dialect_max_model_len_and_mode() -> None:
    report = await probe(URL, MODEL, api_key=MAIN_KEY, warm_up=True, phase_timeout=60.0)
    assert report.ok, report
    assert report.dialect == "vllm" and report.max_model_len == 2048
    assert report.structured_output_mode == "json_schema"
    assert [s.name for s in report.steps][-1] == "first token"


def test_probe_command_prints_dialect_and_max_model_len() -> None:
    env = {**os.environ, "OPENARMATURE_API_KEY": MAIN_KEY or ""}
    env.pop("OPENAI_API_KEY", None)
    done = subprocess.run(
        [sys.executable, "-m", "openarmature_nodes", "probe", "--base-url", URL, "--model", MODEL,
         "--timeout", "60"],
        capture_output=True, text=True, timeout=180, check=False, env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dialect: vllm" in done.stdout
    assert "max_model_len: 2048" in done.stdout
    assert "structured output: json_schema" in done.stdout
    assert "verdict: ready" in done.stdout

