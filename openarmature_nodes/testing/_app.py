"""The embedded server's endpoints as pure functions: request facts in, :class:`Reply` out.

The server (``server.py``) owns sockets, knobs and ordering; these functions only
build answers, shaped like a real OpenAI-compatible server's:

* ``GET /v1/models`` lists the served model (``owned_by: "embedded"``), with a
  ``status`` field only when one is configured (llama.cpp and vLLM send none);
* ``GET /v1/models/{id}`` retrieves one entry, or 404 ``model_not_found``;
* ``POST /v1/chat/completions`` decodes the body with a typed decoder, rejects
  bad requests with 400 ``invalid_request_error`` (never a traceback), and
  answers through :mod:`.replies`; ``stream: true`` gets the same answer as
  server-sent events;
* a model still loading answers 503 with llama.cpp's ``Loading model`` body;
* errors use OpenAI's ``{"error": {message, type, param, code}}`` shape, except
  the FastAPI-style 401 (``{"detail": ...}``) that llama-cpp-python sends, on request.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from .replies import ToolPolicy, answer, request_problem
from .script import Reply
from .wire import decode_chat_request

__all__ = [
    "AuthStyle",
    "JsonSchemaSupport",
    "auth_reply",
    "chat_reply",
    "error_reply",
    "loading_reply",
    "model_entry_reply",
    "models_reply",
]

AuthStyle = Literal["openai", "fastapi"]
JsonSchemaSupport = Literal["native", "error_400", "error_500", "ignore"]


def error_reply(
    status: int,
    message: str,
    kind: str,
    code: str | int | None = None,
    param: str | None = None,
) -> Reply:
    """An OpenAI-shaped error body."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return Reply(status, body)


def auth_reply(style: AuthStyle) -> Reply:
    """401 for a missing or wrong bearer token. The message never echoes the token."""
    if style == "fastapi":
        return Reply(401, {"detail": "Invalid API key"})
    return error_reply(
        401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
    )


def loading_reply() -> Reply:
    """503 while the model loads, with llama.cpp's body."""
    body = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
    return Reply(503, body)


def _entry(model_id: str, status: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": model_id, "object": "model", "owned_by": "embedded"}
    if status is not None:
        entry["status"] = status
    return entry


def models_reply(models: list[str], status: str | None) -> Reply:
    """The ``/v1/models`` list; ``status`` (if any) applies to the first (served) model."""
    data = [_entry(m, status if i == 0 else None) for i, m in enumerate(models)]
    return Reply(200, {"object": "list", "data": data})


def model_entry_reply(model_id: str, models: list[str], status: str | None) -> Reply:
    if model_id not in models:
        return _unknown_model(model_id)
    return Reply(200, _entry(model_id, status if model_id == models[0] else None))


def _unknown_model(model_id: str) -> Reply:
    return error_reply(
        404,
        f"The model `{model_id}` does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
        "model",
    )


def chat_reply(
    body: bytes,
    *,
    models: list[str],
    strict_model: bool,
    seq: int,
    tool_policy: ToolPolicy,
    detect_prompt_schema: bool,
    json_schema_support: JsonSchemaSupport,
) -> Reply:
    """Answer a chat-completions body (see the module docstring)."""
    try:
        chat = decode_chat_request(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return error_reply(400, f"Invalid request body: {exc}", "invalid_request_error")
    problem = request_problem(chat)
    if problem is not None:
        return error_reply(400, problem[0], "invalid_request_error", None, problem[1])
    if strict_model and chat.model is not None and chat.model not in models:
        return _unknown_model(chat.model)
    fmt = chat.response_format
    if fmt is not None and fmt.type == "json_schema" and json_schema_support != "native":
        if json_schema_support == "ignore":
            chat = msgspec.structs.replace(chat, response_format=None)
        else:
            status = 400 if json_schema_support == "error_400" else 500
            kind = "invalid_request_error" if status == 400 else "internal_server_error"
            message = "response_format type 'json_schema' is not supported by this server"
            return error_reply(status, message, kind, None, "response_format")
    completion = answer(
        chat,
        served_model=models[0],
        seq=seq,
        tool_policy=tool_policy,
        detect_prompt_schema=detect_prompt_schema,
    )
    if chat.stream:
        return Reply(200, sse_body(completion), {"content-type": "text/event-stream"})
    return Reply(200, completion)


def sse_body(completion: dict[str, Any]) -> bytes:
    """A completed answer as an OpenAI chat-completion-chunk event stream."""
    choice = completion["choices"][0]
    message = choice["message"]
    base = {k: completion[k] for k in ("id", "created", "model")}
    base["object"] = "chat.completion.chunk"
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    if message.get("tool_calls"):
        calls = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        deltas.append({"tool_calls": calls})
    elif message.get("content"):
        words = str(message["content"]).split(" ")
        deltas.extend({"content": w if i == 0 else " " + w} for i, w in enumerate(words))
    events = [
        {**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas
    ]
    events.append(
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]}
    )
    out = [b"data: " + msgspec.json.encode(e) + b"\n\n" for e in events]
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)
