"""One middleware protocol, one composition function.

A middleware is an async callable ``(value, next) -> result``. It may inspect
or replace ``value``, call ``next`` zero, one or many times, and inspect or
replace the result. The same shape serves the graph (``value`` is the node's
input state, the result its partial update) and the LLM call (``value`` is a
call request, the result a ``Response``); only the type parameters change.

This module sits below everything else (it imports nothing of the package), so
the graph engine, the LLM layer and the middleware package can all share it. The
context they share while running (retry attempts, lineage, the event emitter)
is :mod:`openarmature_nodes.context`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

__all__ = ["Middleware", "Next", "compose"]

T = TypeVar("T")
R = TypeVar("R")

Next = Callable[[T], Awaitable[R]]
"""The rest of the chain: call it with a value to run the inner layers."""


class Middleware(Protocol[T, R]):
    """``async def mw(value, next) -> result``.

    Invariant in both parameters: ``value`` flows in and, through ``next``,
    back out; the result flows out and, from ``next``, back in.
    """

    def __call__(self, value: T, next: Callable[[T], Awaitable[R]], /) -> Awaitable[R]: ...


def compose(
    middlewares: Sequence[Middleware[T, R]], inner: Callable[[T], Awaitable[R]]
) -> Callable[[T], Awaitable[R]]:
    """Wrap ``inner`` in ``middlewares``; the first in the list is outermost.

    Composition happens once, up front: calling the result costs one closure
    call per layer and allocates nothing else. With an empty list, ``inner``
    itself is returned.
    """
    handler = inner
    for mw in reversed(middlewares):
        handler = _bind(mw, handler)
    return handler


def _bind(
    mw: Middleware[T, R], nxt: Callable[[T], Awaitable[R]]
) -> Callable[[T], Awaitable[R]]:
    def call(value: T) -> Awaitable[R]:
        return mw(value, nxt)

    return call

