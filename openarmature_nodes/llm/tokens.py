"""Token deltas: how a streamed completion reports text as it arrives.

``complete(..., stream=True)`` still returns one whole
:class:`~openarmature_nodes.llm.Response`. What streaming adds is a
:class:`TokenDelta` for every piece of answer text (``kind="content"``) or
reasoning text (``kind="reasoning"``) the moment its chunk is read off the
wire. Deltas go to *token sinks*: plain callables ``(TokenDelta) -> None``.

There are two ways to install one, and they combine:

- for one call: ``await provider.complete(msgs, stream=True, on_token=print)``;
- for everything below a point in the call stack, including calls made by
  middleware you do not control::

      with token_sink(collect):
          await handler(request)      # any onion around provider.call

  This is how a layer above the LLM layer (the graph's LLM node) turns deltas
  into its own events without the LLM layer knowing anything about it. The
  scope is a :class:`contextvars.ContextVar`, so it follows the task that
  installed it (and tasks it starts), under asyncio and trio alike.

Each sink numbers the deltas it receives: ``TokenDelta.index`` is 0 for the
first delta that sink sees and increases by one per delta, across all the
wire attempts a retry layer makes inside the scope. Install one scope per
logical call to get per-call numbering. Scopes nest: an inner scope's sink
and every enclosing one all receive each delta, each with its own numbering.

Sinks are called synchronously from the provider's read loop, in order. Keep
them quick and non-blocking (append to a list, ``send_nowait`` on a memory
object stream); an exception a sink raises ends the call with that exception.
Tool-call argument fragments are not reported as deltas (the assembled
``tool_calls`` are on the ``Response``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal, TypeAlias

import msgspec

__all__ = [
    "DeltaKind",
    "TokenCallback",
    "TokenDelta",
    "TokenSink",
    "current_token_sinks",
    "emit_delta",
    "token_sink",
]

DeltaKind: TypeAlias = Literal["content", "reasoning"]


class TokenDelta(msgspec.Struct, frozen=True):
    """One piece of streamed text.

    ``kind``: ``"content"`` (answer text) or ``"reasoning"`` (chain of
    thought, from servers that stream it). ``text``: never empty. ``index``:
    this sink's running count of deltas (0, 1, 2 ...).
    """

    kind: DeltaKind
    text: str
    index: int


TokenCallback: TypeAlias = Callable[[TokenDelta], None]


class TokenSink:
    """An installed callback and the count of deltas it has been given."""

    __slots__ = ("callback", "count")

    def __init__(self, callback: TokenCallback) -> None:
        self.callback = callback
        self.count = 0


_SINKS: ContextVar[tuple[TokenSink, ...]] = ContextVar("openarmature_token_sinks", default=())


@contextmanager
def token_sink(callback: TokenCallback) -> Iterator[None]:
    """Deliver the token deltas of every streamed call made inside the
    ``with`` block to ``callback`` (in addition to enclosing sinks)."""
    if not callable(callback):
        raise TypeError(f"a token sink must be callable, got {type(callback).__name__}")
    token = _SINKS.set((*_SINKS.get(), TokenSink(callback)))
    try:
        yield
    finally:
        _SINKS.reset(token)


def current_token_sinks() -> tuple[TokenSink, ...]:
    """The sinks installed here (innermost last); for providers."""
    return _SINKS.get()


def emit_delta(sinks: tuple[TokenSink, ...], kind: DeltaKind, text: str) -> None:
    """Hand one delta to each of ``sinks``, numbering it per sink."""
    for sink in sinks:
        delta = TokenDelta(kind, text, sink.count)
        sink.count += 1
        sink.callback(delta)
