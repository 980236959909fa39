"""Canned replies: what a test scripts the embedded server to send.

A *script* is a list of entries consumed one per request (first in, first out),
or a callable asked on every request. An entry is any of:

* a :class:`Reply` (full control: status, headers, body, delay, connection fate);
* a ``dict`` or ``list``: a 200 JSON body (for example from
  :func:`~openarmature_nodes.testing.completion_body`);
* a tuple ``(status, body)`` or ``(status, headers, body)``.

Bodies that are ``dict`` / ``list`` are sent as JSON, ``str`` as ``text/plain``
and ``bytes`` as they are (with ``content-type: application/json`` unless the
headers say otherwise, which is what a test of a malformed body wants).

A script callable receives the :class:`~openarmature_nodes.testing.ReceivedRequest`
and returns an entry, or ``None`` for the server's default answer; it may be a
plain function or an ``async`` one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, TypeAlias

import msgspec

from ._http import ReceivedRequest

__all__ = ["Reply", "ScriptEntry", "ScriptFunction", "as_reply"]


class Reply(msgspec.Struct, frozen=True):
    """One scripted HTTP answer.

    ``delay`` seconds are slept (server side) before answering. ``connection``
    decides what happens to the TCP connection: ``"keep"`` (normal keep-alive),
    ``"close"`` (answer with ``Connection: close``, then close), ``"drop"``
    (close *without* answering: the client sees the connection die mid-request).
    """

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = msgspec.field(default_factory=dict)
    delay: float = 0.0
    connection: Literal["keep", "close", "drop"] = "keep"

    def render(self) -> tuple[int, list[tuple[str, str]], bytes]:
        """``(status, headers, body bytes)`` with a content type filled in."""
        headers = list(self.headers.items())
        has_type = any(name.lower() == "content-type" for name, _ in headers)
        body = self.body
        if isinstance(body, bytes):
            data, kind = body, "application/json"
        elif isinstance(body, str):
            data, kind = body.encode(), "text/plain; charset=utf-8"
        elif body is None:
            data, kind = b"", "application/json"
        else:
            data, kind = msgspec.json.encode(body), "application/json"
        if not has_type:
            headers.append(("content-type", kind))
        return self.status, headers, data


ScriptEntry: TypeAlias = (
    "Reply | dict[str, Any] | list[Any] | tuple[int, Any] | tuple[int, Mapping[str, str], Any]"
)
ScriptFunction: TypeAlias = Callable[
    [ReceivedRequest], "ScriptEntry | Awaitable[ScriptEntry | None] | None"
]


def as_reply(entry: Any) -> Reply:
    """Normalize a script entry to a :class:`Reply` (``TypeError`` if it is none)."""
    if isinstance(entry, Reply):
        return entry
    if isinstance(entry, dict | list):
        return Reply(200, entry)
    if isinstance(entry, tuple):
        if len(entry) == 2 and isinstance(entry[0], int):
            return Reply(entry[0], entry[1])
        if len(entry) == 3 and isinstance(entry[0], int) and isinstance(entry[1], Mapping):
            return Reply(entry[0], entry[2], dict(entry[1]))
    raise TypeError(
        "a script entry is a Reply, a dict/list JSON body, (status, body) or "
        f"(status, headers, body); got {type(entry).__name__}"
    )
