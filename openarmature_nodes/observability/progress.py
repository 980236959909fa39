"""Fan-out progress: a live bar on a terminal, periodic log lines otherwise.

::

    from openarmature_nodes.observability.progress import FanOutProgress

    progress = FanOutProgress()                 # every fan-out node, to stderr
    final = await graph.invoke(state, observers=[progress])
    progress.close()                            # closes a bar a failed run left open

It is an observer. Each finished fan-out instance is counted as **done**,
**degraded** (it returned the degraded update of a
:class:`~middleware.FailureIsolationMiddleware`) or **failed** (it raised),
out of the fan-out's item count, with the rate (instances per second) and an
estimate of the time left.

Where the output goes (``stream``, default ``sys.stderr``):

- a terminal (``stream.isatty()``): a live ``tqdm`` bar per fan-out run,
  redrawn in place. ``tqdm`` is the optional extra ``progress``
  (``pip install 'openarmature-nodes[progress]'``); without it, log lines;
- anything else (a pipe, a file, CI logs): one plain line at most every
  ``interval`` seconds, and a last one when the fan-out completes::

      enrich: 120/500 (24%) done=118 degraded=1 failed=1 rate=12.3/s eta=31s

Why ``tqdm`` rather than ``rich``: one small pure-Python package with no
dependencies, whose bar already shows count, rate and ETA and degrades to
plain text itself; ``rich`` would bring in a markup and highlighting stack
(``markdown-it-py``, ``pygments``) for one bar.

The counts come from :class:`~openarmature_nodes.graph.events.FanOutInstanceEvent`,
an opt-in event only observers that ask for it receive (this one does,
through its ``observer_phases``), and from failure-isolation events. A
nested fan-out (a fan-out inside a fan-out instance) gets a bar / lines of
its own per outer instance; pass ``node=`` to follow one fan-out node only.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from openarmature_nodes.graph.events import FanOutInstanceEvent
from openarmature_nodes.middleware import FailureIsolationEvent

try:  # the optional extra "progress"
    from tqdm import tqdm as _tqdm  # type: ignore[import-untyped,import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - exercised where tqdm is absent
    _tqdm = None

__all__ = ["FanOutProgress", "format_line"]

_Key = tuple[str, tuple[str, ...], tuple[int | None, ...]]


def format_line(
    label: str, finished: int, total: int, done: int, degraded: int, failed: int,
    elapsed: float,
) -> str:
    """One progress log line (see the module docstring for the shape)."""
    pct = 100 * finished // total if total else 100
    rate = finished / elapsed if elapsed > 0 else 0.0
    if finished >= total:
        eta = "0s"
    elif rate > 0:
        eta = f"{(total - finished) / rate:.0f}s"
    else:
        eta = "?"
    return (
        f"{label}: {finished}/{total} ({pct}%) done={done} degraded={degraded} "
        f"failed={failed} rate={rate:.1f}/s eta={eta}"
    )


class _Tracker:
    """The counts (and bar) of one fan-out run."""

    __slots__ = ("bar", "began", "degraded", "done", "failed", "label", "last_line", "total")

    def __init__(self, label: str, total: int, began: float, bar: Any) -> None:
        self.label = label
        self.total = total
        self.began = began
        self.last_line = began
        self.done = self.degraded = self.failed = 0
        self.bar = bar

    @property
    def finished(self) -> int:
        return self.done + self.degraded + self.failed

    def counts(self) -> str:
        return f"done={self.done} degraded={self.degraded} failed={self.failed}"


class FanOutProgress:
    """Report fan-out progress; see the module docstring.

    ``node``: only the fan-out node of that name (default: all).
    ``stream``: where to write (default ``sys.stderr``). ``bar``: force the
    bar on (``True``; needs ``tqdm``) or off (``False``); default: on when
    ``stream`` is a terminal and ``tqdm`` is installed. ``interval``: at most
    one log line per this many seconds per fan-out (``0``: one per instance).
    ``clock``: monotonic seconds (tests pass a fake one).
    """

    observer_phases = frozenset({"fan_out_instance"})

    def __init__(
        self,
        node: str | None = None,
        *,
        stream: TextIO | None = None,
        bar: bool | None = None,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self.stream = stream if stream is not None else sys.stderr
        if bar is None:
            bar = _tqdm is not None and _isatty(self.stream)
        elif bar and _tqdm is None:
            raise RuntimeError(
                "the progress bar needs tqdm: pip install 'openarmature-nodes[progress]'"
            )
        self.bar = bar
        self.interval = interval
        self.clock = clock
        self._runs: dict[_Key, _Tracker] = {}
        self._degraded: set[tuple[Any, ...]] = set()

    async def __call__(self, event: Any) -> None:
        if isinstance(event, FailureIsolationEvent):
            if event.fan_out_index is not None:
                self._degraded.add((event.invocation_id, event.namespace, event.fan_out_index))
            return
        if not isinstance(event, FanOutInstanceEvent):
            return
        if self.node is not None and event.node_name != self.node:
            return
        key = (event.invocation_id, event.namespace, event.fan_out_index_chain)
        tracker = self._runs.get(key)
        if tracker is None:
            tracker = self._runs[key] = self._start(event)
        mark = (event.invocation_id, event.namespace, event.fan_out_index)
        if event.outcome == "failed":
            tracker.failed += 1
        elif mark in self._degraded:
            self._degraded.discard(mark)
            tracker.degraded += 1
        else:
            tracker.done += 1
        self._show(tracker)
        if tracker.finished >= tracker.total:
            self._finish(key, tracker)

    def close(self) -> None:
        """End every fan-out still open (a failed or cancelled run's)."""
        for key, tracker in list(self._runs.items()):
            self._finish(key, tracker)

    # --- output ---------------------------------------------------------------------

    def _start(self, event: FanOutInstanceEvent) -> _Tracker:
        label = "/".join(event.namespace)
        outer = [i for i in event.fan_out_index_chain if i is not None]
        if outer:
            label += f"[{','.join(map(str, outer))}]"
        bar = None
        if self.bar:
            assert _tqdm is not None
            bar = _tqdm(total=event.item_count, desc=label, unit="item", file=self.stream,
                        leave=True, dynamic_ncols=True)
        return _Tracker(label, event.item_count, self.clock(), bar)

    def _show(self, tracker: _Tracker) -> None:
        if tracker.bar is not None:
            tracker.bar.set_postfix_str(tracker.counts(), refresh=False)
            tracker.bar.update(1)
            return
        now = self.clock()
        if tracker.finished < tracker.total and now - tracker.last_line < self.interval:
            return
        tracker.last_line = now
        self._line(tracker, now)

    def _line(self, tracker: _Tracker, now: float) -> None:
        line = format_line(
            tracker.label, tracker.finished, tracker.total, tracker.done, tracker.degraded,
            tracker.failed, now - tracker.began,
        )
        print(line, file=self.stream, flush=True)

    def _finish(self, key: _Key, tracker: _Tracker) -> None:
        del self._runs[key]
        if tracker.bar is not None:
            tracker.bar.close()
        elif tracker.finished < tracker.total:
            self._line(tracker, self.clock())  # where an unfinished fan-out stopped


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
