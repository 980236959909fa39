"""Streaming pieces of the llm-provider adapter (llm-provider §6 *Streaming
assembly*, §8.1.6).

- :func:`sse_reply`: the mock's answer for ``mock_provider.responses[].stream_body``:
  a ``text/event-stream`` body served through ``httpx.MockTransport`` one
  event per body piece, each ``data:`` line carrying one chunk (or ``[DONE]``).
- :func:`equivalent_body`: an independent reference assembly of the chunks
  into the non-streamed ``chat.completion`` body they stand for. The
  ``*_equal_non_streamed_*`` invariants send that body through the real
  provider's *atomic* path and compare the two ``Response`` records.
- :data:`STREAM_INVARIANTS`: the fixture invariants about streaming.
- :func:`check_stream_raw`: ``raw_check.required_keys`` for a streamed reply.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import httpx
import msgspec

from openarmature_nodes.llm import TextBlock, ThinkingBlock
from openarmature_nodes.llm.wire.decode import decode_chat_response

if TYPE_CHECKING:
    from tests.conformance.adapters.llm_provider import Outcome


class _Events(httpx.AsyncByteStream):
    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self._pieces:
            yield piece


def sse_reply(status: int, chunks: list[Any], headers: dict[str, str] | None) -> httpx.Response:
    pieces = [
        b"data: " + (c.encode() if isinstance(c, str) else msgspec.json.encode(c)) + b"\n\n"
        for c in chunks
    ]
    hdrs = {"content-type": "text/event-stream", **(headers or {})}
    return httpx.Response(status, headers=hdrs, stream=_Events(pieces))


def _chunks(o: Outcome) -> list[dict[str, Any]]:
    body = o.served[-1].get("stream_body") if o.served else None
    assert isinstance(body, list), f"{o.where}: the reply was not streamed"
    return [c for c in body if isinstance(c, dict)]


def _deltas(chunks: list[dict[str, Any]], key: str) -> list[str]:
    out = []
    for c in chunks:
        for choice in c.get("choices") or []:
            value = (choice.get("delta") or {}).get(key)
            if isinstance(value, str) and value:
                out.append(value)
    return out


def _last_finish(chunks: list[dict[str, Any]]) -> Any:
    finish = None
    for c in chunks:
        for choice in c.get("choices") or []:
            if choice.get("finish_reason") is not None:
                finish = choice["finish_reason"]
    return finish


def equivalent_body(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The atomic body the chunks stand for (reference assembly)."""
    calls: dict[int, dict[str, Any]] = {}
    for c in chunks:
        for choice in c.get("choices") or []:
            for tc in (choice.get("delta") or {}).get("tool_calls") or []:
                slot = calls.setdefault(
                    tc["index"], {"id": None, "type": "function", "name": "", "args": ""}
                )
                fn = tc.get("function") or {}
                slot["id"] = slot["id"] or tc.get("id")
                slot["name"] = slot["name"] or fn.get("name") or ""
                slot["args"] += fn.get("arguments") or ""
    content = "".join(_deltas(chunks, "content"))
    message: dict[str, Any] = {"role": "assistant", "content": content or None}
    reasoning = "".join(_deltas(chunks, "reasoning_content") + _deltas(chunks, "reasoning"))
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = [
            {
                "id": s["id"],
                "type": "function",
                "function": {"name": s["name"], "arguments": s["args"]},
            }
            for s in calls.values()
        ]
    elif message["content"] is None:
        message["content"] = ""
    body: dict[str, Any] = {
        "choices": [{"index": 0, "message": message, "finish_reason": _last_finish(chunks)}]
    }
    for c in chunks:
        if c.get("usage") is not None:
            body["usage"] = c["usage"]
    return body


def _atomic_equivalent(o: Outcome) -> Any:
    from tests.conformance.adapters.llm_provider import build_tools

    built = build_tools(o.spec.get("tools"), f"{o.where}.tools") or []
    return decode_chat_response(
        200,
        {"content-type": "application/json"},
        msgspec.json.encode(equivalent_body(_chunks(o))),
        tools={t.name: t for t in built},
        response_schema=o.spec.get("response_schema"),
    )


def _equal_to_atomic(o: Outcome, model: str) -> None:
    r = o.response
    assert o.error is None and r is not None, f"{o.where}: got {o.error!r}"
    atomic = _atomic_equivalent(o)
    for name in ("message", "finish_reason", "usage", "parsed"):
        assert getattr(r, name) == getattr(atomic, name), (
            f"{o.where}: streamed {name} {getattr(r, name)!r} != atomic {getattr(atomic, name)!r}"
        )


def _sends_stream(o: Outcome, model: str) -> None:
    assert o.wire, f"{o.where}: no request was sent"
    wire = msgspec.json.decode(o.wire[-1])
    assert wire.get("stream") is True, f"{o.where}: wire stream is {wire.get('stream')!r}"
    assert wire.get("stream_options") == {"include_usage": True}, f"{o.where}: stream_options"


def _text_of(content: Any, kind: type) -> str:
    if isinstance(content, str):
        return content if kind is TextBlock else ""
    return "".join(b.text for b in content or [] if isinstance(b, kind))


