"""Retry middleware (pipeline-utilities §6.1), for graph nodes and for LLM calls.

One class serves both levels; the value that flows through tells them apart:

- **Node level** (``value`` is the node's input state): each attempt calls
  ``next(state)`` with the same state. Before each call the middleware sets
  :data:`openarmature_nodes.context.attempt_index`, which the graph engine reads
  when it emits the node's started/completed events, so every attempt gets its
  own event pair (§5). The previous value is restored when the middleware
  returns, so an enclosing retry's index is untouched.
- **Call level** (``value`` is a :class:`~openarmature_nodes.llm.CompletionRequest`):
  the llm-provider §7.1 loop of :mod:`openarmature_nodes.llm.call_retry`
  (``per_attempt_override``, ``reask``), the same loop ``complete(retry=...)``
  runs.

Both run on the one engine, :func:`openarmature_nodes.retrying.run_with_retry`::

    retry = RetryMiddleware(max_attempts=5, deadline=20.0)
    builder.add_node("summarize", summarize, middleware=[retry])

Place retry *inside* failure isolation (``[isolation, retry]``): retry must see
raw transient failures first; isolation handles what escapes retry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from openarmature_nodes.context import attempt_index, run_scope
from openarmature_nodes.llm.call_retry import complete_with_retry
from openarmature_nodes.llm.request import CompletionRequest
from openarmature_nodes.retrying import RetryConfig, run_with_retry

__all__ = ["GaveUp", "RetryMiddleware", "gave_up"]


class GaveUp:
    """Which attempt's failure a node-level retry let escape.

    A failure-isolation middleware outside the retry installs one (through
    :data:`gave_up`) before calling its inner chain. When a retry inside gives
    up, it records the exception it re-raises and the attempt that raised it,
    unless a retry nearer the node already recorded that same exception (the
    innermost retry's counter is the one the node's events carry, graph-engine
    §6). Isolation then reports that attempt in its event's lineage: by the
    time it catches, the retries have restored the context's attempt index.

    Only a retry in the isolation's own scope records (the same node step, or the
    same fan-out instance / branch): a retry inside a fan-out instance re-runs
    the instance, not the fan-out node an isolation around that node wraps.
    """

    __slots__ = ("attempt", "exc", "scope")

    def __init__(self) -> None:
        self.exc: BaseException | None = None
        self.attempt = 0
        self.scope: object = run_scope.get()

    def record(self, exc: BaseException, attempt: int) -> None:
        if self.exc is not exc and run_scope.get() is self.scope:
            self.exc, self.attempt = exc, attempt

    def attempt_of(self, exc: BaseException) -> int | None:
        """The attempt that raised ``exc``, if a retry inside gave up on it."""
        return self.attempt if self.exc is exc else None


gave_up: ContextVar[GaveUp | None] = ContextVar("openarmature_retry_gave_up", default=None)
"""The innermost failure-isolation's :class:`GaveUp` record (``None``: nobody asks)."""


class RetryMiddleware:
    """Re-run the rest of the chain on failures ``config`` classifies as retryable.

    Construct from a :class:`~openarmature_nodes.retrying.RetryConfig`, from its
    fields as keywords, or both (keywords replace the record's fields)::

        RetryMiddleware()                                    # §6.1 defaults
        RetryMiddleware(RetryConfig(max_attempts=4))
        RetryMiddleware(max_attempts=4, backoff=constant_backoff(0.5))
    """

    __slots__ = ("config",)

    def __init__(self, config: RetryConfig | None = None, /, **fields: Any) -> None:
        if config is None:
            config = RetryConfig(**fields)
        elif fields:
            config = dataclasses.replace(config, **fields)
        self.config = config

    def __repr__(self) -> str:
        return f"RetryMiddleware({self.config!r})"

    async def __call__(self, value: Any, next: Callable[[Any], Awaitable[Any]], /) -> Any:
        if isinstance(value, CompletionRequest):
            return await complete_with_retry(next, value, self.config)
        token = attempt_index.set(0)
        current = 0

        async def attempt(index: int) -> Any:
            nonlocal current
            current = index
            attempt_index.set(index)
            return await next(value)

        try:
            return await run_with_retry(self.config, attempt, state=value)
        except Exception as exc:
            record = gave_up.get()
            if record is not None:
                record.record(exc, current)
            raise
        finally:
            attempt_index.reset(token)
