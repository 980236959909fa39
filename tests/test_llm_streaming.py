"""Streaming (llm-provider §5 ``stream``, §6 *Streaming assembly*, §8.1.6).

Three layers, bottom up:

1. sans-IO: the SSE parser and the chunk assembler, fed bytes by hand;
2. the wire mapping: ``stream`` / ``stream_options`` and their collisions;
3. the provider against a scripted server (an httpx handler), over both
   transports (``tests/transports.py``: ``httpx.MockTransport``, or a real
   ``FastTransport`` over loopback TCP): token reporting, error mapping,
   incomplete streams, retry, refusals before sending.

Real sockets (both shipped transports, connection fate) are in
``tests/test_llm_streaming_sockets.py``. Every async test runs under asyncio
and trio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import msgspec
import pytest

from openarmature_nodes.llm import (
    CompletionRequest,
    HttpxTransport,
    OpenAIProvider,
    ProviderAuthentication,
    ProviderInvalidRequest,
    ProviderInvalidResponse,
    ProviderRateLimit,
    ProviderUnavailable,
    RuntimeConfig,
    StructuredOutputInvalid,
    TextBlock,
    ThinkingBlock,
    Tool,
    UserMessage,
)
from openarmature_nodes.llm.tokens import TokenDelta, token_sink
from openarmature_nodes.llm.transport import (
    RawResponse,
    StreamingTransport,
    TransportProtocolError,
)
from openarmature_nodes.llm.wire import build_chat_body
from openarmature_nodes.llm.wire.decode import decode_chat_response
from openarmature_nodes.llm.wire.sse import SSEEvent, SSEParser
from openarmature_nodes.llm.wire.stream import ChatStreamAssembler
from openarmature_nodes.retrying import RetryConfig, constant_backoff
from tests.transports import (  # noqa: F401  (fixtures used by name)
    fast_only,
    httpx_only,
    loopback_transport,
    transport_kind,
    transports,
    with_transports,
)

pytestmark = pytest.mark.anyio

HI = [UserMessage("hi")]
WEATHER = Tool(
    "get_weather",
    "Weather for a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def chunk(delta: dict[str, Any] | None = None, finish: Any = None, **top: Any) -> dict[str, Any]:
    """One ``chat.completion.chunk`` (``delta=None``: the usage chunk shape)."""
    body: dict[str, Any] = {"id": "cc-s", "object": "chat.completion.chunk", "model": "m"}
    body["choices"] = (
        [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    )
    body.update(top)
    return body


def sse(*events: Any, done: bool = True, sep: bytes = b"\n\n") -> bytes:
    out = [
        b"data: " + (e if isinstance(e, bytes) else msgspec.json.encode(e)) + sep for e in events
    ]
    if done:
        out.append(b"data: [DONE]" + sep)
    return b"".join(out)


USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
HELLO = sse(
    chunk({"role": "assistant", "content": "Hello"}),
    chunk({"content": ", "}),
    chunk({"content": "world."}, "stop"),
    chunk(usage=USAGE),
)


def assemble(body: bytes, pieces: int | None = None, **kw: Any) -> tuple[Any, list[Any]]:
    """Feed ``body`` to an assembler (whole, or in ``pieces``-byte slices)."""
    asm = ChatStreamAssembler(**kw)
    deltas: list[Any] = []
    step = pieces or len(body) or 1
    for i in range(0, len(body), step):
        deltas.extend(asm.feed(body[i : i + step]))
        if asm.done:
            break
    else:
        deltas.extend(asm.feed_eof())
    return asm.response(), deltas


# --- 1. the SSE parser -------------------------------------------------------------------


def parse_all(data: bytes, step: int) -> list[SSEEvent]:
    parser = SSEParser()
    events = []
    for i in range(0, len(data), step):
        events.extend(parser.feed(data[i : i + step]))
    return events + parser.close()


STREAM_TEXT = (
    b"\xef\xbb\xbf: ping\n\n"
    b"data: one\n\n"
    b"event: note\ndata: two\ndata:  three\n\n"
    b"id: 7\nretry: 100\n\n"
    b"data\n\n"
    b'data: {"a": 1}\n\n'
)
EXPECTED_EVENTS = [
    SSEEvent(None, b"one"),
    SSEEvent("note", b"two\n three"),
    SSEEvent(None, b""),
    SSEEvent(None, b'{"a": 1}'),
]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_sse_parser_every_line_ending_and_every_split(newline: bytes) -> None:
    data = STREAM_TEXT.replace(b"\n", newline)
    for step in (1, 2, 3, 7, len(data)):
        assert parse_all(data, step) == EXPECTED_EVENTS, (newline, step)


def test_sse_parser_returns_events_as_soon_as_they_are_complete() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n") == []
    assert parser.feed(b"\ndata: b") == [SSEEvent(None, b"a")]
    assert parser.feed(b"\r") == []  # a \r at the end might be half of \r\n
    assert parser.feed(b"\n\r\n") == [SSEEvent(None, b"b")]


def test_sse_parser_event_name_from_an_earlier_piece() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n\n") == [SSEEvent(None, b"a")]
    assert parser.feed(b"event: error\n") == []
    assert parser.feed(b"data: b\n\n") == [SSEEvent("error", b"b")]
    assert parser.feed(b"data: c\n\n") == [SSEEvent(None, b"c")]


def test_sse_parser_close_dispatches_an_unterminated_last_event() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: x\n\ndata: [DONE]") == [SSEEvent(None, b"x")]
    assert parser.close() == [SSEEvent(None, b"[DONE]")]


def test_sse_parser_iter_feed_hands_out_each_event_before_parsing_the_next() -> None:
    parser = SSEParser()
    events = parser.iter_feed(b"data: a\n\nevent: e\ndata: b\n\ndata: c\n")
    assert next(events) == SSEEvent(None, b"a")
    assert list(events) == [SSEEvent("e", b"b")]
    assert parser.feed(b"\n") == [SSEEvent(None, b"c")]  # the rest of the piece was kept


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_sse_parser_iter_feed_matches_feed_for_every_split(newline: bytes) -> None:
    data = STREAM_TEXT.replace(b"\n", newline)
    for step in (1, 5, len(data)):
        lazy, whole = SSEParser(), SSEParser()
        got, want = [], []
        for i in range(0, len(data), step):
            got.extend(lazy.iter_feed(data[i : i + step]))
            want.extend(whole.feed(data[i : i + step]))
        assert got + lazy.close() == want + whole.close() == EXPECTED_EVENTS, (newline, step)


def test_sse_parser_bounds_an_event() -> None:
    parser = SSEParser(max_event_bytes=64)
    parser.feed(b"data: " + b"x" * 40 + b"\n")
    with pytest.raises(ProviderInvalidResponse, match="exceeds 64 bytes"):
        parser.feed(b"data: " + b"y" * 40 + b"\n")
    with pytest.raises(ProviderInvalidResponse):
        SSEParser(max_event_bytes=64).feed(b"data: " + b"z" * 100)  # no newline at all


# --- 1. the assembler --------------------------------------------------------------------


@pytest.mark.parametrize("step", [None, 1, 5])
def test_content_deltas_concatenate_and_are_reported_in_order(step: int | None) -> None:
    r, deltas = assemble(HELLO, step)
    assert r.message.content == "Hello, world."
    assert r.message.tool_calls is None
    assert r.finish_reason == "stop"
    assert msgspec.to_builtins(r.usage) == USAGE
    assert deltas == [("content", "Hello"), ("content", ", "), ("content", "world.")]
    assert r.raw["id"] == "cc-s" and r.raw["object"] == "chat.completion.chunk"
    assert r.raw["usage"] == USAGE
    assert r.raw["choices"][0]["message"] == {"role": "assistant", "content": "Hello, world."}


def test_crlf_separated_stream() -> None:
    body = HELLO.replace(b"\n", b"\r\n")
    r, _ = assemble(body, 3)
    assert r.message.content == "Hello, world."


def llama_tool_stream() -> bytes:
    """What llama-cpp-python streams for a forced tool call: id, type and name
    repeated in every chunk, a legacy function_call delta, null delta fields
    in the last chunk, no usage chunk."""
    cid = "call__0_get_weather_cmpl-1"

    def part(args: str) -> dict[str, Any]:
        fn = {"name": "get_weather", "arguments": args}
        return chunk(
            {
                "role": "assistant",
                "content": None,
                "function_call": fn,
                "tool_calls": [{"index": 0, "id": cid, "type": "function", "function": fn}],
            }
        )

    last = chunk(
        {"role": None, "content": None, "function_call": None, "tool_calls": None}, "tool_calls"
    )
    return sse(part('{ "ci'), part('ty": "Par'), part('is" } '), last)


def test_tool_calls_reassemble_despite_repeated_id_and_name() -> None:
    r, deltas = assemble(llama_tool_stream(), tools={"get_weather": WEATHER})
    assert deltas == []  # tool-call fragments are not token deltas
    assert r.finish_reason == "tool_calls"
    assert r.message.content is None
    (call,) = r.message.tool_calls
    assert (call.id, call.name, call.arguments) == (
        "call__0_get_weather_cmpl-1",
        "get_weather",
        {"city": "Paris"},
    )
    assert r.raw["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == (
        '{ "city": "Paris" } '
    )
    assert "usage" not in r.raw and r.usage.total_tokens is None


def test_interleaved_tool_calls_keep_first_appearance_order() -> None:
    def tc(index: int, **kw: Any) -> dict[str, Any]:
        return chunk({"tool_calls": [{"index": index, **kw}]})

    body = sse(
        tc(1, id="b", type="function", function={"name": "get_weather", "arguments": ""}),
        tc(0, id="a", type="function", function={"name": "get_weather", "arguments": '{"ci'}),
        tc(1, function={"arguments": '{"city": "Oslo"}'}),
        tc(0, function={"arguments": 'ty": "Rome"}'}),
        chunk({}, "tool_calls"),
    )
    r, _ = assemble(body, 4, tools={"get_weather": WEATHER})
    assert [(c.id, c.arguments["city"]) for c in r.message.tool_calls] == [
        ("b", "Oslo"),
        ("a", "Rome"),
    ]


def test_tool_call_fragments_without_index() -> None:
    body = sse(
        chunk({"tool_calls": [{"id": "x", "function": {"name": "get_weather", "arguments": "{"}}]}),
        chunk({"tool_calls": [{"function": {"arguments": '"city": "Lima"}'}}]}),
        chunk({}, "tool_calls"),
    )
    r, _ = assemble(body, tools={"get_weather": WEATHER})
    assert [(c.id, c.arguments) for c in r.message.tool_calls] == [("x", {"city": "Lima"})]


def test_tool_calls_are_validated_like_the_atomic_path() -> None:
    body = sse(
        chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "x", "function": {"name": "nope", "arguments": "{}"}}
                ]
            }
        ),
        chunk({}, "tool_calls"),
    )
    with pytest.raises(ProviderInvalidResponse, match="not among the tools sent"):
        assemble(body, tools={"get_weather": WEATHER})


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_deltas_become_a_thinking_block(field: str) -> None:
    body = sse(
        chunk({"role": "assistant", field: "Let me "}),
        chunk({field: "think."}),
        chunk({"content": "42"}, "stop"),
    )
    r, deltas = assemble(body)
    assert deltas == [("reasoning", "Let me "), ("reasoning", "think."), ("content", "42")]
    assert r.message.content == [ThinkingBlock("Let me think."), TextBlock("42")]
    assert r.raw["choices"][0]["message"][field] == "Let me think."


def test_reasoning_sent_under_both_names_counts_once() -> None:
    body = sse(
        chunk({"reasoning_content": "hm", "reasoning": "hm"}), chunk({"content": "ok"}, "stop")
    )
    r, deltas = assemble(body)
    assert deltas == [("reasoning", "hm"), ("content", "ok")]
    assert r.message.content == [ThinkingBlock("hm"), TextBlock("ok")]


def test_malformed_usage_counter_is_not_reported_and_kept_verbatim() -> None:
    usage = {"prompt_tokens": "7", "completion_tokens": 3, "total_tokens": -1}
    r, _ = assemble(sse(chunk({"content": "x"}, "stop"), chunk(usage=usage)))
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (
        None,
        3,
        None,
    )
    assert r.raw["usage"] == usage


def test_structured_output_is_validated_the_same_way() -> None:
    ok = sse(chunk({"content": '{"name": "Ann",'}), chunk({"content": ' "age": 3}'}, "stop"))
    r, _ = assemble(ok, 2, response_schema=PERSON)
    assert r.parsed == {"name": "Ann", "age": 3}
    assert r.message.content == '{"name": "Ann", "age": 3}'
    bad = sse(chunk({"content": '{"name": "Ann"'}, "length"), chunk(usage=USAGE))
    with pytest.raises(StructuredOutputInvalid) as info:
        assemble(bad, response_schema=PERSON)
    assert info.value.output_content == '{"name": "Ann"'
    assert info.value.finish_reason == "length"
    assert info.value.usage.total_tokens == 10


EQUIVALENTS = [
    (
        HELLO,
        {"role": "assistant", "content": "Hello, world."},
        "stop",
        USAGE,
    ),
    (
        llama_tool_stream(),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call__0_get_weather_cmpl-1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{ "city": "Paris" } '},
                }
            ],
        },
        "tool_calls",
        None,
    ),
    (
        sse(chunk({"reasoning": "r"}), chunk({"content": "c"}, "length")),
        {"role": "assistant", "content": "c", "reasoning": "r"},
        "length",
        None,
    ),
    (
        sse(chunk({"role": "assistant"}), chunk({}, "stop")),  # an empty answer
        {"role": "assistant", "content": ""},
        "stop",
        None,
    ),
]


@pytest.mark.parametrize(("body", "message", "finish", "usage"), EQUIVALENTS)
def test_streamed_response_is_structurally_identical_to_atomic(
    body: bytes, message: dict[str, Any], finish: str, usage: Any
) -> None:
    tools = {"get_weather": WEATHER}
    streamed, _ = assemble(body, 3, tools=tools)
    atomic_body: dict[str, Any] = {
        "choices": [{"index": 0, "message": message, "finish_reason": finish}]
    }
    if usage is not None:
        atomic_body["usage"] = usage
    atomic = decode_chat_response(200, {}, msgspec.json.encode(atomic_body), tools=tools)
    assert streamed.message == atomic.message
    assert streamed.finish_reason == atomic.finish_reason
    assert streamed.usage == atomic.usage
    assert streamed.parsed == atomic.parsed


def test_events_after_done_are_ignored() -> None:
    body = HELLO + sse(chunk({"content": "late"}), done=False)
    r, deltas = assemble(body)
    assert r.message.content == "Hello, world." and len(deltas) == 3


def test_finish_without_done_at_end_of_body_is_complete() -> None:
    r, _ = assemble(sse(chunk({"content": "a"}, "stop"), done=False))
    assert r.message.content == "a"


@pytest.mark.parametrize(
    "body",
    [
        sse(chunk({"content": "cut"}), done=False),  # connection ended mid-answer
        sse(chunk({"content": "cut"})),  # [DONE] without a finish_reason (llama.cpp interrupt)
    ],
)
def test_incomplete_stream_is_provider_unavailable(body: bytes) -> None:
    with pytest.raises(ProviderUnavailable, match="ended before the reply was complete"):
        assemble(body)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"", "no chunks"),
        (b": ping\n\n", "no chunks"),
        (b"data: {not json\n\n", "not JSON"),
        (b"data: [1, 2]\n\n", "not a JSON object"),
        (sse({"choices": "nope"}), "choices"),
        (sse(chunk({"content": 5})), "not text"),
    ],
)
def test_unusable_stream_is_provider_invalid_response(body: bytes, match: str) -> None:
    with pytest.raises(ProviderInvalidResponse, match=match):
        assemble(body)


def test_error_event_before_any_answer_is_categorized() -> None:
    err = {"error": {"message": "slow down", "type": "rate_limit", "code": 429}}
    with pytest.raises(ProviderRateLimit, match="slow down"):
        assemble(sse(err, done=False))
    with pytest.raises(ProviderUnavailable, match="boom"):
        assemble(b'event: error\ndata: {"message": "boom"}\n\n')


def test_error_event_after_part_of_the_answer_gives_finish_reason_error() -> None:
    err = {"error": {"message": "engine died", "code": 500}}
    r, deltas = assemble(sse(chunk({"content": "par"}), err, chunk({"content": "x"})))
    assert r.finish_reason == "error"
    assert r.message.content == "par" and deltas == [("content", "par")]
    assert r.raw["error"] == err["error"]


# --- 2. the wire mapping -----------------------------------------------------------------


def body_for(stream: bool, extras: dict[str, Any] | None = None) -> dict[str, Any]:
    config = RuntimeConfig(extras=extras) if extras is not None else None
    return build_chat_body("m", CompletionRequest(HI, config=config), stream=stream)


def test_streaming_request_asks_for_usage() -> None:
    body = body_for(True)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert "stream" not in body_for(False) and "stream_options" not in body_for(False)


def test_stream_fields_are_managed() -> None:
    assert body_for(True, {"stream": True, "stream_options": {"include_usage": True}})[
        "stream_options"
    ] == {"include_usage": True}
    for extras in ({"stream": False}, {"stream_options": {"include_usage": False}}):
        with pytest.raises(ProviderInvalidRequest, match="conflicts"):
            body_for(True, extras)
    with pytest.raises(ProviderInvalidRequest, match="conflicts"):
        body_for(False, {"stream": True})
    unmanaged = body_for(False, {"stream_options": {"include_usage": False}, "stream": False})
    assert unmanaged["stream_options"] == {"include_usage": False} and "stream" not in unmanaged


# --- 3. the provider ---------------------------------------------------------------------


class Pieces(httpx.AsyncByteStream):
    """A response body served in the given pieces, optionally waiting on
    ``gate`` before each piece after the first."""

    def __init__(self, pieces: list[bytes], gate: Callable[[int], Any] | None = None) -> None:
        self.pieces = pieces
        self.gate = gate

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i, piece in enumerate(self.pieces):
            if self.gate is not None:
                await self.gate(i)
            yield piece


def mock_provider(handler: Callable[[httpx.Request], httpx.Response]) -> OpenAIProvider:
    """The provider, its server scripted by ``handler``, over this test's transport
    (the test needs ``@with_transports``)."""
    return OpenAIProvider("http://mock.test", "m", transport=loopback_transport(handler))


def sse_response(body: bytes, *, split: bool = True) -> httpx.Response:
    pieces = [p + b"\n\n" for p in body.split(b"\n\n") if p] if split else [body]
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Pieces(pieces))


@with_transports
async def test_provider_streams_and_reports_tokens() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return sse_response(HELLO)

    ambient: list[TokenDelta] = []
    direct: list[TokenDelta] = []
    async with mock_provider(handler) as provider:
        with token_sink(ambient.append):
            r = await provider.complete(HI, stream=True, on_token=direct.append)
            r2 = await provider.complete(HI, stream=True)
    assert r.message.content == r2.message.content == "Hello, world."
    assert [(d.kind, d.text, d.index) for d in direct] == [
        ("content", "Hello", 0),
        ("content", ", ", 1),
        ("content", "world.", 2),
    ]
    assert [d.index for d in ambient] == list(range(6))  # both calls, one numbering
    body = msgspec.json.decode(sent[0].content)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert sent[0].headers["accept"] == "text/event-stream"


@with_transports
async def test_no_token_events_without_stream() -> None:
    atomic = {
        "choices": [{"index": 0, "message": {"content": "ok"}, "finish_reason": "stop"}],
    }
    got: list[TokenDelta] = []
    async with mock_provider(lambda req: httpx.Response(200, json=atomic)) as provider:
        with token_sink(got.append):
            r = await provider.complete(HI, on_token=got.append)
    assert r.message.content == "ok" and got == []


@with_transports
async def test_tokens_are_reported_while_the_stream_is_still_open() -> None:
    """The second piece is only served once the first delta has been
    reported: a provider that read the whole body first would never finish."""
    first_seen = anyio.Event()

    async def gate(i: int) -> None:
        if i == 1:
            await first_seen.wait()

    def handler(request: httpx.Request) -> httpx.Response:
        pieces = [sse(chunk({"content": "a"}), done=False), sse(chunk({"content": "b"}, "stop"))]
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=Pieces(pieces, gate)
        )

    def on_token(delta: TokenDelta) -> None:
        first_seen.set()

    async with mock_provider(handler) as provider:
        with anyio.fail_after(5):
            r = await provider.complete(HI, stream=True, on_token=on_token)
    assert r.message.content == "ab"


ERROR_REPLIES = [
    (429, {"retry-after": "2"}, {"error": {"message": "slow down"}}, ProviderRateLimit),
    (401, {}, {"detail": "Invalid API key"}, ProviderAuthentication),
    (500, {"content-type": "text/plain"}, "Internal Server Error", ProviderUnavailable),
    (400, {}, {"error": {"message": "bad temperature"}}, ProviderInvalidRequest),
]


@with_transports
@pytest.mark.parametrize(("status", "headers", "body", "kind"), ERROR_REPLIES)
async def test_error_replies_map_exactly_as_the_atomic_path(
    status: int, headers: dict[str, str], body: Any, kind: type[Exception]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, headers=headers, text=body)
        return httpx.Response(status, headers=headers, json=body)

    errors = []
    async with mock_provider(handler) as provider:
        for stream in (False, True):
            with pytest.raises(kind) as info:
                await provider.complete(HI, stream=stream)
            errors.append(info.value)
    atomic, streamed = errors
    assert str(atomic) == str(streamed)
    assert type(atomic.__cause__) is type(streamed.__cause__)
    assert getattr(atomic, "retry_after", None) == getattr(streamed, "retry_after", None)


@with_transports
async def test_a_server_that_ignores_stream_true_still_works() -> None:
    atomic = {
        "id": "cc-j",
        "choices": [
            {
                "index": 0,
                "message": {"content": "all at once", "reasoning_content": "hmm"},
                "finish_reason": "stop",
            }
        ],
    }
    got: list[TokenDelta] = []
    async with mock_provider(lambda req: httpx.Response(200, json=atomic)) as provider:
        r = await provider.complete(HI, stream=True, on_token=got.append)
    assert r.message.content == [ThinkingBlock("hmm"), TextBlock("all at once")]
    assert [(d.kind, d.text) for d in got] == [("reasoning", "hmm"), ("content", "all at once")]


@with_transports
async def test_an_event_stream_labelled_json_is_still_read_as_events() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "application/json"}, content=HELLO)

    got: list[TokenDelta] = []
    async with mock_provider(handler) as provider:
        r = await provider.complete(HI, stream=True, on_token=got.append)
    assert r.message.content == "Hello, world." and len(got) == 3


def truncated(request: httpx.Request) -> httpx.Response:
    return sse_response(sse(chunk({"content": "par"}), done=False))


class Dies(httpx.AsyncByteStream):
    """A body that breaks off after its first event."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield sse(chunk({"content": "par"}), done=False)
        raise httpx.RemoteProtocolError("peer closed connection")


