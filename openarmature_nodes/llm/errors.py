"""The error categories of the LLM provider (spec llm-provider §7).

Every failure that crosses the provider boundary is one of these classes. Each
carries a stable ``category`` string (the spec's name for it), a human message,
and, where one exists, the underlying exception as ``__cause__``. Callers and
middleware classify failures by class or by ``category``; nothing above the
provider ever needs to look at HTTP status codes or transport exceptions.

Messages never contain API keys or authorization headers: the provider
redacts its configured key and any bearer token from every server-supplied
text before an error leaves it (:mod:`~openarmature_nodes.llm.redact`).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from openarmature_nodes._retry_rules import TRANSIENT_CATEGORIES

__all__ = [
    "TRANSIENT_CATEGORIES",
    "ProviderAuthentication",
    "ProviderDegradedResponse",
    "ProviderError",
    "ProviderInvalidModel",
    "ProviderInvalidRequest",
    "ProviderInvalidResponse",
    "ProviderModelNotLoaded",
    "ProviderRateLimit",
    "ProviderTimeout",
    "ProviderUnavailable",
    "ProviderUnsupportedContentBlock",
    "StructuredOutputInvalid",
]


class ProviderError(Exception):
    """Base class of every categorized provider failure.

    ``status`` is the HTTP status when the failure came from a server reply,
    and ``None`` for pre-send validation or transport failures.
    """

    category: ClassVar[str] = "provider_error"
    transient: ClassVar[bool] = False
    """Whether the retry engine retries this category by default. Derived from
    :data:`TRANSIENT_CATEGORIES` (the one list) for every subclass; never set by hand."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.transient = cls.category in TRANSIENT_CATEGORIES

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return f"[{self.category}] {self.message}"


class ProviderAuthentication(ProviderError):
    """Authentication failed: missing, invalid or expired credentials (401/403)."""

    category = "provider_authentication"


class ProviderUnavailable(ProviderError):
    """The provider could not be reached or answered with a server error (5xx,
    connection failure, timeout). Transient: a retry may succeed."""

    category = "provider_unavailable"


class ProviderTimeout(ProviderUnavailable):
    """A deadline elapsed: the call's total deadline (``OpenAIProvider(deadline=...)``
    or ``complete(deadline=...)``), or a stream's idle timeout (no new content for
    ``stream_idle_timeout`` seconds). The spec's category for a timeout is
    ``provider_unavailable``; this subclass lets a caller tell a timeout apart.

    ``deadline`` is the bound, in seconds, that elapsed.
    """

    def __init__(self, message: str, *, deadline: float | None = None) -> None:
        super().__init__(message)
        self.deadline = deadline


class ProviderDegradedResponse(ProviderUnavailable):
    """A reply that arrived but ended with ``finish_reason: "error"`` (spec §6:
    an error event mid-stream, or a finish reason the mapping does not know),
    raised instead of being returned by the default onion's
    ``DegradedResponseMiddleware``. Transient, as spec §7 says such a reply is
    (category ``provider_unavailable``): a retry may succeed. ``response`` is
    the degraded ``Response``, partial content and all.
    """

    def __init__(self, message: str, *, response: Any) -> None:
        super().__init__(message)
        self.response = response


class ProviderInvalidModel(ProviderError):
    """The bound model is unknown to the provider."""

    category = "provider_invalid_model"


class ProviderModelNotLoaded(ProviderError):
    """The bound model is known but not loaded yet. Transient: poll and retry."""

    category = "provider_model_not_loaded"


class ProviderRateLimit(ProviderError):
    """The provider asked us to slow down (HTTP 429).

    ``retry_after`` is the server's requested wait in seconds, parsed from
    ``Retry-After`` (delta-seconds or HTTP-date) or ``retry-after-ms``; it is
    ``None`` when the server sent none or sent something unparseable.
    ``retry_at`` is the same wait as an absolute wall-clock time
    (``time.time()`` seconds) when the server's refusal ends, or ``None``.
    """

    category = "provider_rate_limit"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = 429,
        retry_after: float | None = None,
        retry_at: float | None = None,
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after
        if retry_at is None and retry_after is not None:
            retry_at = time.time() + retry_after
        self.retry_at = retry_at


class ProviderInvalidResponse(ProviderError):
    """The server's reply could not be parsed into a Response."""

    category = "provider_invalid_response"


class ProviderInvalidRequest(ProviderError):
    """The request was rejected: by pre-send validation (nothing was sent), or
    by the server as malformed (4xx other than auth / not found / rate limit)."""

    category = "provider_invalid_request"


class ProviderUnsupportedContentBlock(ProviderError):
    """The bound model does not accept a content block type in the request."""

    category = "provider_unsupported_content_block"


class StructuredOutputInvalid(ProviderError):
    """A ``response_schema`` was requested and the reply's content is not JSON or
    does not validate against the schema.

    Carries everything needed to re-ask or to report: the raw ``output_content``,
    the validator's ``error_message``, the reply's ``finish_reason``, ``usage``,
    ``response_id`` and ``response_model`` (when the reply had them), and the
    ``schema`` that was requested.
    """

    category = "structured_output_invalid"
    response_id: str | None = None
    response_model: str | None = None

    def __init__(
        self,
        message: str,
        *,
        output_content: str | None,
        error_message: str,
        finish_reason: str | None = None,
        usage: Any = None,
        schema: Any = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message, status=status)
        self.output_content = output_content
        self.error_message = error_message
        self.finish_reason = finish_reason
        self.usage = usage
        self.schema = schema