def _content_concatenation(o: Outcome, model: str) -> None:
    assert o.response is not None, f"{o.where}: got {o.error!r}"
    want = "".join(_deltas(_chunks(o), "content"))
    assert _text_of(o.response.message.content, TextBlock) == want, f"{o.where}: content"
    events = "".join(d.text for d in o.tokens if d.kind == "content")
    assert events == want, f"{o.where}: content token events {o.tokens!r}"
    assert [d.index for d in o.tokens] == list(range(len(o.tokens))), f"{o.where}: indexes"


def _reasoning_block(o: Outcome, model: str) -> None:
    assert o.response is not None, f"{o.where}: got {o.error!r}"
    chunks = _chunks(o)
    want = "".join(_deltas(chunks, "reasoning_content") + _deltas(chunks, "reasoning"))
    content = o.response.message.content
    assert isinstance(content, list) and isinstance(content[0], ThinkingBlock), f"{o.where}"
    assert content[0].text == want, f"{o.where}: thinking block {content[0]!r}"
    events = "".join(d.text for d in o.tokens if d.kind == "reasoning")
    assert events == want, f"{o.where}: reasoning token events {o.tokens!r}"


BASELINE_COUNTERS = ("prompt_tokens", "completion_tokens", "total_tokens")


def reported(value: Any) -> int | None:
    """A usage counter as llm-provider §7 *Malformed usage counter* reads it: a
    non-negative integer stands; anything else (a string, a negative, a boolean,
    a float) is not reported. Never coerced."""
    return value if type(value) is int and value >= 0 else None


def terminal_usage(o: Outcome) -> Any:
    """The usage block of the stream's terminal usage chunk, as the server sent it."""
    usage = [c["usage"] for c in _chunks(o) if c.get("usage") is not None]
    assert usage, f"{o.where}: the stream has no usage chunk"
    return usage[-1]


def _terminal_sourced(o: Outcome, model: str) -> None:
    """finish_reason and usage come from the terminal chunks (§6, §8.1.6): each
    baseline counter is the terminal chunk's, ``null`` where that one is malformed
    (§7), and ``raw.usage`` is the terminal usage block verbatim."""
    r = o.response
    assert r is not None, f"{o.where}: got {o.error!r}"
    assert r.finish_reason == _last_finish(_chunks(o)), f"{o.where}: finish_reason"
    sent = terminal_usage(o)
    assert isinstance(sent, dict), f"{o.where}: the usage block is not an object: {sent!r}"
    for name in BASELINE_COUNTERS:
        got, want = getattr(r.usage, name), reported(sent.get(name))
        assert got == want and type(got) is type(want), (
            f"{o.where}: usage.{name} is {got!r}; the terminal chunk sent {sent.get(name)!r}")
    assert r.raw.get("usage") == sent, f"{o.where}: raw usage {r.raw.get('usage')!r} not verbatim"


def _tool_args_parse(o: Outcome, model: str) -> None:
    r = o.response
    assert r is not None and r.message.tool_calls, f"{o.where}: got {o.error!r}"
    body = equivalent_body(_chunks(o))
    wires = body["choices"][0]["message"]["tool_calls"]
    for call, wire in zip(r.message.tool_calls, wires, strict=True):
        assert call.arguments == msgspec.json.decode(wire["function"]["arguments"]), o.where


STREAM_INVARIANTS: dict[str, Callable[[Outcome, str], None]] = {
    "streamed_request_sends_stream_true_and_include_usage": _sends_stream,
    "assembled_content_is_ordered_concatenation_of_deltas": _content_concatenation,
    "usage_and_finish_reason_sourced_from_terminal_chunks": _terminal_sourced,
    "finish_reason_tool_calls_sourced_from_terminal_content_chunk": _terminal_sourced,
    "assembled_response_equals_non_streamed_equivalent": _equal_to_atomic,
    "reassembled_tool_calls_equal_non_streamed_equivalent": _equal_to_atomic,
    "streamed_reasoning_response_shape_identical_to_non_streamed": _equal_to_atomic,
    "streamed_tool_call_arguments_reassemble_and_parse": _tool_args_parse,
    "reasoning_delta_assembles_into_thinking_block": _reasoning_block,
    "content_delta_assembles_into_text_block": _content_concatenation,
}


def check_stream_raw(o: Outcome, keys: list[str], where: str) -> None:
    """``raw_check.required_keys`` for a streamed reply: each top-level key
    holds the chunks' value (``usage``: the usage chunk's, verbatim);
    ``choices`` holds the assembled choice."""
    assert o.response is not None
    raw = o.response.raw
    chunks = _chunks(o)
    for k in keys:
        assert k in raw, f"{where}.raw lacks {k!r}"
        if k == "choices":
            assert isinstance(raw[k], list) and len(raw[k]) == 1, f"{where}.raw.choices"
            continue
        values = [c[k] for c in chunks if c.get(k) is not None]
        want = values[-1] if k == "usage" else values[0]
        assert raw[k] == want, f"{where}.raw.{k}: {raw[k]!r} is not the server's {want!r}"
