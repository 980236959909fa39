"""Sans-IO mapping of non-2xx replies to error categories (spec llm-provider §8.1.3).

Real OpenAI-compatible servers disagree about error bodies:

- OpenAI and llama.cpp: ``{"error": {"message", "type", "param", "code"}}``
  (``code`` a string or ``null``);
- vLLM >= 0.10.1: the same envelope with an *integer* ``code`` (the status);
- FastAPI-based servers (llama-cpp-python, many proxies): ``{"detail": "..."}``
  or ``{"detail": [{...validation error...}]}``;
- anything may answer ``text/plain`` (``Internal Server Error``) or HTML.

:func:`error_from_reply` reads whichever shape arrived, keeps the server's own
message in the error text, and attaches an :class:`HTTPErrorReply` (status,
parsed body, code, type) as ``__cause__`` so callers can reach the original.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from openarmature_nodes.llm.errors import (
    ProviderAuthentication,
    ProviderError,
    ProviderInvalidModel,
    ProviderInvalidRequest,
    ProviderInvalidResponse,
    ProviderModelNotLoaded,
    ProviderRateLimit,
    ProviderUnavailable,
    ProviderUnsupportedContentBlock,
)

__all__ = ["HTTPErrorReply", "error_from_reply", "parse_retry_after"]

_MAX_MESSAGE = 2000
_decode_any = msgspec.json.Decoder()


class HTTPErrorReply(Exception):
    """The server's non-2xx reply, attached as ``__cause__`` of the categorized error.

    ``body`` is the parsed JSON body when it was JSON, else the text (cut at
    2000 characters). ``message`` / ``code`` / ``type`` are read from the
    OpenAI error envelope (or FastAPI's ``detail``) when present.
    """

    def __init__(
        self, status: int, message: str, body: Any, code: Any = None, type: Any = None
    ) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.body = body
        self.code = code
        self.type = type


def _read_body(headers: Mapping[str, str], body: bytes) -> tuple[Any, str, Any, Any]:
    """-> (parsed body, message, code, type)."""
    parsed: Any
    try:
        parsed = _decode_any.decode(body) if body else None
    except msgspec.DecodeError:
        parsed = None
    if parsed is None or not isinstance(parsed, dict | list | str):
        text = body[:_MAX_MESSAGE].decode("utf-8", "replace").strip()
        return text, text or "(empty body)", None, None
    if isinstance(parsed, dict):
        err = parsed.get("error")
        if isinstance(err, dict):
            msg = err.get("message")
            return (
                parsed,
                _text(msg if msg not in (None, "") else err),
                err.get("code"),
                err.get("type"),
            )
        if isinstance(err, str):
            return parsed, _text(err), parsed.get("code"), parsed.get("type")
        for key in ("detail", "message", "msg"):
            if key in parsed:
                return parsed, _text(parsed[key]), parsed.get("code"), parsed.get("type")
    return parsed, _text(parsed), None, None


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


_CONTENT_WORDS = (
    "image",
    "audio",
    "video",
    "media_type",
    "media type",
    "content block",
    "content_block",
    "multimodal",
    "multi-modal",
    "vision",
    "image_url",
    "input_audio",
)
_REJECT_WORDS = (
    "not support",
    "unsupported",
    "not_supported",
    "not allowed",
    "does not accept",
    "cannot",
    "can't",
    "not enabled",
    "not available",
)
_LOADING_WORDS = (
    "loading",
    "not loaded",
    "not_loaded",
    "not yet loaded",
    "model is not ready",
    "warming up",
)


def _model_not_found(text: str) -> bool:
    return "model" in text and any(
        w in text for w in ("not found", "not_found", "does not exist", "unknown", "no such")
    )


def error_from_reply(
    status: int, headers: Mapping[str, str], body: bytes, *, url: str = "", now: float | None = None
) -> ProviderError:
    """The categorized error for a non-2xx reply (with ``__cause__`` set)."""
    parsed, message, code, etype = _read_body(headers, body)
    reply = HTTPErrorReply(status, message, parsed, code, etype)
    haystack = f"{message} {code if code is not None else ''} {etype or ''}".lower()
    where = f" from {url}" if url else ""
    text = f"HTTP {status}{where}: {message}"
    err: ProviderError
    if status in (401, 403):
        err = ProviderAuthentication(f"{text} (check the API key)", status=status)
    elif status == 429:
        err = ProviderRateLimit(
            text, status=status, retry_after=parse_retry_after(headers, now=now)
        )
    elif status == 404 and _model_not_found(haystack):
        err = ProviderInvalidModel(text, status=status)
    elif status == 404:
        err = ProviderInvalidRequest(f"{text} (no such endpoint: check base_url)", status=status)
    elif status == 503 and any(w in haystack for w in _LOADING_WORDS):
        err = ProviderModelNotLoaded(text, status=status)
    elif status >= 500:
        err = ProviderUnavailable(text, status=status)
    elif 400 <= status < 500:
        if any(w in haystack for w in _CONTENT_WORDS) and any(w in haystack for w in _REJECT_WORDS):
            err = ProviderUnsupportedContentBlock(text, status=status)
        elif _model_not_found(haystack) and "model" in str(code or etype or "").lower():
            err = ProviderInvalidModel(text, status=status)
        else:
            err = ProviderInvalidRequest(text, status=status)
    else:
        err = ProviderInvalidResponse(
            f"unexpected HTTP status {status}{where}: {message}", status=status
        )
    err.__cause__ = reply
    err.__suppress_context__ = True
    return err


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (delta-seconds
    or an HTTP-date, RFC 9110 §10.2.3); ``None`` when absent or unparseable.

    ``headers`` has lower-cased names. A date in the past gives ``0.0``.
    ``now`` (a ``time.time()`` value) is injectable for tests.
    """
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms.strip())
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value / 1000.0
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    when = http_date(raw)
    if when is None:
        return None
    delta = when - (time.time() if now is None else now)
    return max(0.0, delta)


