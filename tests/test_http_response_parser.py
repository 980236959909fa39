"""The fast transport's HTTP/1.1 response parser, fed bytes with no socket.

:class:`~openarmature_nodes.llm.transport._response.ResponseReader` is the
sans-IO half of a connection: bytes in, a complete response out. The network
may cut a response anywhere, so, as h11's own tests do, every response here is
fed split at every offset (two pieces), one byte at a time, and for the short
ones split at every pair of offsets (three pieces); each way must give the same
status, headers, body and keep-alive verdict as feeding it whole.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from openarmature_nodes.llm.transport import TransportProtocolError
from openarmature_nodes.llm.transport._response import ResponseReader

CASES: dict[str, tuple[bytes, tuple[int, dict[str, str], bytes, bool]]] = {
    "content-length": (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n"
        b"Keep-Alive: timeout=5\r\n\r\n{\"ok\":true}",
        (200, {"content-type": "application/json", "content-length": "11",
               "keep-alive": "timeout=5"}, b'{"ok":true}', True),
    ),
    "chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        (200, {"transfer-encoding": "chunked"}, b"hello world", True),
    ),
    "interim-100-then-429": (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Length: 2\r\n\r\n{}",
        (429, {"retry-after": "3", "content-length": "2"}, b"{}", True),
    ),
    "repeated-header-and-close": (
        b"HTTP/1.1 503 Service Unavailable\r\nX-A: 1\r\nx-a: 2\r\nConnection: close\r\n"
        b"Content-Length: 0\r\n\r\n",
        (503, {"x-a": "1, 2", "connection": "close", "content-length": "0"}, b"", False),
    ),
    "http-1.0-keep-alive": (
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc",
        (200, {"connection": "keep-alive", "content-length": "3"}, b"abc", True),
    ),
}

# Delimited by the close itself: complete only once end-of-stream arrives.
UNTIL_CLOSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nread until close",
    (200, {"content-type": "text/plain"}, b"read until close", False),
)


def splits(data: bytes, *, pairs: bool) -> Iterator[list[bytes]]:
    """``data`` whole, split at every offset, one byte at a time, and (``pairs``)
    split at every two offsets."""
    yield [data]
    for i in range(len(data) + 1):
        yield [data[:i], data[i:]]
    yield [data[i : i + 1] for i in range(len(data))]
    if pairs:
        for i in range(len(data) + 1):
            for j in range(i, len(data) + 1):
                yield [data[:i], data[i:j], data[j:]]


def read(pieces: list[bytes], *, eof: bool = False) -> tuple[int, dict[str, str], bytes, bool]:
    reader = ResponseReader(max_body=1 << 20)
    reader._reset(False)
    for i, piece in enumerate(pieces):
        if any(pieces[i:]):
            assert not reader._complete, "complete before the last byte"
        reader._feed(piece)
    if eof:
        assert not reader._complete
        assert reader._complete_at_eof()
    assert reader._complete
    raw = reader._finish()
    return raw.status, dict(raw.headers), raw.body, reader.reusable


@pytest.mark.parametrize("name", CASES)
def test_every_split_reads_the_same_response(name: str) -> None:
    data, expected = CASES[name]
    count = 0
    for pieces in splits(data, pairs=len(data) < 120):
        assert read(pieces) == expected, [len(p) for p in pieces]
        count += 1
    assert count > len(data)


def test_read_until_close_body_completes_only_at_end_of_stream() -> None:
    data, expected = UNTIL_CLOSE
    for pieces in splits(data, pairs=False):
        assert read(pieces, eof=True) == expected


def test_a_framed_body_cut_short_is_not_complete_at_end_of_stream() -> None:
    data = CASES["content-length"][0]
    for i in range(len(data)):
        reader = ResponseReader(max_body=1 << 20)
        reader._reset(False)
        reader._feed(data[:i])
        assert not reader._complete
        assert not reader._complete_at_eof()


def test_head_response_ends_with_its_head_and_is_not_reused() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n"
    for pieces in splits(data, pairs=True):
        reader = ResponseReader(max_body=1 << 20)
        reader._reset(True)
        for piece in pieces:
            reader._feed(piece)
        assert reader._complete
        raw = reader._finish()
        assert (raw.status, raw.body, reader.reusable) == (200, b"", False)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"HTTP/1.1 2OO OK\r\n\r\n", "malformed HTTP response"),
        (b"SMTP ready\r\n\r\n", "malformed HTTP response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", "larger than max_response_bytes"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" + b"x" * 64,
         "larger than max_response_bytes"),
    ],
)
def test_bad_replies_raise_a_protocol_error_wherever_they_are_cut(
    data: bytes, message: str
) -> None:
    for pieces in splits(data, pairs=False):
        reader = ResponseReader(max_body=32)
        reader._reset(False)
        with pytest.raises(TransportProtocolError, match=message):
            for piece in pieces:
                reader._feed(piece)


def test_the_same_reader_serves_responses_back_to_back() -> None:
    data, expected = CASES["content-length"]
    reader = ResponseReader(max_body=1 << 20)
    for cut in range(0, len(data) + 1, 7):
        reader._reset(False)
        reader._feed(data[:cut])
        reader._feed(data[cut:])
        raw = reader._finish()
        assert (raw.status, dict(raw.headers), raw.body, reader.reusable) == expected
