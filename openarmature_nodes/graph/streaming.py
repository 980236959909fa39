"""``graph.stream()``: a run's progress as typed items, read with ``async for``.

::

    async with graph.stream(Agent(question="hi"), mode={"updates", "tokens"}) as items:
        async for item in items:
            match item:
                case NodeUpdate(node_name=name, update=update):
                    print(name, update)
                case TokenItem(text=text):
                    print(text, end="")

Items, selected by ``mode`` (one name or a set; default: all three):

- ``"updates"`` -> :class:`NodeUpdate`: the partial update each node returned,
  with its lineage (namespace, fan-out index, branch name, attempt), in
  execution order, nested graphs' nodes included;
- ``"tokens"`` -> :class:`TokenItem`: each text delta of a streamed LLM call
  (``LLMNode(stream=True)``) made by a node of this run;
- ``"values"`` -> :class:`FinalState`: the final state, last;
- ``"events"`` -> :class:`EventItem`: every other non-node event of the run
  (LLM completions, tool calls ...), passed through as is.

How it works: it is the observer event stream, nothing else. ``stream()``
attaches one invocation-scoped observer that turns events into items and
hands them to the consumer over a bounded memory channel. The graph runs in a
task of the ``async with`` block; the graph never waits for the consumer
(delivery is off the execution path), the delivery worker does.

Why ``async with``: the run is a task, and structured concurrency (trio's
rule, kept on asyncio too) needs a block that owns it. Leaving the block,
by finishing, breaking out of the loop, an exception or a cancellation,
cancels the run if it is still going and waits for it to unwind: no task is
left running and every connection it held is returned. A failing run raises
its :class:`~.errors.GraphRuntimeError` from the loop after the items it
produced.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeAlias, TypeVar

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from openarmature_nodes.context import mint_uuid4
from openarmature_nodes.events import LlmTokenEvent

from .events import NodeEvent
from .observers import subscribe

if TYPE_CHECKING:
    from .compiled import CompiledGraph

__all__ = [
    "EventItem",
    "FinalState",
    "GraphStream",
    "NodeUpdate",
    "StreamItem",
    "StreamMode",
    "TokenItem",
]

S = TypeVar("S")

StreamMode: TypeAlias = Literal["updates", "tokens", "values", "events"]
MODES: frozenset[str] = frozenset(("updates", "tokens", "values", "events"))
DEFAULT_MODES: frozenset[str] = frozenset(("updates", "tokens", "values"))


class _Lineage(msgspec.Struct, frozen=True, kw_only=True):
    """Where an item comes from (the fields of the event it was made from)."""

    invocation_id: str
    namespace: tuple[str, ...]
    attempt_index: int = 0
    fan_out_index: int | None = None
    branch_name: str | None = None
    fan_out_index_chain: tuple[int | None, ...] = ()
    branch_name_chain: tuple[str | None, ...] = ()


class NodeUpdate(_Lineage, frozen=True, kw_only=True):
    """A node finished a step: ``update`` is the partial update it returned
    (empty for ``None``), before reducers; ``step`` the run-wide step number."""

    node_name: str
    step: int
    update: Any


class TokenItem(_Lineage, frozen=True, kw_only=True):
    """One text delta of a streamed LLM call made by node ``node_name``.

    ``kind`` is ``"content"`` or ``"reasoning"``; ``index`` counts the call's
    deltas from 0; ``call_id`` matches the call's completion event.
    """

    node_name: str
    call_id: str
    index: int
    kind: str
    text: str


class FinalState(msgspec.Struct, Generic[S], frozen=True):
    """The run's final state (the value ``invoke()`` would return)."""

    state: S


class EventItem(msgspec.Struct, frozen=True):
    """Any other event of the run (mode ``"events"``), unchanged."""

    event: Any


StreamItem: TypeAlias = "NodeUpdate | TokenItem | FinalState[Any] | EventItem"


def resolve_modes(mode: str | Iterable[str] | None) -> frozenset[str]:
    """``mode`` as a set of mode names; ``ValueError`` naming an unknown one."""
    if mode is None:
        return DEFAULT_MODES
    modes = frozenset((mode,)) if isinstance(mode, str) else frozenset(mode)
    unknown = sorted(modes - MODES)
    if unknown or not modes:
        raise ValueError(
            f"unknown stream mode(s) {unknown or '(none given)'}; use one or more of "
            f"{sorted(MODES)}"
        )
    return modes


