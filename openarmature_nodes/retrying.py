"""The one retry engine: node-level retry middleware and the provider's call-level
loop (llm-provider §7.1) both run on it.

A retry policy is a :class:`RetryConfig`: the four fields of pipeline-utilities
§6.1 (``max_attempts``, ``classifier``, ``backoff``, ``on_retry``), a few
practical bounds the spec leaves to implementations (``max_delay``,
``deadline``, honouring the server's ``retry_after``), the two call-level
extensions of llm-provider §7.1 (``per_attempt_override``, ``reask``), and the
clock and sleep the loop uses (injectable, so tests can assert the *scheduled*
waits without sleeping).

:func:`run_with_retry` drives one retried operation. The first attempt runs
directly, with no retry machinery at all (a call that succeeds pays nothing);
after a failure, tenacity's public :class:`~tenacity.AsyncRetrying` runs the
rest, built from our own strategies (``retry``, ``wait``, ``stop``,
``before_sleep``: see :class:`_Policy`) and the policy's ``sleep``
(``anyio.sleep`` unless a test injects one), so the loop runs on asyncio and on
trio alike. Tenacity's first attempt replays the failure that already happened
instead of calling the operation again, so its attempt numbers are ours plus one.
No private tenacity name is used.

Rules the engine keeps, whatever the policy says:

- Only :class:`Exception` is ever retried. Cancellation (asyncio's
  ``CancelledError``, trio's ``Cancelled``) and ``KeyboardInterrupt`` derive
  from :class:`BaseException`, propagate at once and never reach the classifier.
- A successful return is never retried, whatever it contains (§6.1 *Partial-update
  inspection*).
- When the failure carries ``retry_after`` (a ``ProviderRateLimit`` from a 429
  with ``Retry-After``), the wait is at least that long: the server's word beats
  our jitter. ``max_delay`` bounds every wait, including that one.
- With a ``deadline``, the loop never sleeps past it: when the next wait would
  end after the deadline, the last error is raised instead.

This module is the base of the retry stack and imports nothing of the LLM layer:
errors are classified by their ``category`` attribute against the category
*names* (llm-provider §7), so any exception that carries a category takes part.
The classification and the backoff strategies live in
:mod:`openarmature_nodes._retry_rules` and are re-exported here.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
from tenacity import AsyncRetrying, RetryCallState

from ._retry_rules import (
    TRANSIENT_CATEGORIES,
    Backoff,
    constant_backoff,
    default_classifier,
    exponential_full_jitter,
    is_carrier,
    is_transient,
    retry_after_of,
)

__all__ = [
    "TRANSIENT_CATEGORIES",
    "Backoff",
    "Classifier",
    "OnRetry",
    "RetryConfig",
    "constant_backoff",
    "default_classifier",
    "exponential_full_jitter",
    "is_carrier",
    "is_transient",
    "retry_after_of",
    "run_with_retry",
]

R = TypeVar("R")

Classifier = Callable[..., bool]
"""``(exception, state) -> bool`` (or ``(exception) -> bool``): ``True`` when the
failure is worth another attempt."""

OnRetry = Callable[[Exception, int], Awaitable[None]]
"""``async (exception, attempt_index) -> None``, awaited before each sleep.
Observe-only: it cannot change what the next attempt sends."""

# --- the configuration record ------------------------------------------------


def _accepts_state(fn: Callable[..., Any]) -> bool:
    """Whether a classifier takes ``(exc, state)`` rather than ``(exc)``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = 0
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            return True
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional += 1
    return positional >= 2


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryConfig:
    """One retry policy, usable by the retry middleware at node or call level and
    by ``provider.complete(retry=...)``.

    Fields of pipeline-utilities §6.1:

    ``max_attempts``
        Total attempts including the first; ``1`` disables retry.
    ``classifier``
        ``(exception, state) -> bool`` or ``(exception) -> bool``. ``state`` is
        the value the retried chain received (the node's pre-merge state, or the
        :class:`CompletionRequest` at call level). Default: :func:`default_classifier`.
    ``backoff``
        ``(attempt_index) -> seconds``. Default: exponential with full jitter,
        base 1 s, cap 30 s.
    ``on_retry``
        ``async (exception, attempt_index) -> None``, awaited before each sleep.

    Bounds beyond the spec:

    ``max_delay``
        Upper bound on any single wait, ``retry_after`` included (default 60 s;
        ``None`` for no bound).
    ``deadline``
        Seconds, measured from the start of the first attempt, after which no
        further attempt starts; a wait that would end past it raises the last
        error instead. ``None`` (default) for no deadline.
    ``honor_retry_after``
        Wait at least the failure's ``retry_after`` (default ``True``).

    Call-level extensions of llm-provider §7.1 (ignored at node level):

    ``per_attempt_override``
        ``RuntimeConfig`` partials (or mappings); entry *i* is merged over the
        caller's base config for retry *i* (attempt *i+1*); the last entry
        carries forward. Attempt 0 always uses the caller's config unchanged.
    ``reask``
        ``(StructuredOutputInvalid) -> content``: makes ``structured_output_invalid``
        retryable for the call; before the next attempt the model's output and
        the builder's content are appended as an assistant/user pair.

    Test seams: ``clock`` (``() -> seconds``, monotonic) and ``sleep``
    (``async (seconds) -> None``).
    """

    max_attempts: int = 3
    classifier: Classifier = default_classifier
    backoff: Backoff = field(default_factory=exponential_full_jitter)
    on_retry: OnRetry | None = None
    max_delay: float | None = 60.0
    deadline: float | None = None
    honor_retry_after: bool = True
    per_attempt_override: Sequence[Any] = ()
    reask: Callable[[Any], Any] | None = None
    clock: Callable[[], float] = anyio.current_time
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep
    _classify: Callable[[Exception, Any], bool] = field(
        init=False, repr=False, compare=False, default=default_classifier
    )

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError("max_attempts must be an int")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.max_delay is not None and self.max_delay < 0:
            raise ValueError("max_delay must be >= 0")
        if self.deadline is not None and self.deadline < 0:
            raise ValueError("deadline must be >= 0")
        if isinstance(self.per_attempt_override, (str, bytes, dict)):
            raise TypeError("per_attempt_override must be a sequence of config partials")
        object.__setattr__(self, "per_attempt_override", tuple(self.per_attempt_override))
        clf = self.classifier
        if clf is default_classifier or _accepts_state(clf):
            object.__setattr__(self, "_classify", clf)
        else:

            def one_arg(exc: Exception, state: Any, _clf: Classifier = clf) -> bool:
                return bool(_clf(exc))

            object.__setattr__(self, "_classify", one_arg)

    def is_retryable(self, exc: BaseException, state: Any = None) -> bool:
        """The classifier's verdict (cancellation is never retryable)."""
        return isinstance(exc, Exception) and bool(self._classify(exc, state))

    def delay_for(self, exc: BaseException, attempt_index: int) -> float:
        """The wait scheduled after attempt ``attempt_index`` failed with ``exc``."""
        wait = float(self.backoff(attempt_index))
        if self.honor_retry_after:
            ra = retry_after_of(exc)
            if ra is not None and ra > wait:
                wait = ra
        if self.max_delay is not None and wait > self.max_delay:
            wait = self.max_delay
        return max(wait, 0.0)


