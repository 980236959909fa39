#!/usr/bin/env python3
"""Growth benchmark: does the engine's cost stay flat as the work grows? (issue 18, item 3)

Two questions, each row in a fresh child process pinned to CPU 0:

``fanout`` — one invoke of a fan-out node over N items (N = 10k, 100k, 1M) whose instance is a
  one-node subgraph (``result = item * 2``), unbounded concurrency, results collected back in
  order through the ``append`` reducer. Shape ``trivial``: the instance never awaits (the pool
  runs them all on one task). Shape ``waiting``: the instance passes one cancellation
  checkpoint, so every instance is started and pending at once before the first one finishes
  (the pool grows to N tasks). Reported: CPU µs per instance (``process_time`` over the timed
  invokes: at least --min-time s, and at least one invoke), and peak memory per instance:
  (``ru_maxrss`` after the first timed invoke - RSS just before it) / N, with the input list
  already built. The slope is the least-squares fit of the per-instance figure against
  log10(N): how much it changes per 10x more instances (flat: ~0).

``agent`` — an agent loop (one node appending one message per step through the append
  reducer, a conditional edge looping back) started from a state already holding M messages
  (M = 10, 100, 500, 1000). The per-step cost is the difference between invokes of a long and a
  short loop (42 and 2 steps) divided by the 40 extra steps, so the per-invoke costs (the
  initial state's validation, O(M)) cancel out. Ours (asyncio and trio) next to LangGraph
  (``StateGraph`` with ``Annotated[list, operator.add]``, asyncio). Slope: least squares of µs
  per step against M, per 1,000 messages.

``--trace N [--shape waiting]``: instead of timing, run one fan-out of N instances under tracemalloc
and print where the memory held per pending instance goes (a snapshot taken inside the last
instance, when every result is pending, and the peak of the whole invoke).

Usage: growth_bench.py [--sizes 10000,100000,1000000] [--messages 10,100,500,1000]
                       [--shapes trivial,waiting,agent] [--repeats 3] [--json F] [--trace N]
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import resource
import sys
import time
from collections.abc import Callable
from typing import Annotated, Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C

FAN_SHAPES = ("trivial", "waiting")
SHORT, LONG = 2, 42  # agent loop lengths (steps per invoke)
AGENT_MATRIX = [("ours", "asyncio"), ("ours", "trio"), ("langgraph", "asyncio")]
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
# The fan-out instance reads this on its last item (``--trace``: snapshot while all are pending).
TRACE: dict[str, Any] = {"last": -1, "snap": None}


def current_rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_KB


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys against xs."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


# ------------------------------------------------------------------------------- fan-out
def build_fanout(shape: str) -> tuple[Callable[[list[int]], Any], Callable[[Any, int], bool]]:
    import anyio
    import msgspec

    from openarmature_nodes.graph import END, GraphBuilder, State, append

    def state_type(name: str, fields: list[tuple[str, Any, Any]]) -> Any:
        return msgspec.defstruct(name, fields, bases=(State,), kw_only=True, frozen=True)

    W = state_type("W", [("item", int, 0), ("result", int, 0)])
    wait = shape == "waiting"
    trace = TRACE
    gate: dict[str, Any] = {"last": -1, "event": None}

    async def work(state: Any) -> dict[str, Any]:
        if wait:  # every instance waits here until the last one has started
            if state.item == gate["last"]:
                gate["event"].set()
            else:
                await gate["event"].wait()
        if state.item == trace["last"]:
            import tracemalloc

            trace["snap"] = tracemalloc.take_snapshot()
        return {"result": state.item * 2}

    wb = GraphBuilder(W)
    wb.add_node("work", work)
    wb.add_edge("work", END)
    wb.set_entry("work")
    S = state_type(
        "S",
        [
            ("items", list[int], msgspec.field(default_factory=list)),
            ("results", Annotated[list[int], append], msgspec.field(default_factory=list)),
        ],
    )
    b = GraphBuilder(S)
    b.add_fan_out_node(
        name="fan",
        subgraph=wb.compile(),
        items_field="items",
        item_field="item",
        collect_field="result",
        target_field="results",
        concurrency=None,
    )
    b.add_edge("fan", END)
    b.set_entry("fan")
    compiled = b.compile()

    async def invoke(items: list[int]) -> Any:
        gate["last"], gate["event"] = len(items) - 1, anyio.Event()
        return await compiled.invoke(S(items=items))

    def check(final: Any, n: int) -> bool:
        r = final.results
        return len(r) == n and r[0] == 0 and r[-1] == 2 * (n - 1)

    return invoke, check


def child_fanout(a: argparse.Namespace) -> None:
    C.pin_cpu0()
    row: dict[str, Any] = {"stage": "fanout", "shape": a.shape, "backend": a.backend, "n": a.n}
    invoke, check = build_fanout(a.shape)

    async def main() -> None:
        for _ in range(3):
            final = await invoke(list(range(500)))
        if not check(final, 500):
            raise RuntimeError(f"wrong final state: {final!r:.300}")
        items = list(range(a.n))
        del final
        gc.collect()
        before = current_rss_kb()
        done = 0
        cpu0, t0 = time.process_time(), time.perf_counter()
        while True:
            final = await invoke(items)
            if not done:
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            done += 1
            if not check(final, a.n):
                raise RuntimeError("wrong final state after the timed run")
            del final
            if time.perf_counter() - t0 >= a.min_time:
                break
        t1, cpu1 = time.perf_counter(), time.process_time()
        # The same invoke once more under tracemalloc: the peak of the Python heap over it, to
        # the byte (RSS moves in pages and reuses memory freed by earlier invokes).
        import tracemalloc

        gc.collect()
        tracemalloc.start(1)
        base = tracemalloc.get_traced_memory()[0]
        final = await invoke(items)
        traced_peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        del final
        row.update(
            ok=True,
            traced_bytes_per_instance=traced_peak / a.n,
            invokes=done,
            us_cpu=(cpu1 - cpu0) / (done * a.n) * 1e6,
            us_wall=(t1 - t0) / (done * a.n) * 1e6,
            bytes_per_instance=max(0, peak - before) * 1024 / a.n,
            rss_before_mb=before / 1024,
            rss_mb=peak / 1024,
        )

    C.run_loop(a.backend, main)
    C.emit(row)


def trace_fanout(n: int, backend: str, shape: str, top: int = 12) -> None:
    """Where the memory of N pending instances goes (tracemalloc, by line)."""
    import tracemalloc

    invoke, check = build_fanout(shape)

    async def main() -> None:
        items = list(range(n))
        await invoke(list(range(10)))
        gc.collect()
        TRACE["last"] = n - 1
        tracemalloc.start(1)
        base = tracemalloc.take_snapshot()
        final = await invoke(items)
        _, peak = tracemalloc.get_traced_memory()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        assert check(final, n)
        snap = TRACE["snap"]
        rows = []
        for st in snap.compare_to(base, "lineno")[:top]:
            if st.size_diff <= 0:
                continue
            fr = st.traceback[0]
            where = f"{fr.filename.removeprefix(ROOT)}:{fr.lineno}"
            rows.append([where, C.fmt(st.size_diff / n, 1), C.fmt(st.count_diff / n, 2)])
        held = sum(s.size_diff for s in snap.compare_to(base, "filename"))
        kept = sum(s.size_diff for s in after.compare_to(base, "filename"))
        print(f"### Where the memory of {n:,} pending `{shape}` instances goes ({backend})\n")
        print(
            f"tracemalloc, snapshot inside the last instance (all results pending) minus before "
            f"the invoke: {held / n:,.1f} B/instance; peak over the invoke "
            f"{peak / n:,.1f} B/instance; still held after it returned (the final state): "
            f"{kept / n:,.1f} B/instance.\n"
        )
        print(C.table(["allocated at (file:line)", "B per instance", "blocks per instance"], rows))
        print()

    C.run_loop(backend, main)


# ------------------------------------------------------------------------------- agent loop
LOOP = {"steps": SHORT}


def build_agent(engine: str, m: int) -> tuple[Callable[[], Any], Callable[[Any, int], bool]]:
    base = [f"message {i}" for i in range(m)]
    if engine == "langgraph":
        import operator
        from typing import TypedDict

        try:
            from langgraph.graph import END, START, StateGraph
        except ImportError as e:
            raise C.Skip(f"langgraph not importable ({e})") from None
        A = TypedDict("A", {"turns": int, "messages": Annotated[list, operator.add]})  # noqa: UP013

        async def llm_lg(state: Any) -> dict[str, Any]:
            return {"messages": [f"turn {state['turns']}"], "turns": state["turns"] + 1}

        g = StateGraph(A)
        g.add_node("llm", llm_lg)
        g.add_edge(START, "llm")
        g.add_conditional_edges("llm", lambda s: "llm" if s["turns"] < LOOP["steps"] else END)
        compiled_lg = g.compile()
        config = {"recursion_limit": LONG + 10}

        async def invoke_lg() -> Any:
            return await compiled_lg.ainvoke({"turns": 0, "messages": base}, config)  # type: ignore[arg-type]

        return invoke_lg, lambda s, n: len(s["messages"]) == m + n and s["turns"] == n

    import msgspec

    from openarmature_nodes.graph import END as OEND
    from openarmature_nodes.graph import GraphBuilder, State, append

    S = msgspec.defstruct(
        "S",
        [
            ("turns", int, 0),
            ("messages", Annotated[list[str], append], msgspec.field(default_factory=list)),
        ],
        bases=(State,),
        kw_only=True,
        frozen=True,
    )

    async def llm(state: Any) -> dict[str, Any]:
        return {"messages": [f"turn {state.turns}"], "turns": state.turns + 1}

    b = GraphBuilder(S)
    b.add_node("llm", llm)
    b.set_entry("llm")
    b.add_conditional_edge("llm", lambda s: "llm" if s.turns < LOOP["steps"] else OEND)
    compiled = b.compile()
    initial = S(turns=0, messages=base)

    async def invoke() -> Any:
        return await compiled.invoke(initial)

    return invoke, lambda s, n: len(s.messages) == m + n and s.turns == n


def child_agent(a: argparse.Namespace) -> None:
    C.pin_cpu0()
    row: dict[str, Any] = {"stage": "agent", "engine": a.engine, "backend": a.backend, "m": a.m}
    try:
        invoke, check = build_agent(a.engine, a.m)
    except C.Skip as e:
        C.emit({**row, "skipped": str(e)})
        return
    cpu: dict[int, float] = {}

    async def timed(steps: int) -> None:
        LOOP["steps"] = steps
        for _ in range(20):
            final = await invoke()
        if not check(final, steps):
            raise RuntimeError(f"wrong final state: {final!r:.300}")
        done = 0
        cpu0, t0 = time.process_time(), time.perf_counter()
        while time.perf_counter() - t0 < a.min_time / 2:
            for _ in range(20):
                await invoke()
            done += 20
        cpu[steps] = (time.process_time() - cpu0) / done

    async def main() -> None:
        await timed(SHORT)
        await timed(LONG)

    C.run_loop(a.backend, main)
    per_step = (cpu[LONG] - cpu[SHORT]) / (LONG - SHORT)
    row.update(
        ok=True,
        us_step=per_step * 1e6,
        us_invoke_overhead=(cpu[SHORT] - SHORT * per_step) * 1e6,
        rss_mb=C.peak_rss_mb(),
    )
    C.emit(row)


# ------------------------------------------------------------------------------- parent
def fig(rows: list[dict[str, Any]], key: str, digits: int) -> str:
    m = C.median_of(rows, key)
    s = C.spread(rows, key, digits)
    return C.fmt(m, digits) + (f" [{s}]" if s else "")


def report(runs: list[dict[str, Any]], a: argparse.Namespace) -> str:
    out: list[str] = []
    notes = [
        f"- {r.get('stage')} {r.get('shape') or r.get('engine')} {r.get('backend')} "
        f"{r.get('n') or r.get('m')}: {r.get('skipped') or r.get('error')}"
        for r in runs
        if "ok" not in r
    ]
    fan = [r for r in runs if r["stage"] == "fanout" and "us_cpu" in r]
    if fan:
        out.append(
            f"### Fan-out as N grows (one-node instance subgraph, unbounded concurrency; "
            f"medians of {a.repeats} [min-max])\n"
        )
        body, slopes = [], []
        for shape in FAN_SHAPES:
            for be in a.backends:
                rows = [r for r in fan if (r["shape"], r["backend"]) == (shape, be)]
                sizes = sorted({r["n"] for r in rows})
                for n in sizes:
                    rs = [r for r in rows if r["n"] == n]
                    body.append(
                        [
                            shape,
                            be,
                            f"{n:,}",
                            fig(rs, "us_cpu", 2),
                            fig(rs, "traced_bytes_per_instance", 0),
                            fig(rs, "bytes_per_instance", 0),
                            C.fmt(C.median_of(rs, "rss_mb")),
                            str(rs[0]["invokes"]),
                        ]
                    )
                if len(sizes) > 1:
                    xs = [math.log10(n) for n in sizes]
                    cpu = [C.median_of([r for r in rows if r["n"] == n], "us_cpu") for n in sizes]
                    mem = [
                        C.median_of([r for r in rows if r["n"] == n], "traced_bytes_per_instance")
                        for n in sizes
                    ]
                    slopes.append(
                        [
                            shape,
                            be,
                            f"{sizes[0]:,} → {sizes[-1]:,}",
                            f"{slope(xs, cpu):+.2f} µs ({slope(xs, cpu) / cpu[0] * 100:+.0f} %)",
                            C.ratio(cpu[-1] / cpu[0]),
                            f"{slope(xs, mem):+.0f} B ({slope(xs, mem) / mem[0] * 100:+.0f} %)",
                            C.ratio(mem[-1] / mem[0]),
                        ]
                    )
        out.append(
            C.table(
                [
                    "shape",
                    "loop",
                    "N",
                    "CPU µs/instance",
                    "peak heap B/instance (tracemalloc)",
                    "peak RSS B/instance",
                    "peak RSS MB",
                    "timed invokes",
                ],
                body,
            )
        )
        if slopes:
            out.append(
                "\nSlope per 10x more instances (least squares against log10 N; "
                "% of the smallest N's figure) and the ratio largest N ÷ smallest N:\n"
            )
            out.append(
                C.table(
                    [
                        "shape",
                        "loop",
                        "N",
                        "CPU slope",
                        "CPU ratio",
                        "memory slope",
                        "memory ratio",
                    ],
                    slopes,
                )
            )
        out.append("")
    ag = [r for r in runs if r["stage"] == "agent" and "us_step" in r]
    if ag:
        out.append(
            f"### Agent loop as the message list grows (append reducer; µs per step = "
            f"(invoke of {LONG} steps - invoke of {SHORT}) / {LONG - SHORT}; medians of "
            f"{a.repeats} [min-max])\n"
        )
        ms = sorted({r["m"] for r in ag})
        body = []
        for eng, be in AGENT_MATRIX:
            rows = [r for r in ag if (r["engine"], r["backend"]) == (eng, be)]
            if not rows:
                continue
            per = {m: [r for r in rows if r["m"] == m] for m in ms}
            cells = [fig(per[m], "us_step", 2) if per[m] else "—" for m in ms]
            have = [m for m in ms if per[m]]
            meds = [C.median_of(per[m], "us_step") for m in have]
            sl = slope([float(m) for m in have], meds) * 1000 if len(have) > 1 else 0.0
            body.append(
                [eng, be, *cells, f"{sl:+.2f}", C.ratio(meds[-1] / meds[0]) if meds else "—"]
            )
        out.append(
            C.table(
                [
                    "engine",
                    "loop",
                    *(f"µs/step at {m:,} msgs" for m in ms),
                    "slope µs per 1,000 msgs",
                    f"{ms[-1]:,} ÷ {ms[0]:,}",
                ],
                body,
            )
        )
        lg = {m: [r for r in ag if r["engine"] == "langgraph" and r["m"] == m] for m in ms}
        if all(lg.values()):
            cmp = []
            for be in a.backends:
                cells = []
                for m in ms:
                    ours = [r for r in ag if (r["engine"], r["backend"], r["m"]) == ("ours", be, m)]
                    if ours:
                        v = C.median_of(ours, "us_step") / C.median_of(lg[m], "us_step")
                        cells.append(C.ratio(v))
                    else:
                        cells.append("—")
                cmp.append([f"ours/{be} ÷ langgraph", *cells])
            out.append("")
            out.append(C.table(["ratio", *(f"{m:,} msgs" for m in ms)], cmp))
        out.append("")
    if notes:
        out.append("Skipped / failed:\n" + "\n".join(notes))
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument(
        "--waiting-sizes",
        default="10000,100000",
        help="sizes for the 'waiting' shape (N tasks pending at once)",
    )
    ap.add_argument("--messages", default="10,100,500,1000")
    ap.add_argument("--shapes", default="trivial,waiting,agent")
    ap.add_argument("--backends", default="asyncio,trio")
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--trace", type=int, default=0, help="tracemalloc a fan-out of N instead")
    ap.add_argument("--json")
    ap.add_argument("--child")
    ap.add_argument("--shape", default="trivial")
    ap.add_argument("--engine", default="ours")
    ap.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--m", type=int, default=10)
    a = ap.parse_args()
    a.backends = [b for b in a.backends.split(",") if b]
    if a.trace:
        return trace_fanout(a.trace, a.backend, a.shape)
    if a.child == "fanout":
        return child_fanout(a)
    if a.child == "agent":
        return child_agent(a)
    shapes = [s for s in a.shapes.split(",") if s]
    sizes = {
        "trivial": [int(x) for x in a.sizes.split(",") if x],
        "waiting": [int(x) for x in a.waiting_sizes.split(",") if x],
    }
    common = ["--min-time", str(a.min_time)]
    cells: list[tuple[dict[str, Any], list[str]]] = []
    for rep in range(a.repeats):
        for shape in FAN_SHAPES:
            if shape not in shapes:
                continue
            for n in sizes[shape]:
                for be in a.backends:
                    cells.append(
                        (
                            {
                                "stage": "fanout",
                                "shape": shape,
                                "backend": be,
                                "n": n,
                                "repeat": rep,
                            },
                            [
                                "--child",
                                "fanout",
                                "--shape",
                                shape,
                                "--backend",
                                be,
                                "--n",
                                str(n),
                                *common,
                            ],
                        )
                    )
        if "agent" in shapes:
            for m in [int(x) for x in a.messages.split(",") if x]:
                for eng, be in AGENT_MATRIX:
                    if be not in a.backends:
                        continue
                    cells.append(
                        (
                            {"stage": "agent", "engine": eng, "backend": be, "m": m, "repeat": rep},
                            [
                                "--child",
                                "agent",
                                "--engine",
                                eng,
                                "--backend",
                                be,
                                "--m",
                                str(m),
                                *common,
                            ],
                        )
                    )

    def label(c: dict[str, Any]) -> str:
        what = c.get("shape") or c.get("engine")
        size = c.get("n") or c.get("m")
        return f"[#{c['repeat']}] {c['stage']:6s} {what:9s} {c['backend']:7s} {size:>9,}"

    def figures(r: dict[str, Any]) -> str:
        if r["stage"] == "fanout":
            return (
                f"{r['us_cpu']:7.2f} CPU µs/instance {r['traced_bytes_per_instance']:7.0f} "
                f"B/instance (heap) {r['bytes_per_instance']:7.0f} (RSS) rss {r['rss_mb']:5.0f} MB"
            )
        return f"{r['us_step']:7.2f} CPU µs/step  invoke overhead {r['us_invoke_overhead']:7.1f} µs"

    runs = C.run_cells(__file__, cells, a.timeout, measured="ok", label=label, figures=figures)
    print("## Cost as the work grows (issue 18, item 3)\n")
    print(report(runs, a))
    C.save_json(a.json, {"repeats": a.repeats, "runs": runs})


if __name__ == "__main__":
    main()