# RFC 9110 §5.6.7: IMF-fixdate, and the obsolete RFC 850 and asctime forms a
# recipient must still accept. (``email.utils`` parses these too, but importing it
# loads ``socket``, and this package imports no I/O module.)
_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_IMF = re.compile(
    r"[A-Za-z]{3}, (\d{1,2}) ([A-Za-z]{3}) (\d{4}) (\d\d):(\d\d):(\d\d) (?:GMT|UTC|[+-]0000)"
)
_RFC850 = re.compile(
    r"[A-Za-z]+, (\d{1,2})-([A-Za-z]{3})-(\d{2}) (\d\d):(\d\d):(\d\d) GMT"
)
_ASCTIME = re.compile(r"[A-Za-z]{3} ([A-Za-z]{3}) +(\d{1,2}) (\d\d):(\d\d):(\d\d) (\d{4})")


def http_date(raw: str) -> float | None:
    """The POSIX time of an HTTP-date (any of RFC 9110's three forms), else ``None``."""
    if m := _IMF.fullmatch(raw):
        day, mon, year, hh, mm, ss = m.groups()
    elif m := _RFC850.fullmatch(raw):
        day, mon, yy, hh, mm, ss = m.groups()
        # RFC 9110: a two-digit year more than 50 years in the future is in the past.
        year = str(2000 + int(yy) if 2000 + int(yy) <= time.gmtime().tm_year + 50
                   else 1900 + int(yy))
    elif m := _ASCTIME.fullmatch(raw):
        mon, day, hh, mm, ss, year = m.groups()
    else:
        return None
    month = _MONTHS.get(mon.lower())
    if month is None:
        return None
    try:
        when = datetime(int(year), month, int(day), int(hh), int(mm), int(ss), tzinfo=UTC)
    except ValueError:  # 31 Feb, 25:00:00, ...
        return None
    return when.timestamp()
