"""Test doubles shared by the middleware and retry tests: virtual time.

:class:`VirtualTime` supplies the ``clock`` and ``sleep`` seams of
``RetryConfig``, ``Cooldown`` and ``WarmupGate``. A sleep records the wait it
was asked for, moves the virtual clock to the sleeper's wake-up time (never
backwards) and yields once, so tests can assert *scheduled* waits and the
virtual time at which each request went out, with no wall-clock sleeping.
"""

from __future__ import annotations

import anyio
import anyio.lowlevel


class VirtualTime:
    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        wake = self.now + seconds
        if wake > self.now:
            self.now = wake
        await anyio.lowlevel.checkpoint()


class ManualTime:
    """Virtual time that only moves when the test says so.

    A sleep registers its wake-up time and blocks until :meth:`advance` moves the
    clock past it. :meth:`wait_sleepers` lets a test wait, without polling, until
    a given number of tasks are asleep: the moment to assert that nothing was
    sent while they hold.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._pending: list[tuple[float, anyio.Event]] = []
        self._added = anyio.Event()

    def clock(self) -> float:
        return self.now

    @property
    def sleeping(self) -> int:
        return len(self._pending)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        entry = (self.now + seconds, anyio.Event())
        self._pending.append(entry)
        self._added.set()
        try:
            await entry[1].wait()
        finally:
            if entry in self._pending:
                self._pending.remove(entry)

    async def wait_sleepers(self, count: int) -> None:
        while len(self._pending) < count:
            self._added = anyio.Event()
            await self._added.wait()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for wake, event in list(self._pending):
            if wake <= self.now + 1e-9:
                self._pending.remove((wake, event))
                event.set()
