"""What the wire does with a server dialect (sans-IO; the table is
:mod:`openarmature_nodes.llm.dialects`).

- :func:`structured_format`: the body key and value that ask for a
  ``response_schema`` in each structured mode;
- the ``"auto"`` probe's decisions: the canary schema (one property, a
  one-value enum), the order in which forms are tried, and whether a reply
  proves a form is enforced (the provider runs them:
  :mod:`openarmature_nodes.llm.dialect_probe`);
- :func:`unsupported_form_error` / :func:`reply_error`: a server answer that
  says "this request form is unsupported" becomes a non-transient
  ``provider_invalid_request`` naming the dialect option that fixes it, and
  each dialect's own error-body quirks are read as what they mean.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from openarmature_nodes.llm.dialects import STRUCTURED_MODES, Dialect, StructuredMode
from openarmature_nodes.llm.errors import ProviderError, ProviderInvalidRequest

from .error_reply import HTTPErrorReply

__all__ = [
    "CANARY_VALUE",
    "auto_candidates",
    "canary_accepted",
    "canary_schema",
    "reply_error",
    "structured_format",
    "unsupported_form_error",
]


# --- structured output -------------------------------------------------------------------


def structured_format(mode: StructuredMode, name: str, schema: Mapping[str, Any], strict: bool
                      ) -> tuple[str, Any] | None:
    """``(body key, value)`` that asks for ``schema`` in ``mode``; ``None`` for
    ``"prompt"`` (the schema then goes into a system directive)."""
    if mode == "json_schema":
        return "response_format", {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": schema, "strict": strict},
        }
    if mode == "json_object_schema":
        return "response_format", {"type": "json_object", "schema": schema}
    if mode == "structured_outputs":
        return "structured_outputs", {"json": schema}
    return None


# --- the "auto" probe ----------------------------------------------------------------------

CANARY_VALUE = "oa-canary-ok"
"""The one value the canary schema allows: no model writes it unless made to."""

_CANARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"v": {"type": "string", "enum": [CANARY_VALUE]}},
    "required": ["v"],
    "additionalProperties": False,
}


def canary_schema() -> dict[str, Any]:
    """The canary's schema: an object whose one property has a one-value enum."""
    return _CANARY_SCHEMA


def auto_candidates(identified: Dialect | None) -> tuple[StructuredMode, ...]:
    """The structured modes ``"auto"`` tries, in order: the identified
    server's own mode first, then the others; ``"prompt"`` is never probed
    (it is what is left when none is enforced)."""
    first = identified.structured_mode if identified is not None else "json_schema"
    order = [first, *(m for m in STRUCTURED_MODES if m != first)]
    return tuple(m for m in order if m != "prompt")


_decode_any = msgspec.json.Decoder()


def canary_accepted(content: str | None) -> bool:
    """Whether a canary reply proves the mode is enforced: the content is
    exactly the one object the schema allows (whitespace aside)."""
    if not content:
        return False
    try:
        value = _decode_any.decode(content.strip())
    except msgspec.DecodeError:
        return False
    return bool(value == {"v": CANARY_VALUE})


# --- "this request form is unsupported" --------------------------------------------------

_REJECTION = (
    "input should be",
    "not support",
    "unsupported",
    "not_supported",
    "extra inputs are not permitted",
    "extra_forbidden",
    "unrecognized",
    "unknown field",
    "unknown parameter",
    "not allowed",
    "literal_error",
    "invalid value",
)

_FORM_WORDS: dict[StructuredMode, tuple[str, ...]] = {
    "json_schema": ("response_format", "json_schema"),
    "json_object_schema": ("response_format", "json_object"),
    "structured_outputs": ("structured_outputs",),
    "prompt": (),
}

_FIX: dict[StructuredMode, str] = {
    "json_schema": "dialect='llamacpp' (sends response_format json_object + schema, what "
    "llama.cpp enforces) or dialect='auto' (probes once which form the server enforces)",
    "json_object_schema": "dialect='openai' (sends response_format json_schema) or "
    "dialect='auto' (probes once which form the server enforces)",
    "structured_outputs": "dialect='openai' (sends response_format json_schema) or "
    "dialect='auto' (probes once which form the server enforces)",
    "prompt": "dialect='auto'",
}


def unsupported_form_error(
    err: ProviderError, *, dialect: Dialect, sent: StructuredMode | None
) -> ProviderError:
    """``err`` (from :func:`~.error_reply.error_from_reply`), or, when the
    server's message says the structured-output form we ``sent`` is not
    supported, a non-transient :class:`ProviderInvalidRequest` whose message
    names the dialect option that fixes it.

    llama-cpp-python answers ``response_format: json_schema`` with HTTP 500
    (a pydantic ``literal_error``); without this a retry policy would treat it
    as a transient server failure and re-send it.
    """
    reply = err.__cause__
    if sent is None or sent == "prompt" or not isinstance(reply, HTTPErrorReply):
        return err
    if not (400 <= reply.status < 600) or reply.status in (401, 403, 404, 429):
        return err
    text = reply.message.lower()
    if not any(w in text for w in _FORM_WORDS[sent]) or not any(w in text for w in _REJECTION):
        return err
    fixed = ProviderInvalidRequest(
        f"{err.message} -- the server does not accept the structured-output form "
        f"{_describe(sent)} that dialect={dialect.name!r} sends; not retried. Fix: "
        f"OpenAIProvider(..., {_FIX[sent]}), or force_prompt_augmentation_fallback=True",
        status=reply.status,
    )
    fixed.__cause__ = reply
    fixed.__suppress_context__ = True
    return fixed


def reply_error(
    err: ProviderError, *, dialect: Dialect, sent: StructuredMode | None
) -> ProviderError:
    """The dialect's reading of a categorized server error ``err``.

    On top of :func:`unsupported_form_error`: llama-cpp-python reports a
    request that fails its pydantic validation as HTTP 500 (``"1 validation
    error: ..."``, type ``internal_server_error``); under the ``llamacpp``
    dialect that is the non-transient ``provider_invalid_request`` OpenAI
    would send as a 400, with the server's message kept.
    """
    refined = unsupported_form_error(err, dialect=dialect, sent=sent)
    if refined is not err:
        return refined
    reply = err.__cause__
    if (
        dialect.name == "llamacpp"
        and isinstance(reply, HTTPErrorReply)
        and reply.status == 500
        and _PYDANTIC.match(reply.message)
    ):
        fixed = ProviderInvalidRequest(
            f"{err.message} (llama.cpp reports request validation errors as HTTP 500; not retried)",
            status=500,
        )
        fixed.__cause__ = reply
        fixed.__suppress_context__ = True
        return fixed
    return err


_PYDANTIC = re.compile(r"\s*\d+ validation errors?\b")


def _describe(mode: StructuredMode) -> str:
    return {
        "json_schema": "response_format json_schema",
        "json_object_schema": "response_format json_object + schema",
        "structured_outputs": "structured_outputs (a vLLM extension)",
        "prompt": "prompt directive",
    }[mode]
