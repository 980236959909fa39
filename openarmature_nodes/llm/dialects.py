"""Server dialects: what each OpenAI-compatible server really accepts.

vLLM, llama.cpp, LM Studio, SGLang and OpenAI all speak Chat Completions, but
they disagree on the details that decide whether structured output and tool
calls work at all. A :class:`Dialect` is the record of those details for one
server family; the provider encodes every request through it
(:mod:`.openai_wire`), so a caller never has to hand-tune ``extras``::

    OpenAIProvider(url, model, dialect="llamacpp")   # or genai_system="llama.cpp"
    OpenAIProvider(url, model, dialect="auto")       # probe once, at warm-up

What a dialect decides:

- ``structured_mode``: how a ``response_schema`` is sent.

  ``"json_schema"``
      ``response_format: {"type": "json_schema", "json_schema": {...}}``
      (OpenAI, vLLM, SGLang, LM Studio);
  ``"json_object_schema"``
      ``response_format: {"type": "json_object", "schema": ...}``, the form
      llama-cpp-python turns into a grammar (it answers ``json_schema`` with
      HTTP 500);
  ``"structured_outputs"``
      vLLM's own extension, ``structured_outputs: {"json": ...}``;
  ``"prompt"``
      no constraint on the wire: a system directive carries the schema
      (spec llm-provider §8.1.5.1). The last resort: a small model rarely
      follows it.

- ``max_tokens_field``: ``max_tokens`` or ``max_completion_tokens`` for
  ``RuntimeConfig.max_tokens`` (llama.cpp ignores the latter and generates
  until the context is full).
- ``tool_strict``: whether ``Tool(strict=True)`` is sent as the function's
  ``strict`` flag (vLLM constrains tool arguments to their schema only then).
- ``health_path``: a cheap readiness URL (vLLM, SGLang: ``/health``).
- ``reads_max_model_len``: ``ready()`` reads the model card's
  ``max_model_len`` and the provider rejects, before sending, a request whose
  ``max_tokens`` exceeds it.
- ``constraints``: which extra constraint kinds (:class:`Regex`,
  :class:`Choice`, :class:`Grammar`) the server understands, and how
  (:func:`constraint_body`).

Everything here is pure (no I/O): the ``"auto"`` probe's *decisions*
(:func:`canary_request_parts`, :func:`canary_accepted`,
:func:`auto_candidates`) live here and the provider only runs them. A server
reply that says "this request form is unsupported" is turned into a
non-transient ``provider_invalid_request`` naming the dialect option that
fixes it by :func:`unsupported_form_error`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal, TypeAlias

import msgspec

from .errors import ProviderError, ProviderInvalidRequest
from .openai_errors import HTTPErrorReply

__all__ = [
    "AUTO",
    "CANARY_VALUE",
    "DIALECTS",
    "DIALECT_NAMES",
    "GENAI_SYSTEMS",
    "STRUCTURED_MODES",
    "Choice",
    "Constraint",
    "Dialect",
    "Grammar",
    "Regex",
    "StructuredMode",
    "auto_candidates",
    "canary_accepted",
    "canary_schema",
    "constraint_body",
    "dialect_for_server",
    "reply_error",
    "resolve_dialect",
    "structured_format",
    "unsupported_form_error",
]

StructuredMode: TypeAlias = Literal[
    "json_schema", "json_object_schema", "structured_outputs", "prompt"
]
"""How a ``response_schema`` goes on the wire (see the module docs)."""

STRUCTURED_MODES: tuple[StructuredMode, ...] = (
    "json_schema",
    "json_object_schema",
    "structured_outputs",
    "prompt",
)


class Dialect(msgspec.Struct, frozen=True):
    """What one server family accepts; see the module docs for each field.

    The built-in ones are in :data:`DIALECTS`. A custom server gets its own
    with ``msgspec.structs.replace(DIALECTS["openai"], name="mine", ...)``.
    ``verified`` says what was checked against which real server (shown in
    the README's dialect table).
    """

    name: str
    structured_mode: StructuredMode = "json_schema"
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    tool_strict: bool = True
    health_path: str | None = None
    reads_max_model_len: bool = False
    constraints: Mapping[str, str] = msgspec.field(default_factory=dict)
    verified: str = ""


# The "auto" dialect before its probe ran: sends what OpenAI documents.
AUTO = Dialect(
    name="auto",
    reads_max_model_len=True,
    verified="probes json_schema, json_object+schema and structured_outputs with a one-value "
    "enum canary at warm-up; picked json_schema on vLLM 0.32 and json_object+schema on "
    "llama-cpp-python 0.3.36 (tests/test_real_dialects.py)",
)

DIALECTS: Mapping[str, Dialect] = {
    "openai": Dialect(
        name="openai",
        # Spec llm-provider §8.1 maps RuntimeConfig.max_tokens to max_tokens; servers that only
        # take max_completion_tokens get a custom dialect with max_tokens_field changed.
        verified="the spec's §8.1 wire shape (conformance fixtures); not run against "
        "api.openai.com",
    ),
    "vllm": Dialect(
        name="vllm",
        health_path="/health",
        reads_max_model_len=True,
        constraints={
            "regex": "structured_outputs.regex",
            "choice": "structured_outputs.choice",
            "grammar": "structured_outputs.grammar",
        },
        verified="vLLM 0.32.0 (CPU), tests marked real_vllm: json_schema enforced, strict tools "
        "constrain arguments, structured_outputs choice/regex, /health, max_model_len",
    ),
    "llamacpp": Dialect(
        name="llamacpp",
        structured_mode="json_object_schema",
        tool_strict=False,
        constraints={"grammar": "grammar"},
        verified="llama-cpp-python 0.3.36, tests marked real_server: json_object+schema enforced "
        "(json_schema answers HTTP 500), forced tool calls",
    ),
    "lmstudio": Dialect(
        name="lmstudio",
        tool_strict=False,
        verified="not run against a real LM Studio (from its documentation: json_schema)",
    ),
    "sglang": Dialect(
        name="sglang",
        health_path="/health",
        reads_max_model_len=True,
        constraints={"regex": "regex", "grammar": "ebnf"},
        verified="not run against a real SGLang (from its documentation: json_schema, regex, "
        "ebnf, /health)",
    ),
}
"""The built-in dialects by name (``"auto"`` is :data:`AUTO`)."""

DIALECT_NAMES: tuple[str, ...] = (*DIALECTS, "auto")

# genai_system values that name a dialect (observability names -> dialect names).
_SYSTEM_TO_DIALECT = {
    "openai": "openai",
    "vllm": "vllm",
    "llama.cpp": "llamacpp",
    "llamacpp": "llamacpp",
    "llama_cpp": "llamacpp",
    "llama-cpp": "llamacpp",
    "lmstudio": "lmstudio",
    "lm_studio": "lmstudio",
    "lm-studio": "lmstudio",
    "sglang": "sglang",
}

# /v1/models "owned_by" values -> dialect (the server's own answer, not the URL).
_OWNER_TO_DIALECT = {
    "vllm": "vllm",
    "sglang": "sglang",
    "llamacpp": "llamacpp",  # llama.cpp's C++ llama-server
    "me": "llamacpp",  # llama-cpp-python's server
    "organization_owner": "lmstudio",
}

# The names OpenAIProvider(genai_system=...) reports for each dialect.
GENAI_SYSTEMS = {
    "openai": "openai",
    "vllm": "vllm",
    "llamacpp": "llama.cpp",
    "lmstudio": "lmstudio",
    "sglang": "sglang",
}


def resolve_dialect(dialect: str | Dialect | None, genai_system: str | None) -> Dialect:
    """The dialect a provider starts with: ``dialect`` when given (a name or a
    :class:`Dialect`), else the one ``genai_system`` names, else ``"openai"``.
    ``"auto"`` gives :data:`AUTO`. Raises ``ValueError`` for an unknown name."""
    if isinstance(dialect, Dialect):
        return dialect
    if dialect is None:
        name = _SYSTEM_TO_DIALECT.get((genai_system or "openai").strip().lower(), "openai")
        return DIALECTS[name]
    if dialect == "auto":
        return AUTO
    if dialect not in DIALECTS:
        raise ValueError(f"dialect must be one of {', '.join(DIALECT_NAMES)}, got {dialect!r}")
    return DIALECTS[dialect]


def dialect_for_server(owned_by: str | None) -> Dialect | None:
    """The dialect a ``/v1/models`` entry's ``owned_by`` identifies, if any."""
    name = _OWNER_TO_DIALECT.get((owned_by or "").strip().lower())
    return DIALECTS[name] if name else None


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


# --- regex / choice / grammar constraints ------------------------------------------------


class Regex(msgspec.Struct, frozen=True):
    """Constrain the reply to a regular expression (vLLM, SGLang)."""

    pattern: str


class Choice(msgspec.Struct, frozen=True):
    """Constrain the reply to one of the given strings (vLLM)."""

    options: tuple[str, ...]


class Grammar(msgspec.Struct, frozen=True):
    """Constrain the reply to a grammar: GBNF for llama.cpp, EBNF for vLLM / SGLang."""

    text: str


Constraint: TypeAlias = Regex | Choice | Grammar

_KIND = {Regex: "regex", Choice: "choice", Grammar: "grammar"}


def constraint_body(dialect: Dialect, constraint: Constraint) -> dict[str, Any]:
    """The request-body keys that send ``constraint`` to a ``dialect`` server,
    to pass as ``RuntimeConfig(extras=...)``::

        extras = constraint_body(provider.dialect, Choice(("red", "green")))

    Raises ``ProviderInvalidRequest`` when the dialect has no such constraint.
    """
    kind = _KIND[type(constraint)]
    where = dialect.constraints.get(kind)
    if where is None:
        offered = ", ".join(sorted(dialect.constraints)) or "none"
        raise ProviderInvalidRequest(
            f"dialect {dialect.name!r} has no {kind} constraint (it offers: {offered}); "
            f"vLLM offers regex, choice and grammar (dialect='vllm')"
        )
    value: Any
    if isinstance(constraint, Regex):
        value = constraint.pattern
    elif isinstance(constraint, Choice):
        value = list(constraint.options)
    else:
        value = constraint.text
    head, _, leaf = where.partition(".")
    return {head: {leaf: value}} if leaf else {head: value}


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
    """``err`` (from :func:`~.openai_errors.error_from_reply`), or, when the
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
