"""Server dialects against the real llama.cpp server (``pytest -m real_server``).

The server: ``../shared/tools/real-llm-server.sh start 18188`` (llama-cpp-python
0.3.36, Gemma 3 270M *base*: junk text, but grammar-constrained JSON is real).
What it does differently is in ``shared/tools/real-llm-server.md``; the ones
that matter here: ``response_format: json_schema`` is an HTTP 500, while its
own ``{"type": "json_object", "schema": ...}`` is enforced.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Annotated, Literal

import anyio
import msgspec
import pytest

from openarmature_nodes.llm import (
    OpenAIProvider,
    ProviderInvalidRequest,
    RawResponse,
    RuntimeConfig,
    SystemMessage,
    Tool,
    ToolChoiceForce,
    UserMessage,
)
from openarmature_nodes.llm.transport import FastTransport
from openarmature_nodes.retrying import RetryConfig
from tests.real_server import MODEL, URL, requires_real_server

pytestmark = [pytest.mark.anyio, *requires_real_server()]


class CountingTransport:
    """A FastTransport that counts the requests it sends."""

    def __init__(self) -> None:
        self.inner = FastTransport()
        self.sent: list[str] = []

    async def request(
        self, method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes | None
    ) -> RawResponse:
        self.sent.append(f"{method} {url}")
        return await self.inner.request(method, url, headers, body)

    async def aclose(self) -> None:
        await self.inner.aclose()


class Record(msgspec.Struct, forbid_unknown_fields=True):
    """One extracted record: bounded, so a grammar always finishes it."""

    name: Annotated[str, msgspec.Meta(max_length=16)]
    age: Annotated[int, msgspec.Meta(ge=0, le=120)]
    role: Literal["engineer", "artist", "doctor", "teacher"]


PEOPLE = [
    ("Ada", 36, "engineer"), ("Frida", 47, "artist"), ("Jonas", 58, "doctor"),
    ("Maria", 29, "teacher"), ("Alan", 41, "engineer"), ("Georgia", 98, "artist"),
    ("Elizabeth", 85, "doctor"), ("Anne", 52, "teacher"), ("Grace", 85, "engineer"),
    ("Claude", 86, "artist"), ("Rosalind", 37, "doctor"), ("Paulo", 75, "teacher"),
]


async def extract_twelve(provider: OpenAIProvider) -> list[Record]:
    """The issue's extraction: 12 records, each one structured call, nothing hand-set."""
    out = []
    for name, age, role in PEOPLE:
        response = await provider.complete(
            [
                SystemMessage("Extract the person as JSON."),
                UserMessage(f"{name} is a {age}-year-old {role}."),
            ],
            response_schema=Record,
            config=RuntimeConfig(temperature=0.0, max_tokens=60),
        )
        assert isinstance(response.parsed, Record)
        out.append(response.parsed)
    return out


async def extract_twelve_concurrently(provider: OpenAIProvider) -> list[Record]:
    """The same 12 calls at once (vLLM batches them: one call's time, not twelve)."""
    out: list[Record] = []

    async def one(name: str, age: int, role: str) -> None:
        response = await provider.complete(
            [
                SystemMessage("Extract the person as JSON."),
                UserMessage(f"{name} is a {age}-year-old {role}."),
            ],
            response_schema=Record,
            config=RuntimeConfig(temperature=0.0, max_tokens=60),
        )
        assert isinstance(response.parsed, Record)
        out.append(response.parsed)

    async with anyio.create_task_group() as tg:
        for person in PEOPLE:
            tg.start_soon(one, *person)
    return out


async def test_auto_dialect_extracts_twelve_valid_records(caplog: pytest.LogCaptureFixture) -> None:
    """dialect="auto": the warm-up probe finds llama.cpp's json_object + schema
    form; 12 of 12 records come back valid with no request configured by hand."""
    caplog.set_level(logging.INFO, logger="openarmature_nodes.llm.dialects")
    async with OpenAIProvider(URL, MODEL, dialect="auto") as provider:
        await provider.ready()  # the warm-up: runs the probe
        assert provider.dialect.name == "llamacpp"  # its model card says owned_by "me"
        assert provider.structured_output_mode == "json_object_schema"
        records = await extract_twelve(provider)
    assert len(records) == 12 and all(isinstance(r, Record) for r in records)
    assert "json_object_schema: enforced" in caplog.text


async def test_auto_dialect_probes_at_the_first_structured_call_without_ready() -> None:
    async with OpenAIProvider(URL, MODEL, dialect="auto") as provider:
        response = await provider.complete(
            [UserMessage("Grace is an 85-year-old engineer.")],
            response_schema=Record,
            config=RuntimeConfig(temperature=0.0, max_tokens=60),
        )
        assert isinstance(response.parsed, Record)
        assert provider.dialect_detection is not None
        assert "json_object_schema" in provider.dialect_detection


async def test_json_schema_500_is_raised_once_with_the_fix_in_its_message() -> None:
    """The standard json_schema form gets llama.cpp's HTTP 500: a non-transient
    invalid-request error naming the dialect that fixes it, never retried."""
    transport = CountingTransport()
    async with OpenAIProvider(URL, MODEL, dialect="openai", transport=transport) as provider:
        with pytest.raises(ProviderInvalidRequest) as info:
            await provider.complete(
                [UserMessage("Ada is a 36-year-old engineer.")],
                response_schema=Record,
                config=RuntimeConfig(temperature=0.0, max_tokens=40),
                retry=RetryConfig(max_attempts=4, backoff=lambda attempt: 0.0),
            )
    assert transport.sent == [f"POST {URL}/v1/chat/completions"]  # once: no retry
    assert info.value.status == 500 and not info.value.transient
    assert "dialect='llamacpp'" in info.value.message
    assert "Input should be 'text' or 'json_object'" in info.value.message  # server's own words


async def test_genai_system_llama_cpp_selects_the_llamacpp_dialect() -> None:
    async with OpenAIProvider(URL, MODEL, genai_system="llama.cpp") as provider:
        assert provider.dialect.name == "llamacpp"
        response = await provider.complete(
            [SystemMessage("Extract the person as JSON."), UserMessage("Ada is 36, an engineer.")],
            response_schema=Record,
            config=RuntimeConfig(temperature=0.0, max_tokens=60),
        )
        assert isinstance(response.parsed, Record)


async def test_strict_tool_is_not_sent_to_llama_cpp_and_still_works() -> None:
    weather = Tool(
        "get_weather",
        "Current weather for a city.",
        {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
         "required": ["city"]},
        strict=True,
    )
    async with OpenAIProvider(URL, MODEL, dialect="llamacpp") as provider:
        response = await provider.complete(
            [SystemMessage("You call tools."), UserMessage("Weather in Paris?")],
            tools=[weather],
            tool_choice=ToolChoiceForce("get_weather"),
            config=RuntimeConfig(temperature=0.0, max_tokens=32),
        )
    assert response.message.tool_calls
    assert isinstance(response.message.tool_calls[0].arguments, dict)
