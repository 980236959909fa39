"""Secrets out of server-supplied text.

Servers echo credentials back: OpenAI answers a bad key with ``Incorrect API
key provided: sk-...``, and proxies dump the request headers into their 500
pages. Any such text would otherwise reach an error message, a log record, an
event or a span. :class:`Redactor` removes the provider's configured API key
and anything shaped like a bearer token (``Bearer <token>``) from text and,
recursively, from parsed JSON. The provider applies it to every categorized
error before the error leaves it (:meth:`Redactor.scrub_error`), so nothing
above the provider ever sees the secret.

The unredacted body of an HTTP error reply stays reachable only through the
explicit accessor :meth:`~openarmature_nodes.llm.wire.error_reply.HTTPErrorReply.raw_body`.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

__all__ = ["REDACTED", "Redactor"]

REDACTED = "[REDACTED]"

# "Bearer <token>" in any case, as proxies and echoing servers write it.
_BEARER = re.compile(r"(?i)(bearer)(\s+)[A-Za-z0-9\-._~+/]+=*")
_BEARER_BYTES = re.compile(rb"(?i)(bearer)(\s+)[A-Za-z0-9\-._~+/]+=*")
_REDACTED_BYTES = REDACTED.encode()


class Redactor:
    """Removes ``secrets`` (and bearer tokens) from text and parsed JSON."""

    __slots__ = ("_secret_bytes", "_secrets")

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        # Longest first, so a secret containing another is removed whole.
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))
        self._secret_bytes = tuple(s.encode() for s in self._secrets)

    def body(self, value: bytes) -> bytes:
        """A reply body with every secret and bearer token replaced by ``[REDACTED]``
        (``value`` itself, untouched, when it holds none: a scan per secret).

        Applied to a successful reply before it is decoded, so a server that
        echoes the key into a 2xx body (a debug field, the completion text) puts
        it nowhere: not in ``Response.raw``, the message, a ``repr``, an event or
        a span."""
        for secret in self._secret_bytes:
            if secret in value:
                value = value.replace(secret, _REDACTED_BYTES)
        if b"earer" in value or b"EARER" in value:
            value = _BEARER_BYTES.sub(lambda m: m.group(1) + m.group(2) + _REDACTED_BYTES, value)
        return value

    def text(self, value: str) -> str:
        """``value`` with every secret and bearer token replaced by ``[REDACTED]``."""
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        if "earer" in value or "EARER" in value:
            value = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", value)
        return value

    def data(self, value: Any) -> Any:
        """A copy of parsed JSON with every string redacted (keys included)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                self.text(k) if isinstance(k, str) else k: self.data(v) for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.data(v) for v in value]
        return value

    def scrub_error(self, exc: BaseException) -> None:
        """Redact, in place, the message and arguments of ``exc`` and of every
        exception in its cause/context chain (and the parsed body and message
        of an HTTP error reply among them)."""
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            current.args = tuple(self.data(a) if isinstance(a, str | dict | list) else a
                                 for a in current.args)
            for name in ("message", "body", "output_content", "error_message"):
                value = getattr(current, name, None)
                if isinstance(value, str | dict | list):
                    with contextlib.suppress(AttributeError):
                        setattr(current, name, self.data(value))
            current = current.__cause__ or current.__context__
