"""The call-level retry loop (llm-provider §7.1).

``provider.complete(..., retry=RetryConfig(...))`` and the retry middleware at
call level both end here. The loop is the shared engine of
:mod:`openarmature_nodes.retrying` plus the two things only an LLM call has:

``per_attempt_override``
    A schedule of ``RuntimeConfig`` partials. Attempt 0 sends the caller's
    config unchanged; retry *i* (attempt *i+1*) sends the caller's config with
    entry *i* merged over it (non-``None`` fields win, extras merge per key);
    a schedule shorter than the retries carries its last entry forward.

``reask``
    A caller-supplied builder ``(StructuredOutputInvalid) -> content``. With it,
    ``structured_output_invalid`` becomes retryable for this call (the default
    classifier is unchanged). Before the attempt that follows such a failure,
    the loop appends two messages to a working transcript: the model's own
    output (the error's ``output_content``) as an assistant message, then the
    builder's content as a user message. Pairs accumulate across reasks; a
    transient retry re-sends the transcript as it stands. The builder is only
    called when another attempt will actually run. The loop writes no prompt
    text of its own: every word it adds is the model's or the caller's.

The caller's ``messages`` and ``config`` are never mutated: each attempt sends
a fresh frozen :class:`CompletionRequest`. Around each attempt the loop sets
:data:`openarmature_nodes.context.call_attempt` (index and retry reason), so a
span layer placed inside the loop records one span per attempt.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import msgspec

from openarmature_nodes.context import CallAttempt, call_attempt
from openarmature_nodes.retrying import RetryConfig, run_with_retry

from .call_events import AttemptLog, attempt_log
from .config import RuntimeConfig
from .errors import StructuredOutputInvalid
from .messages import AssistantMessage, Message, UserMessage
from .request import CompletionRequest
from .response import Response

__all__ = ["ReaskBuilder", "complete_with_retry", "override_config", "reask_pair"]

ReaskBuilder = Callable[[StructuredOutputInvalid], Any]
"""``(error) -> content`` of the corrective user message: a string, a sequence
of user content blocks, or a ready :class:`UserMessage`."""

Send = Callable[[CompletionRequest], Awaitable[Response]]

_FIRST_ATTEMPT = CallAttempt()
"""Attempt 0's record, shared: a frozen dataclass costs ~0.5 µs to build, once per call."""


def _as_partial(entry: Any) -> RuntimeConfig | None:
    if entry is None or isinstance(entry, RuntimeConfig):
        return entry
    if isinstance(entry, Mapping):
        return RuntimeConfig.from_mapping(entry)
    kind = type(entry).__name__
    raise TypeError(f"per_attempt_override entries must be RuntimeConfig or mappings, not {kind}")


def override_config(
    base: RuntimeConfig | None, schedule: Sequence[Any], retry_index: int
) -> RuntimeConfig | None:
    """The config retry ``retry_index`` (0-based) sends under ``schedule``."""
    if not schedule:
        return base
    partial = _as_partial(schedule[min(retry_index, len(schedule) - 1)])
    if partial is None:
        return base
    return (base or RuntimeConfig()).merged(partial)


def reask_pair(error: StructuredOutputInvalid, builder: ReaskBuilder) -> tuple[Message, Message]:
    """The assistant/user pair one reask appends: the model's verbatim output,
    then exactly what the caller's builder returns."""
    content = builder(error)
    user = content if isinstance(content, UserMessage) else UserMessage(content=content)
    return AssistantMessage(content=error.output_content or ""), user


def _is_reaskable(exc: Exception) -> bool:
    return isinstance(exc, StructuredOutputInvalid)


async def complete_with_retry(
    send: Send, request: CompletionRequest, retry: RetryConfig
) -> Response:
    """Run ``send(request)`` under ``retry``'s call-level policy.

    ``send`` is the provider's single-attempt call (``provider.call``) or any
    handler with that shape (a composed middleware chain). The classifier sees
    the caller's original ``request`` as its ``state``.
    """
    if not isinstance(retry, RetryConfig):
        raise TypeError(f"retry must be a RetryConfig, not {type(retry).__name__}")
    schedule = retry.per_attempt_override
    builder = retry.reask
    log = attempt_log()
    if log is not None:  # an observed call: note every attempt for its terminal event
        send = _noting(send, log)
    if not schedule and builder is None:
        # A plain §6.1 record: every attempt sends the same request.
        async def plain(index: int) -> Response:
            token = call_attempt.set(CallAttempt(index, "transient") if index else _FIRST_ATTEMPT)
            try:
                return await send(request)
            finally:
                call_attempt.reset(token)

        return await run_with_retry(retry, plain, state=request)

    transcript: list[Message] = []  # filled on the first retry: a call that succeeds pays nothing
    last_error: list[Exception] = []

    async def attempt(index: int) -> Response:
        reason: str | None = None
        outgoing = request
        if index > 0:
            if not transcript:
                transcript.extend(request.messages)
            reason = "transient"
            previous = last_error[-1] if last_error else None
            if builder is not None and isinstance(previous, StructuredOutputInvalid):
                transcript.extend(reask_pair(previous, builder))
                reason = "reask"
            outgoing = msgspec.structs.replace(
                request,
                messages=tuple(transcript),
                config=override_config(request.config, schedule, index - 1),
            )
        token = call_attempt.set(CallAttempt(index, reason) if index else _FIRST_ATTEMPT)
        try:
            return await send(outgoing)
        except Exception as exc:
            last_error.append(exc)
            del last_error[:-1]
            raise
        finally:
            call_attempt.reset(token)

    return await run_with_retry(
        retry,
        attempt,
        state=request,
        also_retry=_is_reaskable if builder is not None else None,
    )


def _noting(send: Send, log: AttemptLog) -> Send:
    """``send``, noting each attempt's window and outcome in ``log`` (the attempt's
    index and retry reason are the ones :data:`call_attempt` holds around it)."""

    async def noted(request: CompletionRequest) -> Response:
        current = call_attempt.get()
        start = time.time_ns()
        try:
            response = await send(request)
        except Exception as exc:
            log.note(current.index, current.retry_reason, start, exc)
            raise
        log.note(current.index, current.retry_reason, start)
        return response

    return noted