def _lineage(event: Any) -> dict[str, Any]:
    return {
        "invocation_id": event.invocation_id,
        "namespace": event.namespace,
        "attempt_index": event.attempt_index,
        "fan_out_index": event.fan_out_index,
        "branch_name": event.branch_name,
        "fan_out_index_chain": event.fan_out_index_chain,
        "branch_name_chain": event.branch_name_chain,
    }


def to_item(event: Any, modes: Collection[str]) -> StreamItem | None:
    """The stream item for ``event`` under ``modes`` (``None``: not streamed)."""
    if isinstance(event, NodeEvent):
        if "updates" in modes and event.phase == "completed" and event.update is not None:
            return NodeUpdate(
                node_name=event.node_name, step=event.step, update=event.update,
                **_lineage(event),
            )
        return None
    if isinstance(event, LlmTokenEvent):
        if "tokens" in modes:
            return TokenItem(
                node_name=event.node_name, call_id=event.call_id, index=event.chunk_index,
                kind=event.delta_kind, text=event.delta, **_lineage(event),
            )
        return None
    return EventItem(event) if "events" in modes else None


class GraphStream(Generic[S]):
    """The items of one run; see the module docstring. Made by ``graph.stream()``."""

    def __init__(
        self,
        graph: CompiledGraph[Any],
        initial_state: Any,
        *,
        modes: frozenset[str],
        observers: Iterable[Any],
        invocation_id: str | None,
        correlation_id: str | None,
        buffer: int,
    ) -> None:
        self._graph = graph
        self._state = graph.schema.coerce(initial_state, where="stream() initial state")
        self._modes = modes
        self._observers = tuple(observers)
        self._invocation_id = invocation_id
        self._correlation_id = correlation_id
        self._buffer = buffer
        self._tg: Any = None
        self._send: MemoryObjectSendStream[Any] | None = None
        self._recv: MemoryObjectReceiveStream[Any] | None = None
        self._error: BaseException | None = None
        self._used = False

    async def __aenter__(self) -> GraphStream[S]:
        if self._used:
            raise RuntimeError("a GraphStream runs once; call graph.stream() again")
        self._used = True
        self._send, self._recv = anyio.create_memory_object_stream[Any](self._buffer)
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(self._run, self._send)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tg, self._tg = self._tg, None
        try:
            tg.cancel_scope.cancel()  # a finished run has nothing left to cancel
            await tg.__aexit__(None, None, None)
        finally:
            if self._recv is not None:
                self._recv.close()

    async def _run(self, send: MemoryObjectSendStream[Any]) -> None:
        modes = self._modes

        async def forward(event: Any) -> None:
            item = to_item(event, modes)
            if item is not None:
                await send.send(item)

        phases = None if "events" in modes or "tokens" in modes else {"completed"}
        sub = subscribe(forward, phases)
        invocation_id = self._invocation_id or mint_uuid4()
        graph = self._graph
        async with send:
            try:
                final = await graph.invoke(
                    self._state,
                    observers=(*self._observers, sub),
                    invocation_id=invocation_id,
                    correlation_id=self._correlation_id,
                )
            except Exception as exc:
                self._error = exc
            # Inside `async with graph:` invoke() returns before its events are
            # delivered: wait for them, so every item precedes the end.
            await graph.drain_events_for(invocation_id)
            if self._error is None and "values" in modes:
                await send.send(FinalState(final))

    def __aiter__(self) -> GraphStream[S]:
        if self._recv is None:
            raise TypeError(
                "graph.stream() runs the graph in a task the caller's block must own: "
                "write `async with graph.stream(...) as items: async for item in items: ...`"
            )
        return self

    async def __anext__(self) -> StreamItem:
        assert self._recv is not None
        try:
            return await self._recv.receive()  # type: ignore[no-any-return]
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            pass
        err, self._error = self._error, None
        if err is not None:
            raise err  # the run's own error, as invoke() would raise it
        raise StopAsyncIteration
