"""Server dialects: what each OpenAI-compatible server really accepts.

vLLM, llama.cpp, LM Studio, SGLang and OpenAI all speak Chat Completions, but
they disagree on the details that decide whether structured output and tool
calls work at all. A :class:`Dialect` is the record of those details for one
server family; the provider encodes every request through it
(:mod:`.wire.encode`), so a caller never has to hand-tune ``extras``::

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

This module is the table (pure data). What the wire does with it is beside
the rest of the sans-IO mapping in :mod:`.wire.dialects`: the body key of
each structured mode, the ``"auto"`` probe's *decisions* (the canary, the
order of candidates, whether a reply proves a mode is enforced; the provider
only runs them, :mod:`.dialect_probe`), and the reading of a server reply
that says "this request form is unsupported" as a non-transient
``provider_invalid_request`` naming the dialect option that fixes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeAlias

import msgspec

from .errors import ProviderInvalidRequest

__all__ = [
    "AUTO",
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
    "constraint_body",
    "dialect_for_server",
    "resolve_dialect",
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
