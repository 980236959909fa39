"""Injected failures: rate limits, server errors, malformed bodies, dropped connections.

Each knob call on the server adds a *rule* to a :class:`FaultQueue`: a kind, the
path it applies to (``"*"`` for every path), and either a number of requests
(``count``) or a time window. Every request takes the first live rule that matches
its path, in the order the rules were added, so ``rate_limit(1)`` followed by
``fail_5xx(1)`` answers the next request 429 and the one after it 500.

The queue is guarded by a ``threading.Lock``: knobs may be turned from any task,
or from another thread, while the server is answering.
"""

from __future__ import annotations

import email.utils
import math
import threading
import time
from typing import Any, Literal

import msgspec

from ._http import reason_phrase
from .script import Reply

__all__ = [
    "FaultQueue",
    "FaultRule",
    "MalformedKind",
    "RetryAfterForm",
    "malform",
    "rate_limit_reply",
    "server_error_reply",
]

RetryAfterForm = Literal["seconds", "http-date", "ms", "both", "none"]
MalformedKind = Literal["not_json", "truncated", "missing_choices", "empty_choices", "empty_body"]
FaultKind = Literal["rate_limit", "server_error", "malformed", "drop", "raw"]


class FaultRule(msgspec.Struct):
    kind: FaultKind
    path: str
    remaining: int | None = None
    until: float | None = None
    retry_after: float | None = None
    form: RetryAfterForm = "seconds"
    status: int = 500
    style: Literal["openai", "text"] = "openai"
    malformed: MalformedKind = "not_json"
    raw: Any = None


class FaultQueue:
    """Rules waiting to fire; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []

    def add(self, rule: FaultRule) -> None:
        with self._lock:
            self._rules.append(rule)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def pending(self) -> list[FaultRule]:
        """The live rules (a copy), for inspection."""
        now = time.monotonic()
        with self._lock:
            return [msgspec.structs.replace(r) for r in self._rules if _live(r, now)]

    def take(self, path: str) -> tuple[FaultRule, float] | None:
        """Consume the first live rule matching ``path``: ``(rule, seconds left
        in its window or 0)``, or ``None``."""
        now = time.monotonic()
        with self._lock:
            self._rules = [r for r in self._rules if _live(r, now)]
            for rule in self._rules:
                if rule.path not in ("*", path):
                    continue
                if rule.remaining is not None:
                    rule.remaining -= 1
                left = 0.0 if rule.until is None else max(rule.until - now, 0.0)
                return rule, left
        return None


def _live(rule: FaultRule, now: float) -> bool:
    if rule.remaining is not None and rule.remaining <= 0:
        return False
    return rule.until is None or now < rule.until


def _error_body(message: str, kind: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def rate_limit_reply(retry_after: float | None, form: RetryAfterForm) -> Reply:
    """A 429 with OpenAI's body and the ``Retry-After`` header in ``form``:
    ``"seconds"`` (delta-seconds; fractional values are written as decimals),
    ``"http-date"`` (an IMF-fixdate, rounded up to the next whole second),
    ``"ms"`` (``retry-after-ms`` only), ``"both"`` (``retry-after-ms`` and
    ``retry-after``, as api.openai.com sends) or ``"none"``."""
    headers: dict[str, str] = {}
    if retry_after is not None and form != "none":
        seconds = _seconds_text(retry_after)
        if form in ("seconds", "both"):
            headers["retry-after"] = seconds
        if form in ("ms", "both"):
            headers["retry-after-ms"] = str(round(retry_after * 1000))
        if form == "http-date":
            when = math.ceil(time.time() + retry_after)
            headers["retry-after"] = email.utils.formatdate(when, usegmt=True)
    body = _error_body(
        "Rate limit reached for requests (injected by the embedded server).",
        "requests",
        "rate_limit_exceeded",
    )
    return Reply(429, body, headers)


def _seconds_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def server_error_reply(status: int, style: Literal["openai", "text"]) -> Reply:
    """A 5xx: OpenAI-shaped JSON (``style="openai"``) or a ``text/plain``
    reason phrase, as proxies and crashed servers send."""
    if style == "text":
        return Reply(status, reason_phrase(status))
    body = _error_body(
        "The server had an error while processing your request (injected by the embedded server).",
        "server_error",
        None,
    )
    return Reply(status, body)


def malform(reply: Reply, kind: MalformedKind) -> Reply:
    """Spoil a successful reply's body the way a broken server or proxy would.

    ``missing_choices`` drops ``choices`` (or ``data`` for the models list) and
    ``empty_choices`` empties it; both keep valid JSON.
    """
    status, headers, data = reply.render()
    if kind == "not_json":
        spoiled: Any = b"<html><body>502 upstream sent garbage</body></html>"
    elif kind == "truncated":
        spoiled = data[: max(len(data) // 2, 1)]
    elif kind == "empty_body":
        spoiled = b""
    else:
        value = msgspec.json.decode(data) if data else {}
        if isinstance(value, dict):
            key = "data" if "data" in value and "choices" not in value else "choices"
            if kind == "missing_choices":
                value.pop(key, None)
            else:
                value[key] = []
        spoiled = msgspec.json.encode(value)
    return Reply(status, spoiled, dict(headers), reply.delay, reply.connection)
