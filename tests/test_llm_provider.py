"""OpenAIProvider against a scripted server, on asyncio and trio, over both transports.

Each test scripts the server as an httpx handler; ``tests/transports.py`` serves it
through ``httpx.MockTransport`` (``httpx``) or over loopback TCP to a real
``FastTransport`` (``fast``), so every test runs four times. Tests pinned to one
transport say why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import httpx
import msgspec
import pytest

from openarmature_nodes.llm import (
    AssistantMessage,
    CompletionRequest,
    HTTPErrorReply,
    OpenAIProvider,
    ProviderAuthentication,
    ProviderInvalidModel,
    ProviderInvalidRequest,
    ProviderInvalidResponse,
    ProviderModelNotLoaded,
    ProviderRateLimit,
    ProviderUnavailable,
    ProviderUnsupportedContentBlock,
    RuntimeConfig,
    StructuredOutputInvalid,
    SystemMessage,
    Tool,
    ToolCall,
    ToolChoiceForce,
    ToolMessage,
    UserMessage,
)
from openarmature_nodes.llm.transport import TransportProtocolError, TransportTimeout
from tests.transports import (  # noqa: F401  (fixtures used by name)
    fast_only,
    httpx_only,
    loopback_transport,
    transport_kind,
    transports,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("transports")]

KEY = "sk-very-secret-key-123"
HI = [UserMessage("hi")]
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
WEATHER = Tool(
    "get_weather",
    "Weather for a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def completion(content: Any = "ok", finish: Any = "stop", **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    message.update(extra.pop("message", {}))
    body = {
        "id": "cc-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
    body.update(extra)
    return body


class Server:
    """Records requests; answers with a fixed reply or a callable."""

    def __init__(self, reply: Any = None) -> None:
        self.requests: list[httpx.Request] = []
        self.reply: Any = reply if reply is not None else httpx.Response(200, json=completion())

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.reply
        if callable(reply):
            reply = reply(request)
        if isinstance(reply, BaseException):
            raise reply
        assert isinstance(reply, httpx.Response)
        return reply

    def body(self, i: int = -1) -> Any:
        return msgspec.json.decode(self.requests[i].content)


def make(
    server: Callable[..., Any], base_url: str = "http://llm.test", **kw: Any
) -> OpenAIProvider:
    return OpenAIProvider(base_url, "m", transport=loopback_transport(server), **kw)


# --- construction ------------------------------------------------------------------------


@httpx_only  # no transport involved
@pytest.mark.parametrize(
    "url",
    ["http://h:8000/v1", "http://h:8000/v1/", "http://h:8000/v1//", "https://gw.example/api/v1"],
)
async def test_base_url_ending_in_v1_is_refused_with_advice(url: str) -> None:
    with pytest.raises(ValueError) as info:
        OpenAIProvider(url, "m")
    text = str(info.value)
    assert "/v1" in text and "appends" in text
    assert repr(url.rstrip("/")[: -len("/v1")]) in text  # tells what to pass instead


async def test_trailing_slashes_stripped_and_proxy_prefix_kept() -> None:
    server = Server()
    async with make(server, "https://gw.example:8443/api/openai-proxy//") as p:
        assert p.base_url == "https://gw.example:8443/api/openai-proxy"
        assert (p.server_address, p.server_port) == ("gw.example", 8443)
        await p.complete(HI)
    assert (
        str(server.requests[0].url)
        == "https://gw.example:8443/api/openai-proxy/v1/chat/completions"
    )


@httpx_only  # no transport involved
async def test_default_ports_and_bad_urls() -> None:
    assert OpenAIProvider("http://a", "m").server_port == 80
    assert OpenAIProvider("https://a", "m").server_port == 443
    for bad in ("localhost:8000", "ftp://a", "", "http://a/?x=1"):
        with pytest.raises(ValueError):
            OpenAIProvider(bad, "m")
    with pytest.raises(ValueError) as info:
        OpenAIProvider("http://user:pw@a", "m")
    assert "pw" not in str(info.value)


async def test_no_api_key_sends_no_authorization_header() -> None:
    server = Server()
    async with make(server) as p:
        await p.complete(HI)
    assert "authorization" not in server.requests[0].headers


async def test_api_key_is_bearer_and_never_shown() -> None:
    server = Server(httpx.Response(401, json={"detail": "Invalid API key"}))
    async with make(server, api_key=KEY) as p:
        assert KEY not in repr(p)
        with pytest.raises(ProviderAuthentication) as info:
            await p.complete(HI)
        with pytest.raises(ProviderAuthentication) as info2:
            await p.ready()
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"
    for err in (info.value, info2.value):
        assert KEY not in str(err) and KEY not in repr(err) and KEY not in repr(err.__cause__)
        assert "Invalid API key" in str(err)  # the server's message is kept


async def test_key_not_in_transport_failure() -> None:
    server = Server(httpx.ConnectError("refused"))
    async with make(server, api_key=KEY) as p:
        with pytest.raises(ProviderUnavailable) as info:
            await p.complete(HI)
    assert KEY not in str(info.value) and isinstance(info.value.__cause__, Exception)


@httpx_only  # no transport involved
async def test_genai_system_stored_not_sniffed() -> None:
    assert OpenAIProvider("http://vllm.internal:8000", "m").genai_system == "openai"
    assert OpenAIProvider("http://x", "m", genai_system="vllm").genai_system == "vllm"


@httpx_only  # about an injected httpx client
async def test_injected_http_client_stays_open() -> None:
    client = httpx.AsyncClient(transport=httpx.MockTransport(Server()))
    async with OpenAIProvider("http://x", "m", http_client=client) as p:
        await p.complete(HI)
    assert not client.is_closed
    await client.aclose()


async def test_closed_provider_fails_clearly() -> None:
    p = make(Server())
    await p.aclose()
    await p.aclose()  # idempotent
    with pytest.raises(ProviderUnavailable):
        await p.complete(HI)


async def test_call_level_retry_goes_through_the_provider() -> None:
    from openarmature_nodes.retrying import RetryConfig, constant_backoff

    replies = [
        httpx.Response(503, json={"error": {"message": "busy"}}),
        httpx.Response(200, json=completion()),
    ]
    server = Server(lambda request: replies.pop(0))
    async with make(server) as p:
        r = await p.complete(HI, retry=RetryConfig(max_attempts=2, backoff=constant_backoff(0)))
        assert r.message.content == "ok" and len(server.requests) == 2
        with pytest.raises(ProviderInvalidRequest, match="retry must be a RetryConfig"):
            await p.complete(HI, retry=object())


# --- ready() -----------------------------------------------------------------------------


def models(*entries: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json={"object": "list", "data": list(entries)})


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (
            models({"id": "m", "object": "model", "owned_by": "me", "permissions": []}),
            None,
        ),  # llama.cpp
        (models({"id": "m", "status": "loaded"}), None),
        (models({"id": "other"}, {"id": "x"}), ProviderInvalidModel),
        (models(), ProviderInvalidModel),
        (models({"id": "m", "status": "loading"}), ProviderModelNotLoaded),
        (models({"id": "m", "status": "not_loaded"}), ProviderModelNotLoaded),
        (models({"id": "m", "status": {"value": "unloaded"}}), ProviderModelNotLoaded),
        (httpx.Response(401, json={"detail": "Invalid API key"}), ProviderAuthentication),
        (httpx.Response(403, json={"error": {"message": "forbidden"}}), ProviderAuthentication),
        (httpx.Response(500, text="Internal Server Error"), ProviderUnavailable),
        (httpx.Response(503, text="down"), ProviderUnavailable),
        (httpx.ConnectError("refused"), ProviderUnavailable),
        (httpx.ReadTimeout("slow"), ProviderUnavailable),
        (httpx.Response(200, text="<html>"), ProviderInvalidResponse),
    ],
)
async def test_ready(reply: Any, error: type[Exception] | None) -> None:
    server = Server(reply)
    async with make(server) as p:
        if error is None:
            await p.ready()
        else:
            with pytest.raises(error) as info:
                await p.ready()
            assert info.value.__cause__ is not None or error in (
                ProviderInvalidModel,
                ProviderModelNotLoaded,
            )
    assert server.requests[0].method == "GET"
    assert server.requests[0].url.path == "/v1/models"


async def test_ready_lists_served_models() -> None:
    async with make(Server(models({"id": "a"}, {"id": "b"}))) as p:
        with pytest.raises(ProviderInvalidModel, match="'a', 'b'"):
            await p.ready()


# --- pre-send validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"messages": []},
        {"messages": [UserMessage("")]},
        {"messages": [UserMessage("a"), SystemMessage("late")]},
        {"messages": [UserMessage("a"), AssistantMessage("b")]},
        {"messages": [UserMessage("a"), ToolMessage("r", "nope")]},
        {"messages": [AssistantMessage("x"), UserMessage("a")]},
        {"messages": HI, "tools": [WEATHER, WEATHER]},
        {"messages": HI, "tool_choice": "required"},
        {"messages": HI, "tool_choice": ToolChoiceForce("get_weather")},
        {"messages": HI, "tools": [WEATHER], "tool_choice": ToolChoiceForce("other")},
        {"messages": HI, "tool_choice": "sometimes"},
        {"messages": HI, "response_schema": {"type": "array"}},
        {"messages": HI, "config": RuntimeConfig(max_tokens="5")},  # type: ignore[arg-type]
        {"messages": HI, "config": RuntimeConfig(extras={"model": "other"})},
        {"messages": HI, "config": RuntimeConfig(temperature=0.5, extras={"temperature": 0.9})},
        {"messages": HI, "config": RuntimeConfig(extras={"stream": True})},
        {"messages": HI, "config": RuntimeConfig(extras={"tools": []})},
        {
            "messages": HI,
            "response_schema": PERSON,
            "config": {"response_format": {"type": "json_object"}},
        },
    ],
)
async def test_invalid_requests_rejected_before_sending(kwargs: dict[str, Any]) -> None:
    server = Server()
    async with make(server) as p:
        with pytest.raises(ProviderInvalidRequest):
            await p.complete(**kwargs)
    assert server.requests == []


# --- request mapping ---------------------------------------------------------------------


async def test_request_mapping_null_skip_stop_rename_and_extras() -> None:
    server = Server()
    config = RuntimeConfig(
        temperature=0.0,
        max_tokens=8,
        stop_sequences=["END"],
        extras={"top_k": 20, "stop": ["X", "END"]},
    )
    async with make(server) as p:
        await p.complete(HI, config=config)
        await p.complete(HI, config={"temperature": 0.2, "extras": {"repetition_penalty": 1.05}})
    assert server.body(0) == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.0,
        "max_tokens": 8,
        "stop": ["END", "X"],
        "top_k": 20,
    }
    assert server.body(1) == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.2,
        "repetition_penalty": 1.05,
    }
    assert server.requests[0].headers["content-type"] == "application/json"


async def test_matching_managed_extras_are_no_ops() -> None:
    server = Server()
    config = RuntimeConfig(
        temperature=0.5, extras={"temperature": 0.5, "model": "m", "stream": False}
    )
    async with make(server) as p:
        await p.complete(HI, config=config)
    assert server.body() == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.5,
    }


async def test_tool_round_trip_keeps_ids_verbatim() -> None:
    odd_id = "call__0_get_weather_cmpl-1234 with spaces/and:colons"
    reply = completion(
        None,
        "tool_calls",
        message={
            "tool_calls": [
                {
                    "id": odd_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{ "city": "Paris" } '},
                }
            ]
        },
    )
    server = Server(httpx.Response(200, json=reply))
    async with make(server) as p:
        r = await p.complete(HI, tools=[WEATHER], tool_choice=ToolChoiceForce("get_weather"))
        assert r.finish_reason == "tool_calls"
        assert r.message.tool_calls == [ToolCall(odd_id, "get_weather", {"city": "Paris"})]
        server.reply = httpx.Response(200, json=completion("sunny"))
        history = [*HI, r.message, ToolMessage('{"temp": 20}', odd_id)]
        r2 = await p.complete(history, tools=[WEATHER])
    assert r2.message.content == "sunny"
    sent = server.body()
    assert sent["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": odd_id,
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    }
    assert sent["messages"][2] == {
        "role": "tool",
        "content": '{"temp": 20}',
        "tool_call_id": odd_id,
    }
    assert server.body(0)["tool_choice"] == {
        "type": "function",
        "function": {"name": "get_weather"},
    }


async def test_tool_call_not_matching_schema_is_invalid_response() -> None:
    bad = completion(
        None,
        "tool_calls",
        message={
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"town": 1}'},
                }
            ]
        },
    )
    async with make(Server(httpx.Response(200, json=bad))) as p:
        with pytest.raises(ProviderInvalidResponse, match="city"):
            await p.complete(HI, tools=[WEATHER])


# --- response mapping --------------------------------------------------------------------


async def test_response_mapping_raw_usage_and_finish_reasons() -> None:
    body = completion(
        "",
        "length",
        usage={
            "prompt_tokens": 5,
            "completion_tokens": True,
            "total_tokens": -1,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
        system_fingerprint="fp",
        extra_field={"x": 1},
    )
    async with make(Server(httpx.Response(200, json=body))) as p:
        r = await p.complete(HI)
    assert r.message.content == ""  # llama.cpp's empty warm-up reply is returned as it is
    assert r.finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (
        5,
        None,
        None,
    )
    assert r.usage.cached_tokens == 0
    assert r.raw == body and r.parsed is None


@pytest.mark.parametrize(
    ("wire", "spec"),
    [
        ("function_call", "tool_calls"),
        ("weird", "error"),
        (None, "error"),
        ("content_filter", "content_filter"),
    ],
)
async def test_finish_reason_mapping(wire: Any, spec: str) -> None:
    async with make(Server(httpx.Response(200, json=completion("x", wire)))) as p:
        assert (await p.complete(HI)).finish_reason == spec


async def test_usage_absent_gives_nulls() -> None:
    body = completion()
    del body["usage"]
    async with make(Server(httpx.Response(200, json=body))) as p:
        usage = (await p.complete(HI)).usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (None, None, None)


@pytest.mark.parametrize(
    "reply",
    [
        httpx.Response(200, text="not json"),
        httpx.Response(200, json=[1, 2]),
        httpx.Response(200, json={"choices": []}),
        httpx.Response(200, json={"choices": "x"}),
        httpx.Response(200, json={"choices": [{"message": {"content": 5}}]}),
    ],
)
async def test_unusable_2xx_is_invalid_response(reply: httpx.Response) -> None:
    async with make(Server(reply)) as p:
        with pytest.raises(ProviderInvalidResponse):
            await p.complete(HI)


# --- error mapping -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "error", "message"),
    [
        (401, {"detail": "Invalid API key"}, ProviderAuthentication, "Invalid API key"),
        (
            403,
            {"error": {"message": "no access", "type": "permission"}},
            ProviderAuthentication,
            "no access",
        ),
        (
            404,
            {
                "error": {
                    "message": "The model `x` does not exist.",
                    "type": "NotFoundError",
                    "code": 404,
                }
            },
            ProviderInvalidModel,
            "does not exist",
        ),
        (
            404,
            {"error": {"message": "nope", "code": "model_not_found"}},
            ProviderInvalidModel,
            "nope",
        ),
        (404, {"detail": "Not Found"}, ProviderInvalidRequest, "Not Found"),
        (
            503,
            {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}},
            ProviderModelNotLoaded,
            "Loading model",
        ),
        (503, {"error": {"message": "overloaded"}}, ProviderUnavailable, "overloaded"),
        (500, "Internal Server Error", ProviderUnavailable, "Internal Server Error"),
        (502, "<html>bad gateway</html>", ProviderUnavailable, "bad gateway"),
        (
            400,
            {
                "error": {
                    "message": "max_tokens too large",
                    "type": "BadRequestError",
                    "param": None,
                    "code": 400,
                }
            },
            ProviderInvalidRequest,
            "max_tokens too large",
        ),
        (
            422,
            {"detail": [{"loc": ["body", "messages"], "msg": "field required"}]},
            ProviderInvalidRequest,
            "field required",
        ),
        (
            400,
            {
                "error": {
                    "message": "This model does not support image inputs.",
                    "code": "image_content_not_supported",
                }
            },
            ProviderUnsupportedContentBlock,
            "image inputs",
        ),
        (429, {"error": {"message": "slow down"}}, ProviderRateLimit, "slow down"),
    ],
)
async def test_error_mapping(status: int, body: Any, error: type[Exception], message: str) -> None:
    reply = (
        httpx.Response(status, text=body)
        if isinstance(body, str)
        else httpx.Response(status, json=body)
    )
    async with make(Server(reply), api_key=KEY) as p:
        with pytest.raises(error) as info:
            await p.complete(HI)
    err = info.value
    assert message in str(err) and KEY not in str(err)
    assert isinstance(err.__cause__, HTTPErrorReply) and err.__cause__.status == status
    assert err.status == status  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-3"}, None),
        ({}, None),
    ],
)
async def test_rate_limit_retry_after(headers: dict[str, str], expected: float | None) -> None:
    reply = httpx.Response(429, json={"error": {"message": "rate limited"}}, headers=headers)
    async with make(Server(reply)) as p:
        with pytest.raises(ProviderRateLimit) as info:
            await p.complete(HI)
    assert info.value.retry_after == expected


async def test_rate_limit_retry_after_http_date() -> None:
    from email.utils import formatdate
    from time import time

    date = formatdate(time() + 120, usegmt=True)
    reply = httpx.Response(429, json={"error": {"message": "later"}}, headers={"Retry-After": date})
    async with make(Server(reply)) as p:
        with pytest.raises(ProviderRateLimit) as info:
            await p.complete(HI)
    assert info.value.retry_after is not None and 100 < info.value.retry_after <= 120


TRANSPORT_FAILURES = [
    httpx.ConnectError("refused"),
    httpx.ReadTimeout("slow"),
    httpx.RemoteProtocolError("closed mid-body"),
]


@httpx_only  # the handler's exception object itself is the root cause only with MockTransport
@pytest.mark.parametrize("exc", TRANSPORT_FAILURES)
async def test_transport_failures_are_unavailable_with_cause(exc: Exception) -> None:
    async with make(Server(exc)) as p:
        with pytest.raises(ProviderUnavailable) as info:
            await p.complete(HI)
    assert info.value.__cause__ is not None and info.value.__cause__.__cause__ is exc


@fast_only  # the same failures, met on a real socket (see tests/transports.py)
@pytest.mark.parametrize("exc", TRANSPORT_FAILURES)
async def test_transport_failures_on_the_wire_are_unavailable(exc: Exception) -> None:
    server = Server(exc)
    async with make(server, api_key=KEY) as p:
        with pytest.raises(ProviderUnavailable) as info:
            await p.complete(HI)
    cause = info.value.__cause__
    timeout = isinstance(exc, httpx.TimeoutException)
    expected = TransportTimeout if timeout else TransportProtocolError
    assert isinstance(cause, expected), repr(cause)
    assert KEY not in str(info.value) and len(server.requests) == 1  # sent once, not retried


# --- structured output -------------------------------------------------------------------


async def test_structured_output_dict_schema_native() -> None:
    server = Server(httpx.Response(200, json=completion('{"name":"Al", "age": 3}')))
    async with make(server) as p:
        r = await p.complete(HI, response_schema=PERSON)
    assert r.parsed == {"name": "Al", "age": 3}
    assert r.message.content == '{"name":"Al", "age": 3}'  # verbatim
    fmt = server.body()["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"] == PERSON and fmt["json_schema"]["name"]


class Person(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    age: int


async def test_structured_output_struct_type() -> None:
    server = Server(httpx.Response(200, json=completion('{"name":"Al","age":3}')))
    async with make(server) as p:
        r = await p.complete(HI, response_schema=Person)
    assert r.parsed == Person("Al", 3)
    schema = server.body()["response_format"]["json_schema"]
    assert schema["name"] == "Person" and schema["schema"]["type"] == "object"
    assert schema["schema"]["required"] == ["name", "age"]


@pytest.mark.parametrize(
    ("content", "finish", "mention"),
    [
        ('{"name": "Al" "age": 3}', "stop", "JSON"),
        ('{"name": "Al"}', "stop", "age"),
        ('{"name": "Al", "age": "3"}', "stop", "age"),
        ('{"name": "A', "length", "JSON"),
    ],
)
@pytest.mark.parametrize("schema", [PERSON, Person])
async def test_structured_output_invalid_carries_everything(
    content: str, finish: str, mention: str, schema: Any
) -> None:
    async with make(Server(httpx.Response(200, json=completion(content, finish)))) as p:
        with pytest.raises(StructuredOutputInvalid) as info:
            await p.complete(HI, response_schema=schema)
    err = info.value
    assert err.output_content == content and mention in err.error_message
    assert err.finish_reason == finish and err.schema is schema
    assert err.usage.total_tokens == 4


async def test_fallback_injects_directive_and_still_validates() -> None:
    server = Server(httpx.Response(200, json=completion('{"name":"Al","age":3}')))
    messages = [SystemMessage("Be terse."), UserMessage("who?")]
    before = msgspec.to_builtins(messages)
    async with make(server, force_prompt_augmentation_fallback=True) as p:
        r = await p.complete(messages, response_schema=PERSON)
        assert r.parsed == {"name": "Al", "age": 3}
        server.reply = httpx.Response(200, json=completion('{"name":"Al"}'))
        with pytest.raises(StructuredOutputInvalid):
            await p.complete([UserMessage("who?")], response_schema=PERSON)
    assert msgspec.to_builtins(messages) == before
    first, second = server.body(0), server.body(1)
    assert "response_format" not in first and "response_format" not in second
    assert first["messages"][0]["content"].startswith("Be terse.\n\n")
    assert '"age"' in first["messages"][0]["content"] and len(first["messages"]) == 2
    assert (
        second["messages"][0]["role"] == "system"
        and '"required"' in second["messages"][0]["content"]
    )


async def test_tool_calls_reply_has_no_parsed() -> None:
    reply = completion(
        None,
        "tool_calls",
        message={
            "tool_calls": [
                {
                    "id": "c",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"SF"}'},
                }
            ]
        },
    )
    async with make(Server(httpx.Response(200, json=reply))) as p:
        r = await p.complete(HI, tools=[WEATHER], response_schema=PERSON)
    assert r.parsed is None and r.message.tool_calls


# --- concurrency and cancellation --------------------------------------------------------


async def test_concurrent_calls_are_not_serialized() -> None:
    n = 20
    all_in = anyio.Event()
    inflight = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal inflight
        inflight += 1
        if inflight == n:
            all_in.set()
        await all_in.wait()  # only returns once all n requests are in flight together
        return httpx.Response(200, json=completion(request.content.decode()[-8:]))

    results: list[str | None] = []
    async with make(handler) as p:

        async def one(i: int) -> None:
            r = await p.complete([UserMessage(f"q{i:02d}")])
            results.append(r.message.content)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(one, i)
    assert len(results) == n


async def test_cancellation_propagates_and_provider_stays_usable() -> None:
    entered = anyio.Event()
    release = anyio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.content and b"block" in request.content:
            entered.set()
            await release.wait()
        return httpx.Response(200, json=completion())

    async with make(handler) as p:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(p.complete, [UserMessage("block")])
                await entered.wait()
                scope.cancel()
        assert scope.cancelled_caught
        r = await p.complete(HI)
        assert r.message.content == "ok"


async def test_call_is_the_innermost_handler() -> None:
    server = Server()
    async with make(server) as p:
        r = await p.call(CompletionRequest(HI, config=RuntimeConfig(max_tokens=1)))
    assert r.message.content == "ok" and server.body()["max_tokens"] == 1
