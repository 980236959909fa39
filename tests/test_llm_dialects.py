"""Server dialects (``openarmature_nodes.llm.dialects``): the table, the wire each
one produces, the ``"auto"`` probe and the "unsupported form" errors.

Scripted servers replay the real bodies recorded in ``shared/tools/real-llm-server.md``
(llama-cpp-python 0.3.36) and ``shared/tools/real-vllm-server.md`` (vLLM 0.32);
the same behaviours are checked against the real servers in
``tests/test_real_dialects.py`` and ``tests/test_real_vllm.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from openarmature_nodes.llm import (
    CompletionRequest,
    HttpxTransport,
    OpenAIProvider,
    ProviderAuthentication,
    ProviderInvalidRequest,
    ProviderUnavailable,
    RuntimeConfig,
    Tool,
    UserMessage,
)
from openarmature_nodes.llm.dialects import (
    AUTO,
    DIALECTS,
    Choice,
    Grammar,
    Regex,
    constraint_body,
    resolve_dialect,
)
from openarmature_nodes.llm.wire.dialects import (
    CANARY_VALUE,
    auto_candidates,
    canary_accepted,
    unsupported_form_error,
)
from openarmature_nodes.llm.wire.encode import build_chat_body
from openarmature_nodes.llm.wire.error_reply import error_from_reply
from openarmature_nodes.middleware import SpanMiddleware, compose
from openarmature_nodes.nodes import tool
from openarmature_nodes.retrying import RetryConfig

pytestmark = pytest.mark.anyio

MODEL = "gemma-3-270m"
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 10}},
    "required": ["name"],
    "additionalProperties": False,
}
WEATHER = Tool("w", "weather", {"type": "object", "properties": {}}, strict=True)

# Verbatim from real-llm-server.md: llama-cpp-python's answer to response_format json_schema.
LLAMA_JSON_SCHEMA_500 = (
    b'{"error":{"message":"1 validation error:\\n  {\'type\': \'literal_error\', \'loc\': '
    b"('body', 'response_format', 'type'), 'msg': \\\"Input should be 'text' or 'json_object'\\\", "
    b"'input': 'json_schema'}\\n\\n  File \\\"/llama_cpp/server/app.py\\\", line 376, in "
    b'create_chat_completion\\n    POST /v1/chat/completions","type":"internal_server_error",'
    b'"param":null,"code":null}}'
)
VLLM_CARD = (
    b'{"object":"list","data":[{"id":"gemma-3-270m","object":"model","created":1796176973,'
    b'"owned_by":"vllm","root":"/m","parent":null,"max_model_len":2048,"permission":[]}]}'
)
LLAMA_CARD = (
    b'{"object":"list","data":[{"id":"gemma-3-270m","object":"model","owned_by":"me",'
    b'"permissions":[]}]}'
)
OTHER_CARD = b'{"object":"list","data":[{"id":"gemma-3-270m","object":"model"}]}'


def reply(content: str | None, finish: str = "stop") -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "id": "c1",
            "object": "chat.completion",
            "model": MODEL,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content},
                 "finish_reason": finish}
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
        },
    )


class Scripted:
    """A scripted server: ``card`` for /v1/models, ``chat(body)`` for completions."""

    def __init__(self, card: bytes, chat: Callable[[dict[str, Any]], httpx.Response]) -> None:
        self.card = card
        self.chat = chat
        self.bodies: list[dict[str, Any]] = []
        self.gets = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            self.gets += 1
            headers = {"content-type": "application/json"}
            return httpx.Response(200, content=self.card, headers=headers)
        body = msgspec.json.decode(request.content)
        self.bodies.append(body)
        return self.chat(body)

    def provider(self, **kwargs: Any) -> OpenAIProvider:
        transport = HttpxTransport(transport=httpx.MockTransport(self))
        return OpenAIProvider("http://srv", MODEL, transport=transport, **kwargs)


def llama_cpp(body: dict[str, Any]) -> httpx.Response:
    """llama-cpp-python: json_schema is a 500, json_object + schema is enforced."""
    fmt = body.get("response_format")
    if fmt and fmt["type"] == "json_schema":
        return httpx.Response(500, content=LLAMA_JSON_SCHEMA_500)
    if fmt and fmt["type"] == "json_object" and "schema" in fmt:
        if fmt["schema"]["properties"].get("v", {}).get("enum") == [CANARY_VALUE]:
            return reply('{ "v": "' + CANARY_VALUE + '" } ')
        return reply('{ "name": "Ada" } ')
    return reply("What is the capital of France?")


def ignores_everything(body: dict[str, Any]) -> httpx.Response:
    """A server that accepts every form and enforces none."""
    return reply("hello there", "length")


def vllm_like(body: dict[str, Any]) -> httpx.Response:
    fmt = body.get("response_format")
    if fmt and fmt["type"] == "json_schema":
        schema = fmt["json_schema"]["schema"]
        if schema["properties"].get("v", {}).get("enum") == [CANARY_VALUE]:
            return reply('{"v":"' + CANARY_VALUE + '"}')
        return reply('{"name":"Ann"}')
    return reply("hi", "length")


# --- the table ---------------------------------------------------------------------------


def test_dialect_defaults_from_genai_system_never_the_url() -> None:
    assert resolve_dialect(None, None).name == "openai"
    assert resolve_dialect(None, "vllm").name == "vllm"
    assert resolve_dialect(None, "llama.cpp").name == "llamacpp"
    assert resolve_dialect(None, "LM Studio".replace(" ", "")).name == "lmstudio"
    assert resolve_dialect(None, "some-gateway").name == "openai"
    assert resolve_dialect("auto", "vllm") is AUTO
    assert resolve_dialect("sglang", "openai").name == "sglang"  # explicit wins
    with pytest.raises(ValueError, match="dialect must be one of"):
        resolve_dialect("vlm", None)
    p = OpenAIProvider("http://localhost:8000", MODEL, genai_system="llama.cpp")
    assert p.dialect.name == "llamacpp" and p.genai_system == "llama.cpp"
    p = OpenAIProvider("http://vllm.internal:8000", MODEL, dialect="vllm")
    assert p.genai_system == "vllm"  # follows the dialect when not given
    assert OpenAIProvider("http://vllm.internal:8000", MODEL).dialect.name == "openai"


def request(**kwargs: Any) -> CompletionRequest:
    kwargs.setdefault("messages", [UserMessage("hi")])
    return CompletionRequest(**kwargs)


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("openai", "response_format", "json_schema"),
        ("vllm", "response_format", "json_schema"),
        ("sglang", "response_format", "json_schema"),
        ("lmstudio", "response_format", "json_schema"),
        ("llamacpp", "response_format", "json_object"),
    ],
)
def test_structured_output_form_per_dialect(name: str, key: str, value: str) -> None:
    body = msgspec.to_builtins(
        build_chat_body(MODEL, request(response_schema=SCHEMA), dialect=DIALECTS[name])
    )
    assert body[key]["type"] == value
    if value == "json_object":
        assert body[key] == {"type": "json_object", "schema": SCHEMA}
    else:
        assert body[key]["json_schema"]["schema"] == SCHEMA


def test_structured_outputs_extension_and_prompt_modes() -> None:
    ext = msgspec.structs.replace(DIALECTS["vllm"], structured_mode="structured_outputs")
    body = build_chat_body(MODEL, request(response_schema=SCHEMA), dialect=ext)
    assert body["structured_outputs"] == {"json": SCHEMA} and "response_format" not in body
    prompt = msgspec.structs.replace(DIALECTS["openai"], structured_mode="prompt")
    body = msgspec.to_builtins(build_chat_body(MODEL, request(response_schema=SCHEMA),
                                               dialect=prompt))
    assert "response_format" not in body and body["messages"][0]["role"] == "system"
    # structured_outputs is managed while produced: a conflicting extra is refused
    with pytest.raises(ProviderInvalidRequest, match="structured_outputs"):
        build_chat_body(
            MODEL,
            request(response_schema=SCHEMA,
                    config=RuntimeConfig(extras={"structured_outputs": {"regex": "x"}})),
            dialect=ext,
        )


def test_max_tokens_key_and_tool_strict_per_dialect() -> None:
    config = RuntimeConfig(max_tokens=7)
    for name in ("openai", "vllm", "llamacpp"):
        body = build_chat_body(MODEL, request(config=config), dialect=DIALECTS[name])
        assert body["max_tokens"] == 7 and "max_completion_tokens" not in body
    custom = msgspec.structs.replace(DIALECTS["openai"], max_tokens_field="max_completion_tokens")
    body = build_chat_body(MODEL, request(config=config), dialect=custom)
    assert body["max_completion_tokens"] == 7 and "max_tokens" not in body

    def fn(name: str) -> dict[str, Any]:
        out = msgspec.to_builtins(
            build_chat_body(MODEL, request(tools=[WEATHER]), dialect=DIALECTS[name])
        )
        return dict(out["tools"][0]["function"])

    assert fn("vllm")["strict"] is True and fn("openai")["strict"] is True
    assert "strict" not in fn("llamacpp") and "strict" not in fn("lmstudio")
    plain = Tool("w", "weather", {"type": "object", "properties": {}})
    body = msgspec.to_builtins(build_chat_body(MODEL, request(tools=[plain]),
                                               dialect=DIALECTS["vllm"]))
    assert "strict" not in body["tools"][0]["function"]  # the spec's wire shape unchanged


async def test_tool_strict_must_be_a_bool() -> None:
    server = Scripted(VLLM_CARD, vllm_like)
    bad = Tool("w", "weather", {"type": "object"}, strict="yes")  # type: ignore[arg-type]
    async with server.provider(dialect="vllm") as provider:
        with pytest.raises(ProviderInvalidRequest, match="strict must be True or False"):
            await provider.complete([UserMessage("hi")], tools=[bad])
    assert server.bodies == []


def test_tool_decorator_strict() -> None:
    @tool(strict=True)
    async def get_weather(city: str) -> str:
        "Weather."
        return city

    assert get_weather.spec.strict is True
    assert tool(lambda city: city, parameters={"type": "object"}).spec.strict is False


def test_constraints_per_dialect() -> None:
    vllm = DIALECTS["vllm"]
    choice = constraint_body(vllm, Choice(("a", "b")))
    assert choice == {"structured_outputs": {"choice": ["a", "b"]}}
    assert constraint_body(vllm, Regex("[0-9]+")) == {"structured_outputs": {"regex": "[0-9]+"}}
    assert constraint_body(DIALECTS["llamacpp"], Grammar("root ::= \"x\"")) == {
        "grammar": 'root ::= "x"'
    }
    assert constraint_body(DIALECTS["sglang"], Regex("a")) == {"regex": "a"}
    with pytest.raises(ProviderInvalidRequest, match="no choice constraint"):
        constraint_body(DIALECTS["openai"], Choice(("a",)))


# --- the canary decisions ---------------------------------------------------------------


def test_canary_acceptance_and_candidate_order() -> None:
    assert canary_accepted('{ "v": "' + CANARY_VALUE + '" } ')
    assert not canary_accepted('{"v": "ok"}')
    assert not canary_accepted("hello")
    assert not canary_accepted(None)
    assert auto_candidates(None) == ("json_schema", "json_object_schema", "structured_outputs")
    assert auto_candidates(DIALECTS["llamacpp"])[0] == "json_object_schema"


# --- "this request form is unsupported" -------------------------------------------------


def test_llama_cpp_json_schema_500_names_the_fix() -> None:
    err = error_from_reply(500, {}, LLAMA_JSON_SCHEMA_500)
    assert isinstance(err, ProviderUnavailable)  # what the status alone says
    fixed = unsupported_form_error(err, dialect=DIALECTS["openai"], sent="json_schema")
    assert isinstance(fixed, ProviderInvalidRequest) and not fixed.transient
    assert fixed.status == 500 and "dialect='llamacpp'" in fixed.message
    assert "Input should be 'text' or 'json_object'" in fixed.message
    assert fixed.__cause__ is err.__cause__  # the server's reply stays reachable
    # Not a structured call, or another error: unchanged.
    assert unsupported_form_error(err, dialect=DIALECTS["openai"], sent=None) is err
    other = error_from_reply(
        400, {}, b'{"error":{"message":"Grammar error: Invalid type: nonsense",'
        b'"type":"BadRequestError","param":null,"code":400}}'
    )
    assert unsupported_form_error(other, dialect=DIALECTS["vllm"], sent="json_schema") is other
    denied = error_from_reply(401, {}, b'{"error":"Unauthorized"}')
    assert unsupported_form_error(denied, dialect=DIALECTS["vllm"], sent="json_schema") is denied


def test_a_400_naming_response_format_is_an_unsupported_form() -> None:
    err = error_from_reply(
        400, {}, b'{"error":{"message":"response_format json_schema is not supported by this '
        b'model","type":"invalid_request_error","param":"response_format","code":null}}'
    )
    fixed = unsupported_form_error(err, dialect=DIALECTS["lmstudio"], sent="json_schema")
    assert isinstance(fixed, ProviderInvalidRequest) and "dialect='auto'" in fixed.message


async def test_json_schema_500_is_raised_once_under_a_retry_policy() -> None:
    server = Scripted(LLAMA_CARD, llama_cpp)
    async with server.provider(dialect="openai") as provider:
        with pytest.raises(ProviderInvalidRequest, match="dialect='llamacpp'"):
            await provider.complete(
                [UserMessage("hi")], response_schema=SCHEMA,
                retry=RetryConfig(max_attempts=4, backoff=lambda attempt: 0.0),
            )
    assert len(server.bodies) == 1


async def test_llamacpp_pydantic_500_is_an_invalid_request_under_its_dialect() -> None:
    body = (b'{"error":{"message":"1 validation error:\\n  {\'type\': \'string_type\'}",'
            b'"type":"internal_server_error","param":null,"code":null}}')
    server = Scripted(LLAMA_CARD, lambda b: httpx.Response(500, content=body))
    async with server.provider(dialect="llamacpp") as provider:
        with pytest.raises(ProviderInvalidRequest, match="validation error"):
            await provider.complete([UserMessage("hi")])
    async with server.provider(dialect="openai") as provider:
        with pytest.raises(ProviderUnavailable):  # other dialects keep the status's reading
            await provider.complete([UserMessage("hi")])


# --- the "auto" probe -------------------------------------------------------------------


async def test_auto_on_llama_cpp_picks_json_object_schema_in_one_request() -> None:
    server = Scripted(LLAMA_CARD, llama_cpp)
    async with server.provider(dialect="auto") as provider:
        assert provider.dialect is AUTO
        await provider.ready()
        assert provider.dialect.name == "llamacpp"
        assert provider.structured_output_mode == "json_object_schema"
        assert len(server.bodies) == 1  # its own form first: enforced
        r = await provider.complete([UserMessage("Ada")], response_schema=SCHEMA)
        assert r.parsed == {"name": "Ada"}
        await provider.ready()  # probes once
    assert len(server.bodies) == 2


async def test_auto_on_an_unidentified_server_walks_the_forms() -> None:
    def chat(body: dict[str, Any]) -> httpx.Response:
        return llama_cpp(body) if "response_format" in body else reply("x")

    server = Scripted(OTHER_CARD, chat)
    async with server.provider(dialect="auto") as provider:
        await provider.ready()
        assert provider.structured_output_mode == "json_object_schema"
        assert provider.dialect.name == "auto" and provider.max_model_len is None
        assert provider.dialect_detection is not None
        assert "json_schema: rejected (HTTP 500)" in provider.dialect_detection
    assert [b["response_format"]["type"] for b in server.bodies] == ["json_schema", "json_object"]


async def test_auto_falls_back_to_the_prompt_only_when_nothing_is_enforced() -> None:
    server = Scripted(OTHER_CARD, ignores_everything)
    async with server.provider(dialect="auto") as provider:
        await provider.ready()
        assert provider.structured_output_mode == "prompt"
        assert len(server.bodies) == 3  # json_schema, json_object + schema, structured_outputs
        detection = provider.dialect_detection or ""
        assert detection.count("not enforced") == 3


async def test_auto_on_vllm_keeps_json_schema_and_reads_max_model_len() -> None:
    server = Scripted(VLLM_CARD, vllm_like)
    async with server.provider(dialect="auto") as provider:
        await provider.ready()
        assert provider.dialect.name == "vllm" and provider.structured_output_mode == "json_schema"
        assert provider.max_model_len == 2048 and provider.health_url == "http://srv/health"
        with pytest.raises(ProviderInvalidRequest, match="max_model_len=2048"):
            await provider.complete([UserMessage("hi")], config=RuntimeConfig(max_tokens=4096))
    assert len(server.bodies) == 1  # the refused request was never sent


async def test_auto_probe_runs_at_the_first_structured_call_and_only_once_concurrently() -> None:
    server = Scripted(LLAMA_CARD, llama_cpp)
    async with server.provider(dialect="auto") as provider, anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(lambda: provider.complete([UserMessage("x")], response_schema=SCHEMA))
    canaries = [b for b in server.bodies if "v" in b["response_format"]["schema"]["properties"]]
    assert len(canaries) == 1 and len(server.bodies) == 6


async def test_auto_probe_failure_is_raised_and_retried_next_time() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return httpx.Response(401, json={"error": "Unauthorized"})
        if request.method == "GET":
            return httpx.Response(200, content=LLAMA_CARD)
        return llama_cpp(msgspec.json.decode(request.content))

    transport = HttpxTransport(transport=httpx.MockTransport(handler))
    async with OpenAIProvider("http://srv", MODEL, dialect="auto", transport=transport) as p:
        with pytest.raises(ProviderAuthentication):
            await p.ready()
        assert p.dialect is AUTO
        await p.ready()
        assert p.structured_output_mode == "json_object_schema"


async def test_dialect_and_mode_are_on_the_span() -> None:
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    server = Scripted(LLAMA_CARD, llama_cpp)
    async with server.provider(dialect="auto") as provider:
        call = compose([SpanMiddleware(provider, tracer_provider=tp)], provider.call)
        await call(request(response_schema=SCHEMA))
    (span,) = exporter.get_finished_spans()
    attrs = dict(span.attributes or {})
    assert attrs["openarmature.llm.dialect"] == "llamacpp"
    assert attrs["openarmature.llm.structured_output_mode"] == "json_object_schema"
