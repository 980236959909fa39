"""Fuzzers: whatever a server sends, the result is a Response or a categorized error.

Three parsers meet server bytes: the response decoder (``decode_chat_response``,
and behind it the error mapping of non-2xx replies), the Server-Sent Events
parser with the stream assembler, and the HTTP/1.1 response parser of the fast
transport. Each is fed arbitrary bytes and arbitrary JSON (and JSON shaped like
the real thing, with fuzzed values), split at arbitrary points where it reads
incrementally. Allowed outcomes: a ``Response``, a ``ProviderError`` (the
decoder, the stream), a ``TransportProtocolError`` (the HTTP parser). Any other
exception fails the test; so would a hang (pytest-timeout bounds each test).

The example count comes from the hypothesis profile in ``tests/conftest.py``:
2,000 per fuzzer by default, which is what CI runs.
"""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from openarmature_nodes.llm import ProviderError, Response, Tool
from openarmature_nodes.llm.transport import TransportProtocolError
from openarmature_nodes.llm.transport._response import ResponseReader
from openarmature_nodes.llm.wire.decode import decode_chat_response
from openarmature_nodes.llm.wire.error_reply import error_from_reply
from openarmature_nodes.llm.wire.stream import ChatStreamAssembler

TOOLS = {
    "lookup": Tool(
        name="lookup",
        description="",
        parameters={"type": "object", "properties": {"q": {"type": "string"}}},
    )
}
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                   max_size=4),
    max_leaves=20,
)

FIELDS = ("content", "tool_calls", "finish_reason", "role", "reasoning_content", "reasoning")


def shaped_completion() -> st.SearchStrategy[Any]:
    """JSON with the shape of a chat completion and fuzzed values."""
    function = st.fixed_dictionaries(
        {}, optional={"name": st.sampled_from(["lookup", "other"]) | json_values,
                      "arguments": st.sampled_from(['{"q": "x"}', "{", "[]"]) | json_values})
    call = st.fixed_dictionaries(
        {}, optional={"id": st.text(max_size=5) | json_values, "function": function | json_values,
                      "type": json_values})
    message = st.fixed_dictionaries(
        {}, optional={"content": st.text() | json_values, "tool_calls": st.lists(call, max_size=3)
                      | json_values, "reasoning_content": json_values, "role": json_values})
    choice = st.fixed_dictionaries(
        {}, optional={"message": message | json_values, "delta": message | json_values,
                      "index": st.integers(-1, 2) | json_values,
                      "finish_reason": st.sampled_from(["stop", "length", "tool_calls", "odd"])
                      | json_values})
    usage = st.fixed_dictionaries(
        {}, optional={"prompt_tokens": json_values, "completion_tokens": json_values,
                      "total_tokens": json_values})
    error = st.fixed_dictionaries(
        {}, optional={"message": json_values, "type": json_values, "code": json_values})
    return st.fixed_dictionaries(
        {}, optional={"choices": st.lists(choice, max_size=3) | json_values,
                      "usage": usage | json_values, "error": error | json_values,
                      "id": json_values, "model": json_values, "detail": json_values})


bodies = (
    st.binary(max_size=2048)
    | json_values.map(msgspec.json.encode)
    | shaped_completion().map(msgspec.json.encode)
)
statuses = st.sampled_from([200, 200, 200, 400, 401, 403, 404, 422, 429, 500, 503]) | st.integers(
    100, 599
)
header_sets = st.dictionaries(
    st.sampled_from(["content-type", "retry-after", "retry-after-ms", "x-other"]),
    st.text(max_size=40),
    max_size=3,
)


@given(status=statuses, headers=header_sets, body=bodies,
       tools=st.sampled_from([None, TOOLS]), schema=st.sampled_from([None, SCHEMA]))
def test_response_decoder(
    status: int, headers: dict[str, str], body: bytes, tools: Any, schema: Any
) -> None:
    try:
        result = decode_chat_response(status, headers, body, tools=tools, response_schema=schema)
    except ProviderError:
        return
    assert isinstance(result, Response)


@given(status=st.integers(100, 599), headers=header_sets, body=bodies)
def test_error_mapping(status: int, headers: dict[str, str], body: bytes) -> None:
    assert isinstance(error_from_reply(status, headers, body), ProviderError)


def sse_streams() -> st.SearchStrategy[bytes]:
    event = (
        shaped_completion().map(lambda v: b"data: " + msgspec.json.encode(v) + b"\n\n")
        | json_values.map(lambda v: b"data: " + msgspec.json.encode(v) + b"\n\n")
        | st.sampled_from([b": ping\n\n", b"data: [DONE]\n\n", b"event: error\n", b"\n",
                           b"data:", b"retry: 10\n", b"id: 1\r\n\r\n", b"data: {\n\n"])
        | st.binary(max_size=64)
    )
    return st.lists(event, max_size=12).map(b"".join)


@given(data=sse_streams() | st.binary(max_size=2048), cuts=st.lists(st.integers(0, 4096)),
       tools=st.sampled_from([None, TOOLS]), schema=st.sampled_from([None, SCHEMA]))
def test_sse_stream_assembler(data: bytes, cuts: list[int], tools: Any, schema: Any) -> None:
    asm = ChatStreamAssembler(tools=tools, response_schema=schema, max_event_bytes=4096)
    try:
        for piece in _split(data, cuts):
            asm.feed(piece)
            if asm.done:
                break
        else:
            asm.feed_eof()
        result = asm.response()
    except ProviderError:
        return
    assert isinstance(result, Response)


def http_responses() -> st.SearchStrategy[bytes]:
    status_line = st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK", b"HTTP/1.1 100 Continue",
                                   b"HTTP/1.1 429 Too Many", b"HTTP/1.1 999 X", b"HTTP/2 200",
                                   b"HTTP/1.1 200"]) | st.binary(max_size=20)
    header = st.sampled_from([
        b"Content-Length: 5", b"Content-Length: 2, 2", b"Content-Length: -1",
        b"Content-Length: 99999999999999999999", b"Transfer-Encoding: chunked",
        b"Connection: close", b"Keep-Alive: timeout=x", b"Keep-Alive: timeout=5",
        b"Content-Type: application/json",
    ]) | st.binary(max_size=40)
    body = st.binary(max_size=64) | st.sampled_from([b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\n"])
    return st.tuples(status_line, st.lists(header, max_size=6), body).map(
        lambda t: t[0] + b"\r\n" + b"".join(h + b"\r\n" for h in t[1]) + b"\r\n" + t[2]
    )


@given(data=http_responses() | st.binary(max_size=4096), cuts=st.lists(st.integers(0, 8192)),
       head_only=st.booleans(), max_body=st.sampled_from([16, 1 << 20]))
def test_http_response_parser(data: bytes, cuts: list[int], head_only: bool, max_body: int) -> None:
    reader = ResponseReader(max_body)
    reader._reset(head_only)
    try:
        for piece in _split(data, cuts):
            if piece:
                reader._feed(piece)
            if reader._complete:
                break
        else:
            reader._complete_at_eof()
        if reader._complete:
            raw = reader._finish()
            assert isinstance(raw.status, int) and isinstance(raw.body, bytes)
            assert len(raw.body) <= max_body
    except TransportProtocolError:
        return


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in points:
        pieces.append(data[last:point])
        last = point
    pieces.append(data[last:])
    return pieces
