"""Reading one HTTP/1.1 response out of the bytes of a connection (no I/O).

:class:`ResponseReader` is the sans-IO half of a
:class:`~openarmature_nodes.llm.transport._conn.Connection`: it owns an
``httptools`` response parser, created once per connection and fed whatever
bytes the socket yields, and its callbacks fill in the response being read
(status, a lower-cased header dict, body pieces). llhttp resets itself after
each complete message, so the same parser serves every response on a
keep-alive connection. Nothing here waits or touches a socket, so every rule
about what a response may look like lives in this one file:

* 1xx interim responses (``100 Continue``) are skipped;
* a HEAD response ends with its head (llhttp cannot be told that the body it
  announces never comes), and its connection is not reused;
* a body larger than ``max_body`` (for a streamed body: all its pieces
  together) and a head larger than :data:`MAX_HEAD_BYTES` (counted as
  header name and value bytes, however the head arrived) are refused;
* a repeated ``Content-Length`` with one value (``5`` twice, or ``5, 5``)
  is read as that value, as RFC 9110 §8.6 allows and as httpx does;
  differing values are refused (llhttp refuses any repetition; the head is
  then re-read once with the duplicates folded, so both shipped transports
  behave the same);
* keep-alive is allowed only after a complete response whose server allowed
  it (HTTP/1.1 without ``Connection: close``, HTTP/1.0 with
  ``Connection: keep-alive``) and that was not followed by more bytes;
* end-of-stream completes a response only when the response is delimited by
  the close itself (no ``Content-Length``, not chunked).

:class:`Connection` subclasses it rather than holding one, so the parser
callbacks and the I/O loop share one object's attributes (the receive loop
reads ``_complete`` after every chunk).
"""

from __future__ import annotations

import httptools

from ._base import MAX_HEAD_BYTES, RawResponse, TransportProtocolError, TransportResponseTooLarge

__all__ = ["MAX_HEAD_BYTES", "ResponseReader"]

_CONTENT_LENGTH = b"content-length"

# Header names seen on the wire -> lower-cased str. Servers send the same few
# names in every response, so a dict hit replaces a decode and a lower().
_NAMES: dict[bytes, str] = {}


def _lower_name(name: bytes) -> str:
    key = name.decode("latin-1").lower()
    if len(_NAMES) < 1024:
        _NAMES[name] = key
    return key


def keepalive_hint(value: str) -> float | None:
    """The ``timeout=N`` of a ``Keep-Alive`` response header, if any."""
    for part in value.split(","):
        name, _, number = part.partition("=")
        if name.strip().lower() == "timeout":
            try:
                return float(number.strip())
            except ValueError:
                return None
    return None


