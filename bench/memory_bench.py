#!/usr/bin/env python3
"""Memory benchmark: 1,000 concurrent in-flight complete() calls on ONE provider.

A delay server (_delay_server.py, its own process on the last CPU) answers every chat
completion after --delay seconds, so the calls overlap. Each row runs in a fresh child:
build the provider, 5 sequential warm-up calls, note the current RSS, then start --calls
tasks at once, each awaiting one ``complete()``; a sampler reads the current RSS every 10 ms.
Reported: peak RSS of the child, KB per in-flight call = (highest sampled RSS - RSS before the
burst) / calls, the server-side high-water mark of concurrent requests (proof of overlap),
wall time, CPU µs per call, and errors (any error fails the row).

Rows (each on asyncio and trio): ours with its default transport and pool; ours with an explicit
FastTransport() (default pool of 100: the other 900 calls wait for a connection inside
complete()); ours with FastTransport(max_connections=--calls), so every call is on the wire at
once; raw aiohttp with a pool of --calls for reference (asyncio). Opt-in (--only, slow: see
EXTRA): ours_httpx, ours_httpx_big, raw_httpx, raw_httpx_big.

Usage: memory_bench.py [--calls 1000] [--delay 0.3] [--repeats 1] [--json F]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
import urllib.request
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C

HERE = os.path.dirname(os.path.abspath(__file__))
MATRIX = [(cl, be) for be in ("asyncio", "trio") for cl in ("ours", "ours_fast", "ours_fast_big")]
MATRIX.append(("raw_aiohttp_big", "asyncio"))
# Issue 18 item 4 (stage ``inflight``: --calls 10000 --only ours_bp_on,ours_bp_off): a pool of one
# connection per call, with the provider's per-endpoint backpressure limit at its default (256
# calls on the wire, the rest wait inside complete()) and raised to --calls (off).
BACKPRESSURE = [(cl, be) for be in ("asyncio", "trio") for cl in ("ours_bp_on", "ours_bp_off")]
# Opt-in rows (--only): with 1,000 callers, httpx 0.28's pool costs 10-20 ms CPU per call here
# (every request and release walks the waiters and probes idle sockets): ~25 s per row.
EXTRA = [
    (cl, be)
    for be in ("asyncio", "trio")
    for cl in ("ours_httpx", "ours_httpx_big", "raw_httpx", "raw_httpx_big")
]
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def current_rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_KB


INFO: dict[str, str] = {}  # what the child learned about its row (the transport in use)


def build(client: str, url: str, calls: int) -> Any:
    """Return (call, close) for one row."""
    if client == "raw_aiohttp_big":
        import aiohttp

        state: dict[str, Any] = {}
        wire = {
            "model": "bench-model",
            "temperature": 0,
            "max_tokens": 64,
            "messages": [
                {"role": "system", "content": C.SYSTEM},
                {"role": "user", "content": C.USER},
            ],
        }

        async def aio_call() -> str:
            if "s" not in state:  # a ClientSession must be created inside the running loop
                state["s"] = aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=calls))
            async with state["s"].post("/v1/chat/completions", json=wire) as r:
                r.raise_for_status()
                return (await r.json())["choices"][0]["message"]["content"]  # type: ignore[no-any-return]

        async def aio_close() -> None:
            if "s" in state:
                await state["s"].close()

        return aio_call, aio_close
    if client.startswith("raw_httpx"):
        import httpx

        limits = (
            httpx.Limits(max_connections=calls, max_keepalive_connections=calls)
            if client.endswith("_big")
            else httpx.Limits()
        )  # default: 100 / 20
        hc = httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits)
        body = {
            "model": "bench-model",
            "temperature": 0,
            "max_tokens": 64,
            "messages": [
                {"role": "system", "content": C.SYSTEM},
                {"role": "user", "content": C.USER},
            ],
        }

        async def raw_call() -> str:
            r = await hc.post("/v1/chat/completions", json=body)
            r.raise_for_status()
            return r.json()["choices"][0]["message"]["content"]  # type: ignore[no-any-return]

        return raw_call, hc.aclose
    try:
        from openarmature_nodes import llm

        provider_cls = llm.OpenAIProvider
    except (ImportError, AttributeError) as e:
        raise C.Skip(f"openarmature_nodes.llm.OpenAIProvider not available ({e})") from None
    kw: dict[str, Any] = {}
    if client == "ours_httpx":
        from openarmature_nodes.llm.transport import HttpxTransport

        kw["transport"] = HttpxTransport()
    elif client == "ours_httpx_big":
        import httpx

        from openarmature_nodes.llm.transport import HttpxTransport

        kw["transport"] = HttpxTransport(
            client=httpx.AsyncClient(
                timeout=60.0,
                limits=httpx.Limits(max_connections=calls, max_keepalive_connections=calls),
            )
        )
    elif client.startswith("ours_bp_"):
        from openarmature_nodes.llm.limits import DEFAULT_MAX_IN_FLIGHT
        from openarmature_nodes.llm.transport.fast import FastTransport

        kw["transport"] = FastTransport(max_connections=calls)
        if client == "ours_bp_off":
            kw["max_in_flight"] = calls
        INFO["max_in_flight"] = str(calls if client == "ours_bp_off" else DEFAULT_MAX_IN_FLIGHT)
    elif client.startswith("ours_fast"):
        try:
            from openarmature_nodes.llm.transport.fast import FastTransport
        except ImportError as e:
            raise C.Skip(f"FastTransport not available yet ({e})") from None
        kw["transport"] = (
            FastTransport(max_connections=calls) if client.endswith("_big") else FastTransport()
        )
    p = provider_cls(url, "bench-model", api_key=C.API_KEY, **kw)
    INFO["transport"] = type(getattr(p, "transport", None)).__name__
    msgs = [llm.SystemMessage(content=C.SYSTEM), llm.UserMessage(content=C.USER)]
    cfg = llm.RuntimeConfig(temperature=0, max_tokens=64)

    async def call() -> str:
        return (await p.complete(msgs, config=cfg)).message.content  # type: ignore[no-any-return]

    return call, p.aclose


def server_stats(url: str, hold: int = 0) -> dict[str, int]:
    """The server's counters (resets its high-water mark); ``hold``: gate the next burst until
    that many requests are in flight at once (see _delay_server.py)."""
    with urllib.request.urlopen(url + "/stats" + (f"?hold={hold}" if hold else ""), timeout=5) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def raise_nofile(need: int) -> None:
    """Raise the open-files limit to its hard limit: one socket per in-flight call."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < need:
        sys.exit(f"open-files hard limit {hard} < {need}: raise it (ulimit -Hn) to run this row")


