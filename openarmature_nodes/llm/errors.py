"""The error categories of the LLM provider (spec llm-provider §7).

Every failure that crosses the provider boundary is one of these classes. Each
carries a stable ``category`` string (the spec's name for it), a human message,
and, where one exists, the underlying exception as ``__cause__``. Callers and
middleware classify failures by class or by ``category``; nothing above the
provider ever needs to look at HTTP status codes or transport exceptions.

Messages never contain API keys or authorization headers.
"""

from __future__ import annotations

from typing import Any, ClassVar

from openarmature_nodes._retry_rules import TRANSIENT_CATEGORIES

__all__ = [
    "TRANSIENT_CATEGORIES",
    "ProviderAuthentication",
    "ProviderError",
    "ProviderInvalidModel",
    "ProviderInvalidRequest",
    "ProviderInvalidResponse",
    "ProviderModelNotLoaded",
    "ProviderRateLimit",
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
    """

    category = "provider_rate_limit"

    def __init__(
        self, message: str, *, status: int | None = 429, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


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
