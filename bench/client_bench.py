#!/usr/bin/env python3
"""Client benchmark: CPU per chat completion for our provider next to its peers, one run.

Every (client, loop) row runs in its own fresh child process against the nginx stub
(bench/stub.sh): import, build the client, 100 warm-up calls at concurrency C (fills the pool),
then N timed calls by C worker tasks sharing a counter. Every reply's content is checked.

Measured per row: CPU µs per call (``time.process_time`` delta / N: user + sys of the whole
child), calls per second (wall), peak RSS (``ru_maxrss``, includes imports), and the TCP
connections the stub accepted during the timed section (pool churn). Medians over --repeats.

Rows (same request everywhere: system + user message, temperature 0, max_tokens 64):
  ours          OpenAIProvider(...).complete() with its default transport
  ours_httpx    the same provider, transport=HttpxTransport() explicitly
  ours_fast     the same provider, transport=FastTransport() explicitly (when it exists)
  raw_httpx     default httpx.AsyncClient POST + .json()   (the floor most SDKs sit on)
  raw_httpx_bigpool  the same with keep-alive pool 100 (opt-in via --only)
  raw_aiohttp   aiohttp.ClientSession POST + .json()        (asyncio only)
  openai        AsyncOpenAI().chat.completions.create()     (asyncio only)
  openarmature  openarmature 0.17 OpenAIProvider.complete() (asyncio only)
  floor         the same request bytes and reply over raw non-blocking sockets, httptools +
                msgspec, nothing else (bench/_floor.py): asyncio Protocol / trio.socket
  floor_sock    the same on asyncio's loop.sock_sendall / sock_recv (asyncio only)
On trio: ours, ours_httpx, ours_fast, raw_httpx and floor.

Usage: client_bench.py [--n 2000] [--c 1,32] [--repeats 3] [--only ours,raw_httpx:trio] [--json F]
Profile one row: client_bench.py --child ours_fast --backend asyncio --conc 32 --profile 25
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.request
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C

MATRIX = [
    ("ours", "asyncio"),
    ("ours_httpx", "asyncio"),
    ("ours_fast", "asyncio"),
    ("raw_httpx", "asyncio"),
    ("raw_aiohttp", "asyncio"),
    ("openai", "asyncio"),
    ("openarmature", "asyncio"),
    ("floor", "asyncio"),
    ("floor_sock", "asyncio"),
    ("ours", "trio"),
    ("ours_httpx", "trio"),
    ("ours_fast", "trio"),
    ("raw_httpx", "trio"),
    ("floor", "trio"),
]
# Opt-in reference rows (--only): httpx with a keep-alive pool of 100 (httpx 0.28's big-pool cost).
EXTRA = [("raw_httpx_bigpool", "asyncio"), ("raw_httpx_bigpool", "trio")]
OURS = ("ours", "ours_httpx", "ours_fast")
FLOORS = ("floor", "floor_sock")
WIRE_MESSAGES = [{"role": "system", "content": C.SYSTEM}, {"role": "user", "content": C.USER}]
WIRE_BODY = {"model": "bench-model", "messages": WIRE_MESSAGES, "temperature": 0, "max_tokens": 64}


# ----------------------------------------------------------------------------- client factories
# Each returns (call, close): call() makes one chat completion and returns the reply text.


def make_raw_httpx(backend: str, keepalive: int = 20) -> Any:
    import httpx

    client = httpx.AsyncClient(
        base_url=C.STUB_URL,
        timeout=60.0,
        headers={"Authorization": f"Bearer {C.API_KEY}"},
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=keepalive),
    )

    async def call() -> str:
        r = await client.post("/v1/chat/completions", json=WIRE_BODY)
        r.raise_for_status()
        return r.json()["choices"][0]["message"]["content"]  # type: ignore[no-any-return]

    return call, client.aclose


def make_raw_httpx_bigpool(backend: str) -> Any:
    return make_raw_httpx(backend, keepalive=100)


def make_raw_aiohttp(backend: str) -> Any:
    import aiohttp

    state: dict[str, Any] = {}

    async def call() -> str:
        if "s" not in state:  # a ClientSession must be created inside the running loop
            state["s"] = aiohttp.ClientSession(
                C.STUB_URL,
                headers={"Authorization": f"Bearer {C.API_KEY}"},
                connector=aiohttp.TCPConnector(limit=100),
            )
        async with state["s"].post("/v1/chat/completions", json=WIRE_BODY) as r:
            r.raise_for_status()
            return (await r.json())["choices"][0]["message"]["content"]  # type: ignore[no-any-return]

    async def close() -> None:
        if "s" in state:
            await state["s"].close()

    return call, close


def make_openai(backend: str) -> Any:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=C.STUB_URL + "/v1", api_key=C.API_KEY)

    async def call() -> str:
        r = await client.chat.completions.create(
            model="bench-model", messages=WIRE_MESSAGES, temperature=0, max_tokens=64
        )  # type: ignore[arg-type]
        return r.choices[0].message.content or ""

    return call, client.close


def make_openarmature(backend: str) -> Any:
    from openarmature import llm

    try:
        p = llm.OpenAIProvider(base_url=C.STUB_URL, model="bench-model", api_key=C.API_KEY)
    except TypeError:
        p = llm.OpenAIProvider(base_url=C.STUB_URL, model="bench-model", api_key=None)
    msgs = [llm.SystemMessage(content=C.SYSTEM), llm.UserMessage(content=C.USER)]
    cfg = llm.RuntimeConfig(temperature=0, max_tokens=64)

    async def call() -> str:
        return (await p.complete(msgs, config=cfg)).message.content  # type: ignore[no-any-return]

    return call, p.aclose


INFO: dict[str, str] = {}  # what the child learned about its row (e.g. the transport in use)


def our_transport(kind: str) -> Any:
    """None for the provider's default, else an explicitly constructed transport."""
    if kind == "ours":
        return None
    if kind == "ours_httpx":
        from openarmature_nodes.llm.transport import HttpxTransport

        return HttpxTransport()
    try:
        from openarmature_nodes.llm.transport.fast import FastTransport
    except ImportError as e:
        raise C.Skip(f"FastTransport not available yet ({e})") from None
    return FastTransport()


