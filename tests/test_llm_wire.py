"""The sans-IO wire mapping, without any I/O."""

from __future__ import annotations

from email.utils import formatdate
from typing import Any

import msgspec
import pytest

from openarmature_nodes.llm import (
    AssistantMessage,
    CompletionRequest,
    ImageBlock,
    InlineSource,
    RedactedThinkingBlock,
    RuntimeConfig,
    StructuredOutputInvalid,
    TextBlock,
    ThinkingBlock,
    Tool,
    UrlSource,
    UserMessage,
    validate_structured,
)
from openarmature_nodes.llm.wire import decode_chat_response, encode_chat_request
from openarmature_nodes.llm.wire.error_reply import parse_retry_after
from openarmature_nodes.llm.wire.structured import inject_schema_directive, schema_info

NOW = 1_800_000_000.0


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "3"}, now=NOW) == 3.0
    assert parse_retry_after({"retry-after": formatdate(NOW + 30, usegmt=True)}, now=NOW) == 30.0
    assert parse_retry_after({"retry-after": formatdate(NOW - 30, usegmt=True)}, now=NOW) == 0.0
    assert parse_retry_after({"retry-after-ms": "1500"}, now=NOW) == 1.5
    assert parse_retry_after({"retry-after-ms": "junk", "retry-after": "2"}, now=NOW) == 2.0
    for junk in ("", "soon", "Mon, 99 Foo 2020", "inf", "nan", "-1"):
        assert parse_retry_after({"retry-after": junk}, now=NOW) is None
    assert parse_retry_after({}, now=NOW) is None


def _req(**kw: Any) -> CompletionRequest:
    return CompletionRequest(kw.pop("messages", [UserMessage("hi")]), **kw)


def test_wire_bytes_stable_across_dict_orders() -> None:
    a = _req(
        tools=[
            Tool(
                "t",
                "d",
                {
                    "type": "object",
                    "properties": {"b": {"type": "string"}, "a": {"type": "integer"}},
                    "required": ["a"],
                },
            )
        ],
        config=RuntimeConfig(temperature=0.5, extras={"zeta": 1, "alpha": {"y": 1, "x": 2}}),
    )
    b = _req(
        tools=[
            Tool(
                "t",
                "d",
                {
                    "required": ["a"],
                    "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
                    "type": "object",
                },
            )
        ],
        config=RuntimeConfig(extras={"alpha": {"x": 2, "y": 1}, "zeta": 1}, temperature=0.5),
    )
    assert encode_chat_request("m", a) == encode_chat_request("m", b)


def test_content_blocks_and_thinking_strip() -> None:
    msgs = [
        UserMessage(
            [
                TextBlock("look", signature="s"),
                ImageBlock(UrlSource("https://x/a.png"), detail="low"),
                ImageBlock(InlineSource("QUJD"), media_type="image/png"),
            ]
        ),
        AssistantMessage(
            [ThinkingBlock("hmm", "sig"), RedactedThinkingBlock("zzz"), TextBlock("seen")]
        ),
        UserMessage("and?"),
    ]
    body = msgspec.json.decode(encode_chat_request("m", _req(messages=msgs)))
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}},
            ],
        },
        {"role": "assistant", "content": "seen"},
        {"role": "user", "content": "and?"},
    ]


def test_decode_is_sans_io_and_keeps_raw() -> None:
    body = {
        "id": "x",
        "choices": [
            {
                "message": {
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
                },
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": "1"},
    }
    r = decode_chat_response(200, {}, msgspec.json.encode(body))
    assert r.message.content == "ab" and r.raw == body and r.usage.prompt_tokens is None


def test_validate_structured_is_the_shared_validator() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0}},
        "required": ["n"],
    }
    assert validate_structured('{"n": 2}', schema) == {"n": 2}
    with pytest.raises(StructuredOutputInvalid) as info:
        validate_structured('{"n": -1}', schema, finish_reason="stop", usage=None)
    assert "$.n" in info.value.error_message and info.value.output_content == '{"n": -1}'
    with pytest.raises(StructuredOutputInvalid, match="no content"):
        validate_structured(None, schema)


def test_schema_info_name_and_strictness() -> None:
    loose = {"type": "object", "properties": {"a": {"type": "string"}}}
    strict = {
        "type": "object",
        "title": "Thing",
        "properties": {"a": {"type": "string"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    assert schema_info(loose).strict is False and schema_info(loose).name.startswith("response_")
    assert schema_info(strict).strict is True and schema_info(strict).name == "Thing"
    assert (
        schema_info(dict(loose)).name == schema_info(loose).name
    )  # stable across identical schemas


def test_directive_does_not_touch_caller_list() -> None:
    msgs = [UserMessage("q")]
    out = inject_schema_directive(msgs, '{"type":"object"}')
    assert msgs == [UserMessage("q")] and len(out) == 2 and '{"type":"object"}' in out[0].content
