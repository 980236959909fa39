"""Read and write timeouts without a cancel scope per request.

Why: an anyio ``CancelScope`` with a deadline costs 5-10 µs to enter, move and
leave on asyncio and 10-16 µs on trio (measured on the 2-core bench box), while
the whole request on the fast path costs 45 µs (asyncio) / 20 µs (trio). The
timeouts of an HTTP client are for stalls that almost never happen, so the
common case should pay almost nothing for them.

How: each connection carries a ``deadline`` (``time.monotonic()`` seconds,
``inf`` when no request is in flight): the end of the current wait, or the
caller's overall deadline for the request (``FastTransport.request(...,
deadline=)``, the provider's per-call deadline) if that comes first. Arming a
timeout is one attribute store and a float comparison. A single daemon thread
per process, :class:`Watchdog`, sleeps until the earliest deadline among the
connections it watches, and when a deadline has passed it marks the connection
``timed_out`` and calls ``shutdown(SHUT_RDWR)`` on its socket. ``shutdown`` is
safe from any thread: it does not close the file descriptor, it only ends the
byte streams, so the request waiting for its socket to be readable (or
writable) on whichever event loop wakes up, finds end-of-stream (or a broken
pipe), sees ``timed_out`` and raises :class:`~._base.TransportTimeout`. The
event loop still owns the socket and closes it as usual.

The thread never closes anything and touches no event loop, so it works the
same under asyncio and trio. Correctness points:

* a deadline that passes just as its response completes may still shut the
  socket down; the connection is then not reused (``timed_out``), or, if it
  was already back in the pool, its next request sees end-of-stream before
  any byte and is retried on a fresh connection: the stale keep-alive path;
* the thread re-reads the deadline just before acting. Without a lock on
  the hot path, one race remains: if a request ends within microseconds of
  its deadline and the next request on the same connection starts in that
  same instant, the next one may be reported as a timeout (a transient
  error; it cannot return wrong data);
* :meth:`Watchdog.forget` takes the lock, so once it returns the thread will
  not touch that socket again, and its file descriptor can be closed and
  reused safely;
* ``arm`` stores the deadline first and then compares it with ``wake_at``,
  which the thread sets to ``inf`` before each scan and to the earliest
  deadline it saw after it: a deadline stored during or after a scan either
  pokes the thread or is later than its next wake-up, so none is missed.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import weakref
from typing import Protocol

__all__ = ["WATCHDOG", "Watchdog", "Watched"]

_INF = float("inf")


class Watched(Protocol):
    """What the watchdog needs from a connection."""

    deadline: float
    timed_out: bool

    def shutdown_socket(self) -> None: ...


class Watchdog:
    """Enforces the ``deadline`` of every watched connection (module docstring)."""

    def __init__(self) -> None:
        self._init()

    def _init(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        # Weak: a transport dropped without ``aclose()`` must not have its
        # sockets kept alive by the watchdog.
        self._watched: weakref.WeakSet[Watched] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        # When the thread will next wake up on its own. ``arm`` only needs to
        # wake it for a deadline earlier than this.
        self.wake_at = _INF

    def watch(self, conn: Watched) -> None:
        """Start watching a new connection (its deadline is ``inf``)."""
        with self._cond:
            self._watched.add(conn)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="openarmature-nodes-timeouts", daemon=True
                )
                self._thread.start()

    def forget(self, conn: Watched) -> None:
        """Stop watching before closing: the thread will not touch it again."""
        with self._cond:
            self._watched.discard(conn)
            conn.deadline = _INF

    def arm(self, conn: Watched, deadline: float) -> None:
        """Set ``conn``'s deadline; the hot path (no lock unless the thread
        would otherwise sleep past it)."""
        conn.deadline = deadline
        if deadline < self.wake_at:
            with self._cond:
                self._cond.notify()

    def _run(self) -> None:
        cond = self._cond
        with cond:
            while True:
                # While scanning, any ``arm`` must wake us afterwards: a
                # connection already scanned may get a new deadline now.
                self.wake_at = _INF
                now = time.monotonic()
                earliest = _INF
                for conn in self._watched:
                    deadline = conn.deadline
                    if deadline <= now and conn.deadline == deadline:
                        conn.deadline = _INF
                        conn.timed_out = True
                        conn.shutdown_socket()
                    elif deadline < earliest:
                        earliest = deadline
                self.wake_at = earliest
                cond.wait(None if earliest == _INF else earliest - now)


WATCHDOG = Watchdog()


def _after_fork() -> None:
    # The thread does not survive fork(); start afresh in the child.
    WATCHDOG._init()


os.register_at_fork(after_in_child=_after_fork)


def shutdown(sock: socket.socket | None) -> None:
    """``shutdown(SHUT_RDWR)``, ignoring a socket that is already gone."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