def make_ours(kind: str) -> Any:
    try:
        from openarmature_nodes import llm
    except ImportError as e:
        raise C.Skip(f"openarmature_nodes.llm not importable ({e})") from None
    if not hasattr(llm, "OpenAIProvider"):
        raise C.Skip("openarmature_nodes.llm.OpenAIProvider not built yet")
    transport = our_transport(kind)
    kw = {} if transport is None else {"transport": transport}
    p = llm.OpenAIProvider(C.STUB_URL, "bench-model", api_key=C.API_KEY, **kw)
    INFO["transport"] = type(getattr(p, "transport", None)).__name__
    msgs = [llm.SystemMessage(content=C.SYSTEM), llm.UserMessage(content=C.USER)]
    cfg = llm.RuntimeConfig(temperature=0, max_tokens=64)

    async def call() -> str:
        return (await p.complete(msgs, config=cfg)).message.content  # type: ignore[no-any-return]

    return call, p.aclose


def factory(client: str, backend: str) -> Any:
    if client in OURS:
        return make_ours(client)
    if client in FLOORS:
        from _floor import make_floor

        return make_floor(client, backend, C.STUB_URL)
    try:
        return globals()[f"make_{client}"](backend)
    except ImportError as e:
        raise C.Skip(f"{client} not importable ({e})") from None


# ----------------------------------------------------------------------------- child process
def stub_accepts() -> int:
    with urllib.request.urlopen(C.STUB_URL + "/nginx_status", timeout=2) as r:
        return int(r.read().decode().split("\n")[2].split()[0])


def child(a: argparse.Namespace) -> None:
    C.pin_cpu0()
    row: dict[str, Any] = {"client": a.child, "backend": a.backend, "c": a.conc, "n": a.n}
    t0 = time.perf_counter()
    try:
        call, close = factory(a.child, a.backend)
    except C.Skip as e:
        C.emit({**row, "skipped": str(e)})
        return
    row["import_s"] = time.perf_counter() - t0
    row.update(INFO)

    async def drive(n: int) -> None:
        left = [n]
        bad: list[str] = []

        async def worker() -> None:
            while left[0] > 0:
                left[0] -= 1
                content = await call()
                if not content.startswith(C.EXPECT):
                    bad.append(content)

        await C.run_workers(a.backend, a.conc, worker)
        if bad:
            raise RuntimeError(f"{len(bad)} bad replies, e.g. {bad[0]!r}")

    async def main() -> None:
        await drive(a.warmup)
        acc0 = stub_accepts()
        prof = None
        if a.profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        cpu0, t0 = time.process_time(), time.perf_counter()
        await drive(a.n)
        t1, cpu1 = time.perf_counter(), time.process_time()
        if prof is not None:
            import pstats

            prof.disable()
            print(f"--- cProfile, {a.child} / {a.backend}, c={a.conc}, n={a.n}", file=sys.stderr)
            pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(a.profile)
        acc1 = stub_accepts()
        await close()
        row.update(
            wall_s=t1 - t0,
            calls_per_s=a.n / (t1 - t0),
            cpu_us=(cpu1 - cpu0) / a.n * 1e6,
            conns=acc1 - acc0 - 1,
        )  # -1: the second status probe's own connection

    C.run_loop(a.backend, main)
    row["rss_mb"] = C.peak_rss_mb()
    row["versions"] = C.versions()
    C.emit(row)


# ----------------------------------------------------------------------------- parent
PEERS = [
    ("raw_httpx", "asyncio"),
    ("raw_httpx", "trio"),
    ("raw_aiohttp", "asyncio"),
    ("openai", "asyncio"),
    ("openarmature", "asyncio"),
]


