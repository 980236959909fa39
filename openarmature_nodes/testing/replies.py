"""Deterministic chat-completion answers: the embedded server's "model".

Given a decoded request, :func:`answer` decides what an assistant would send and
builds the OpenAI-shaped response body. The same request always gives the same
content (only ``id`` and ``created`` vary). The rules, in order:

1. **Tool call.** When ``tools`` are given and ``tool_choice`` names a function
   (or is ``"required"``), that function is called. With ``"auto"`` (or no
   ``tool_choice``) the server's *tool policy* decides: ``"auto"`` (default)
   calls a tool unless the last message is a ``tool`` result, ``"always"``
   always calls one, ``"never"`` never does. The called tool is the first one
   whose name appears in the last user message (``get_weather`` matches
   "get weather" too), else the first tool. Its ``arguments`` are
   :func:`~openarmature_nodes.testing.schema.example_from_schema` of the tool's
   ``parameters``.
2. **Structured output.** ``response_format`` of type ``json_schema`` (or
   llama.cpp's ``json_object`` + ``schema``) gives the JSON example of that
   schema; plain ``json_object`` gives ``{"reply": "echo: ..."}``. With
   ``detect_prompt_schema`` on, a JSON Schema embedded in a *system* message
   (the prompt-augmentation fallback of servers without ``response_format``)
   is answered the same way.
3. **Text.** After a ``tool`` result: ``"tool result: <its content>"``.
   Otherwise ``"echo: <last user message>"``. ``max_tokens`` cuts the text to that
   many words with ``finish_reason: "length"``.

``usage`` counts words: prompt tokens are the words of every message, completion
tokens the words of the content (or of the tool-call arguments).
"""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec

from .schema import example_from_schema
from .wire import ChatRequest, NamedToolChoice, ToolDef, message_text

__all__ = ["ToolPolicy", "answer", "completion_body", "request_problem"]

ToolPolicy = Literal["auto", "always", "never"]

_TOOL_CHOICES = ("none", "auto", "required")
_FORMATS = ("text", "json_object", "json_schema")


def completion_body(
    content: str | None = None,
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str | None = None,
    model: str = "embedded-model",
    usage: dict[str, int] | None = None,
    id: str = "chatcmpl-embedded-scripted",
    created: int | None = None,
) -> dict[str, Any]:
    """Build an OpenAI-shaped ``chat.completion`` body, for scripts.

    ``finish_reason`` defaults to ``"tool_calls"`` when ``tool_calls`` are given,
    else ``"stop"``; ``usage`` defaults to word counts of the content.
    """
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    if finish_reason is None:
        finish_reason = "tool_calls" if tool_calls else "stop"
    if usage is None:
        words = len((content or "").split())
        usage = {"prompt_tokens": 1, "completion_tokens": words, "total_tokens": words + 1}
    return {
        "id": id,
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": usage,
    }


def request_problem(chat: ChatRequest) -> tuple[str, str | None] | None:
    """A reason to reject the request with 400 (message, param), or ``None``."""
    if not chat.messages:
        return "'messages' must contain at least one message", "messages"
    choice = chat.tool_choice
    if isinstance(choice, str) and choice not in _TOOL_CHOICES:
        return f"Invalid value for 'tool_choice': {choice!r}", "tool_choice"
    if isinstance(choice, NamedToolChoice):
        names = [t.function.name for t in chat.tools or []]
        if choice.function.name not in names:
            return (
                f"tool_choice names function {choice.function.name!r}, "
                "which is not among the request's tools",
                "tool_choice",
            )
    fmt = chat.response_format
    if fmt is not None:
        if fmt.type not in _FORMATS:
            return f"Invalid value for 'response_format.type': {fmt.type!r}", "response_format"
        spec = fmt.json_schema
        if fmt.type == "json_schema" and (spec is None or spec.schema is None):
            return "'response_format.json_schema.schema' is required", "response_format"
    return None


