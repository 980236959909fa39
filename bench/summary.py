#!/usr/bin/env python3
"""The issue targets, checked against one run's figures (bench/results/*.json).

Prints one Markdown table per stage: each target, this run's figure (the median of the
repeats, with their ``[min-max]`` spread), the ratio of the figure to the target's limit and
the verdict. Run by bench/run.sh after the stages; rerun by hand with
``summary.py [RESULTS_DIR]``.

Exit status: 1 when a target is missed by more than the run's spread (the figure is past its
limit by more than ``max - min`` of its repeats: a miss the noise of this run cannot explain),
else 0. A miss within the spread is printed as such and does not fail the run; a stage that
did not run is "not measured" and does not fail it either.

Each stage's targets live in their own function ``<stage>_targets(results_dir)`` returning
:class:`Target` rows; :data:`STAGES` lists them in print order. Add a stage's targets by
writing such a function and listing it there.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C

FLAT = 1.2
"""A per-unit cost "stays flat" when its figure at the largest size is at most this many times
its figure at the smallest (issue 18 item 3: fan-out N, agent-loop message count)."""


# --------------------------------------------------------------------------- figures
@dataclass(frozen=True)
class Fig:
    """One figure of the run: the median of its repeats and their spread."""

    median: float
    lo: float
    hi: float
    n: int = 1

    @classmethod
    def of(cls, values: Iterable[float]) -> Fig | None:
        vals = [v for v in values if v is not None and not math.isnan(v)]
        if not vals:
            return None
        return cls(statistics.median(vals), min(vals), max(vals), len(vals))

    def text(self, digits: int) -> str:
        med = C.fmt(self.median, digits)
        if self.n < 2:
            return med
        return f"{med} [{C.fmt(self.lo, digits)}-{C.fmt(self.hi, digits)}]"


@dataclass(frozen=True)
class Target:
    """One target row. ``limit`` is an upper bound unless ``at_least``; ``limit=None`` marks a
    figure reported without a target (never fails)."""

    name: str
    fig: Fig | None
    limit: float | None
    unit: str = "µs"
    digits: int = 1
    at_least: bool = False
    note: str = ""

    def verdict(self) -> tuple[str, bool]:
        """(text, hard miss)."""
        f = self.fig
        if f is None:
            return "not measured", False
        if self.limit is None:
            return self.note or "reported (no target)", False
        over = (self.limit - f.median) if self.at_least else (f.median - self.limit)
        if over <= 0:
            return f"met ({C.fmt(-over, self.digits)} {self.unit} to spare)", False
        width = f.hi - f.lo
        if over <= width:
            return (
                f"missed by {C.fmt(over, self.digits)} {self.unit}, within this run's spread "
                f"({C.fmt(width, self.digits)})",
                False,
            )
        return f"**missed by {C.fmt(over, self.digits)} {self.unit}**", True

    def ratio(self) -> str:
        if self.fig is None or not self.limit:
            return "—"
        return C.ratio(self.fig.median / self.limit)


def load(d: str, name: str) -> list[dict[str, Any]]:
    try:
        with open(os.path.join(d, f"{name}.json")) as f:
            runs: list[dict[str, Any]] = json.load(f)["runs"]
            return runs
    except (OSError, ValueError, KeyError):
        return []


def rows_of(runs: list[dict[str, Any]], key: str, **match: Any) -> list[dict[str, Any]]:
    return [r for r in runs if key in r and all(r.get(k) == v for k, v in match.items())]


def fig(runs: list[dict[str, Any]], key: str, **match: Any) -> Fig | None:
    """The figure of ``key`` over the runs matching ``match`` (one per repeat)."""
    return Fig.of(r[key] for r in rows_of(runs, key, **match))


def ratio_fig(num: Sequence[dict[str, Any]], den: Sequence[dict[str, Any]], key: str) -> Fig | None:
    """``num[key] / den[key]`` per repeat (paired by ``repeat`` when both carry it; else the
    ratio of the medians, with the widest spread the repeats allow)."""
    if not num or not den:
        return None
    by_rep = {r.get("repeat"): r for r in den}
    pairs = [(a[key], by_rep[a.get("repeat")][key]) for a in num if a.get("repeat") in by_rep]
    if pairs and None not in by_rep:
        return Fig.of(a / b for a, b in pairs)
    a = Fig.of(r[key] for r in num)
    b = Fig.of(r[key] for r in den)
    assert a is not None and b is not None
    return Fig(a.median / b.median, a.lo / b.hi, a.hi / b.lo, min(a.n, b.n))


# --------------------------------------------------------------------------- stages
def client_targets(d: str) -> list[Target]:
    """Issues 3 and 7: CPU per call of the client, C=32 (client_bench.py)."""
    client = load(d, "client")
    out: list[Target] = []
    default = {r.get("transport") for r in client if r.get("client") == "ours"} - {None}
    for be in ("asyncio", "trio"):
        out.append(
            Target(
                f"`ours_fast` CPU/call at C=32, {be} <= 60 µs",
                fig(client, "cpu_us", client="ours_fast", backend=be, c=32),
                60,
            )
        )
        name = ", ".join(sorted(default)) or "?"
        out.append(
            Target(
                f"`ours` (default transport: {name}) CPU/call at C=32, {be} <= 60 µs",
                fig(client, "cpu_us", client="ours", backend=be, c=32),
                60 if default == {"FastTransport"} else None,
                note="(target is for FastTransport)",
            )
        )
    for be in ("asyncio", "trio"):
        raw = fig(client, "cpu_us", client="raw_httpx", backend=be, c=32)
        ours = fig(client, "cpu_us", client="ours_httpx", backend=be, c=32)
        out.append(
            Target(
                f"`ours_httpx` at C=32, {be} <= raw httpx + 30 µs"
                + (f" (raw: {raw.text(0)})" if raw else ""),
                ours,
                raw.median + 30 if raw is not None else None,
                digits=0,
                note="not measured (no raw httpx row)",
            )
        )
    return out


def client_floor_targets(d: str) -> list[Target]:
    """Issue 18 item 1 (client_bench.py's floor rows): ``ours`` (a default ``complete()``)
    at C=32 within 1.3x of the floor (the same bytes over raw sockets, httptools +
    msgspec) on each loop; at C=1 at most 50 µs CPU per call."""
    client = load(d, "client")
    out: list[Target] = []
    for be in ("asyncio", "trio"):
        out.append(Target(
            f"`ours` CPU/call at C=32, {be} <= 1.3x the floor",
            ratio_fig(rows_of(client, "cpu_us", client="ours", backend=be, c=32),
                      rows_of(client, "cpu_us", client="floor", backend=be, c=32), "cpu_us"),
            1.3, unit="x", digits=2,
        ))
        out.append(Target(
            f"(reference) `ours` ÷ floor at C=1, {be}",
            ratio_fig(rows_of(client, "cpu_us", client="ours", backend=be, c=1),
                      rows_of(client, "cpu_us", client="floor", backend=be, c=1), "cpu_us"),
            None, unit="x", digits=2,
        ))
        out.append(Target(f"`ours` CPU/call at C=1, {be} <= 50 µs",
                          fig(client, "cpu_us", client="ours", backend=be, c=1), 50))
    return out


def streaming_targets(d: str) -> list[Target]:
    """Issue 18 item 2 (streaming_bench.py): CPU per delta at most 1/10 of the openai
    SDK's; time to first token under 50 µs over the floor; token events delivered to an
    observer change the per-delta figure by at most 20 %."""
    runs = load(d, "streaming")
    out: list[Target] = []
    for be in ("asyncio", "trio"):
        ours = rows_of(runs, "cpu_us_delta", client="ours", backend=be)
        out.append(Target(
            f"streaming CPU/delta, {be}: ours ÷ openai SDK <= 0.1",
            ratio_fig(ours, rows_of(runs, "cpu_us_delta", client="openai", backend=be),
                      "cpu_us_delta"),
            0.1, unit="x", digits=3,
        ))
        out.append(Target(f"time to first token over the floor, {be} < 50 µs",
                          fig(runs, "ttft_over_floor_us", client="ttft", backend=be), 50))
        out.append(Target(
            f"token events to an observer, {be}: CPU/delta observed ÷ unobserved <= 1.2",
            ratio_fig(rows_of(runs, "cpu_us_delta", client="ours_observed", backend=be), ours,
                      "cpu_us_delta"),
            1.2, unit="x", digits=2,
        ))
    return out


def observer_targets(d: str) -> list[Target]:
    """Issue 13 (observer_bench.py): the observer's own cost per node step (no-op observer
    minus the unobserved step) at most 3x the unobserved step, per loop; the span middleware
    within 1.5x of the bare SDK's one span. Reported beside them: the whole observed step ÷
    the unobserved one, and the OTel observer ÷ the SDK floor of one span per step."""
    runs = load(d, "observer")
    out: list[Target] = []
    for be in ("asyncio", "trio"):
        bare = rows_of(runs, "per_step_us", row="bare", backend=be)
        noop = rows_of(runs, "per_step_us", row="noop", backend=be)
        by_rep = {r.get("repeat"): r["per_step_us"] for r in bare}
        own = Fig.of((r["per_step_us"] - by_rep[r.get("repeat")]) / by_rep[r.get("repeat")]
                     for r in noop if r.get("repeat") in by_rep)
        out.append(Target(f"observer's own cost per step ÷ unobserved step, {be} <= 3",
                          own, 3, unit="x", digits=2))
        out.append(Target(f"(reference) observed step ÷ unobserved step, {be}",
                          ratio_fig(noop, bare, "per_step_us"), None, unit="x", digits=2))
        out.append(Target(
            f"(reference) OTel observer ÷ SDK floor (one span per step), {be}",
            ratio_fig(rows_of(runs, "per_step_us", row="otel", backend=be),
                      rows_of(runs, "per_step_us", row="sdk_floor", backend=be), "per_step_us"),
            None, unit="x", digits=2,
        ))
        out.append(Target(
            f"SpanMiddleware ÷ SDK floor per LLM call, {be} <= 1.5",
            ratio_fig(rows_of(runs, "span_mw_us", row="bare", backend=be),
                      [dict(r, span_mw_us=r["span_floor_us"])
                       for r in rows_of(runs, "span_floor_us", row="bare", backend=be)],
                      "span_mw_us"),
            1.5, unit="x", digits=2,
        ))
    return out


def memory_targets(d: str) -> list[Target]:
    """Issue 3: 1,000 calls in flight on one provider, no errors (memory_bench.py)."""
    memory = load(d, "memory")
    out: list[Target] = []
    for cl in ("ours", "ours_fast_big"):
        for be in ("asyncio", "trio"):
            ok = rows_of(memory, "kb_per_call", client=cl, backend=be)
            kb = Fig.of(r["kb_per_call"] for r in ok)
            calls = f"{ok[0]['calls']:,}" if ok and "calls" in ok[0] else "1,000"
            out.append(
                Target(
                    f"{calls} in flight, `{cl}`, {be}: errors = 0"
                    + (f" ({kb.text(1)} KB/call)" if kb else ""),
                    Fig.of(r["errors"] for r in ok),
                    0,
                    unit="errors",
                    digits=0,
                )
            )
    return out


def engine_targets(d: str) -> list[Target]:
    """Issue 3: µs per engine step, and next to LangGraph (engine_bench.py)."""
    engine = load(d, "engine")
    out: list[Target] = []
    for shape in ("linear", "agent"):
        lg = rows_of(engine, "us_cpu", engine="langgraph", shape=shape)
        for be in ("asyncio", "trio"):
            ours = rows_of(engine, "us_cpu", engine="ours", shape=shape, backend=be)
            out.append(
                Target(
                    f"engine µs/step, {shape}, {be} <= 5",
                    Fig.of(r["us_cpu"] for r in ours),
                    5,
                    digits=2,
                )
            )
            out.append(
                Target(
                    f"engine {shape}, {be}: ours ÷ LangGraph µs/step <= 1/3",
                    ratio_fig(ours, lg, "us_cpu"),
                    1 / 3,
                    unit="",
                    digits=4,
                )
            )
    return out


def onion_targets(d: str) -> list[Target]:
    """Issue 7: the full call-level onion over a bare complete() (onion_bench.py)."""
    out: list[Target] = []
    for r in load(d, "onion"):
        if "us" not in r:
            continue
        v = r["us"]["onion"] - r["us"]["bare"]
        rng = r.get("range", {})
        o, b = rng.get("onion", [v, v]), rng.get("bare", [0, 0])
        f = Fig(v, min(v, o[0] - b[1]), max(v, o[1] - b[0]), 2 if "range" in r else 1)
        if r["mode"] == "mem":
            name = f"full onion over bare complete(), {r['backend']} <= 20 µs (in-memory transport)"
            out.append(Target(name, f, 20))
        else:  # over sockets the rows differ by +-10-20 µs of noise: for reference only
            name = f"(reference) the same over FastTransport + nginx, {r['backend']}"
            out.append(Target(name, f, None, note="noisy: sequential socket calls"))
    return out


def growth_targets(d: str) -> list[Target]:
    """Issue 18 item 3: cost per unit stays flat as the work grows (growth_bench.py)."""
    runs = load(d, "growth")
    out: list[Target] = []
    for shape, what in (("trivial", "instance"), ("waiting", "pending instance")):
        for be in ("asyncio", "trio"):
            rows = rows_of(runs, "us_cpu", stage="fanout", shape=shape, backend=be)
            sizes = sorted({r["n"] for r in rows})
            if len(sizes) < 2:
                continue
            lo, hi = sizes[0], sizes[-1]
            small = [r for r in rows if r["n"] == lo]
            big = [r for r in rows if r["n"] == hi]
            span = f"{hi:,} ÷ {lo:,}"
            for key, label in (("us_cpu", "CPU"), ("traced_bytes_per_instance", "peak memory")):
                a, b = Fig.of(r[key] for r in big), Fig.of(r[key] for r in small)
                figs = f" ({a.text(1)} vs {b.text(1)})" if a and b else ""
                out.append(
                    Target(
                        f"fan-out {shape}, {be}: {label} per {what}, {span} <= {FLAT}{figs}",
                        ratio_fig(big, small, key),
                        FLAT,
                        unit="x",
                        digits=2,
                    )
                )
    agent = load(d, "growth")
    for be in ("asyncio", "trio"):
        rows = rows_of(agent, "us_step", stage="agent", engine="ours", backend=be)
        ms = sorted({r["m"] for r in rows})
        if len(ms) < 2:
            continue
        big = [r for r in rows if r["m"] == ms[-1]]
        small = [r for r in rows if r["m"] == ms[0]]
        a, b = Fig.of(r["us_step"] for r in big), Fig.of(r["us_step"] for r in small)
        figs = f" ({a.text(2)} vs {b.text(2)} µs)" if a and b else ""
        out.append(
            Target(
                f"agent loop, {be}: µs/step at {ms[-1]:,} ÷ at {ms[0]:,} messages <= {FLAT}{figs}",
                ratio_fig(big, small, "us_step"),
                FLAT,
                unit="x",
                digits=2,
            )
        )
        lg = rows_of(agent, "us_step", stage="agent", engine="langgraph", m=ms[-1])
        out.append(
            Target(
                f"agent loop at {ms[-1]:,} messages, {be}: ours ÷ LangGraph µs/step",
                ratio_fig(big, lg, "us_step"),
                None,
                unit="",
                digits=4,
            )
        )
    return out


def inflight_targets(d: str) -> list[Target]:
    """Issue 18 item 4: 10,000 calls in flight on one provider, backpressure on and off
    (memory_bench.py rows ours_bp_on / ours_bp_off, stage ``inflight``)."""
    runs = load(d, "inflight")
    out: list[Target] = []
    for cl in ("ours_bp_on", "ours_bp_off"):
        for be in ("asyncio", "trio"):
            ok = rows_of(runs, "kb_per_call", client=cl, backend=be)
            if not ok:
                out.append(Target(f"in flight, `{cl}`, {be}", None, None))
                continue
            calls = ok[0]["calls"]
            limit = int(ok[0].get("max_in_flight", calls))
            out.append(
                Target(
                    f"{calls:,} in flight, `{cl}`, {be}: errors = 0",
                    Fig.of(r["errors"] for r in ok),
                    0,
                    unit="errors",
                    digits=0,
                )
            )
            held = Fig.of(r["server_max_in_flight"] for r in ok)
            want = min(limit, calls)
            out.append(
                Target(
                    f"`{cl}`, {be}: the server held the calls at once (>= 99 % of {want:,})",
                    held,
                    math.floor(0.99 * want),
                    unit="calls",
                    digits=0,
                    at_least=True,
                )
            )
            kb = Fig.of(r["kb_per_call"] for r in ok)
            cpu = Fig.of(r["cpu_us"] for r in ok)
            out.append(
                Target(
                    f"`{cl}`, {be}: KB per in-flight call; CPU µs per call "
                    + (f"{cpu.text(0)}" if cpu else "—"),
                    kb,
                    None,
                    unit="KB",
                )
            )
    return out


STAGES: list[tuple[str, Callable[[str], list[Target]]]] = [
    ("client (issues 3, 7)", client_targets),
    ("client floor (issue 18, item 1)", client_floor_targets),
    ("streaming (issue 18, item 2)", streaming_targets),
    ("observer (issue 13)", observer_targets),
    ("memory (issue 3)", memory_targets),
    ("engine (issue 3)", engine_targets),
    ("onion (issue 7)", onion_targets),
    ("growth (issue 18, item 3)", growth_targets),
    ("in flight (issue 18, item 4)", inflight_targets),
]


def main() -> int:
    d = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "results")
    print("## Targets in this run\n")
    print("Figure: median of the repeats [min-max]; ratio: figure ÷ the target's limit.\n")
    hard: list[str] = []
    for title, targets in STAGES:
        rows = targets(d)
        if not rows or all(t.fig is None for t in rows):
            print(f"### {title}: not measured in this run\n")
            continue
        body = []
        for t in rows:
            text, miss = t.verdict()
            if miss:
                hard.append(t.name)
            body.append([t.name, t.fig.text(t.digits) if t.fig else "—", t.ratio(), text])
        print(f"### {title}\n")
        print(C.table(["target", "this run", "ratio", "result"], body))
        print()
    if hard:
        print(f"**{len(hard)} target(s) missed by more than this run's spread:**")
        for name in hard:
            print(f"- {name}")
        return 1
    print("Every measured target is met (or missed only within this run's spread).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