class ResponseReader:
    """The parser state of one connection (see the module docstring).

    Call :meth:`_reset` before each response, :meth:`_feed` with each chunk
    of bytes, :meth:`_complete_at_eof` at end-of-stream, and
    :meth:`_finish` once ``_complete`` is set.
    """

    __slots__ = (
        "_body",
        "_complete",
        "_head_chunks",
        "_head_done",
        "_head_only",
        "_head_size",
        "_headers",
        "_informational",
        "_keep",
        "_max_body",
        "_parser",
        "_received",
        "_size",
        "_status",
        "_too_big",
        "reusable",
        "server_idle",
    )

    def __init__(self, max_body: int) -> None:
        self.reusable = False
        self.server_idle: float | None = None
        self._max_body = max_body
        self._parser = httptools.HttpResponseParser(self)
        self._reset(False)

    def _reset(self, head_only: bool) -> None:
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._status = 0
        self._head_done = False
        self._head_size = 0
        self._head_chunks: list[bytes] = []
        self._complete = False
        self._keep = False
        self._too_big = False
        self._informational = False
        self._head_only = head_only
        self._received = 0

    # -- httptools callbacks -------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            # The server sent the start of another response after ours: it is
            # not speaking request/response any more. Never reuse.
            self._keep = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        key = _NAMES.get(name)
        if key is None:
            key = _lower_name(name)
        headers = self._headers
        if key in headers:  # a repeated header: join the values, as RFC 9110 allows
            headers[key] = f"{headers[key]}, {value.decode('latin-1')}"
        else:
            headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        self._status = status
        if status < 200:
            # 1xx interim response (e.g. 100 Continue): it has no body and the
            # real response follows on the same connection.
            self._informational = True
            self._head_size = 0
            return
        self._head_done = True
        if self._head_only:
            self._complete = True
            return
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            self._too_big = True

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._max_body:
            self._too_big = True
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            self._headers = {}
            return
        if not self._complete:
            self._complete = True
            self._keep = self._parser.should_keep_alive()

    # -- feeding -------------------------------------------------------------

    def _feed(self, chunk: bytes) -> None:
        """Parse ``chunk``; raise :class:`TransportProtocolError` for a reply
        that breaks the rules of the module docstring."""
        self._received += len(chunk)
        in_head = not self._head_done
        if in_head:
            self._head_chunks.append(chunk)
        try:
            self._parser.feed_data(chunk)
        except httptools.HttpParserUpgrade:
            raise TransportProtocolError("server switched protocols unexpectedly") from None
        except httptools.HttpParserError as exc:
            if self._complete:
                self._keep = False  # junk after a complete response
            elif in_head and "Content-Length" in str(exc):
                self._refeed_folded_lengths()
            else:
                raise TransportProtocolError(f"malformed HTTP response: {exc}") from None
        if in_head and self._head_done:
            self._head_chunks = []
        if self._too_big:
            raise TransportResponseTooLarge(
                f"response body larger than max_response_bytes ({self._max_body})"
            )
        if self._head_size > MAX_HEAD_BYTES or (
            not self._head_done and self._received > MAX_HEAD_BYTES + 8192
        ):
            raise TransportProtocolError(f"response head larger than {MAX_HEAD_BYTES} bytes")

    def _refeed_folded_lengths(self) -> None:
        """llhttp refused a repeated or listed ``Content-Length``: when every
        value is the same, parse the response again from its start with one
        ``Content-Length`` line (see the module docstring); else refuse it."""
        data = b"".join(self._head_chunks)
        end = data.find(b"\r\n\r\n")
        lines = data[:end].split(b"\r\n") if end > 0 else []
        values: set[bytes] = set()
        kept: list[bytes] = []
        for i, line in enumerate(lines):
            name, colon, value = line.partition(b":")
            if i and colon and name.strip().lower() == _CONTENT_LENGTH:
                values.update(v.strip() for v in value.split(b","))
                if len(values) == 1 and not any(
                    k.partition(b":")[0].strip().lower() == _CONTENT_LENGTH for k in kept
                ):
                    kept.append(b"content-length: " + next(iter(values)))
                continue
            kept.append(line)
        if len(values) != 1 or not next(iter(values)).isdigit():
            raise TransportProtocolError(
                "malformed HTTP response: conflicting or invalid Content-Length values"
            )
        received, head_only = self._received, self._head_only
        self._parser = httptools.HttpResponseParser(self)
        self._reset(head_only)
        self._received = received
        try:
            self._parser.feed_data(b"\r\n".join(kept) + data[end:])
        except httptools.HttpParserError as exc:
            raise TransportProtocolError(f"malformed HTTP response: {exc}") from None

    def _complete_at_eof(self) -> bool:
        """End-of-stream arrived: was the response delimited by the close?"""
        if not self._head_done or self._complete:
            return self._complete
        headers = self._headers
        if "content-length" in headers or "chunked" in headers.get("transfer-encoding", "").lower():
            return False  # framed body cut short
        self._complete = True  # read-until-close body
        self._keep = False
        return True

    def _finish(self) -> RawResponse:
        """The complete response; sets :attr:`reusable` and :attr:`server_idle`."""
        body = self._body
        headers = self._headers
        self.reusable = self._keep and not self._head_only
        hint = headers.get("keep-alive")
        if hint is not None:
            self.server_idle = keepalive_hint(hint)
        return RawResponse(self._status, headers, body[0] if len(body) == 1 else b"".join(body))
