"""Sans-IO assembly of a streamed Chat Completion (spec llm-provider §6, §8.1.6).

With ``stream: true`` an OpenAI-compatible server answers with Server-Sent
Events, one ``chat.completion.chunk`` per ``data:`` line, ended by
``data: [DONE]``. :class:`ChatStreamAssembler` takes the body bytes as they
arrive and

- returns, per piece, the text deltas it completed (``("content", text)`` or
  ``("reasoning", text)``), for the caller to report as token events;
- accumulates the answer: content deltas are concatenated; reasoning deltas
  (``delta.reasoning_content``, or ``delta.reasoning`` on current vLLM) are
  concatenated into one thinking block; tool-call fragments are reassembled
  by their ``index``; the last non-null ``finish_reason`` and the last
  non-null ``usage`` (the final empty-``choices`` chunk) are kept;
- finally builds the :class:`Response` through the same function as the
  atomic path (:func:`~openarmature_nodes.llm.wire.decode.response_from_raw`),
  from an equivalent ``chat.completion`` body. Validation of tool calls and of
  structured output, and the handling of malformed usage counters, are
  therefore identical whether or not the call streamed.

``Response.raw`` of a streamed call: the top-level fields of the chunks as
the server sent them (``id``, ``object`` ``"chat.completion.chunk"``,
``created``, ``model``, ``system_fingerprint`` ...; the first value of each
wins), ``usage`` verbatim from the chunk that carried it, and one assembled
``choices[0]`` with ``message`` (``role``, ``content``, ``tool_calls``, the
reasoning under the server's own field name), ``finish_reason`` and, when
the server streamed them, the concatenated ``logprobs.content``.

Real servers, tolerated: llama.cpp repeats the tool call's ``id``, ``type``
and ``function.name`` in every chunk and sends ``null`` delta fields in the
last one; llama-cpp-python ignores ``include_usage`` (``usage`` stays
unreported); vLLM has sent the same reasoning text under both field names.

Failures are categorized, never a ``KeyError`` or a hang:
``ProviderInvalidResponse`` for a chunk that is not JSON or not a chunk, or
an empty 200 body; ``ProviderUnavailable`` (transient) for a stream that ends
before a ``finish_reason`` (cut off by the server or a proxy). An ``error``
event (``{"error": {...}}``) before any answer maps like the same error body
on a non-2xx reply; after part of the answer it ends the reply with
``finish_reason: "error"`` (spec §6), keeping what arrived.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import msgspec

from openarmature_nodes.llm.errors import ProviderInvalidResponse, ProviderUnavailable
from openarmature_nodes.llm.messages import Tool
from openarmature_nodes.llm.response import Response
from openarmature_nodes.llm.tokens import DeltaKind

from .decode import decode_json, response_from_raw
from .error_reply import error_from_reply
from .sse import SSEEvent, SSEParser

__all__ = ["ChatStreamAssembler", "Delta", "Scrubber"]

Delta = tuple[DeltaKind, str]
_NO_DELTAS: Sequence[Delta] = ()
_decode_any = msgspec.json.Decoder()

# --- chunk shapes (loosely typed where servers differ; checked by hand) ----------------


class _ChunkFunction(msgspec.Struct):
    name: Any = None
    arguments: Any = None


class _ChunkToolCall(msgspec.Struct):
    index: Any = None
    id: Any = None
    type: Any = None
    function: _ChunkFunction | None = None


class _ChunkDelta(msgspec.Struct):
    content: Any = None
    reasoning_content: Any = None
    reasoning: Any = None
    tool_calls: list[_ChunkToolCall] | None = None


class _ChunkChoice(msgspec.Struct):
    index: Any = 0
    delta: _ChunkDelta | None = None
    finish_reason: Any = None
    logprobs: Any = None


class _Chunk(msgspec.Struct):
    choices: list[_ChunkChoice] | None = None


class _ToolCallParts:
    """One tool call being reassembled."""

    __slots__ = ("arguments", "id", "name", "type")

    def __init__(self) -> None:
        self.id: str | None = None
        self.name = ""
        self.type: str | None = None
        self.arguments: list[str] = []

    def add(self, call: _ChunkToolCall) -> None:
        if isinstance(call.id, str) and call.id and self.id is None:
            self.id = call.id  # first wins: llama.cpp repeats it in every chunk
        if isinstance(call.type, str) and self.type is None:
            self.type = call.type
        fn = call.function
        if fn is None:
            return
        name = fn.name
        if isinstance(name, str) and name and name != self.name:
            # A repeat of the whole name (llama.cpp) is skipped; a server
            # that streams the name in pieces gets them concatenated.
            self.name = name if not self.name else self.name + name
        args = fn.arguments
        if isinstance(args, str):
            if args:
                self.arguments.append(args)
        elif args is not None:  # an object instead of JSON text
            self.arguments.append(msgspec.json.encode(args).decode())

    def wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type or "function",
            "function": {"name": self.name, "arguments": "".join(self.arguments)},
        }


def _invalid(reason: str, cause: BaseException | None = None) -> ProviderInvalidResponse:
    err = ProviderInvalidResponse(f"unusable chat completion stream: {reason}")
    if cause is not None:
        err.__cause__ = cause
    return err


class Scrubber(Protocol):
    """Takes secrets out of server text (see :class:`ChatStreamAssembler`)."""

    def body(self, value: bytes) -> bytes:
        """``value`` without secrets (``value`` itself when it holds none)."""
        ...

    def text(self, value: str) -> str:
        """``value`` without secrets."""
        ...


class ChatStreamAssembler:
    """Bytes of one streamed reply in, token deltas and a :class:`Response` out.

    ``tools`` (by name) and ``response_schema`` are the call's, used for the
    final validation exactly as on the atomic path. ``url`` is only for
    error messages. ``scrub`` (a :class:`Scrubber`, e.g. the provider's
    :class:`~openarmature_nodes.llm.redact.Redactor`) takes secrets out of each
    event before it is decoded and out of the assembled text (a secret echoed
    across several deltas reassembles there). Use::

        for piece in body:                      # until .done or end of body
            for kind, text in asm.feed(piece):
                report(kind, text)
        asm.feed_eof()                          # when the body ended first
        response = asm.response()
    """

    __slots__ = (
        "_calls",
        "_chunks",
        "_content",
        "_finish",
        "_logprobs",
        "_meta",
        "_parser",
        "_reasoning",
        "_reasoning_key",
        "_response_schema",
        "_scrub",
        "_url",
        "_usage",
        "done",
        "error",
        "tools",
    )

    def __init__(
        self,
        *,
        tools: Mapping[str, Tool] | None = None,
        response_schema: Any = None,
        url: str = "",
        max_event_bytes: int = 16 * 1024 * 1024,
        scrub: Scrubber | None = None,
    ) -> None:
        self._scrub = scrub
        self.tools = tools
        """The call's tools by name (checked in :meth:`response`)."""
        self._response_schema = response_schema
        self._url = url
        self._parser = SSEParser(max_event_bytes=max_event_bytes)
        self._meta: dict[str, Any] = {}
        self._content: list[str] | None = None
        self._reasoning: list[str] = []
        self._reasoning_key = "reasoning_content"
        self._calls: dict[Any, _ToolCallParts] = {}
        self._finish: Any = None
        self._usage: Any = None
        self._logprobs: list[Any] | None = None
        self._chunks = 0
        self.done = False
        """``True`` once the stream is over (``[DONE]``, or an error event):
        stop reading and call :meth:`response`."""
        self.error: Any = None
        """The ``error`` object of an error event that ended the stream."""

    # -- input -----------------------------------------------------------------------
    @property
    def chunks(self) -> int:
        """Completion chunks parsed so far (comments and blank events excluded)."""
        return self._chunks

    def feed(self, data: bytes) -> Sequence[Delta]:
        """Parse a piece of the body; return the text deltas it completed."""
        if self.done:
            return _NO_DELTAS
        out: list[Delta] = []
        for event in self._parser.feed(data):
            self.feed_event(event, out)
            if self.done:
                break
        return out

    def feed_each(self, data: bytes, report: Callable[[DeltaKind, str], object]) -> None:
        """Parse a piece of the body, calling ``report(kind, text)`` for each
        text delta as soon as its event is applied, before the next event of
        the piece is parsed (:meth:`feed` returns them all at the end). An
        exception ``report`` raises propagates; the rest of the piece is then
        not parsed (the call is over)."""
        if self.done:
            return
        out: list[Delta] = []
        for event in self._parser.iter_feed(data):
            self.feed_event(event, out)
            if out:
                for kind, text in out:
                    report(kind, text)
                out.clear()
            if self.done:
                break

    def scrubbed(self, data: bytes) -> bytes:
        """``data`` (a whole body read at once) without the secrets this assembler
        takes out of events."""
        return data if self._scrub is None else self._scrub.body(data)

    def feed_eof(self) -> Sequence[Delta]:
        """The body ended; dispatch an event left without its blank line."""
        out: list[Delta] = []
        if not self.done:
            for event in self._parser.close():
                self.feed_event(event, out)
                if self.done:
                    break
        return out

    def feed_event(self, event: SSEEvent, out: list[Delta]) -> None:
        """Apply one server-sent event, appending its deltas to ``out``."""
        data = event.data
        if data == b"[DONE]" or (len(data) < 64 and data.strip() == b"[DONE]"):
            self.done = True
            return
        if self._scrub is not None:
            data = self._scrub.body(data)
        try:
            raw = decode_json(data)
        except msgspec.DecodeError as exc:
            raise _invalid(f"event {self._chunks} is not JSON ({exc})", exc) from exc
        if not isinstance(raw, dict):
            raise _invalid(f"event {self._chunks} is not a JSON object")
        self._chunks += 1
        if event.event == "error" or raw.get("error") is not None:
            self._on_error(raw if "error" in raw else {"error": raw}, data)
            return
        try:
            chunk = msgspec.convert(raw, _Chunk)
        except msgspec.ValidationError as exc:
            raise _invalid(str(exc), exc) from exc
        meta = self._meta
        if not raw.keys() <= meta.keys():  # a key not seen before (the first chunk)
            for key, value in raw.items():
                if key not in meta:
                    meta[key] = value
        usage = raw.get("usage")
        if usage is not None:
            self._usage = usage
        for choice in chunk.choices or ():
            if choice.index in (0, None):
                self._on_choice(choice, out)

    def _on_choice(self, choice: _ChunkChoice, out: list[Delta]) -> None:
        delta = choice.delta
        if delta is not None:
            reasoning = delta.reasoning_content
            key = "reasoning_content"
            if not (isinstance(reasoning, str) and reasoning):
                reasoning, key = delta.reasoning, "reasoning"
            if isinstance(reasoning, str) and reasoning:
                if not self._reasoning:
                    self._reasoning_key = key
                self._reasoning.append(reasoning)
                out.append(("reasoning", reasoning))
            content = delta.content
            if isinstance(content, str):
                if self._content is None:
                    self._content = []
                if content:
                    self._content.append(content)
                    out.append(("content", content))
            elif content is not None:
                raise _invalid(f"delta.content is a {type(content).__name__}, not text")
            if delta.tool_calls:
                self._on_tool_calls(delta.tool_calls)
        if choice.finish_reason is not None:
            self._finish = choice.finish_reason
        logprobs = choice.logprobs
        if isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
            if self._logprobs is None:
                self._logprobs = []
            self._logprobs.extend(logprobs["content"])

    def _on_tool_calls(self, calls: list[_ChunkToolCall]) -> None:
        for call in calls:
            key = call.index
            if not isinstance(key, int) or isinstance(key, bool):
                key = self._index_without_index(call)
            parts = self._calls.get(key)
            if parts is None:
                parts = self._calls[key] = _ToolCallParts()
            parts.add(call)

    def _index_without_index(self, call: _ChunkToolCall) -> Any:
        """Servers that omit ``index``: a new ``id`` starts a call, anything
        else continues the latest one."""
        if isinstance(call.id, str) and call.id:
            for key, parts in self._calls.items():
                if parts.id == call.id:
                    return key
            return ("no-index", len(self._calls))
        return next(reversed(self._calls)) if self._calls else ("no-index", 0)

    def _on_error(self, raw: dict[str, Any], data: bytes) -> None:
        self.done = True
        self.error = raw.get("error")
        if self._content or self._reasoning or self._calls:
            self._finish = "error"  # §6: a degraded but usable reply
            return
        err = self.error
        code = err.get("code") if isinstance(err, dict) else None
        status = code if type(code) is int and 400 <= code <= 599 else 500
        raise error_from_reply(status, {}, data, url=self._url)

    # -- output ----------------------------------------------------------------------
    def response(self) -> Response:
        """The assembled :class:`Response` (raises if the stream was incomplete)."""
        if self._finish is None:
            if not self._chunks:
                raise _invalid("the body held no chunks")
            raise ProviderUnavailable(
                f"the stream from {self._url or 'the server'} ended before the reply was "
                f"complete ({self._chunks} chunks, no finish_reason"
                f"{', ended by [DONE]' if self.done else ''})"
            )
        return response_from_raw(
            self.raw(), tools=self.tools, response_schema=self._response_schema
        )

    def raw(self) -> dict[str, Any]:
        """The assembled ``chat.completion``-shaped body (see the module docs)."""
        message: dict[str, Any] = {"role": "assistant"}
        calls = [parts.wire() for parts in self._calls.values()]
        text = "".join(self._content) if self._content is not None else None
        scrub = self._scrub
        if scrub is not None:
            text = scrub.text(text) if text else text
            for call in calls:
                call["function"]["arguments"] = scrub.text(call["function"]["arguments"])
        if calls:
            message["content"] = text or None
            message["tool_calls"] = calls
        else:
            message["content"] = text or ""
        if self._reasoning:
            reasoning = "".join(self._reasoning)
            message[self._reasoning_key] = scrub.text(reasoning) if scrub else reasoning
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": self._finish}
        if self._logprobs is not None:
            choice["logprobs"] = {"content": self._logprobs}
        raw = dict(self._meta)  # holds the first "choices" and "usage" too: replaced
        raw["choices"] = [choice]
        raw.pop("usage", None)
        if self._usage is not None:
            raw["usage"] = self._usage
        if self.error is not None:
            raw["error"] = self.error
        return raw
