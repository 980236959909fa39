"""Warm-up gate: no call goes through until the model has answered once.

A local vLLM or llama.cpp server lists its model on ``/v1/models`` long before
the model can answer, and the first completion after a (re)load can be very
slow. The gate runs the recipe that tells warm from cold: ``provider.ready()``,
then a one-token completion. Every call through the gate waits for that single
warm-up::

    gate = WarmupGate(provider, deadline=300.0)
    await gate.open()          # optional: warm eagerly at start-up
    onion = [..., gate, ...]   # the gate is itself a middleware

Exactly one warm-up runs however many callers arrive while the gate is closed;
the others wait for its outcome. While it runs, ``provider_model_not_loaded``
and ``provider_unavailable`` (and any other transient failure) are polled with
backoff until ``deadline`` seconds have passed, then the last error is raised.
A non-transient failure (bad credentials, unknown model) opens no gate: it is
raised to every waiting caller, and the next call tries again.

Once open, the gate costs one attribute check per call. :meth:`WarmupGate.reset`
closes it again; by default a ``provider_model_not_loaded`` seen in later
traffic resets it, so the next call re-warms the model. If the caller running
the warm-up is cancelled, one of the waiting callers takes over.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio

from openarmature_nodes.llm.config import RuntimeConfig
from openarmature_nodes.llm.errors import ProviderModelNotLoaded
from openarmature_nodes.llm.messages import Message, UserMessage
from openarmature_nodes.retrying import (
    Backoff,
    RetryConfig,
    exponential_full_jitter,
    is_transient,
    run_with_retry,
)

__all__ = ["WarmupGate"]

_DEFAULT_MESSAGES: tuple[Message, ...] = (UserMessage(content="Hi"),)
_WARMUP_CONFIG = RuntimeConfig(max_tokens=1, temperature=0.0)


class _Round:
    """One warm-up in progress, watched by the callers waiting on it."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.error: BaseException | None = None


class WarmupGate:
    """Gate calls through ``provider`` on one successful warm-up.

    ``provider`` needs ``async ready()`` and ``async complete(messages, config=...)``.
    ``deadline``: seconds to keep polling a loading model (default 600).
    ``backoff``: wait between polls (default full jitter, base 0.5 s, cap 5 s).
    ``messages``: the warm-up prompt (default one short user message), sent
    with ``max_tokens=1``. ``reset_on_not_loaded``: close the gate when a call
    through it fails with ``provider_model_not_loaded`` (default ``True``).
    """

    __slots__ = ("_open", "_round", "backoff", "clock", "deadline", "messages", "provider",
                 "reset_on_not_loaded", "sleep")

    def __init__(
        self,
        provider: Any,
        *,
        deadline: float = 600.0,
        backoff: Backoff | None = None,
        messages: Sequence[Message] | None = None,
        reset_on_not_loaded: bool = True,
        clock: Callable[[], float] = anyio.current_time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.provider = provider
        self.deadline = deadline
        self.backoff = backoff or exponential_full_jitter(0.5, 5.0)
        self.messages = tuple(messages) if messages is not None else _DEFAULT_MESSAGES
        self.reset_on_not_loaded = reset_on_not_loaded
        self.clock = clock
        self.sleep = sleep
        self._open = False
        self._round: _Round | None = None

    @property
    def is_open(self) -> bool:
        """Whether a warm-up has succeeded (and no reset has happened since)."""
        return self._open

    def __repr__(self) -> str:
        return f"WarmupGate(open={self._open})"

    def reset(self) -> None:
        """Close the gate: the next call runs a fresh warm-up."""
        self._open = False

    async def open(self) -> None:
        """Warm the provider up (or wait for the warm-up in progress)."""
        while not self._open:
            current = self._round
            if current is not None:
                await current.done.wait()
                if current.error is not None:
                    raise current.error
                continue  # opened, or the warm-up's runner was cancelled: look again
            current = self._round = _Round()
            try:
                await self._warm_up()
            except BaseException as exc:
                if isinstance(exc, Exception):
                    current.error = exc
                raise
            else:
                self._open = True
            finally:
                self._round = None
                current.done.set()

    async def _warm_up(self) -> None:
        policy = RetryConfig(
            max_attempts=2**31 - 1,
            classifier=is_transient,
            backoff=self.backoff,
            deadline=self.deadline,
            clock=self.clock,
            sleep=self.sleep,
        )
        provider = self.provider
        messages = self.messages

        async def probe(_: int) -> None:
            await provider.ready()
            await provider.complete(messages, config=_WARMUP_CONFIG)

        await run_with_retry(policy, probe)

    async def __call__(self, value: Any, next: Callable[[Any], Awaitable[Any]], /) -> Any:
        if not self._open:
            await self.open()
        try:
            return await next(value)
        except ProviderModelNotLoaded:
            if self.reset_on_not_loaded:
                self._open = False
            raise