def child(a: argparse.Namespace) -> None:
    C.pin_cpu0()
    raise_nofile(a.calls + 100)
    row: dict[str, Any] = {"client": a.child, "backend": a.backend, "calls": a.calls}
    try:
        call, close = build(a.child, a.url, a.calls)
    except C.Skip as e:
        C.emit({**row, "skipped": str(e)})
        return
    errors: list[str] = []
    done = [False]
    high = [0]

    async def one() -> None:
        try:
            if not (await call()).startswith(C.EXPECT):
                errors.append("wrong content")
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")

    async def sampler() -> None:
        sleep = __import__(a.backend).sleep
        while not done[0]:
            high[0] = max(high[0], current_rss_kb())
            await sleep(0.01)

    async def burst() -> None:
        await C.run_workers(a.backend, a.calls, one)
        done[0] = True

    async def main() -> None:
        for _ in range(5):
            await one()
        gc.collect()
        before = current_rss_kb()
        high[0] = before
        # Resets the server's high-water mark. The backpressure rows also gate the burst: the
        # server answers nothing until min(limit, calls) requests are held together.
        hold = min(int(INFO["max_in_flight"]), a.calls) if "max_in_flight" in INFO else 0
        server_stats(a.url, hold)
        cpu0, t0 = time.process_time(), time.perf_counter()
        if a.backend == "trio":
            import trio

            async with trio.open_nursery() as n:
                n.start_soon(sampler)
                n.start_soon(burst)
        else:
            import asyncio

            await asyncio.gather(sampler(), burst())
        t1, cpu1 = time.perf_counter(), time.process_time()
        stats = server_stats(a.url)
        await close()
        row.update(
            rss_before_mb=before / 1024,
            rss_high_mb=high[0] / 1024,
            kb_per_call=(high[0] - before) / a.calls,
            wall_s=t1 - t0,
            cpu_us=(cpu1 - cpu0) / a.calls * 1e6,
            server_max_in_flight=stats["max_in_flight"],
            errors=len(errors),
            error_sample=errors[:3],
        )

    C.run_loop(a.backend, main)
    row.update(INFO)
    row["rss_mb"] = C.peak_rss_mb()
    C.emit(row)