def report(runs: list[dict[str, Any]], conc: int, matrix: list[tuple[str, str]], n: int) -> str:
    med: dict[tuple[str, str], dict[str, Any]] = {}
    notes: list[str] = []
    for cl, be in matrix:
        rows = [r for r in runs if r["client"] == cl and r["backend"] == be and r["c"] == conc]
        ok = [r for r in rows if "cpu_us" in r]
        if ok:
            med[(cl, be)] = {
                k: C.median_of(ok, k) for k in ("cpu_us", "calls_per_s", "rss_mb", "conns")
            }
            med[(cl, be)]["range"] = C.spread(ok, "cpu_us")
            med[(cl, be)]["k"] = len(ok)
        elif rows:
            notes.append(f"- `{cl}` / {be}: {rows[0].get('skipped') or rows[0].get('error')}")
    out = [f"### Concurrency {conc}: CPU per call (N={n} calls per run, medians)\n"]
    body = []
    for (cl, be), m in med.items():
        floor = med.get(("raw_httpx", be))
        delta = f"{m['cpu_us'] - floor['cpu_us']:+,.0f}" if floor else "—"
        body.append(
            [
                cl,
                be,
                C.fmt(m["cpu_us"]),
                m["range"],
                delta,
                C.fmt(m["calls_per_s"]),
                C.fmt(m["rss_mb"]),
                C.fmt(m["conns"]),
                str(m["k"]),
            ]
        )
    out.append(
        C.table(
            [
                "client",
                "loop",
                "CPU µs/call",
                "[min-max]",
                "Δ vs raw_httpx same loop µs",
                "calls/s",
                "peak RSS MB",
                "new conns",
                "runs",
            ],
            body,
        )
    )
    peers = [p for p in PEERS if p in med]
    ours = [k for k in med if k[0] in OURS]
    if ours and peers:
        out.append(
            f"\nRatios, concurrency {conc}: our CPU µs/call ÷ the peer's"
            " (< 1.00 = we use less CPU)\n"
        )
        rows = [
            [f"{cl} / {be}"] + [C.ratio(med[(cl, be)]["cpu_us"] / med[p]["cpu_us"]) for p in peers]
            for cl, be in ours
        ]
        out.append(C.table(["ours"] + [f"{p[0]} / {p[1]}" for p in peers], rows))
    floors = [(cl, be) for cl, be in ours if any((f, be) in med for f in FLOORS)]
    if floors:
        out.append(
            f"\nThe floor, concurrency {conc}: our CPU µs/call ÷ the floor's on the same loop"
            " (raw sockets + httptools + msgspec, bench/_floor.py; 1.00 = nothing added)\n"
        )
        rows = []
        for cl, be in floors:
            m = med[(cl, be)]["cpu_us"]
            rows.append([f"{cl} / {be}", C.fmt(m, 1)] + [
                f"{C.ratio(m / med[(f, be)]['cpu_us'])} ({C.fmt(med[(f, be)]['cpu_us'], 1)})"
                if (f, be) in med else "—"
                for f in FLOORS
            ])
        out.append(C.table(["ours", "CPU µs/call"] + [f"÷ {f} (µs)" for f in FLOORS], rows))
    used = sorted(
        {r["transport"] for r in runs if r.get("client") == "ours" and r.get("transport")}
    )
    if used:
        out.append(f"\n`ours` = the provider's default transport here: {', '.join(used)}.")
    if notes:
        out.append("\nSkipped / failed:\n" + "\n".join(notes))
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--c", default="1,32", help="comma list of concurrencies")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default="", help="comma list of clients or client:loop")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--json")
    ap.add_argument("--child")
    ap.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    ap.add_argument("--conc", type=int, default=32)
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        help="with --child: print the top N functions by own time (cProfile) to stderr",
    )
    a = ap.parse_args()
    if a.child:
        return child(a)
    try:
        stub_accepts()
    except OSError as e:
        sys.exit(f"stub not reachable at {C.STUB_URL} ({e}); run bench/stub.sh start")
    sel = [s for s in a.only.split(",") if s]
    matrix = [
        (cl, be)
        for cl, be in MATRIX + EXTRA
        if (not sel and (cl, be) in MATRIX) or cl in sel or f"{cl}:{be}" in sel
    ]
    concs = [int(x) for x in a.c.split(",")]
    cells = (
        (
            {"client": cl, "backend": be, "c": conc, "repeat": rep},
            ["--child", cl, "--backend", be, "--conc", str(conc), "--n", str(a.n),
             "--warmup", str(a.warmup)],
        )
        for conc in concs
        for rep in range(a.repeats)
        for cl, be in matrix
    )
    runs = C.run_cells(
        __file__, cells, a.timeout, measured="cpu_us",
        label=lambda c: f"[c={c['c']} #{c['repeat']}] {c['client']:13s} {c['backend']:7s}",
        figures=lambda r: (
            f"{r['cpu_us']:8,.0f} CPU µs/call {r['calls_per_s']:8,.0f} calls/s  "
            f"rss {r['rss_mb']:4.0f} MB  conns {r['conns']}"
        ),
    )
    vers = next((r["versions"] for r in runs if "versions" in r), {})
    print("## LLM clients against the nginx stub\n")
    print("Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()) + "\n")
    for conc in concs:
        print(report(runs, conc, matrix, a.n) + "\n")
    C.save_json(a.json, {"n": a.n, "repeats": a.repeats, "url": C.STUB_URL, "runs": runs})


if __name__ == "__main__":
    main()
