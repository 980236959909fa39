"""A sans-IO Server-Sent Events parser: bytes in, events out.

Feed it the body of a ``text/event-stream`` response in whatever pieces the
network delivers; it returns every event that the pieces complete::

    parser = SSEParser()
    for piece in pieces:                  # any split, even mid-line
        for event in parser.feed(piece):
            handle(event.event, event.data)
    for event in parser.close():          # end of body
        handle(event.event, event.data)

It follows the WHATWG event-stream grammar, as far as a client of an LLM
server needs it: lines end in ``\\n``, ``\\r\\n`` or a lone ``\\r``; a blank line
ends an event; ``data:`` lines accumulate (joined with ``\\n``); one space
after the colon is dropped; lines starting with ``:`` are comments (the
keep-alive pings of sse-starlette and friends); ``event:`` names the event;
``id:``, ``retry:`` and unknown fields are ignored; an event without data is
not dispatched. A leading UTF-8 byte-order mark is skipped.

Two liberties, both for servers seen in the wild: at :meth:`SSEParser.close`
an event whose final blank line never came is still dispatched (a server that
ends with ``data: [DONE]`` and no blank line), and a single event or line
larger than ``max_event_bytes`` raises :class:`ProviderInvalidResponse`
instead of growing the buffer without bound.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

from openarmature_nodes.llm.errors import ProviderInvalidResponse

__all__ = ["SSEEvent", "SSEParser"]

_BOM = b"\xef\xbb\xbf"
_LF = 0x0A
_COLON = 0x3A
_DATA = b"data"
_DATA_SPACE = b"data: "
_EVENT = b"event"


class SSEEvent(msgspec.Struct, frozen=True):
    """One dispatched event: its ``event`` name (``None`` when the stream
    named none, which means ``message``) and its ``data`` (the ``data:``
    lines joined with ``\\n``)."""

    event: str | None
    data: bytes


class SSEParser:
    """Incremental event-stream parser; see the module docs."""

    __slots__ = ("_buf", "_data", "_data_size", "_event", "_started", "max_event_bytes")

    def __init__(self, *, max_event_bytes: int = 16 * 1024 * 1024) -> None:
        self.max_event_bytes = max_event_bytes
        self._buf = b""
        self._data: list[bytes] = []
        self._data_size = 0
        self._event: str | None = None
        self._started = False

    def feed(self, data: bytes) -> list[SSEEvent]:
        """Parse ``data``; return the events it completes (often none)."""
        if (
            # The common piece, ``data: {...}\n\n`` on its own: one event.
            not self._buf
            and not self._data
            and self._event is None
            and self._started
            and data.startswith(b"data: ")
            and data.endswith(b"\n\n")
            and data.count(b"\n") == 2
            and b"\r" not in data
        ):
            return [SSEEvent(None, data[6:-2])]
        return list(self.iter_feed(data))

    def iter_feed(self, data: bytes) -> Iterator[SSEEvent]:
        """Parse ``data``, yielding each event as soon as it is complete.

        The lazy form of :meth:`feed`, for a reader that acts on an event
        before the rest of a large piece is parsed (a whole reply that
        arrives at once then hands out its first token after one event's
        work, not after all of them). Exhaust the iterator before feeding
        again; an iterator abandoned part-way leaves the rest of its piece
        unparsed (fine once the stream is over, as after ``[DONE]``).
        """
        buf = self._buf + data if self._buf else data
        if not self._started:
            if len(buf) < len(_BOM) and _BOM.startswith(buf):
                self._buf = buf  # too short to tell whether it is a BOM
                return
            self._started = True
            if buf.startswith(_BOM):
                buf = buf[len(_BOM) :]
        self._buf = b""
        pos, n = 0, len(buf)
        while pos < n:
            nl = buf.find(b"\n", pos)
            if (
                # A whole ``data: X`` event (one line, then the blank one) at an
                # event boundary: dispatched without the field-by-field walk.
                nl >= 0
                and buf.startswith(_DATA_SPACE, pos)
                and buf.startswith(b"\n", nl + 1)
                and not self._data
                and self._event is None
                and buf.find(b"\r", pos, nl) < 0
            ):
                start, pos = pos + len(_DATA_SPACE), nl + 2
                yield SSEEvent(None, buf[start:nl])
                continue
            cr = buf.find(b"\r", pos, nl if nl >= 0 else n)
            if cr >= 0:
                if cr == n - 1:
                    break  # maybe the first half of \r\n: wait for the next byte
                end, pos_next = cr, cr + 2 if buf[cr + 1] == _LF else cr + 1
            elif nl >= 0:
                end, pos_next = nl, nl + 1
            else:
                break
            event = self._line(buf[pos:end])
            pos = pos_next
            if event is not None:
                yield event
        self._buf = buf[pos:] if pos < n else b""
        if len(self._buf) + self._data_size > self.max_event_bytes:
            raise ProviderInvalidResponse(
                f"a server-sent event exceeds {self.max_event_bytes} bytes"
            )

    def close(self) -> list[SSEEvent]:
        """End of the body: dispatch what is left (leniently; see the module docs)."""
        events: list[SSEEvent] = []
        rest, self._buf = self._buf, b""
        if rest:
            event = self._line(rest.rstrip(b"\r"))
            if event is not None:
                events.append(event)
        event = self._line(b"")
        if event is not None:
            events.append(event)
        return events

    def _line(self, line: bytes) -> SSEEvent | None:
        """Apply one line; returns the event a blank line dispatches."""
        if not line:
            event = None
            if self._data:
                data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
                event = SSEEvent(self._event, data)
                self._data = []
                self._data_size = 0
            self._event = None
            return event
        if line[0] == _COLON:
            return None  # a comment: keep-alive ping
        colon = line.find(b":")
        if colon < 0:
            field, value = line, b""
        else:
            field, value = line[:colon], line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if field == _DATA:
            self._data.append(value)
            self._data_size += len(value) + 1
        elif field == _EVENT:
            self._event = value.decode("utf-8", "replace")
        return None