# --- the engine ----------------------------------------------------------------


class _Policy:
    """Tenacity callbacks for one run (one per run: tenacity keeps per-object state)."""

    __slots__ = ("also_retry", "config", "started_at", "state")

    def __init__(
        self,
        config: RetryConfig,
        state: Any,
        also_retry: Callable[[Exception], bool] | None,
        started_at: float | None,
    ) -> None:
        self.config = config
        self.state = state
        self.also_retry = also_retry
        self.started_at = started_at

    @staticmethod
    def _error(rs: RetryCallState) -> BaseException | None:
        outcome = rs.outcome
        if outcome is None or not outcome.failed:
            return None
        return outcome.exception()

    def retry(self, rs: RetryCallState) -> bool:
        exc = self._error(rs)
        if exc is None or not isinstance(exc, Exception):
            return False
        if self.config.is_retryable(exc, self.state):
            return True
        return self.also_retry is not None and self.also_retry(exc)

    def wait(self, rs: RetryCallState) -> float:
        exc = self._error(rs)
        assert exc is not None
        return self.config.delay_for(exc, rs.attempt_number - 1)

    def stop(self, rs: RetryCallState) -> bool:
        cfg = self.config
        if rs.attempt_number >= cfg.max_attempts:
            return True
        if cfg.deadline is not None and self.started_at is not None:
            ends_at = cfg.clock() + rs.upcoming_sleep
            if ends_at > self.started_at + cfg.deadline:
                return True
        return False

    async def before_sleep(self, rs: RetryCallState) -> None:
        on_retry = self.config.on_retry
        exc = self._error(rs)
        if on_retry is not None and isinstance(exc, Exception):
            await on_retry(exc, rs.attempt_number - 1)


async def run_with_retry(
    config: RetryConfig,
    attempt: Callable[[int], Awaitable[R]],
    *,
    state: Any = None,
    also_retry: Callable[[Exception], bool] | None = None,
) -> R:
    """Run ``attempt(0)``, ``attempt(1)``, ... under ``config`` until one returns.

    ``attempt`` receives the 0-based attempt index. ``state`` is handed to the
    classifier. ``also_retry`` widens the classifier for this run only (the
    call-level loop uses it to make ``structured_output_invalid`` retryable when
    a reask builder is set). The last error is raised unchanged when attempts,
    classifier or deadline say stop.
    """
    started_at = config.clock() if config.deadline is not None else None
    try:
        return await attempt(0)
    except Exception as exc:
        if config.max_attempts == 1:
            raise
        first: Exception | None = exc

    index = 0

    async def next_attempt() -> R:
        # tenacity's attempt 1 replays the failure that already happened (the
        # first attempt ran above, outside tenacity); later ones call ``attempt``.
        nonlocal first, index
        if first is not None:
            err, first = first, None
            raise err
        index += 1
        return await attempt(index)

    policy = _Policy(config, state, also_retry, started_at)
    retrying = AsyncRetrying(
        sleep=config.sleep,
        retry=policy.retry,
        wait=policy.wait,
        stop=policy.stop,
        before_sleep=policy.before_sleep,
        reraise=True,
    )
    result: R = await retrying(next_attempt)
    return result
