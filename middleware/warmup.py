"""Warm-up gate: no call goes through until the model has answered once.

A local vLLM or llama.cpp server lists its model on ``/v1/models`` long before
the model can answer, and the first completion after a (re)load can be very
slow. The gate runs the recipe that tells warm from cold: ``provider.ready()``,
then a one-token completion. Every call through the gate waits for that single
warm-up::

    gate = WarmupGate(provider)                # 30 s start-up budget
    gate = WarmupGate(provider, budget=300.0)  # a cold vLLM load: 2-3 minutes
    await gate.open()          # optional: warm eagerly at start-up
    onion = [..., gate, ...]   # the gate is itself a middleware

The warm-up is a small state machine (:class:`WarmupState`)::

    closed -> probing -> open
                 |  ^
                 v  |
          not_up / loading  --(budget spent)--> failed
                 |
       (auth, unknown model, bad request) --> closed, error raised at once

* ``not_up``: the server does not answer yet (connection refused, a timeout,
  a 5xx such as 503): ``provider_unavailable``;
* ``loading``: it answers that the model is still loading
  (``provider_model_not_loaded``);
* both are polled with backoff, but only within the start-up ``budget``
  (default :data:`DEFAULT_BUDGET`, 30 s; a probe that does not answer is cut
  off at the budget too). When it is spent the gate is ``failed`` and raises
  an error that says what was tried, how often and for how long, with the
  last failure as its ``__cause__`` (``provider_model_not_loaded`` if the
  model was still loading, else ``provider_unavailable``). For ``budget``
  seconds after that, calls fail at once with the same error instead of
  warming up again (so a retry layer outside the gate does not turn a dead
  server into minutes of waiting); after that the next call tries again;
* any other failure (bad credentials, an unknown model, a bad request) is
  raised at once to every waiting caller; no gate opens and the next call
  tries again.

Each change of state is logged once (``logging`` at INFO, logger
``openarmature_nodes.middleware.warmup``) and added as an event
(``openarmature.warmup.state``, with ``state``, ``elapsed_s``, ``probes`` and
the error category) to the current OpenTelemetry span: the call's span when
the gate sits inside :class:`~openarmature_nodes.middleware.spans.SpanMiddleware`, as in the
default onion.

Exactly one warm-up runs however many callers arrive while the gate is
closed; the others wait for its outcome. Once open, the gate costs one
attribute check per call. :meth:`WarmupGate.reset` closes it again; by default
a ``provider_model_not_loaded`` seen in later traffic resets it, so the next
call re-warms the model. If the caller running the warm-up is cancelled, one
of the waiting callers takes over.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

import anyio
from opentelemetry import trace

from openarmature_nodes.llm.config import RuntimeConfig
from openarmature_nodes.llm.errors import (
    ProviderError,
    ProviderModelNotLoaded,
    ProviderUnavailable,
)
from openarmature_nodes.llm.messages import Message, UserMessage
from openarmature_nodes.retrying import Backoff, exponential_full_jitter, is_transient

__all__ = ["DEFAULT_BUDGET", "WarmupGate", "WarmupState"]

DEFAULT_BUDGET = 30.0
"""Seconds a server may take to come up (answer, and have its model loaded)."""

WarmupState = Literal["closed", "probing", "not_up", "loading", "open", "failed"]

_log = logging.getLogger("openarmature_nodes.middleware.warmup")
_DEFAULT_MESSAGES: tuple[Message, ...] = (UserMessage(content="Hi"),)
_WARMUP_CONFIG = RuntimeConfig(max_tokens=1, temperature=0.0)
_RECIPE = "GET /v1/models, then a 1-token completion"


class _Round:
    """One warm-up in progress, watched by the callers waiting on it."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.error: BaseException | None = None


