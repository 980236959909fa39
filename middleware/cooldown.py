"""Shared cooldown: when one call hears "retry after N s", every call waits.

A rate-limiting gateway in front of a vLLM deployment answers a burst of
concurrent callers with 429s. Without coordination each caller discovers the
429 on its own, and the retries of all of them arrive together again. With a
:class:`Cooldown` shared by every call through one provider endpoint, the first
``ProviderRateLimit`` with a ``retry_after`` puts the whole endpoint on hold:
every call holds its next request until the hold ends, then goes::

    cooldown = Cooldown.for_endpoint(provider)        # one per endpoint, shared
    onion = [SpanMiddleware(provider), RetryMiddleware(), CooldownMiddleware(cooldown), ...]

Put :class:`CooldownMiddleware` *inside* the retry middleware, so that both
first attempts and retries pass through it. Once a hold has passed, a call
costs one attribute check and one clock read.

The rules of a hold:

* it lasts until the time the server stated: the moment its 429 arrived
  plus its ``retry_after``; a shorter ``retry_after`` learned later never
  shortens it;
* holds do not stack: the 429s of requests that were already in flight
  when a hold began are the same wave of refusals, and do not extend it.
  Only a refusal of a request sent after the hold began starts a new one;
* it never lasts longer than ``max_hold`` (60 s by default, the retry
  policy's ``max_delay``): a ``retry_after`` longer than that starts no hold
  at all. Such a wait is longer than any retry would make, so each caller
  meets the refusal itself and fails at once with it, instead of everyone
  being held for a minute only to be refused again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import anyio

from openarmature_nodes.retrying import retry_after_of

__all__ = ["Cooldown", "CooldownMiddleware"]


class Cooldown:
    """The hold shared by all calls through one endpoint.

    ``clock``/``sleep`` are the monotonic clock and the sleep the hold uses
    (defaults: ``time.monotonic`` and ``anyio.sleep``; the clock is the
    process's, not the event loop's, because one cooldown per endpoint is
    shared process-wide and may outlive a loop: trio's loop clock starts at a
    random offset on every run); ``max_hold`` caps any single
    ``retry_after`` (default 60 s).
    """

    __slots__ = ("_began", "_until", "clock", "max_hold", "sleep")

    _registry: ClassVar[dict[str, Cooldown]] = {}

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        max_hold: float = 60.0,
    ) -> None:
        self.clock = clock
        self.sleep = sleep
        self.max_hold = max_hold
        self._until: float | None = None
        self._began = -math.inf

    @classmethod
    def for_endpoint(cls, endpoint: Any) -> Cooldown:
        """The process-wide cooldown of an endpoint: a provider (keyed by its
        ``server_address`` and ``server_port``, falling back to ``base_url``) or a
        key string. Every call to the same endpoint shares it."""
        if isinstance(endpoint, str):
            key = endpoint
        else:
            host = getattr(endpoint, "server_address", None)
            port = getattr(endpoint, "server_port", None)
            key = f"{host}:{port}" if host else str(getattr(endpoint, "base_url", id(endpoint)))
        found = cls._registry.get(key)
        if found is None:
            found = cls._registry[key] = cls()
        return found

    @property
    def remaining(self) -> float:
        """Seconds left on the current hold (0 when none)."""
        if self._until is None:
            return 0.0
        return max(0.0, self._until - self.clock())

    def hold_for(self, seconds: float, *, sent_at: float | None = None) -> bool:
        """Hold every call for ``seconds`` from now (see the module's rules):
        not when ``seconds`` exceeds ``max_hold``, and not when the refused
        request was sent (``sent_at``, on :attr:`clock`) before the current
        hold began. Returns whether the hold was started or extended."""
        if not math.isfinite(seconds) or seconds <= 0 or seconds > self.max_hold:
            return False
        if sent_at is not None and sent_at < self._began:
            return False  # the same wave of refusals: no stacking
        now = self.clock()
        until = now + seconds
        if self._until is None or until > self._until:
            if self._until is None or self._until <= now:
                self._began = now
            self._until = until
            return True
        return False

    def learn(self, exc: BaseException, *, sent_at: float | None = None) -> bool:
        """Start or extend the hold if ``exc`` carries a ``retry_after`` (the
        request having been sent at ``sent_at``, if known)."""
        after = retry_after_of(exc)
        if after is None:
            return False
        return self.hold_for(after, sent_at=sent_at)

    async def wait(self) -> None:
        """Return once no hold is in force (at once when there is none)."""
        while self._until is not None:
            left = self._until - self.clock()
            if left <= 0:
                self._until = None
                return
            await self.sleep(left)

    def clear(self) -> None:
        """End any hold now."""
        self._until = None


class CooldownMiddleware:
    """Hold each call while ``cooldown`` is in force; feed it what 429s say."""

    __slots__ = ("cooldown",)

    def __init__(self, cooldown: Cooldown | None = None) -> None:
        self.cooldown = cooldown if cooldown is not None else Cooldown()

    def __repr__(self) -> str:
        return f"CooldownMiddleware(remaining={self.cooldown.remaining:.3f})"

    async def __call__(self, value: Any, next: Callable[[Any], Awaitable[Any]], /) -> Any:
        cooldown = self.cooldown
        if cooldown._until is not None:
            await cooldown.wait()
        sent_at = cooldown.clock()
        try:
            return await next(value)
        except Exception as exc:
            cooldown.learn(exc, sent_at=sent_at)
            raise
