"""Run ``count`` indexed jobs concurrently, at most ``limit`` at a time.

This is the scheduler under fan-out (pipeline-utilities §9) and parallel
branches (§11). It is a small worker pool rather than one task per job,
for three reasons:

- **The bound holds by construction.** There are never more than ``limit``
  workers, so there are never more than ``limit`` jobs in flight; no
  semaphore to get wrong. Workers are started on demand: before a worker
  runs a job it leaves one spare worker ready, which gets to run only if the
  job suspends. Jobs that never wait are all run by one task; jobs that wait
  (an LLM call) get up to ``limit`` tasks. 10,000 trivial jobs cost a couple
  of tasks, not 10,000.
- **Jobs start in index order on every event loop.** A worker takes the next
  index and calls the job without awaiting anything in between, so job ``i``
  has started (reached its first real suspension point) before any worker can
  take ``i + 1``. Spawning one task per job would not give this on trio, whose
  scheduler deliberately runs a batch of ready tasks in random order.
- **No exception groups.** A worker catches its job's ``Exception`` and
  records it against the job's index. Under ``fail_fast`` the first failure
  cancels the task group (every sibling gets the loop's cancellation, runs its
  ``finally`` blocks and stops) and is returned to the caller, which raises it
  as a plain exception. Cancellation and other ``BaseException``\\ s are never
  caught: a cancelled invocation cancels every job.

When the ``async with`` block around the task group exits, no job is left
running: that is what "fail_fast leaves no task running" means.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

__all__ = ["Outcome", "run_indexed"]


class Outcome:
    """What :func:`run_indexed` returns.

    ``results[i]`` is job ``i``'s return value (``None`` for a job that failed
    or never ran). ``failures`` maps the index of each failed job to its
    exception, in index order; under ``fail_fast`` it holds only the first
    failure observed.
    """

    __slots__ = ("failures", "results")

    def __init__(self, results: list[Any], failures: dict[int, Exception]) -> None:
        self.results = results
        self.failures = failures


async def _done() -> None:
    """Stands in for a finished pool's worker (see the end of :func:`run_indexed`)."""


async def run_indexed(
    count: int,
    job: Callable[[int], Awaitable[Any]],
    *,
    limit: int | None,
    fail_fast: bool,
) -> Outcome:
    """Run ``job(0) .. job(count - 1)``, at most ``limit`` at once (``None``: all).

    Jobs start in index order. With ``fail_fast`` the first job to raise stops
    the others (cooperatively, through cancellation); otherwise every job
    runs to completion and each failure is recorded.
    """
    results: list[Any] = [None] * count
    failures: dict[int, Exception] = {}
    workers = count if limit is None else min(limit, count)
    if workers <= 1:
        for i in range(count):
            try:
                results[i] = await job(i)
            except Exception as exc:
                if getattr(exc, "passes_through", False):
                    raise  # an invocation-level failure (e.g. a checkpoint save): never collected
                failures[i] = exc
                if fail_fast:
                    break
        return Outcome(results, failures)

    cursor = 0
    stopped = False
    fatal: list[Exception] = []  # invocation-level failures (``passes_through``): re-raised
    spawned = 1  # workers started so far (bounded by ``workers``)
    pending = 1  # of which not yet running their first job

    async with anyio.create_task_group() as tg:

        async def worker() -> None:
            nonlocal cursor, stopped, spawned, pending
            pending -= 1
            while cursor < count and not stopped:
                i = cursor
                cursor = i + 1
                if pending == 0 and spawned < workers and cursor < count:
                    # A spare worker, which runs only if this job suspends: the pool
                    # grows with the jobs that actually wait, up to ``workers``.
                    spawned += 1
                    pending += 1
                    tg.start_soon(worker)
                try:
                    results[i] = await job(i)
                except Exception as exc:
                    if stopped:  # a sibling already failed; this is cancellation fallout
                        return
                    if getattr(exc, "passes_through", False):
                        fatal.append(exc)
                        stopped = True
                        tg.cancel_scope.cancel()
                        return
                    failures[i] = exc
                    if fail_fast:
                        stopped = True
                        tg.cancel_scope.cancel()
                        return

        tg.start_soon(worker)
    # ``worker`` refers to itself (it starts its spares): a reference cycle through its
    # closure, which also holds ``results`` and the caller's ``job``. Break it here, or every
    # job's result would stay alive until the garbage collector's next full pass.
    worker = _done
    if fatal:
        raise fatal[0]
    return Outcome(results, dict(sorted(failures.items())))