class WarmupGate:
    """Gate calls through ``provider`` on one successful warm-up.

    ``provider`` needs ``async ready()`` and ``async complete(messages, config=...)``.
    ``budget``: seconds the server may take to come up (default 30; see the
    module docstring); ``deadline`` is an older name for it.
    ``backoff``: wait between polls (default full jitter, base 0.5 s, cap 5 s).
    ``messages``: the warm-up prompt (default one short user message), sent
    with ``max_tokens=1``. ``reset_on_not_loaded``: close the gate when a call
    through it fails with ``provider_model_not_loaded`` (default ``True``).
    ``clock``/``sleep``: test seams.
    """

    __slots__ = (
        "_failed",
        "_failed_at",
        "_open",
        "_round",
        "backoff",
        "budget",
        "clock",
        "messages",
        "provider",
        "reset_on_not_loaded",
        "sleep",
        "state",
    )

    def __init__(
        self,
        provider: Any,
        *,
        budget: float | None = None,
        deadline: float | None = None,
        backoff: Backoff | None = None,
        messages: Sequence[Message] | None = None,
        reset_on_not_loaded: bool = True,
        clock: Callable[[], float] = anyio.current_time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if budget is not None and deadline is not None:
            raise ValueError("pass budget= (deadline= is its older name), not both")
        chosen = budget if budget is not None else deadline
        chosen = DEFAULT_BUDGET if chosen is None else chosen
        if isinstance(chosen, bool) or not isinstance(chosen, int | float) or not chosen >= 0:
            raise ValueError(f"budget must be seconds >= 0, got {chosen!r}")
        self.provider = provider
        self.budget = float(chosen)
        self.backoff = backoff or exponential_full_jitter(0.5, 5.0)
        self.messages = tuple(messages) if messages is not None else _DEFAULT_MESSAGES
        self.reset_on_not_loaded = reset_on_not_loaded
        self.clock = clock
        self.sleep = sleep
        self.state: WarmupState = "closed"
        self._open = False
        self._round: _Round | None = None
        self._failed: ProviderError | None = None
        self._failed_at = -math.inf

    @property
    def deadline(self) -> float:
        """The start-up budget (older name)."""
        return self.budget

    @property
    def is_open(self) -> bool:
        """Whether a warm-up has succeeded (and no reset has happened since)."""
        return self._open

    def __repr__(self) -> str:
        return f"WarmupGate(state={self.state!r}, budget={self.budget})"

    def reset(self) -> None:
        """Close the gate: the next call runs a fresh warm-up."""
        self._open = False
        self._failed = None
        self._set_state("closed", 0.0, 0, None)

    async def open(self) -> None:
        """Warm the provider up (or wait for the warm-up in progress)."""
        while not self._open:
            current = self._round
            if current is not None:
                await current.done.wait()
                if current.error is not None:
                    raise current.error
                continue  # opened, or the warm-up's runner was cancelled: look again
            failed = self._failed
            if failed is not None and self.clock() - self._failed_at < self.budget:
                raise _copy(failed)
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

    def _set_state(
        self, state: WarmupState, elapsed: float, probes: int, error: BaseException | None
    ) -> None:
        if state == self.state:
            return
        self.state = state
        model = getattr(self.provider, "model", "?")
        url = getattr(self.provider, "base_url", "?")
        category = getattr(error, "category", None) if error is not None else None
        _log.info(
            "warm-up of %s at %s: %s after %.1f s, %d probe(s)%s",
            model,
            url,
            state,
            elapsed,
            probes,
            f" ({category}: {error})" if error is not None else "",
        )
        span = trace.get_current_span()
        if span.is_recording():
            attributes: dict[str, Any] = {
                "state": state,
                "elapsed_s": round(elapsed, 3),
                "probes": probes,
                "budget_s": self.budget,
            }
            if category is not None:
                attributes["error.type"] = str(category)
            span.add_event("openarmature.warmup.state", attributes)
            span.set_attribute("openarmature.warmup.state", state)

    async def _warm_up(self) -> None:
        provider = self.provider
        messages = self.messages
        clock = self.clock
        started = clock()
        ends = started + self.budget
        probes = 0
        last: Exception | None = None
        self._set_state("probing", 0.0, 0, None)
        while True:
            probes += 1
            with anyio.move_on_after(max(ends - clock(), 0.0)) as scope:
                try:
                    await provider.ready()
                    await provider.complete(messages, config=_WARMUP_CONFIG)
                except Exception as exc:
                    if not is_transient(exc):
                        self._set_state("closed", clock() - started, probes, exc)
                        raise
                    last = exc
                else:
                    self._failed = None
                    self._set_state("open", clock() - started, probes, None)
                    return
            if scope.cancelled_caught:
                last = ProviderUnavailable(
                    f"a probe did not answer within the {self.budget:g} s budget"
                )
            state: WarmupState = "loading" if isinstance(last, ProviderModelNotLoaded) else "not_up"
            self._set_state(state, clock() - started, probes, last)
            wait = max(float(self.backoff(probes - 1)), 0.0)
            if clock() + wait >= ends or scope.cancelled_caught:
                raise self._give_up(started, probes, last, state)
            await self.sleep(wait)

    def _give_up(
        self, started: float, probes: int, last: Exception | None, state: WarmupState
    ) -> ProviderError:
        elapsed = self.clock() - started
        what = "the model was still loading" if state == "loading" else "the server was not up"
        message = (
            f"warm-up of {getattr(self.provider, 'model', '?')!r} at "
            f"{getattr(self.provider, 'base_url', '?')} gave up after {elapsed:.1f} s "
            f"(start-up budget {self.budget:g} s): tried {_RECIPE} {probes} time(s) and "
            f"{what}; last error: {last}. For a slow start (a cold vLLM load takes 2-3 "
            f"minutes) pass WarmupGate(provider, budget=...)"
        )
        status = getattr(last, "status", None)
        error: ProviderError = (
            ProviderModelNotLoaded(message, status=status)
            if state == "loading"
            else ProviderUnavailable(message, status=status)
        )
        error.__cause__ = last
        self._failed = error
        self._failed_at = self.clock()
        self._set_state("failed", elapsed, probes, last)
        return error

    async def __call__(self, value: Any, next: Callable[[Any], Awaitable[Any]], /) -> Any:
        if not self._open:
            await self.open()
        try:
            return await next(value)
        except ProviderModelNotLoaded:
            if self.reset_on_not_loaded:
                self._open = False
            raise


def _copy(error: ProviderError) -> ProviderError:
    """A fresh instance of a remembered failure (an exception raised twice
    would grow its traceback)."""
    copy = type(error)(error.message, status=error.status)
    copy.__cause__ = error.__cause__
    return copy
