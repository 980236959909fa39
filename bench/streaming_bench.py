#!/usr/bin/env python3
"""Streaming benchmark: CPU per token delta and time to first token, ours next to its peers.

The stub answers ``POST {STUB_URL}/stream/v1/chat/completions`` with a constant
``text/event-stream`` body: 256 ``chat.completion.chunk`` events, one content delta each, then
``data: [DONE]`` (bench/_sse_body.py; the whole body arrives at once, so the figures are the
client's parsing and delivery cost, not the server's pace).

Every (client, loop) row runs in its own fresh child process: build the client, --warmup
streamed calls, then --n streamed calls one after another. Every reply is checked (all 256
deltas, the whole text). Measured per row: CPU µs per delta (``time.process_time`` delta /
(calls x 256)), CPU µs per call, and the median time to first token (wall µs from the start of
the call to the first delta handed to the caller).

Rows:
  ours           OpenAIProvider.complete(stream=True, on_token=...) (default transport)
  ours_graph     the same call made by a graph node under invoke(), no observer
  ours_observed  the same under an observed invoke(): every delta becomes an LlmTokenEvent
                 (the call-event layer) delivered to a no-op observer, checked: 256 per call
  openai         AsyncOpenAI().chat.completions.create(stream=True), iterating the chunks
  raw_httpx      httpx.AsyncClient.stream() + the floor's SSE split and msgspec decode
  floor          one raw non-blocking socket + httptools + the same SSE split and decode
                 (bench/_floor.py): asyncio loop.sock_* / trio.socket
All on asyncio and trio (the openai SDK runs on trio through httpx and anyio).

Row ``ttft``: ours and the floor in ONE process, call for call alternately, so their
times to first token are compared under the same load: the figure is the median of the
call-by-call differences (the TTFT target).

Usage: streaming_bench.py [--n 200] [--repeats 3] [--only ours,floor:trio] [--json F]
Profile one row: streaming_bench.py --child ours --backend asyncio --profile 25
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C
import _sse_body

DELTAS = 256
MAX_TOKENS = 512
TEXT = _sse_body.text(DELTAS)
STREAM_URL = C.STUB_URL + "/stream"
BACKENDS = ("asyncio", "trio")
CLIENTS = ("ours", "ours_graph", "ours_observed", "openai", "raw_httpx", "floor", "ttft")
MATRIX = [(cl, be) for be in BACKENDS for cl in CLIENTS]
WIRE_MESSAGES = [{"role": "system", "content": C.SYSTEM}, {"role": "user", "content": C.USER}]

OnDelta = Callable[[str], None]
Call = Callable[[OnDelta], Any]  # async (on_delta) -> the answer's text


# ----------------------------------------------------------------------------- clients
def _provider() -> Any:
    from openarmature_nodes import llm

    p = llm.OpenAIProvider(STREAM_URL, "bench-model", api_key=C.API_KEY)
    msgs = [llm.SystemMessage(content=C.SYSTEM), llm.UserMessage(content=C.USER)]
    cfg = llm.RuntimeConfig(temperature=0, max_tokens=MAX_TOKENS)
    return p, msgs, cfg


def make_ours(backend: str) -> tuple[Call, Any]:
    p, msgs, cfg = _provider()

    async def call(on_delta: OnDelta) -> str:
        def on_token(delta: Any) -> None:
            on_delta(delta.text)

        r = await p.complete(msgs, config=cfg, stream=True, on_token=on_token)
        return r.message.content  # type: ignore[no-any-return]

    return call, p.aclose


def _graph(observed: bool) -> tuple[Call, Any]:
    import msgspec

    from openarmature_nodes.events import LlmTokenEvent
    from openarmature_nodes.graph import END, GraphBuilder, State

    p, msgs, cfg = _provider()

    class S(State, frozen=True, kw_only=True):
        answer: str = ""

    async def node(state: S) -> dict[str, Any]:
        r = await p.complete(msgs, config=cfg, stream=True)
        return {"answer": r.message.content}

    b = GraphBuilder(S)
    b.add_node("llm", node)
    b.add_edge("llm", END)
    b.set_entry("llm")
    graph = b.compile()
    tokens = [0]
    if observed:

        async def observer(event: Any) -> None:
            if type(event) is LlmTokenEvent:
                tokens[0] += 1

        graph.attach(observer)

    async def call(on_delta: OnDelta) -> str:
        tokens[0] = 0
        state = await graph.invoke(S())
        if observed and tokens[0] != DELTAS:
            raise RuntimeError(f"observer saw {tokens[0]} token events, not {DELTAS}")
        return state.answer  # type: ignore[no-any-return]

    _ = msgspec  # (State is a msgspec.Struct)
    return call, p.aclose


def make_ours_graph(backend: str) -> tuple[Call, Any]:
    return _graph(observed=False)


def make_ours_observed(backend: str) -> tuple[Call, Any]:
    return _graph(observed=True)


def make_openai(backend: str) -> tuple[Call, Any]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=STREAM_URL + "/v1", api_key=C.API_KEY)

    async def call(on_delta: OnDelta) -> str:
        stream = await client.chat.completions.create(
            model="bench-model",
            messages=WIRE_MESSAGES,  # type: ignore[arg-type]
            temperature=0,
            max_tokens=MAX_TOKENS,
            stream=True,
        )
        pieces = []
        async for chunk in stream:
            for choice in chunk.choices:
                text = choice.delta.content
                if text:
                    pieces.append(text)
                    on_delta(text)
        return "".join(pieces)

    return call, client.close


def make_raw_httpx(backend: str) -> tuple[Call, Any]:
    import httpx
    from _floor import sse_texts

    client = httpx.AsyncClient(
        base_url=STREAM_URL, timeout=60.0, headers={"Authorization": f"Bearer {C.API_KEY}"}
    )
    body = {"model": "bench-model", "messages": WIRE_MESSAGES, "temperature": 0,
            "max_tokens": MAX_TOKENS, "stream": True}

    async def call(on_delta: OnDelta) -> str:
        feed, pieces = sse_texts(on_delta)
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            r.raise_for_status()
            async for piece in r.aiter_bytes():
                feed(piece)
        return "".join(pieces)

    return call, client.aclose


def make_floor(backend: str) -> tuple[Call, Any]:
    from _floor import stream_floor

    async def nothing() -> None:
        return None

    return stream_floor(backend, STREAM_URL, max_tokens=MAX_TOKENS), nothing


def factory(client: str, backend: str) -> tuple[Call, Any]:
    try:
        made: tuple[Call, Any] = globals()[f"make_{client}"](backend)
    except ImportError as e:
        raise C.Skip(f"{client} not importable ({e})") from None
    return made


# ----------------------------------------------------------------------------- child
async def timed_call(call: Call, first: list[float], seen: list[int]) -> float:
    """One streamed call; returns its time to first token (µs) and checks the reply."""
    seen[0] = 0
    first[0] = 0.0

    def on_delta(text: str) -> None:
        if not seen[0]:
            first[0] = time.perf_counter()
        seen[0] += 1

    t0 = time.perf_counter()
    text = await call(on_delta)
    if text != TEXT:
        raise RuntimeError(f"wrong reply: {text[:60]!r}...")
    if seen[0] and seen[0] != DELTAS:
        raise RuntimeError(f"{seen[0]} deltas, not {DELTAS}")
    return (first[0] - t0) * 1e6 if seen[0] else float("nan")


def child(a: argparse.Namespace) -> None:
    C.pin_cpu0()
    row: dict[str, Any] = {"client": a.child, "backend": a.backend, "n": a.n, "deltas": DELTAS}
    try:
        if a.child == "ttft":
            calls = {"ours": factory("ours", a.backend), "floor": factory("floor", a.backend)}
        else:
            calls = {a.child: factory(a.child, a.backend)}
    except C.Skip as e:
        C.emit({**row, "skipped": str(e)})
        return
    first, seen = [0.0], [0]

    async def main() -> None:
        for _ in range(a.warmup):
            for call, _close in calls.values():
                await timed_call(call, first, seen)
        ttft: dict[str, list[float]] = {k: [] for k in calls}
        prof = None
        if a.profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        cpu0, t0 = time.process_time(), time.perf_counter()
        for _ in range(a.n):
            for name, (call, _close) in calls.items():
                ttft[name].append(await timed_call(call, first, seen))
        t1, cpu1 = time.perf_counter(), time.process_time()
        if prof is not None:
            import pstats

            prof.disable()
            print(f"--- cProfile, {a.child} / {a.backend}, n={a.n}", file=sys.stderr)
            pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(a.profile)
        for _call, close in calls.values():
            await close()
        if a.child == "ttft":
            row["ttft_ours_us"] = statistics.median(ttft["ours"])
            row["ttft_floor_us"] = statistics.median(ttft["floor"])
            # The median of the call-by-call differences: a burst of load on the shared
            # machine moves one pair, not the figure.
            row["ttft_over_floor_us"] = statistics.median(
                o - f for o, f in zip(ttft["ours"], ttft["floor"], strict=True)
            )
            return
        row.update(
            wall_s=t1 - t0,
            cpu_us_call=(cpu1 - cpu0) / a.n * 1e6,
            cpu_us_delta=(cpu1 - cpu0) / (a.n * DELTAS) * 1e6,
        )
        firsts = [v for v in ttft[a.child] if v == v]  # the graph rows hand out no deltas
        if firsts:
            row["ttft_us"] = statistics.median(firsts)

    C.run_loop(a.backend, main)
    row["rss_mb"] = C.peak_rss_mb()
    row["versions"] = C.versions()
    C.emit(row)


# ----------------------------------------------------------------------------- parent
def _med(runs: list[dict[str, Any]], key: str, cl: str, be: str) -> float | None:
    vals = [r[key] for r in runs if r["client"] == cl and r["backend"] == be and key in r]
    return statistics.median(vals) if vals else None


def _spread(runs: list[dict[str, Any]], key: str, cl: str, be: str, digits: int = 2) -> str:
    rows = [r for r in runs if r["client"] == cl and r["backend"] == be and key in r]
    return C.spread(rows, key, digits) if rows else ""


def report(runs: list[dict[str, Any]], matrix: list[tuple[str, str]], n: int) -> str:
    out = [f"### CPU per token delta ({DELTAS}-delta SSE reply, N={n} calls per run, medians)\n"]
    body, notes = [], []
    for cl, be in matrix:
        if cl == "ttft":
            continue
        v = _med(runs, "cpu_us_delta", cl, be)
        if v is None:
            bad = [r for r in runs if r["client"] == cl and r["backend"] == be]
            if bad:
                notes.append(f"- `{cl}` / {be}: {bad[0].get('skipped') or bad[0].get('error')}")
            continue
        floor = _med(runs, "cpu_us_delta", "floor", be)
        oai = _med(runs, "cpu_us_delta", "openai", be)
        ttft = _med(runs, "ttft_us", cl, be)
        body.append([
            cl, be, C.fmt(v, 2), _spread(runs, "cpu_us_delta", cl, be),
            C.fmt(_med(runs, "cpu_us_call", cl, be)),
            C.ratio(v / floor) if floor else "—",
            C.ratio(v / oai) if oai else "—",
            C.fmt(ttft) if ttft is not None else "—",
            C.fmt(_med(runs, "rss_mb", cl, be)),
        ])
    out.append(C.table(
        ["client", "loop", "CPU µs/delta", "[min-max]", "CPU µs/call", "÷ floor", "÷ openai",
         "TTFT µs (median)", "peak RSS MB"],
        body,
    ))
    tt = []
    for be in BACKENDS:
        o, f = _med(runs, "ttft_ours_us", "ttft", be), _med(runs, "ttft_floor_us", "ttft", be)
        if o is not None and f is not None:
            d = _med(runs, "ttft_over_floor_us", "ttft", be)
            tt.append([be, C.fmt(o), C.fmt(f), f"{d:+,.0f}" if d is not None else "—",
                       _spread(runs, "ttft_over_floor_us", "ttft", be, 0)])
    if tt:
        out.append("\nTime to first token, ours and the floor alternating in one process"
                   " (wall µs, medians):\n")
        out.append(C.table(["loop", "ours", "floor", "ours - floor (median of pairs)", "[min-max]"],
                           tt))
    obs = []
    for be in BACKENDS:
        o, g, b = (_med(runs, "cpu_us_delta", cl, be)
                   for cl in ("ours_observed", "ours_graph", "ours"))
        if o is not None and b is not None:
            obs.append([be, C.fmt(b, 2), C.fmt(g, 2) if g is not None else "—", C.fmt(o, 2),
                        f"{(o / b - 1) * 100:+.0f} %"])
    if obs:
        out.append("\nToken events to an observer (CPU µs/delta): bare call, inside a graph,"
                   " inside an observed graph:\n")
        out.append(C.table(["loop", "ours", "ours_graph", "ours_observed",
                            "observed vs ours"], obs))
    if notes:
        out.append("\nSkipped / failed:\n" + "\n".join(notes))
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default="", help="comma list of clients or client:loop")
    ap.add_argument("--timeout", type=float, default=180)
    ap.add_argument("--json")
    ap.add_argument("--child")
    ap.add_argument("--backend", default="asyncio", choices=list(BACKENDS))
    ap.add_argument("--profile", type=int, default=0,
                    help="with --child: print the top N functions by own time (cProfile)")
    a = ap.parse_args()
    if a.child:
        return child(a)
    sel = [s for s in a.only.split(",") if s]
    matrix = [(cl, be) for cl, be in MATRIX if not sel or cl in sel or f"{cl}:{be}" in sel]
    cells = (
        (
            {"client": cl, "backend": be, "repeat": rep},
            ["--child", cl, "--backend", be, "--n", str(a.n), "--warmup", str(a.warmup)],
        )
        for rep in range(a.repeats)
        for cl, be in matrix
    )

    def figures(r: dict[str, Any]) -> str:
        if r["client"] == "ttft":
            return (f"TTFT ours {r['ttft_ours_us']:,.0f} µs, floor {r['ttft_floor_us']:,.0f} µs"
                    f" ({r['ttft_over_floor_us']:+,.0f})")
        return (f"{r['cpu_us_delta']:7.2f} CPU µs/delta {r['cpu_us_call']:9,.0f} µs/call"
                f"  TTFT {r.get('ttft_us', float('nan')):7,.0f} µs  rss {r['rss_mb']:4.0f} MB")

    runs = C.run_cells(
        __file__, cells, a.timeout, measured="rss_mb",
        label=lambda c: f"[#{c['repeat']}] {c['client']:13s} {c['backend']:7s}",
        figures=figures,
    )
    vers = next((r["versions"] for r in runs if "versions" in r), {})
    print("## Streaming: a 256-token reply from the nginx stub\n")
    print("Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()) + "\n")
    print(report(runs, matrix, a.n) + "\n")
    C.save_json(a.json, {"n": a.n, "repeats": a.repeats, "deltas": DELTAS, "url": STREAM_URL,
                         "runs": runs})


if __name__ == "__main__":
    main()
