"""The ``dialect="auto"`` probe: which structured-output form does this server enforce?

Run once, at warm-up (``OpenAIProvider.ready()``), by a provider whose
dialect is ``"auto"``. The server names itself through its ``/v1/models``
card (``owned_by: "vllm"``; never the URL), which gives the base dialect
(:func:`~.dialects.dialect_for_server`). Then a tiny canary, a schema whose
only property is a one-value enum (:func:`~.wire.dialects.canary_schema`), is
sent in each structured-output form in turn
(:func:`~.wire.dialects.auto_candidates`), with a prompt that does not mention
it: only a server that *enforces* the form answers with the one allowed object
(:func:`~.wire.dialects.canary_accepted`).
The first form that passes is kept; when none does, structured output falls
back to the prompt directive (spec llm-provider §8.1.5.1).

A candidate fails when the server rejects the form (a 4xx other than auth /
not-found / rate-limit, or a 500: llama-cpp-python's answer to
``json_schema``) or answers without enforcing it. Anything else (no
connection, bad credentials, unknown model, 502/503/504, 429) is raised: the
probe did not get an answer, and the warm-up's retry policy decides.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import msgspec

from .config import RuntimeConfig
from .dialects import Dialect, StructuredMode
from .errors import ProviderInvalidRequest, ProviderUnavailable
from .messages import UserMessage
from .request import CompletionRequest
from .transport import RawResponse
from .wire.decode import decode_chat_response
from .wire.dialects import (
    auto_candidates,
    canary_accepted,
    canary_schema,
    unsupported_form_error,
)
from .wire.encode import encode_chat_request
from .wire.error_reply import error_from_reply

__all__ = ["AutoResult", "probe_structured_mode"]

logger = logging.getLogger("openarmature_nodes.llm.dialects")

_CANARY_MESSAGES = (UserMessage(content="Reply with one word."),)
_CANARY_CONFIG = RuntimeConfig(temperature=0.0, max_tokens=24)

Send = Callable[[bytes], Awaitable[RawResponse]]


class AutoResult(msgspec.Struct, frozen=True):
    """What the probe chose, and the evidence: one line per form tried."""

    dialect: Dialect
    trail: tuple[str, ...]

    @property
    def summary(self) -> str:
        """One line for logs and the probe command."""
        return (
            f"dialect {self.dialect.name!r}, structured output {self.dialect.structured_mode!r} "
            f"(tried: {'; '.join(self.trail) or 'nothing'})"
        )


async def probe_structured_mode(
    send: Send, model: str, base: Dialect, *, url: str, identified: bool
) -> AutoResult:
    """Try each structured-output form on ``base``'s server; return ``base``
    with the first enforced form as its ``structured_mode`` (``"prompt"``
    when none is). ``identified``: ``base`` is the server's own dialect (its
    form is tried first). ``send`` posts request bytes to the chat endpoint."""
    trail: list[str] = []
    request = CompletionRequest(
        _CANARY_MESSAGES, None, _CANARY_CONFIG, canary_schema(), None, False
    )
    chosen: StructuredMode = "prompt"
    for mode in auto_candidates(base if identified else None):
        dialect = msgspec.structs.replace(base, structured_mode=mode)
        body = encode_chat_request(model, request, dialect=dialect)
        raw = await send(body)
        verdict = _verdict(raw, mode, dialect, url)
        trail.append(f"{mode}: {verdict or 'enforced'}")
        if verdict is None:
            chosen = mode
            break
    result = AutoResult(msgspec.structs.replace(base, structured_mode=chosen), tuple(trail))
    logger.info("dialect auto at %s: %s", url, result.summary)
    return result


def _verdict(raw: RawResponse, mode: StructuredMode, dialect: Dialect, url: str) -> str | None:
    """``None`` when the canary passed, else why it did not; raises what is not a verdict."""
    if 200 <= raw.status < 300:
        response = decode_chat_response(raw.status, raw.headers, raw.body, url=url)
        content = response.message.content
        text = content if isinstance(content, str) else None
        if canary_accepted(text):
            return None
        shown = repr(text)[:60]
        return f"not enforced (answered {shown}, finish_reason {response.finish_reason})"
    err = unsupported_form_error(
        error_from_reply(raw.status, raw.headers, raw.body, url=url), dialect=dialect, sent=mode
    )
    if isinstance(err, ProviderInvalidRequest) or (
        isinstance(err, ProviderUnavailable) and raw.status in (500, 501)
    ):
        return f"rejected (HTTP {raw.status})"
    raise err
