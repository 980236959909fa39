"""The OpenAI chat-completions request shape, as far as the embedded server reads it.

Decoded with one typed ``msgspec`` decoder; unknown fields are ignored (a real
server ignores what it does not support), wrong types give a clear error that
the server turns into a 400 ``invalid_request_error``.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "ChatRequest",
    "ContentPart",
    "FunctionDef",
    "JsonSchemaFormat",
    "Message",
    "NamedToolChoice",
    "ResponseFormat",
    "ToolCallIn",
    "ToolDef",
    "decode_chat_request",
    "message_text",
]


class ContentPart(msgspec.Struct):
    type: str
    text: str | None = None


class FunctionCallIn(msgspec.Struct):
    name: str = ""
    arguments: str = ""


class ToolCallIn(msgspec.Struct):
    id: str = ""
    type: str = "function"
    function: FunctionCallIn | None = None


class Message(msgspec.Struct):
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None


class FunctionDef(msgspec.Struct):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolDef(msgspec.Struct):
    function: FunctionDef
    type: str = "function"


class NamedFunction(msgspec.Struct):
    name: str


class NamedToolChoice(msgspec.Struct):
    function: NamedFunction
    type: str = "function"


class JsonSchemaFormat(msgspec.Struct):
    name: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None


class ResponseFormat(msgspec.Struct):
    type: str
    json_schema: JsonSchemaFormat | None = None
    # llama.cpp's server accepts {"type": "json_object", "schema": {...}}.
    schema: dict[str, Any] | None = None


class ChatRequest(msgspec.Struct):
    messages: list[Message]
    model: str | None = None
    tools: list[ToolDef] | None = None
    tool_choice: str | NamedToolChoice | None = None
    response_format: ResponseFormat | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stream: bool = False


_decoder = msgspec.json.Decoder(ChatRequest)


def decode_chat_request(body: bytes) -> ChatRequest:
    """Decode a chat-completions body; raises ``msgspec.DecodeError`` /
    ``msgspec.ValidationError`` with a message naming the bad field."""
    return _decoder.decode(body)


def message_text(message: Message) -> str:
    """The text of a message: the string content, or its text parts joined."""
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return " ".join(part.text for part in content if part.text)