def dies(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Dies())


@with_transports
@httpx_only  # matches the text of the handler's httpx exception (fast: see the next test)
async def test_truncated_stream_and_broken_connection_are_unavailable() -> None:

    async with mock_provider(truncated) as provider:
        with pytest.raises(ProviderUnavailable, match="ended before"):
            await provider.complete(HI, stream=True)

    got: list[TokenDelta] = []
    async with mock_provider(dies) as provider:
        with pytest.raises(ProviderUnavailable, match="peer closed") as info:
            await provider.complete(HI, stream=True, on_token=got.append)
    assert [d.text for d in got] == ["par"]  # partial deltas were reported before the failure
    assert info.value.__cause__ is not None


@with_transports
@fast_only  # the same failures on a real socket: the chunked body stops and the connection closes
async def test_truncated_stream_and_broken_connection_on_the_wire_are_unavailable() -> None:
    async with mock_provider(truncated) as provider:
        with pytest.raises(ProviderUnavailable, match="ended before"):
            await provider.complete(HI, stream=True)

    requests: list[httpx.Request] = []

    def counted(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return dies(request)

    got: list[TokenDelta] = []
    async with mock_provider(counted) as provider:
        with pytest.raises(ProviderUnavailable, match="closed the connection") as info:
            await provider.complete(HI, stream=True, on_token=got.append)
    assert [d.text for d in got] == ["par"]  # partial deltas were reported before the failure
    assert isinstance(info.value.__cause__, TransportProtocolError)
    assert len(requests) == 1  # part of the reply was read: never sent again


@with_transports
async def test_call_level_retry_restreams_and_keeps_one_numbering() -> None:
    replies = [
        sse(chunk({"content": "lost"}), done=False),
        sse(chunk({"content": "won"}, "stop")),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return sse_response(replies.pop(0))

    got: list[TokenDelta] = []
    retry = RetryConfig(max_attempts=2, backoff=constant_backoff(0.0))
    async with mock_provider(handler) as provider:
        r = await provider.complete(HI, stream=True, retry=retry, on_token=got.append)
    assert r.message.content == "won"
    assert [(d.text, d.index) for d in got] == [("lost", 0), ("won", 1)]


class WholeOnly:
    """A custom transport without stream()."""

    def __init__(self) -> None:
        self.sent = 0

    async def request(self, method: str, url: str, headers: Any, body: Any) -> RawResponse:
        self.sent += 1
        raise AssertionError("nothing may be sent")

    async def aclose(self) -> None:
        pass


async def test_a_transport_without_stream_is_refused_before_sending() -> None:
    transport = WholeOnly()
    assert not isinstance(transport, StreamingTransport)
    async with OpenAIProvider("http://x.test", "m", transport=transport) as provider:
        with pytest.raises(ProviderInvalidRequest, match="WholeOnly has none"):
            await provider.complete(HI, stream=True)
    assert transport.sent == 0
    assert isinstance(HttpxTransport(), StreamingTransport)


class AtomicOnly(OpenAIProvider):
    __slots__ = ()
    supports_streaming = False


@with_transports
async def test_a_mapping_without_streaming_refuses_stream_true() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing may be sent")

    provider = AtomicOnly("http://x.test", "m", transport=loopback_transport(handler))
    got: list[TokenDelta] = []
    async with provider:
        with pytest.raises(ProviderInvalidRequest, match="does not support streaming"):
            await provider.complete(HI, stream=True, on_token=got.append)
    assert got == []


@with_transports
async def test_conflicting_extras_are_refused_before_sending() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing may be sent")

    async with mock_provider(handler) as provider:
        with pytest.raises(ProviderInvalidRequest, match="stream_options"):
            await provider.complete(
                HI, config={"extras": {"stream_options": {"include_usage": False}}}, stream=True
            )


# --- feed_each: deltas reported as their events are parsed ---------------------------------


def test_feed_each_reports_the_same_deltas_and_response_as_feed() -> None:
    for step in (1, 9, len(HELLO)):
        asm = ChatStreamAssembler()
        reported: list[tuple[str, str]] = []
        for i in range(0, len(HELLO), step):
            piece = HELLO[i : i + step]
            asm.feed_each(piece, lambda *delta, out=reported: out.append(delta))
        want, deltas = assemble(HELLO)
        assert reported == list(deltas) == [("content", "Hello"), ("content", ", "),
                                            ("content", "world.")]
        assert asm.done
        assert asm.response() == want


def test_feed_each_reports_a_delta_before_a_later_bad_event_of_the_same_piece() -> None:
    asm = ChatStreamAssembler()
    reported: list[str] = []
    body = sse(chunk({"content": "early"}), b"not json", done=False)
    with pytest.raises(ProviderInvalidResponse, match="not JSON"):
        asm.feed_each(body, lambda kind, text: reported.append(text))
    assert reported == ["early"]
