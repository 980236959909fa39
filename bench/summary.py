#!/usr/bin/env python3
"""The issue targets, checked against one run's figures (bench/results/*.json).

Prints one Markdown table: target, what was measured in this run, and by how much it is met or
missed. Run by bench/run.sh after the stages; rerun by hand with ``summary.py [RESULTS_DIR]``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C


def load(d: str, name: str) -> list[dict[str, Any]]:
    try:
        with open(os.path.join(d, f"{name}.json")) as f:
            runs: list[dict[str, Any]] = json.load(f)["runs"]
            return runs
    except (OSError, ValueError, KeyError):
        return []


def med(runs: list[dict[str, Any]], key: str, **match: Any) -> float | None:
    vals = [r[key] for r in runs if key in r and all(r.get(k) == v for k, v in match.items())]
    return statistics.median(vals) if vals else None


def verdict(value: float | None, limit: float, unit: str = "µs") -> str:
    if value is None:
        return "not measured"
    if value <= limit:
        return f"met ({limit - value:,.1f} {unit} to spare)"
    return f"**missed by {value - limit:,.1f} {unit}**"


def main() -> None:
    d = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "results")
    client, memory, engine = load(d, "client"), load(d, "memory"), load(d, "engine")
    rows: list[list[str]] = []

    def add(target: str, measured: str, result: str) -> None:
        rows.append([target, measured, result])

    default = {r.get("transport") for r in client if r.get("client") == "ours"} - {None}
    for be in ("asyncio", "trio"):
        v = med(client, "cpu_us", client="ours_fast", backend=be, c=32)
        add(f"`ours_fast` CPU/call at C=32, {be} <= 60 µs", C.fmt(v, 1), verdict(v, 60))
        v = med(client, "cpu_us", client="ours", backend=be, c=32)
        name = ", ".join(sorted(default)) or "?"
        add(
            f"`ours` (default transport: {name}) CPU/call at C=32, {be}",
            C.fmt(v, 1),
            verdict(v, 60) if default == {"FastTransport"} else "(target is for FastTransport)",
        )
    for be in ("asyncio", "trio"):
        v = med(client, "cpu_us", client="ours_httpx", backend=be, c=32)
        raw = med(client, "cpu_us", client="raw_httpx", backend=be, c=32)
        limit = raw + 30 if raw is not None else 0.0
        add(
            f"`ours_httpx` at C=32, {be} <= raw httpx + 30 µs",
            f"{C.fmt(v)} vs raw {C.fmt(raw)}",
            verdict(v, limit) if raw is not None else "not measured",
        )
    for shape in ("linear", "agent"):
        lg = med(engine, "us_cpu", engine="langgraph", shape=shape)
        for be in ("asyncio", "trio"):
            v = med(engine, "us_cpu", engine="ours", shape=shape, backend=be)
            add(f"engine µs/step, {shape}, {be} <= 5", C.fmt(v, 2), verdict(v, 5))
            if v is not None and lg is not None:
                add(
                    f"engine {shape}, {be}: >= 3x fewer µs than LangGraph",
                    f"{lg / v:,.0f}x fewer ({C.fmt(v, 2)} vs {C.fmt(lg, 1)})",
                    "met" if lg / v >= 3 else "**missed**",
                )
    onion = load(d, "onion")
    for r in onion:
        if "us" in r:
            v = r["us"]["onion"] - r["us"]["bare"]
            if r["mode"] == "mem":
                target = f"full onion over bare complete(), {r['backend']} <= 20 µs"
                add(target + " (in-memory transport)", f"{v:+.1f}", verdict(v, 20))
            else:  # over sockets the rows differ by +-10-20 µs of noise: for reference only
                target = f"(reference) the same over FastTransport + nginx, {r['backend']}"
                add(target, f"{v:+.1f}", "noisy: sequential socket calls")
    for r_cl in ("ours", "ours_fast_big"):
        for be in ("asyncio", "trio"):
            rs = [r for r in memory if r.get("client") == r_cl and r.get("backend") == be]
            ok = [r for r in rs if "kb_per_call" in r]
            if not ok:
                add(f"1,000 in flight, `{r_cl}`, {be}: no errors", "not measured", "not measured")
                continue
            errs = sum(r["errors"] for r in ok)
            kb = statistics.median(r["kb_per_call"] for r in ok)
            add(
                f"1,000 in flight, `{r_cl}`, {be}: no errors",
                f"{errs} errors, {kb:.1f} KB/call",
                "met" if errs == 0 else "**missed**",
            )
    print("## Targets (issues 3 and 7) in this run\n")
    print(C.table(["target", "measured", "result"], rows))


if __name__ == "__main__":
    main()