def answer(
    chat: ChatRequest,
    *,
    served_model: str,
    seq: int,
    tool_policy: ToolPolicy = "auto",
    detect_prompt_schema: bool = True,
    created: int | None = None,
) -> dict[str, Any]:
    """The deterministic response body for a valid request (see the module doc)."""
    last = chat.messages[-1]
    seed = _last_user_text(chat)
    tool_calls: list[dict[str, Any]] | None = None
    content: str | None
    finish = "stop"
    tool = _choose_tool(chat, seed, tool_policy)
    if tool is not None:
        params = tool.function.parameters or {"type": "object", "properties": {}}
        arguments = msgspec.json.encode(example_from_schema(params)).decode()
        tool_calls = [
            {
                "id": f"call_{seq}_0",
                "type": "function",
                "function": {"name": tool.function.name, "arguments": arguments},
            }
        ]
        content, finish, produced = None, "tool_calls", arguments
    else:
        schema = _structured_schema(chat, detect_prompt_schema)
        if schema is not None:
            content = msgspec.json.encode(example_from_schema(schema)).decode()
        elif chat.response_format is not None and chat.response_format.type == "json_object":
            content = msgspec.json.encode({"reply": f"echo: {seed}"}).decode()
        else:
            text = f"tool result: {message_text(last)}" if last.role == "tool" else f"echo: {seed}"
            content, finish = _limit(text, chat.max_tokens or chat.max_completion_tokens)
        produced = content
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    prompt = sum(len(message_text(m).split()) for m in chat.messages)
    completion = len(produced.split())
    return {
        "id": f"chatcmpl-embedded-{seq}",
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": chat.model or served_model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def _last_user_text(chat: ChatRequest) -> str:
    for message in reversed(chat.messages):
        if message.role == "user":
            return message_text(message)
    return ""


def _limit(text: str, max_tokens: int | None) -> tuple[str, str]:
    words = text.split()
    if max_tokens is not None and 0 < max_tokens < len(words):
        return " ".join(words[:max_tokens]), "length"
    return text, "stop"


def _choose_tool(chat: ChatRequest, seed: str, policy: ToolPolicy) -> ToolDef | None:
    tools = chat.tools
    if not tools:
        return None
    choice = chat.tool_choice
    if isinstance(choice, NamedToolChoice):
        return next((t for t in tools if t.function.name == choice.function.name), None)
    if choice == "none":
        return None
    if choice != "required":
        if policy == "never":
            return None
        if policy == "auto" and chat.messages[-1].role == "tool":
            return None
    lowered = seed.lower()
    for tool in tools:
        name = tool.function.name.lower()
        if name in lowered or name.replace("_", " ") in lowered:
            return tool
    return tools[0]


def _structured_schema(chat: ChatRequest, detect_prompt_schema: bool) -> dict[str, Any] | None:
    fmt = chat.response_format
    if fmt is not None:
        if fmt.type == "json_schema" and fmt.json_schema is not None:
            return fmt.json_schema.schema
        if fmt.type == "json_object":
            return fmt.schema
        return None
    if not detect_prompt_schema:
        return None
    for message in chat.messages:
        if message.role in ("system", "developer"):
            found = find_schema_in_text(message_text(message))
            if found is not None:
                return found
    return None


def find_schema_in_text(text: str) -> dict[str, Any] | None:
    """The first balanced ``{...}`` in ``text`` that decodes to a JSON object
    looking like a JSON Schema (has ``type``, ``properties``, ``$defs``, ``$ref``,
    ``anyOf`` or ``oneOf``)."""
    start = text.find("{")
    while start != -1:
        end = _balanced_end(text, start)
        if end is not None:
            try:
                value = msgspec.json.decode(text[start:end])
            except msgspec.DecodeError:
                value = None
            keys = ("type", "properties", "$defs", "$ref", "anyOf", "oneOf")
            if isinstance(value, dict) and any(k in value for k in keys):
                return value
        start = text.find("{", start + 1)
    return None


def _balanced_end(text: str, start: int) -> int | None:
    depth = 0
    in_string = escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None
