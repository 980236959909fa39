"""The embedded OpenAI-compatible server (openarmature_nodes.testing), over real HTTP.

Every test talks to the server with a plain ``httpx.AsyncClient`` (or a raw socket
for the HTTP edge cases) and runs on asyncio and trio.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import msgspec
import pytest

from openarmature_nodes.testing import (
    CHAT_PATH,
    MODELS_PATH,
    EmbeddedServer,
    ReceivedRequest,
    Reply,
    completion_body,
)

pytestmark = pytest.mark.anyio

USER = [{"role": "user", "content": "hello there world"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "minLength": 2},
                "unit": {"enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city"],
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


@pytest.fixture
async def srv() -> AsyncIterator[EmbeddedServer]:
    async with EmbeddedServer() as server:
        yield server
    assert server.errors == []
    assert server.open_connections == 0


@pytest.fixture
async def client(srv: EmbeddedServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=srv.base_url) as c:
        yield c


async def chat(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    body.setdefault("messages", USER)
    return await client.post(CHAT_PATH, json=body)


def content_of(resp: httpx.Response) -> Any:
    return resp.json()["choices"][0]["message"]["content"]


# -- models ----------------------------------------------------------------------


async def test_models_lists_the_served_model_without_status(
    srv: EmbeddedServer, client: httpx.AsyncClient
) -> None:
    assert srv.base_url.startswith("http://127.0.0.1:")
    assert not srv.base_url.endswith("/v1")
    resp = await client.get(MODELS_PATH)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == {
        "object": "list",
        "data": [{"id": "embedded-model", "object": "model", "owned_by": "embedded"}],
    }


async def test_model_status_knob_and_single_model_retrieval(
    srv: EmbeddedServer, client: httpx.AsyncClient
) -> None:
    srv.model_status = "not_loaded"
    entry = (await client.get(MODELS_PATH)).json()["data"][0]
    assert entry["status"] == "not_loaded"
    one = await client.get(f"{MODELS_PATH}/embedded-model")
    assert one.status_code == 200 and one.json()["id"] == "embedded-model"
    missing = await client.get(f"{MODELS_PATH}/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


async def test_unknown_path_and_wrong_method(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/embeddings")).status_code == 404
    assert (await client.get(CHAT_PATH)).status_code == 405
    assert (await client.post(MODELS_PATH)).status_code == 405


# -- chat: text --------------------------------------------------------------------


async def test_chat_echoes_the_last_user_message_with_usage(
    srv: EmbeddedServer, client: httpx.AsyncClient
) -> None:
    resp = await chat(client, model="embedded-model")
    body = resp.json()
    assert resp.status_code == 200
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "embedded-model"
    assert isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "echo: hello there world"}
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert srv.requests[-1].json["messages"] == USER


async def test_chat_is_deterministic_and_max_tokens_cuts_with_length(
    client: httpx.AsyncClient,
) -> None:
    first, second = await chat(client), await chat(client)
    assert content_of(first) == content_of(second)
    cut = (await chat(client, max_tokens=1)).json()
    assert cut["choices"][0]["message"]["content"] == "echo:"
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] == 1


async def test_text_parts_are_read(client: httpx.AsyncClient) -> None:
    parts = [{"role": "user", "content": [{"type": "text", "text": "from parts"}]}]
    assert content_of(await chat(client, messages=parts)) == "echo: from parts"


async def test_unknown_model_is_404_unless_lenient(
    srv: EmbeddedServer, client: httpx.AsyncClient
) -> None:
    resp = await chat(client, model="gpt-nope")
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "model_not_found"
    srv.strict_model = False
    lenient = await chat(client, model="gpt-nope")
    assert lenient.status_code == 200 and lenient.json()["model"] == "gpt-nope"


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b'{"messages": [', "truncated"),
        (b'{"messages": []}', "at least one message"),
        (b'{"messages": [{"role": 5}]}', "$.messages[0].role"),
        (b'{"messages": [{"role": "user"}], "tool_choice": "sometimes"}', "tool_choice"),
        (b'{"messages": [{"role": "user"}], "response_format": {"type": "xml"}}', "xml"),
    ],
)
async def test_bad_requests_get_400_invalid_request_error(
    client: httpx.AsyncClient, payload: bytes, needle: str
) -> None:
    resp = await client.post(CHAT_PATH, content=payload)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert needle in error["message"]


# -- chat: tools -------------------------------------------------------------------


async def test_named_tool_choice_calls_that_tool_with_schema_valid_arguments(
    client: httpx.AsyncClient,
) -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    resp = await chat(client, tools=[CLOCK, WEATHER], tool_choice=choice)
    body = resp.json()
    message = body["choices"][0]["message"]
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert message["content"] is None
    (call,) = message["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    args = msgspec.json.decode(call["function"]["arguments"])
    assert args == {"city": "city", "unit": "celsius", "days": 1}


async def test_auto_picks_the_tool_named_in_the_message_then_answers_the_result(
    client: httpx.AsyncClient,
) -> None:
    ask = [{"role": "user", "content": "please get weather for Paris"}]
    first = (await chat(client, messages=ask, tools=[CLOCK, WEATHER])).json()
    call = first["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    turn = [
        *ask,
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21 C"},
    ]
    second = (await chat(client, messages=turn, tools=[CLOCK, WEATHER])).json()
    assert second["choices"][0]["finish_reason"] == "stop"
    assert second["choices"][0]["message"]["content"] == "tool result: sunny, 21 C"


async def test_tool_policy_and_tool_choice_none(
    srv: EmbeddedServer, client: httpx.AsyncClient
) -> None:
    no_call = await chat(client, tools=[WEATHER], tool_choice="none")
    assert content_of(no_call) == "echo: hello there world"
    srv.tool_policy = "never"
    assert "tool_calls" not in (await chat(client, tools=[WEATHER])).json()["choices"][0]["message"]
    forced = (await chat(client, tools=[WEATHER], tool_choice="required")).json()
    assert forced["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"


async def test_named_tool_missing_from_tools_is_400(client: httpx.AsyncClient) -> None:
    choice = {"type": "function", "function": {"name": "absent"}}
    resp = await chat(client, tools=[WEATHER], tool_choice=choice)
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "tool_choice"


# -- chat: structured output -------------------------------------------------------


class Address(msgspec.Struct):
    street: str
    zip_code: str


class Person(msgspec.Struct):
    name: str
    age: int
    tags: list[str]
    home: Address
    nickname: str | None = None


async def test_json_schema_response_format_decodes_into_the_struct(
    client: httpx.AsyncClient,
) -> None:
    schema = msgspec.json.schema(Person)  # uses $ref into $defs
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}
    resp = await chat(client, response_format=fmt)
    person = msgspec.json.decode(content_of(resp), type=Person)
    assert person.home.street == "street"
    assert person.tags == ["tags"]


async def test_json_object_with_and_without_schema(client: httpx.AsyncClient) -> None:
    plain = await chat(client, response_format={"type": "json_object"})
    assert msgspec.json.decode(content_of(plain)) == {"reply": "echo: hello there world"}
    schema = {"type": "object", "properties": {"n": {"type": "integer", "exclusiveMinimum": 4}}}
    llama_style = await chat(client, response_format={"type": "json_object", "schema": schema})
    assert msgspec.json.decode(content_of(llama_style)) == {"n": 5}


async def test_schema_in_a_system_prompt_is_answered_with_json(
    srv: EmbeddedServer, client: httpx.AsyncClient
) -> None:
    directive = (
        "Reply only with JSON matching: "
        '{"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}'
    )
    messages = [{"role": "system", "content": directive}, *USER]
    assert msgspec.json.decode(content_of(await chat(client, messages=messages))) == {"ok": True}
    srv.detect_prompt_schema = False
    assert content_of(await chat(client, messages=messages)).startswith("echo:")


@pytest.mark.parametrize(
    ("support", "status"), [("error_400", 400), ("error_500", 500), ("ignore", 200)]
)
async def test_servers_without_json_schema_support(
    srv: EmbeddedServer, client: httpx.AsyncClient, support: Any, status: int
) -> None:
    srv.json_schema_support = support
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
    resp = await chat(client, response_format=fmt)
    assert resp.status_code == status
    if status == 200:
        assert content_of(resp) == "echo: hello there world"


async def test_stream_true_sends_server_sent_events(client: httpx.AsyncClient) -> None:
    resp = await chat(client, stream=True)
    assert resp.headers["content-type"] == "text/event-stream"
    events = [line[6:] for line in resp.text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [msgspec.json.decode(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "echo: hello there world"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


# -- scripts -----------------------------------------------------------------------


async def test_script_list_is_consumed_in_order_then_defaults_return(
    srv: EmbeddedServer, client: httpx.AsyncClient
) -> None:
    srv.set_script(
        [
            Reply(429, {"error": {"message": "slow down"}}, {"retry-after": "1"}),
            (503, {"x-trace": "t1"}, "upstream down"),
            completion_body("scripted", model="m"),
        ]
    )
    first = await chat(client)
    assert first.status_code == 429 and first.headers["retry-after"] == "1"
    second = await chat(client)
    assert second.status_code == 503 and second.text == "upstream down"
    assert second.headers["x-trace"] == "t1"
    assert second.headers["content-type"].startswith("text/plain")
    assert content_of(await chat(client)) == "scripted"
    assert content_of(await chat(client)) == "echo: hello there world"


async def test_script_callable_sync_and_async(
    srv: EmbeddedServer, client: httpx.AsyncClient
) -> None:
    seen: list[ReceivedRequest] = []

    def sync_script(request: ReceivedRequest) -> Any:
        seen.append(request)
        return None if len(seen) % 2 else (200, completion_body("even"))

    srv.set_script(sync_script)
    assert content_of(await chat(client)).startswith("echo:")
    assert content_of(await chat(client)) == "even"

    async def async_script(request: ReceivedRequest) -> Any:
        await anyio.lowlevel.checkpoint()
        return completion_body(f"saw {request.json['messages'][0]['content']}")

    srv.set_script(async_script)
    assert content_of(await chat(client)) == "saw hello there world"


async def test_enqueue_raw_bytes_keeps_json_content_type(
    srv: EmbeddedServer, client: httpx.AsyncClient
) -> None:
    srv.enqueue(Reply(200, b'{"choices": [', connection="close"))
    resp = await chat(client)
    assert resp.content == b'{"choices": ['
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["connection"] == "close"


def test_bad_script_entry_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="script entry"):
        EmbeddedServer(script=["not a reply"])


# -- knobs: rate limits, 5xx, malformed, drops ---------------------------------------


async def test_rate_limit_forms(srv: EmbeddedServer, client: httpx.AsyncClient) -> None:
    srv.rate_limit(1, retry_after=2)
    srv.rate_limit(1, retry_after=1.5, form="ms")
    srv.rate_limit(1, retry_after=1, form="both")
    srv.rate_limit(1, retry_after=None)
    seconds = await chat(client)
    assert seconds.status_code == 429
    assert seconds.headers["retry-after"] == "2"
    assert seconds.json()["error"]["code"] == "rate_limit_exceeded"
    ms = await chat(client)
    assert ms.headers["retry-after-ms"] == "1500" and "retry-after" not in ms.headers
    both = await chat(client)
    assert both.headers["retry-after"] == "1" and both.headers["retry-after-ms"] == "1000"
    bare = await chat(client)
    assert bare.status_code == 429 and "retry-after" not in bare.headers
    assert (await chat(client)).status_code == 200


async def test_rate_limit_http_date_is_at_least_retry_after_ahead(
    srv: EmbeddedServer, client: httpx.AsyncClient
) -> None:
    before = time.time()
    srv.rate_limit(1, retry_after=3, form="http-date")
    resp = await chat(client)
    when = email.utils.parsedate_to_datetime(resp.headers["retry-after"]).timestamp()
    assert resp.status_code == 429
    assert before + 3 <= when <= time.time() + 4


async def test_rate_limit_window_covers_every_request_and_advertises_time_left(
    srv: EmbeddedServer, client: httpx.AsyncClient
) -> None:
    srv.rate_limit(window=60, retry_after=None)
    for _ in range(3):
        resp = await chat(client)
        assert resp.status_code == 429
        assert 1 <= int(resp.headers["retry-after"]) <= 60
    assert (await client.get(MODELS_PATH)).status_code == 200  # other paths unaffected
    srv.reset_faults()
    assert (await chat(client)).status_code == 200


async def test_fail_5xx_styles_and_order(srv: EmbeddedServer, client: httpx.AsyncClient) -> None:
    srv.fail_5xx(2, status=503)
    srv.fail_5xx(1, status=502, style="text")
    for _ in range(2):
        resp = await chat(client)
        assert resp.status_code == 503
        assert resp.json()["error"]["type"] == "server_error"
        assert "loading" not in resp.text.lower()  # must not read as model-not-loaded
    text = await chat(client)
    assert text.status_code == 502 and text.text == "Bad Gateway"
    assert text.headers["content-type"].startswith("text/plain")
    assert (await chat(client)).status_code == 200


async def test_faults_can_target_the_models_path(
    srv: EmbeddedServer, client: httpx.AsyncClient
) -> None:
    srv.fail_5xx(1, path=MODELS_PATH)
    assert (await chat(client)).status_code == 200
    assert (await client.get(MODELS_PATH)).status_code == 500
    assert (await client.get(MODELS_PATH)).status_code == 200


async def test_knobs_can_be_turned_from_another_thread(
    srv: EmbeddedServer, client: httpx.AsyncClient
) -> None:
    await anyio.to_thread.run_sync(lambda: srv.fail_5xx(1, status=500))
    assert (await chat(client)).status_code == 500


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        ("not_json", lambda b: not b.startswith(b"{")),
        ("truncated", lambda b: b.startswith(b'{"id"') and not b.endswith(b"}")),
        ("empty_body", lambda b: b == b""),
        ("missing_choices", lambda b: "choices" not in msgspec.json.decode(b)),
        ("empty_choices", lambda b: msgspec.json.decode(b)["choices"] == []),
    ],
)
async def test_malformed_bodies(
    srv: EmbeddedServer, client: httpx.AsyncClient, kind: Any, check: Any
) -> None:
    srv.malformed(1, kind)
    resp = await chat(client)
    assert resp.status_code == 200
    assert check(resp.content)
    assert (await chat(client)).json()["choices"]


async def test_malformed_models_list_drops_data(
    srv: EmbeddedServer, client: httpx.AsyncClient
) -> None:
    srv.malformed(1, "missing_choices", path=MODELS_PATH)
    assert (await client.get(MODELS_PATH)).json() == {"object": "list"}


async def test_drop_closes_the_connection_without_an_answer(
    srv: EmbeddedServer, client: httpx.AsyncClient
) -> None:
    srv.drop(1)
    with pytest.raises(httpx.RemoteProtocolError):
        await chat(client)
    assert (await chat(client)).status_code == 200
    assert srv.counts[CHAT_PATH] == 2


# -- knobs: loading, auth, latency -----------------------------------------------


async def test_slow_load_released_by_event() -> None:
    async with (
        EmbeddedServer(slow_load=True) as srv,
        httpx.AsyncClient(base_url=srv.base_url) as client,
    ):
        assert srv.loading
        models = (await client.get(MODELS_PATH)).json()
        assert models["data"][0]["status"] == "loading"
        busy = await chat(client)
        assert busy.status_code == 503
        assert busy.json()["error"]["message"] == "Loading model"
        srv.finish_loading()
        assert "status" not in (await client.get(MODELS_PATH)).json()["data"][0]
        assert (await chat(client)).status_code == 200


async def test_slow_load_ends_after_n_probes(
    srv: EmbeddedServer, client: httpx.AsyncClient
) -> None:
    srv.model_status = "loaded"
    srv.slow_load(probes=2)
    statuses = [(await client.get(MODELS_PATH)).json()["data"][0]["status"] for _ in range(3)]
    assert statuses == ["loading", "loading", "loaded"]
    assert (await chat(client)).status_code == 200


async def test_api_key_is_checked_and_never_echoed() -> None:
    key = "sk-secret-123"
    async with (
        EmbeddedServer(api_key=key) as srv,
        httpx.AsyncClient(base_url=srv.base_url) as client,
    ):
        for headers in ({}, {"authorization": "Bearer wrong"}, {"x-api-key": key}):
            resp = await client.get(MODELS_PATH, headers=headers)
            assert resp.status_code == 401
            assert resp.json()["error"]["code"] == "invalid_api_key"
            assert key not in resp.text
        good = {"authorization": f"Bearer {key}"}
        assert (await client.get(MODELS_PATH, headers=good)).status_code == 200
        srv.auth_style = "fastapi"
        assert (await chat(client)).json() == {"detail": "Invalid API key"}
        assert key not in repr(srv) and key not in repr(srv.requests)


async def test_latency_delays_answers_server_side(
    srv: EmbeddedServer, client: httpx.AsyncClient
) -> None:
    srv.latency = 0.05
    start = anyio.current_time()
    resp = await chat(client)
    assert anyio.current_time() - start >= 0.05
    assert resp.status_code == 200


# -- concurrency, connections, shutdown -------------------------------------------


async def test_hold_counts_in_flight_and_max_in_flight(
    srv: EmbeddedServer, client: httpx.AsyncClient
) -> None:
    srv.hold()
    statuses: list[int] = []

    async def one() -> None:
        statuses.append((await chat(client)).status_code)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(one)
            await srv.wait_in_flight(6)
            assert srv.in_flight == 6
            srv.release()
    assert statuses == [200] * 6
    assert srv.in_flight == 0 and srv.max_in_flight == 6
    assert srv.connections_opened == 6


async def test_keep_alive_reuses_one_connection(
    srv: EmbeddedServer, client: httpx.AsyncClient
) -> None:
    for _ in range(3):
        await chat(client)
    assert srv.connections_opened == 1
    assert {r.connection for r in srv.requests} == {1}


@pytest.mark.parametrize("style", ["announce", "silent"])
async def test_close_after_n_responses(
    srv: EmbeddedServer, client: httpx.AsyncClient, style: Any
) -> None:
    srv.close_after, srv.close_style = 2, style
    answers = [await chat(client) for _ in range(2)]
    with anyio.fail_after(5):  # let the close land before reusing the pool
        await srv.wait_for(lambda: srv.open_connections == 0)
    answers.append(await chat(client))
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert [r.connection for r in srv.requests] == [1, 1, 2]
    assert ("connection" in answers[1].headers) is (style == "announce")


async def test_idle_timeout_closes_idle_keep_alive_connections(
    srv: EmbeddedServer, client: httpx.AsyncClient
) -> None:
    srv.idle_timeout = 0.01
    await chat(client)
    with anyio.fail_after(5):
        await srv.wait_for(lambda: srv.open_connections == 0)
    assert (await chat(client)).status_code == 200
    assert srv.connections_opened == 2


async def test_chunked_request_body(srv: EmbeddedServer, client: httpx.AsyncClient) -> None:
    payload = msgspec.json.encode({"messages": USER})

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 7):
            yield payload[i : i + 7]

    resp = await client.post(CHAT_PATH, content=pieces())
    assert srv.requests[-1].headers["transfer-encoding"] == "chunked"
    assert content_of(resp) == "echo: hello there world"


async def raw_exchange(srv: EmbeddedServer, data: bytes) -> bytes:
    async with await anyio.connect_tcp("127.0.0.1", srv.port) as stream:
        await stream.send(data)
        received = b""
        with anyio.fail_after(5):
            while True:
                try:
                    received += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return received


async def test_pipelined_requests_on_a_raw_socket(srv: EmbeddedServer) -> None:
    get = b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n"
    last = b"GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    received = await raw_exchange(srv, get + last)
    assert received.count(b"HTTP/1.1 200 OK") == 2
    assert srv.counts[MODELS_PATH] == 2


async def test_garbage_http_gets_400_and_a_closed_connection(srv: EmbeddedServer) -> None:
    received = await raw_exchange(srv, b"\x00\x01 not http\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in received


async def test_exit_closes_listener_and_connections_even_mid_request() -> None:
    failures: list[BaseException] = []

    async def stuck(client: httpx.AsyncClient) -> None:
        try:
            await chat(client)
        except httpx.HTTPError as exc:
            failures.append(exc)

    # The server is the innermost context: it shuts down while the request is
    # still held, and only then does the task group wait for the client task.
    async with (
        httpx.AsyncClient() as client,
        anyio.create_task_group() as tg,
        EmbeddedServer() as srv,
    ):
        port = srv.port
        client.base_url = httpx.URL(srv.base_url)
        srv.hold()
        tg.start_soon(stuck, client)
        with anyio.fail_after(5):
            await srv.wait_in_flight(1)
    assert srv.errors == [] and srv.open_connections == 0 and not srv.running
    assert len(failures) == 1
    with pytest.raises(OSError):
        await anyio.connect_tcp("127.0.0.1", port)
    with pytest.raises(RuntimeError):
        _ = srv.base_url


async def test_server_can_be_restarted_and_not_entered_twice() -> None:
    srv = EmbeddedServer()
    async with srv:
        with pytest.raises(RuntimeError, match="already running"):
            await srv.__aenter__()
    async with srv, httpx.AsyncClient(base_url=srv.base_url) as client:
        assert (await client.get(MODELS_PATH)).status_code == 200


async def test_expect_100_continue_is_answered_before_the_body(srv: EmbeddedServer) -> None:
    body = msgspec.json.encode({"messages": USER})
    head = (
        f"POST {CHAT_PATH} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n"
        "expect: 100-continue\r\nconnection: close\r\n\r\n"
    ).encode()
    async with await anyio.connect_tcp("127.0.0.1", srv.port) as stream:
        await stream.send(head)
        with anyio.fail_after(5):
            interim = await stream.receive()
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        await stream.send(body)
        rest = interim[len(b"HTTP/1.1 100 Continue\r\n\r\n") :]
        with anyio.fail_after(5):
            while b"echo: hello there world" not in rest:
                rest += await stream.receive()
    assert rest.startswith(b"HTTP/1.1 200 OK")


async def test_a_failing_script_answers_500_and_is_recorded() -> None:
    def broken(request: ReceivedRequest) -> Any:
        raise ValueError("script bug")

    async with (
        EmbeddedServer(script=broken) as srv,
        httpx.AsyncClient(base_url=srv.base_url) as client,
    ):
        resp = await chat(client)
        assert resp.status_code == 500 and "script bug" in resp.text
        assert [type(e) for e in srv.errors] == [ValueError]
        assert (await client.get(MODELS_PATH)).status_code == 200  # still serving


async def test_reset_counters_and_request_records(
    srv: EmbeddedServer, client: httpx.AsyncClient
) -> None:
    before = time.monotonic()
    await client.get(MODELS_PATH, params={"a": "1"}, headers={"authorization": "Bearer tok"})
    (request,) = srv.requests
    assert request.method == "GET" and request.path == MODELS_PATH and request.query == "a=1"
    assert request.bearer_token() == "tok" and "tok" not in repr(request)
    assert before <= request.at <= time.monotonic()
    srv.reset_counters()
    assert srv.requests == [] and srv.counts == {} and srv.max_in_flight == 0
    await chat(client)
    assert srv.counts == {CHAT_PATH: 1}
