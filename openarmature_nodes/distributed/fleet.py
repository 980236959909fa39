"""Fleet-wide backpressure: limits shared by every worker of a cluster.

Both are LLM-call middleware (``(request, next) -> response``) that the worker
runtime's factory puts in the provider's onion; both are **off unless you add
them**.

:class:`FleetInflightLimit`: at most ``limit`` calls in flight to one endpoint
across the whole cluster (a ``distributed.Semaphore`` named after the endpoint).
Use it when many workers share one queueing server (vLLM): per-worker caps
multiply with the worker count, and a server given more concurrent requests
than it batches only queues them, so latency grows and timeouts and 429s
follow. Set ``limit`` near the server's ``--max-num-seqs``. Each call pays a
round trip to the scheduler (about a millisecond) to take and return a lease.

:class:`FleetCooldown`: after one call hears ``429`` with ``Retry-After``, every
worker holds its calls to that endpoint until the hold ends (a
``distributed.Variable`` holding the wall-clock end of the hold; each worker
re-reads it at most every ``refresh`` seconds). Use it with a rate-limiting
gateway that answers a fleet's burst with 429s. Alone it does not reduce 429s
against a queueing server (measured: the in-flight limit does).

Outside a Dask worker (a local run of the same graph) both fall back to a
process-local equivalent, so the graph works unchanged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from openarmature_nodes.retrying import retry_after_of

from .runtime import current_worker

__all__ = ["FleetCooldown", "FleetInflightLimit"]


class FleetInflightLimit:
    """At most ``limit`` calls in flight to ``endpoint``, across every worker.

    Args:
        endpoint: the name the limit is shared under (the server's base URL).
        limit: calls in flight at most, cluster-wide.
        acquire_timeout: seconds a call may wait for a lease before failing
            (a :class:`TimeoutError`; bounded, never a hang).
    """

    def __init__(self, *, endpoint: str, limit: int, acquire_timeout: float = 600.0) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.endpoint = endpoint
        self.limit = limit
        self.acquire_timeout = acquire_timeout
        self.name = f"openarmature-inflight-{endpoint}"
        self._semaphore: Any = None
        self._local: anyio.CapacityLimiter | None = None

    def __repr__(self) -> str:
        return f"FleetInflightLimit(endpoint={self.endpoint!r}, limit={self.limit})"

    def __getstate__(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "limit": self.limit,
                "acquire_timeout": self.acquire_timeout, "name": self.name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._semaphore = None
        self._local = None

    def _fleet(self) -> Any:
        worker = current_worker()
        if worker is None:
            return None
        if self._semaphore is None:
            from distributed import Semaphore

            self._semaphore = Semaphore(  # type: ignore[no-untyped-call]
                max_leases=self.limit, name=self.name, scheduler_rpc=worker.scheduler,
                loop=worker.loop,
            )
        return self._semaphore

    async def __call__(self, request: Any, nxt: Callable[[Any], Awaitable[Any]]) -> Any:
        sem = self._fleet()
        if sem is None:
            if self._local is None:
                self._local = anyio.CapacityLimiter(self.limit)
            async with self._local:
                return await nxt(request)
        got = await anyio.to_thread.run_sync(
            lambda: sem.acquire(timeout=self.acquire_timeout), abandon_on_cancel=True
        )
        if not got:
            raise TimeoutError(
                f"no in-flight lease for {self.endpoint!r} within {self.acquire_timeout:g} s"
            )
        try:
            return await nxt(request)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(30):
                await anyio.to_thread.run_sync(sem.release)


class FleetCooldown:
    """A ``Retry-After`` heard by one worker holds every worker's calls to ``endpoint``.

    Put it inside the retry middleware (like the local ``CooldownMiddleware``).

    Args:
        endpoint: the name the hold is shared under.
        max_hold: the longest hold honoured, seconds.
        refresh: how stale a worker's view of the shared hold may be, seconds.
    """

    def __init__(self, *, endpoint: str, max_hold: float = 60.0, refresh: float = 0.5) -> None:
        self.endpoint = endpoint
        self.max_hold = max_hold
        self.refresh = refresh
        self.name = f"openarmature-cooldown-{endpoint}"
        self._until = 0.0  # wall clock (time.time): workers compare across processes
        self._read_at = -math.inf
        self._variable: Any = None

    def __repr__(self) -> str:
        return f"FleetCooldown(endpoint={self.endpoint!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "max_hold": self.max_hold,
                "refresh": self.refresh, "name": self.name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._until, self._read_at, self._variable = 0.0, -math.inf, None

    def _shared(self) -> Any:
        worker = current_worker()
        if worker is None:
            return None
        if self._variable is None:
            from distributed import Variable

            self._variable = Variable(  # type: ignore[no-untyped-call]
                self.name, client=worker._get_client()
            )
        return self._variable

    async def _refresh(self) -> None:
        var = self._shared()
        now = time.monotonic()
        if var is None or now - self._read_at < self.refresh:
            return
        self._read_at = now

        def read() -> float:
            try:
                return float(var.get(timeout=5))
            except Exception:  # unset yet, or the scheduler is busy: no hold known
                return 0.0

        self._until = max(self._until, await anyio.to_thread.run_sync(read))

    async def _publish(self, until: float) -> None:
        self._until = max(self._until, until)
        var = self._shared()
        if var is not None:
            value = self._until
            await anyio.to_thread.run_sync(lambda: var.set(value))

    async def __call__(self, request: Any, nxt: Callable[[Any], Awaitable[Any]]) -> Any:
        await self._refresh()
        wait = self._until - time.time()
        if wait > 0:
            await anyio.sleep(min(wait, self.max_hold))
        try:
            return await nxt(request)
        except Exception as exc:
            after = retry_after_of(exc)
            if after is not None and after > 0:
                await self._publish(time.time() + min(after, self.max_hold))
            raise
