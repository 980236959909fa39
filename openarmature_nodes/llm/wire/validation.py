"""Pre-send validation (spec llm-provider §3, §4, §5).

:func:`validate_request` checks everything the spec says must hold before a
request may leave the process: message order and per-role shape, content
blocks, tool-call id matching, unique tool names, valid tool schemas, the
``tool_choice`` rules, the response schema and the declared config types.
The first violation raises :class:`ProviderInvalidRequest` with a message
that points at the offending item (``messages[2] (tool): ...``). Nothing is
sent in that case.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from openarmature_nodes.llm.config import RuntimeConfig
from openarmature_nodes.llm.errors import ProviderInvalidRequest
from openarmature_nodes.llm.messages import (
    AssistantMessage,
    ImageBlock,
    InlineSource,
    RedactedThinkingBlock,
    SystemMessage,
    TextBlock,
    ThinkingBlock,
    Tool,
    ToolCall,
    ToolChoiceForce,
    ToolMessage,
    UrlSource,
    UserMessage,
)
from openarmature_nodes.llm.request import CompletionRequest

from .jsonschema import SchemaError, validator_for
from .structured import schema_info

__all__ = ["normalize_tool_choice", "validate_request"]

_DETAILS = frozenset({"auto", "low", "high"})
_CHOICES = frozenset({"auto", "required", "none"})


def _bad(message: str) -> ProviderInvalidRequest:
    return ProviderInvalidRequest(message)


def validate_request(request: CompletionRequest) -> dict[str, Tool]:
    """Validate ``request``; return its tools by name (empty when none)."""
    tools = _validate_tools(request.tools)
    _validate_messages(request.messages)
    _validate_tool_choice(request.tool_choice, tools)
    if request.config is not None:
        _validate_config(request.config)
    if request.response_schema is not None:
        try:
            schema_info(request.response_schema)
        except (ValueError, TypeError) as exc:
            raise _bad(f"response_schema: {exc}") from exc
    return tools


def _validate_messages(messages: Sequence[Any]) -> None:
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence) or not messages:
        raise _bad("messages must be a non-empty sequence of messages")
    call_ids: set[str] = set()
    seen_non_system = False
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if isinstance(msg, SystemMessage):
            if i != 0:
                raise _bad(
                    f"{where} (system): a system message is only allowed as the first message"
                )
            if not isinstance(msg.content, str) or not msg.content:
                raise _bad(f"{where} (system): content must be a non-empty string")
            continue
        if not seen_non_system and not isinstance(msg, UserMessage):
            raise _bad(
                f"{where}: the conversation must begin with a user message "
                "(after an optional system message)"
            )
        seen_non_system = True
        if isinstance(msg, UserMessage):
            _validate_user_content(msg.content, where)
        elif isinstance(msg, AssistantMessage):
            _validate_assistant(msg, where, call_ids)
        elif isinstance(msg, ToolMessage):
            if not isinstance(msg.content, str):
                raise _bad(
                    f"{where} (tool): content must be a string (serialize structured results)"
                )
            if msg.tool_call_id not in call_ids:
                raise _bad(
                    f"{where} (tool): tool_call_id {msg.tool_call_id!r} "
                    "matches no earlier assistant tool call"
                )
        else:
            raise _bad(
                f"{where}: expected a SystemMessage, UserMessage, AssistantMessage or ToolMessage, "
                f"got {type(msg).__name__}"
            )
    if not isinstance(messages[-1], UserMessage | ToolMessage):
        raise _bad(
            f"the last message must be a user or tool message, got {type(messages[-1]).__name__}"
        )


def _validate_user_content(content: Any, where: str) -> None:
    if isinstance(content, str):
        if not content:
            raise _bad(f"{where} (user): content must not be empty")
        return
    if not isinstance(content, Sequence) or not content:
        raise _bad(
            f"{where} (user): content must be a non-empty string or a non-empty sequence of blocks"
        )
    for j, block in enumerate(content):
        bwhere = f"{where}.content[{j}]"
        if isinstance(block, TextBlock):
            _check_text(block.text, bwhere)
        elif isinstance(block, ImageBlock):
            _validate_image(block, bwhere)
        else:
            raise _bad(
                f"{bwhere}: a user message carries only text and image blocks, "
                f"got {type(block).__name__}"
            )


def _check_text(text: Any, where: str) -> None:
    if not isinstance(text, str) or not text:
        raise _bad(f"{where}: a text block needs non-empty text")


def _validate_image(block: ImageBlock, where: str) -> None:
    source = block.source
    if isinstance(source, UrlSource):
        if not isinstance(source.url, str) or not source.url:
            raise _bad(f"{where}: an image URL source needs a non-empty url")
    elif isinstance(source, InlineSource):
        if not isinstance(source.base64_data, str) or not source.base64_data:
            raise _bad(f"{where}: an inline image source needs non-empty base64_data")
        mt = block.media_type
        if not isinstance(mt, str) or not mt.startswith("image/") or len(mt) <= len("image/"):
            raise _bad(
                f"{where}: an inline image needs a media_type such as 'image/png' (got {mt!r})"
            )
    else:
        raise _bad(
            f"{where}: an image block needs a source: "
            "UrlSource(url=...) or InlineSource(base64_data=...)"
        )
    if block.detail is not None and block.detail not in _DETAILS:
        raise _bad(f"{where}: detail must be one of 'auto', 'low', 'high' (got {block.detail!r})")


def _validate_assistant(msg: AssistantMessage, where: str, call_ids: set[str]) -> None:
    calls = msg.tool_calls
    if calls is not None:
        if isinstance(calls, str) or not isinstance(calls, Sequence):
            raise _bad(f"{where} (assistant): tool_calls must be a sequence of ToolCall")
        local: set[str] = set()
        for j, call in enumerate(calls):
            cwhere = f"{where}.tool_calls[{j}]"
            if not isinstance(call, ToolCall):
                raise _bad(f"{cwhere}: expected a ToolCall, got {type(call).__name__}")
            if not isinstance(call.id, str) or not call.id:
                raise _bad(f"{cwhere}: id must be a non-empty string")
            if call.id in local:
                raise _bad(f"{cwhere}: duplicate tool call id {call.id!r} in one message")
            if not isinstance(call.name, str) or not call.name:
                raise _bad(f"{cwhere}: name must be a non-empty string")
            if not isinstance(call.arguments, dict):
                raise _bad(
                    f"{cwhere}: arguments must be a JSON object (repair degraded tool calls first)"
                )
            local.add(call.id)
        call_ids.update(local)
    content = msg.content
    if content is None or isinstance(content, str):
        if not content and not calls:
            raise _bad(f"{where} (assistant): needs non-empty content or at least one tool call")
        return
    if not isinstance(content, Sequence) or (not content and not calls):
        raise _bad(
            f"{where} (assistant): content must be a string or a non-empty sequence of blocks"
        )
    for j, block in enumerate(content):
        bwhere = f"{where}.content[{j}]"
        if isinstance(block, TextBlock | ThinkingBlock):
            _check_text(block.text, bwhere)
        elif isinstance(block, RedactedThinkingBlock):
            if not isinstance(block.data, str):
                raise _bad(f"{bwhere}: a redacted thinking block needs its data string")
        else:
            raise _bad(
                f"{bwhere}: an assistant message carries text and thinking blocks only, "
                f"got {type(block).__name__}"
            )


def _validate_tools(tools: Any) -> dict[str, Tool]:
    if tools is None:
        return {}
    if isinstance(tools, str) or not isinstance(tools, Sequence):
        raise _bad("tools must be a sequence of Tool")
    by_name: dict[str, Tool] = {}
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, Tool):
            raise _bad(f"{where}: expected a Tool, got {type(tool).__name__}")
        if not isinstance(tool.name, str) or not tool.name:
            raise _bad(f"{where}: name must be a non-empty string")
        if tool.name in by_name:
            raise _bad(f"{where}: duplicate tool name {tool.name!r}")
        if not isinstance(tool.description, str):
            raise _bad(f"{where} ({tool.name}): description must be a string")
        if not isinstance(tool.strict, bool):
            raise _bad(f"{where} ({tool.name}): strict must be True or False")
        params = tool.parameters
        if not isinstance(params, Mapping) or params.get("type", "object") != "object":
            raise _bad(
                f"{where} ({tool.name}): parameters must be a JSON Schema object with type 'object'"
            )
        try:
            validator_for(params)
        except SchemaError as exc:
            raise _bad(f"{where} ({tool.name}): invalid parameters schema: {exc}") from exc
        by_name[tool.name] = tool
    return by_name


def normalize_tool_choice(choice: Any) -> Any:
    """Turn ``{"type": "tool", "name": X}`` into :class:`ToolChoiceForce`; other
    values pass through (and are checked by :func:`validate_request`)."""
    if (
        isinstance(choice, Mapping)
        and choice.get("type") == "tool"
        and isinstance(choice.get("name"), str)
    ):
        return ToolChoiceForce(name=choice["name"])
    return choice


def _validate_tool_choice(choice: Any, tools: Mapping[str, Tool]) -> None:
    if choice is None:
        return
    if isinstance(choice, str):
        if choice not in _CHOICES:
            raise _bad(
                "tool_choice must be 'auto', 'required', 'none' or ToolChoiceForce(name=...), "
                f"got {choice!r}"
            )
        if choice == "required" and not tools:
            raise _bad("tool_choice='required' needs a non-empty tools list")
        return
    if isinstance(choice, ToolChoiceForce):
        if not tools:
            raise _bad(f"tool_choice forces tool {choice.name!r} but no tools were given")
        if choice.name not in tools:
            raise _bad(
                f"tool_choice forces tool {choice.name!r}, which is not in tools {sorted(tools)}"
            )
        return
    raise _bad(f"tool_choice has an unsupported shape: {choice!r}")


_NUMBER_FIELDS = ("temperature", "top_p", "frequency_penalty", "presence_penalty")
_INT_FIELDS = ("max_tokens", "seed")


_CHECKED_CONFIGS: dict[int, RuntimeConfig] = {}


def _validate_config(config: Any) -> None:
    if not isinstance(config, RuntimeConfig):
        raise _bad(f"config must be a RuntimeConfig, got {type(config).__name__}")
    extras = config.extras  # a mutable mapping: checked on every call, cheaply when empty
    if not isinstance(extras, Mapping) or (extras and not all(isinstance(k, str) for k in extras)):
        raise _bad("config.extras must be a mapping with string keys")
    if _CHECKED_CONFIGS.get(id(config)) is config:
        return  # frozen: its declared fields were checked when first seen
    for name in _NUMBER_FIELDS:
        v = getattr(config, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise _bad(f"config.{name} must be a number, got {v!r}")
    for name in _INT_FIELDS:
        v = getattr(config, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise _bad(f"config.{name} must be an integer, got {v!r}")
    stops = config.stop_sequences
    if stops is not None and (
        isinstance(stops, str)
        or not isinstance(stops, Sequence)
        or not all(isinstance(s, str) for s in stops)
    ):
        raise _bad("config.stop_sequences must be a list of strings")
    if len(_CHECKED_CONFIGS) >= 256:
        _CHECKED_CONFIGS.clear()
    _CHECKED_CONFIGS[id(config)] = config