def start_server(delay: float) -> tuple[subprocess.Popen[str], str]:
    port = os.environ.get("DELAY_PORT", "0")  # 0: any free port
    proc = subprocess.Popen(
        [
            sys.executable,
            os.path.join(HERE, "_delay_server.py"),
            "--delay",
            str(delay),
            "--port",
            port,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if len(line) != 2 or line[0] != "PORT":
        proc.kill()
        sys.exit("delay server did not start")
    return proc, f"http://127.0.0.1:{line[1]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--delay", type=float, default=0.3)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--only", default="")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--json")
    ap.add_argument("--child")
    ap.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    ap.add_argument("--url")
    a = ap.parse_args()
    if a.child:
        return child(a)
    sel = [s for s in a.only.split(",") if s]
    matrix = [
        (cl, be)
        for cl, be in MATRIX + EXTRA
        if (not sel and (cl, be) in MATRIX) or cl in sel or f"{cl}:{be}" in sel
    ]
    for cl, be in BACKPRESSURE:
        if (cl in sel or f"{cl}:{be}" in sel) and (cl, be) not in matrix:
            matrix.append((cl, be))
    raise_nofile(a.calls + 100)  # the delay server inherits it
    proc, url = start_server(a.delay)
    runs: list[dict[str, Any]] = []
    try:
        for rep in range(a.repeats):
            for cl, be in matrix:
                r = C.run_child(
                    __file__,
                    ["--child", cl, "--backend", be, "--url", url, "--calls", str(a.calls)],
                    a.timeout,
                )
                r.update(client=cl, backend=be, repeat=rep)
                runs.append(r)
                msg = r.get("skipped") or r.get("error")
                if msg:
                    print(f"  [#{rep}] {cl:15s} {be:7s} SKIP: {msg}", file=sys.stderr, flush=True)
                else:
                    print(
                        f"  [#{rep}] {cl:15s} {be:7s} {r['kb_per_call']:6.1f} KB/call  peak "
                        f"{r['rss_mb']:5.1f} MB  server max in flight {r['server_max_in_flight']}  "
                        f"errors {r['errors']}",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(
        f"## Memory: {a.calls:,} concurrent in-flight complete() calls on one provider "
        f"(server delay {a.delay * 1000:.0f} ms)\n"
    )
    body, notes = [], []
    for cl, be in matrix:
        rows = [r for r in runs if (r["client"], r["backend"]) == (cl, be)]
        ok = [r for r in rows if "kb_per_call" in r]
        if not ok:
            if rows:
                notes.append(f"- `{cl}` / {be}: {rows[0].get('skipped') or rows[0].get('error')}")
            continue
        m = {
            k: C.median_of(ok, k)
            for k in (
                "kb_per_call",
                "rss_mb",
                "rss_before_mb",
                "wall_s",
                "cpu_us",
                "server_max_in_flight",
            )
        }
        errs = sum(r["errors"] for r in ok)
        body.append(
            [
                cl,
                be,
                C.fmt(m["rss_before_mb"], 1),
                C.fmt(m["rss_mb"], 1),
                C.fmt(m["kb_per_call"], 1),
                C.fmt(m["server_max_in_flight"]),
                C.fmt(m["wall_s"], 2),
                C.fmt(m["cpu_us"]),
                str(errs) if not errs else f"**{errs}** ({ok[0]['error_sample'][:1]})",
            ]
        )
    print(
        C.table(
            [
                "client",
                "loop",
                "RSS before MB",
                "peak RSS MB",
                "KB per in-flight call",
                "server max in flight",
                "wall s",
                "CPU µs/call",
                "errors",
            ],
            body,
        )
    )
    used = sorted(
        {r["transport"] for r in runs if r.get("client") == "ours" and r.get("transport")}
    )
    if used:
        print(f"\n`ours` = the provider's default transport here: {', '.join(used)}.")
    if notes:
        print("\nSkipped / failed:\n" + "\n".join(notes))
    print(
        "\n`ours`, `ours_fast`, `*_httpx`: default pools (calls beyond the pool limit wait for a "
        "connection, still in flight inside complete());\n"
        "`*_big`: a pool of one connection per call."
    )
    C.save_json(a.json, {"calls": a.calls, "delay": a.delay, "runs": runs})
    if any(r.get("errors") for r in runs):
        sys.exit("memory bench: some calls failed")


if __name__ == "__main__":
    main()
