"""Reading a streamed reply off the transport (llm-provider §8.1.6).

The I/O half of streaming: :mod:`.wire.stream` assembles the events
without touching a socket; the functions here pull the body from a
:class:`~openarmature_nodes.llm.transport.StreamingResponse` as it arrives,
feed it to the assembler and report each completed text delta to the token
sinks in scope (:mod:`.tokens`). :class:`~.provider.OpenAIProvider` calls
them once the reply's status and content type are known.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import anyio

from .errors import ProviderTimeout
from .messages import TextBlock, ThinkingBlock
from .response import Response
from .tokens import TokenSink, emit_delta
from .transport import StreamingResponse, TransportError
from .wire.decode import decode_chat_response
from .wire.stream import ChatStreamAssembler, Delta

__all__ = ["consume_stream", "read_unstreamed"]

# After ``data: [DONE]`` the rest of the body (normally just the end of the
# chunked encoding) is read so the connection can be reused, within these bounds.
_DRAIN_SECONDS = 1.0
_DRAIN_BYTES = 64 * 1024


def _report(sinks: tuple[TokenSink, ...], deltas: Any) -> None:
    for kind, text in deltas:
        emit_delta(sinks, kind, text)


async def consume_stream(
    reply: StreamingResponse,
    asm: ChatStreamAssembler,
    sinks: tuple[TokenSink, ...],
    *,
    idle_timeout: float | None = None,
) -> None:
    """Feed the body to ``asm`` as it arrives, reporting deltas to ``sinks``.

    Stops reading at ``data: [DONE]`` (then drains what follows, bounded, so
    the connection can be reused) or at the end of the body; the body
    iterator is closed either way.

    ``idle_timeout``: when no new chunk (a ``data:`` event carrying a
    completion chunk) arrives for that many seconds, raise
    :class:`ProviderTimeout`. Comments (``: ping``) and other bytes that
    complete no chunk do not count as progress, so a server that only sends
    keep-alive pings is a stalled stream. One cancel scope serves the whole
    stream: its deadline is moved when a chunk arrives.
    """
    pieces = reply.aiter_bytes()
    idle = math.inf if idle_timeout is None else idle_timeout
    try:
        with anyio.CancelScope(deadline=anyio.current_time() + idle) as scope:
            seen = asm.chunks
            report = partial(emit_delta, sinks) if sinks else None
            async for piece in pieces:
                if report is not None:
                    # Each delta goes out as its event is parsed: a piece holding
                    # many events (a fast server, a proxy's buffer) does not hold
                    # the first token back until the last one is decoded.
                    asm.feed_each(piece, report)
                else:
                    asm.feed(piece)
                if asm.chunks != seen:
                    seen = asm.chunks
                    scope.deadline = anyio.current_time() + idle
                if asm.done:
                    break
            else:
                deltas = asm.feed_eof()
                if sinks:
                    _report(sinks, deltas)
                return
        if scope.cancelled_caught:
            raise ProviderTimeout(
                f"the stream stalled: no new chunk for {idle_timeout} s "
                f"({asm.chunks} chunks received; keep-alive comments do not count)",
                deadline=idle_timeout,
            )
        await _drain(pieces)
    finally:
        aclose = getattr(pieces, "aclose", None)
        if aclose is not None:
            with anyio.CancelScope(shield=True):
                await aclose()


async def read_unstreamed(
    reply: StreamingResponse,
    asm: ChatStreamAssembler,
    sinks: tuple[TokenSink, ...],
    *,
    response_schema: Any,
    url: str,
) -> Response:
    """A server that ignored ``stream: true`` and sent one JSON body: its
    answer is decoded as usual and reported as one delta per kind. (An
    event stream mislabelled as JSON is still read as events.)"""
    body = await reply.aread()
    body = asm.scrubbed(body)
    if body.lstrip().startswith((b"data:", b"event:", b":")):
        deltas: list[Delta] = [*asm.feed(body), *asm.feed_eof()]
        if sinks:
            _report(sinks, deltas)
        return asm.response()
    response = decode_chat_response(
        reply.status,
        reply.headers,
        body,
        tools=asm.tools,
        response_schema=response_schema,
        url=url,
    )
    content = response.message.content
    if sinks and content:
        for block in [TextBlock(content)] if isinstance(content, str) else content:
            if isinstance(block, ThinkingBlock) and block.text:
                emit_delta(sinks, "reasoning", block.text)
            elif isinstance(block, TextBlock) and block.text:
                emit_delta(sinks, "content", block.text)
    return response


async def _drain(pieces: AsyncIterator[bytes]) -> None:
    """Read what follows ``[DONE]`` (normally only the end of the chunked
    body) so the transport can reuse the connection. Bounded in time and
    size; a failure here is ignored: the reply is already complete, and an
    unread body only means the connection is closed instead of reused."""
    left = _DRAIN_BYTES
    with anyio.move_on_after(_DRAIN_SECONDS):
        try:
            async for piece in pieces:
                left -= len(piece)
                if left < 0:
                    return
        except TransportError:
            return
