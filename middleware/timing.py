"""Timing middleware (pipeline-utilities §6.2).

Measures how long the wrapped chain took, with a monotonic clock, and hands a
:class:`TimingRecord` to an async callback once per dispatch, on success and on
failure alike::

    async def record(r: TimingRecord) -> None:
        histogram.record(r.duration_ms, {"node": r.node_name, "outcome": r.outcome})

    builder.add_node("fetch", fetch, middleware=[TimingMiddleware("fetch", record)])

Where it sits decides what it measures. Outside a retry (``[timing, retry]``)
the record covers every attempt and every backoff sleep: what the caller
waited. Inside it (``[retry, timing]``) there is one record per attempt.

The ``(state, next)`` shape does not tell a middleware which node it wraps, so
the node name is captured up front. Per node, pass it. Per graph, use
:meth:`TimingMiddleware.for_graph`: the engine binds the factory to each node's
name when it compiles the graph (it calls ``bind_node(name)``).

The callback runs inline, before the chain's result returns: keep it fast
(queue the work). An exception it raises propagates like any middleware error.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["TimingMiddleware", "TimingMiddlewareFactory", "TimingRecord"]


@dataclass(frozen=True, slots=True)
class TimingRecord:
    """One measured dispatch.

    ``exception_category`` is the raised exception's ``category`` attribute
    when ``outcome == "exception"`` and it has one, else ``None``.
    """

    node_name: str
    duration_ms: float
    outcome: Literal["success", "exception"]
    exception_category: str | None


OnComplete = Callable[[TimingRecord], Awaitable[None]]


class TimingMiddleware:
    """Time the wrapped chain of node ``node_name``; report to ``on_complete``.

    ``clock`` is the monotonic clock in seconds (default :func:`time.monotonic`;
    tests pass a deterministic one).
    """

    __slots__ = ("clock", "node_name", "on_complete")

    def __init__(
        self,
        node_name: str,
        on_complete: OnComplete,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_name = node_name
        self.on_complete = on_complete
        self.clock = clock

    @classmethod
    def for_graph(
        cls, on_complete: OnComplete, *, clock: Callable[[], float] = time.monotonic
    ) -> TimingMiddlewareFactory:
        """A per-graph form: bound to each node's name at compile time."""
        return TimingMiddlewareFactory(on_complete, clock=clock)

    def __repr__(self) -> str:
        return f"TimingMiddleware(node_name={self.node_name!r})"

    async def __call__(self, value: Any, next: Callable[[Any], Awaitable[Any]], /) -> Any:
        clock = self.clock
        started = clock()
        try:
            result = await next(value)
        except Exception as exc:
            category = getattr(exc, "category", None)
            await self.on_complete(
                TimingRecord(
                    self.node_name,
                    (clock() - started) * 1000.0,
                    "exception",
                    category if isinstance(category, str) else None,
                )
            )
            raise
        await self.on_complete(
            TimingRecord(self.node_name, (clock() - started) * 1000.0, "success", None)
        )
        return result


class TimingMiddlewareFactory:
    """Per-graph timing: ``bind_node(name)`` gives the node's own middleware.

    Used directly as a middleware (when nothing bound it) it reports the node
    name ``"<unbound>"``.
    """

    __slots__ = ("_unbound", "clock", "on_complete")

    def __init__(
        self, on_complete: OnComplete, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.on_complete = on_complete
        self.clock = clock
        self._unbound = TimingMiddleware("<unbound>", on_complete, clock=clock)

    def bind_node(self, node_name: str) -> TimingMiddleware:
        """The timing middleware of node ``node_name`` (called by the engine at compile time)."""
        return TimingMiddleware(node_name, self.on_complete, clock=self.clock)

    async def __call__(self, value: Any, next: Callable[[Any], Awaitable[Any]], /) -> Any:
        return await self._unbound(value, next)
