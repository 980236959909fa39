"""Shared plumbing for the bench/ scripts: child processes, CPU pinning, medians, tables.

Every measurement runs in a fresh child process (``python script.py --child ...``) that prints
one JSON line; the parent collects them, takes medians over repeats and prints Markdown tables.
Nothing here is imported by the package: bench/ is a harness that runs in its own virtualenv
(bench/.peers) next to the peers it compares against.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

STUB_URL = os.environ.get("STUB_URL", "http://127.0.0.1:18090")
SYSTEM = "You are a terse assistant used for benchmarking."
USER = "Summarise the benefits of connection pooling in one sentence."
EXPECT = "The quick brown fox"
API_KEY = "sk-bench"

VERSION_PKGS = [
    "openarmature-nodes",
    "httpx",
    "httpcore",
    "httptools",
    "msgspec",
    "anyio",
    "trio",
    "aiohttp",
    "openai",
    "openarmature",
    "langgraph",
    "langchain-core",
    "pydantic",
]


class Skip(Exception):
    """A row that cannot run here (library missing, feature not built yet): reported, not fatal."""


def pin_cpu0() -> None:
    """Pin this process to CPU 0; the stub / delay server sits on the last CPU."""
    if os.environ.get("BENCH_NO_PIN") or not hasattr(os, "sched_setaffinity"):
        return
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {0})


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in VERSION_PKGS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def emit(result: dict[str, Any]) -> None:
    """The child's one line of output."""
    print(json.dumps(result), flush=True)


def run_child(script: str, args: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run ``script --child ...`` in a fresh interpreter; return its JSON line or an error row."""
    cmd = [sys.executable, script, *args]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f}s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        err = (p.stderr or p.stdout).strip().splitlines() or ["no output"]
        # The exception line of a traceback says more than whatever was printed after it.
        exc = [ln for ln in err if re.match(r"^[\w.]+(Error|Exception|Exit|Interrupt)\b", ln)]
        return {"error": f"rc={p.returncode}: {(exc or err)[-1][:300]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_cells(
    script: str,
    cells: Iterable[tuple[dict[str, Any], list[str]]],
    timeout: float,
    *,
    measured: str,
    label: Callable[[dict[str, Any]], str],
    figures: Callable[[dict[str, Any]], str],
) -> list[dict[str, Any]]:
    """The parent loop of every benchmark: run each cell in a fresh child, in order.

    A cell is ``(labels, child args)``; ``labels`` (with a ``repeat`` number) are
    merged into the child's result row. A row without the ``measured`` key failed
    or skipped: its later repeats are not run. Progress goes to stderr, one line
    per row: ``label(labels)`` then ``figures(row)`` or the reason it skipped.
    """
    runs: list[dict[str, Any]] = []
    dead: set[tuple[Any, ...]] = set()
    for labels, args in cells:
        key = tuple(v for k, v in labels.items() if k != "repeat")
        if key in dead:
            continue
        row = run_child(script, args, timeout)
        row.update(labels)
        runs.append(row)
        if measured in row:
            line = figures(row)
        else:
            dead.add(key)
            line = f"SKIP: {row.get('skipped') or row.get('error')}"
        print(f"  {label(labels)} {line}", file=sys.stderr, flush=True)
    return runs


def median_of(rows: Iterable[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def spread(rows: Sequence[dict[str, Any]], key: str, digits: int = 0) -> str:
    """``min-max`` over the repeats (empty for a single run)."""
    vals = [r[key] for r in rows]
    return f"{min(vals):,.{digits}f}-{max(vals):,.{digits}f}" if len(vals) > 1 else ""


def ratio(r: float) -> str:
    """A ratio for a table cell; small ones also as a fraction ("0.0044 = 1/226")."""
    if r >= 0.1:
        return f"{r:.2f}"
    return f"{r:.2g} = 1/{1 / r:.0f}"


def fmt(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "—"
    return f"{v:,.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, columns padded so it also reads well in a terminal."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)) + " |"

    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def save_json(path: str | None, payload: dict[str, Any]) -> None:
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    payload.setdefault("when", time.strftime("%F %T"))
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)


def run_loop(backend: str, main: Callable[[], Any]) -> None:
    """Run ``main`` (an async function) on the native asyncio or trio loop."""
    if backend == "trio":
        import trio

        trio.run(main)
    else:
        import asyncio

        asyncio.run(main())


async def run_workers(backend: str, n_workers: int, worker: Callable[[], Any]) -> None:
    """Start ``n_workers`` copies of ``worker`` on the native loop and wait for all of them."""
    if backend == "trio":
        import trio

        async with trio.open_nursery() as nursery:
            for _ in range(n_workers):
                nursery.start_soon(worker)
    else:
        import asyncio

        await asyncio.gather(*(worker() for _ in range(n_workers)))
