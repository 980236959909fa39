"""Sans-IO HTTP/1.1 for the embedded server: bytes in, requests out; responses to bytes.

Nothing here touches a socket. :class:`RequestParser` wraps ``httptools``' C parser
(the same one uvicorn uses): feed it whatever bytes arrived and it hands back every
request completed so far, with its body already de-chunked. That covers keep-alive
(several requests on one connection), pipelining (several requests in one read),
``Content-Length`` bodies and ``Transfer-Encoding: chunked`` bodies.

:func:`render_response` turns a status, headers and body into the bytes of one
HTTP/1.1 response with a correct ``Content-Length``.
"""

from __future__ import annotations

import http
import time
from typing import Any

import httptools
import msgspec

__all__ = [
    "BodyTooLarge",
    "ReceivedRequest",
    "RequestParser",
    "reason_phrase",
    "render_response",
]


class BodyTooLarge(Exception):
    """A request body went past the parser's ``max_body`` limit."""


class ReceivedRequest(msgspec.Struct, frozen=True):
    """One request as the embedded server saw it, kept for test assertions.

    ``headers`` has lower-cased names (the last value wins when a name repeats).
    ``json`` is the decoded body when it was valid JSON, else ``None``; ``body``
    is always the raw bytes. ``connection`` numbers the TCP connection the
    request arrived on (1 for the first one accepted), so tests can tell
    whether a client reused a keep-alive connection. ``at`` is the
    ``time.monotonic()`` reading when the request was complete.

    The ``repr`` leaves out headers and body: an ``Authorization`` header must
    not end up in a test log.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    json: Any
    connection: int
    keep_alive: bool = True
    at: float = 0.0

    def __repr__(self) -> str:
        return f"ReceivedRequest({self.method} {self.path}, {len(self.body)} bytes)"

    def bearer_token(self) -> str | None:
        """The token of an ``Authorization: Bearer <token>`` header, if any."""
        value = self.headers.get("authorization", "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return token.strip()


class RequestParser:
    """Incremental request parser for one connection.

    Call :meth:`feed` with each chunk of bytes read from the socket; it returns
    the list of requests that chunk completed (often empty, sometimes several).
    A malformed request raises ``httptools.HttpParserError``; a body larger than
    ``max_body`` raises :class:`BodyTooLarge`. After either, the connection
    should answer 400/413 and close.
    """

    def __init__(self, connection: int, *, max_body: int = 32 * 1024 * 1024) -> None:
        self._connection = connection
        self._max_body = max_body
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._keep_alive = True
        self._busy = False
        self._expect_continue = False
        self._done: list[ReceivedRequest] = []

    @property
    def busy(self) -> bool:
        """True between the first byte of a request and its end."""
        return self._busy

    def feed(self, data: bytes) -> list[ReceivedRequest]:
        self._parser.feed_data(data)
        done, self._done = self._done, []
        return done

    # httptools callbacks -------------------------------------------------

    def on_message_begin(self) -> None:
        self._busy = True
        self._url = b""
        self._headers = {}
        self._body = []
        self._size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._keep_alive = self._parser.should_keep_alive()
        if self._headers.get("expect", "").lower() == "100-continue":
            self._expect_continue = True

    def take_expect_continue(self) -> bool:
        """True once per request that sent ``Expect: 100-continue`` (curl does for
        large bodies): the server should send ``100 Continue`` before the body."""
        flag, self._expect_continue = self._expect_continue, False
        return flag

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._max_body:
            raise BodyTooLarge(f"request body over {self._max_body} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._busy = False
        raw_path, _, query = self._url.decode("latin-1").partition("?")
        body = b"".join(self._body)
        decoded: Any = None
        if body:
            try:
                decoded = msgspec.json.decode(body)
            except msgspec.DecodeError:
                decoded = None
        self._done.append(
            ReceivedRequest(
                method=self._parser.get_method().decode("ascii"),
                path=raw_path or "/",
                query=query,
                headers=self._headers,
                body=body,
                json=decoded,
                connection=self._connection,
                keep_alive=self._keep_alive,
                at=time.monotonic(),
            )
        )


def reason_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def render_response(
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    *,
    close: bool,
) -> bytes:
    """Serialize one HTTP/1.1 response.

    ``Content-Length`` is always computed here (any given one is dropped), and
    ``Connection: close`` is added when ``close`` is true, which tells the client
    not to reuse the connection.
    """
    lines = [f"HTTP/1.1 {status} {reason_phrase(status)}"]
    for name, value in headers:
        lowered = name.lower()
        if lowered in ("content-length", "connection", "transfer-encoding"):
            continue
        lines.append(f"{name}: {value}")
    lines.append(f"content-length: {len(body)}")
    if close:
        lines.append("connection: close")
    head = "\r\n".join(lines) + "\r\n\r\n"
    return head.encode("latin-1") + body
