#!/usr/bin/env python3
"""Engine benchmark: µs per node step for our graph engine next to LangGraph and openarmature.

Shapes (every node a trivial ``async def``, no I/O, so the figure is pure engine cost):
  linear  10 nodes n0..n9 in a chain; node i writes int field f{i}: 10 node steps per invoke.
  agent   node ``llm`` appends one item to an append-reduced list and bumps ``turns``; a
          conditional edge loops back 5 times, then END: 6 node steps per invoke.
  fanout  one invoke fans a 10,000-item list out to a one-node worker (unbounded concurrency)
          and collects 10,000 results back (ours: fan-out node; LangGraph: the ``Send`` API):
          reported as µs per instance.
Row ``ours_obs``: ours with one no-op observer attached (linear and agent), so every node event
is built and delivered (without ``async with graph``, invoke() returns once they are delivered).

Each (engine, shape, loop) row runs in a fresh child process pinned to CPU 0: build and compile,
warm up, then batches of K invokes for at least --min-time seconds (plus one ``drain()``
inside the window for the engines that have it).
CPU = ``time.process_time`` delta. Medians over --repeats. Final states are checked.
LangGraph runs on asyncio (``ainvoke``); ours on asyncio and trio; openarmature on asyncio
(and trio, reported if it works there).

Usage: engine_bench.py [--k 500] [--min-time 1.0] [--repeats 3] [--items 10000]
                       [--shapes linear,agent,fanout] [--only ours,langgraph:asyncio] [--json F]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Annotated, Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C

NODES, LOOPS = 10, 5
STEPS = {"linear": NODES, "agent": LOOPS + 1}
SHAPES = ["linear", "agent", "fanout"]
MATRIX = [
    ("ours", "asyncio"),
    ("ours", "trio"),
    ("ours_obs", "asyncio"),
    ("ours_obs", "trio"),
    ("langgraph", "asyncio"),
    ("openarmature", "asyncio"),
    ("openarmature", "trio"),
]

# The fan-out shapes read their input list from here at invoke time, so the child can warm up on
# a small list and time the full one.
FAN: dict[str, list[int]] = {"data": []}

Built = tuple[Callable[[], Any], Callable[[], Any], Callable[[Any], bool]]  # invoke, drain, check


async def _nothing() -> None:
    return None


def _linear_node(i: int) -> Any:
    key, val = f"f{i}", i + 1

    async def node(state: Any) -> dict[str, int]:
        return {key: val}

    return node


# ------------------------------------------------------------------------------- LangGraph
def build_langgraph(shape: str, items: int) -> Built:
    import operator
    from typing import TypedDict

    try:
        from langgraph.graph import END, START, StateGraph
        from langgraph.types import Send
    except ImportError as e:
        raise C.Skip(f"langgraph not importable ({e})") from None
    if shape == "linear":
        S = TypedDict("S", {f"f{i}": int for i in range(NODES)})  # type: ignore[misc]
        g = StateGraph(S)
        for i in range(NODES):
            g.add_node(f"n{i}", _linear_node(i))
        g.add_edge(START, "n0")
        for i in range(NODES - 1):
            g.add_edge(f"n{i}", f"n{i + 1}")
        g.add_edge(f"n{NODES - 1}", END)
        init: Callable[[], Any] = lambda: {f"f{i}": 0 for i in range(NODES)}  # noqa: E731
        check: Callable[[Any], bool] = lambda s: s[f"f{NODES - 1}"] == NODES  # noqa: E731
    elif shape == "agent":
        # Functional form on purpose: LangGraph resolves the annotations at run time.
        A = TypedDict("A", {"turns": int, "messages": Annotated[list, operator.add]})  # noqa: UP013

        async def llm(state: Any) -> dict[str, Any]:
            return {"messages": [f"turn {state['turns']}"], "turns": state["turns"] + 1}

        g = StateGraph(A)
        g.add_node("llm", llm)
        g.add_edge(START, "llm")
        g.add_conditional_edges("llm", lambda s: "llm" if s["turns"] <= LOOPS else END)
        init = lambda: {"turns": 0, "messages": []}  # noqa: E731
        check = lambda s: len(s["messages"]) == LOOPS + 1  # noqa: E731
    else:
        F = TypedDict("F", {"items": list, "results": Annotated[list, operator.add]})  # noqa: UP013

        async def work(state: Any) -> dict[str, Any]:
            return {"results": [state["item"] * 2]}

        g = StateGraph(F)
        g.add_node("work", work)
        g.add_conditional_edges(
            START, lambda s: [Send("work", {"item": x}) for x in s["items"]], ["work"]
        )
        g.add_edge("work", END)
        init = lambda: {"items": FAN["data"], "results": []}  # noqa: E731
        check = lambda s: sorted(s["results"]) == [2 * x for x in FAN["data"]]  # noqa: E731
    compiled = g.compile()

    async def invoke() -> Any:
        return await compiled.ainvoke(init())

    return invoke, _nothing, check


# ------------------------------------------------------------------------------- openarmature
def build_openarmature(shape: str, items: int) -> Built:
    try:
        from openarmature.graph import END, GraphBuilder, State, append
        from pydantic import Field, create_model
    except ImportError as e:
        raise C.Skip(f"openarmature not importable ({e})") from None
    if shape == "linear":
        S = create_model("S", __base__=State, **{f"f{i}": (int, 0) for i in range(NODES)})  # type: ignore[call-overload]
        b = GraphBuilder(S)
        for i in range(NODES):
            b.add_node(f"n{i}", _linear_node(i))
        for i in range(NODES - 1):
            b.add_edge(f"n{i}", f"n{i + 1}")
        b.add_edge(f"n{NODES - 1}", END).set_entry("n0")
        check: Callable[[Any], bool] = lambda s: getattr(s, f"f{NODES - 1}") == NODES  # noqa: E731
    elif shape == "agent":
        S = create_model(
            "S",
            __base__=State,
            turns=(int, 0),  # type: ignore[call-overload]
            messages=(Annotated[list[str], append], Field(default_factory=list)),
        )

        async def llm(state: Any) -> dict[str, Any]:
            return {"messages": [f"turn {state.turns}"], "turns": state.turns + 1}

        b = GraphBuilder(S).add_node("llm", llm).set_entry("llm")
        b.add_conditional_edge("llm", lambda s: "llm" if s.turns <= LOOPS else END)
        check = lambda s: len(s.messages) == LOOPS + 1  # noqa: E731
    else:
        # Fan-out through the spec's registration fields (pipeline-utilities §9); skipped if the
        # package does not offer it under that name.
        W = create_model("W", __base__=State, item=(int, 0), result=(int, 0))  # type: ignore[call-overload]

        async def work(state: Any) -> dict[str, Any]:
            return {"result": state.item * 2}

        worker = GraphBuilder(W).add_node("work", work).set_entry("work")
        worker.add_edge("work", END)
        S = create_model(
            "S",
            __base__=State,
            items=(list[int], Field(default_factory=list)),  # type: ignore[call-overload]
            results=(Annotated[list[int], append], Field(default_factory=list)),
        )
        b = GraphBuilder(S)
        try:
            b.add_fan_out_node(
                name="fan",
                subgraph=worker.compile(),
                items_field="items",
                item_field="item",
                collect_field="result",
                target_field="results",
                concurrency=None,
            )
        except (AttributeError, TypeError) as e:
            raise C.Skip(f"no spec-shaped add_fan_out_node ({type(e).__name__}: {e})") from None
        b.add_edge("fan", END).set_entry("fan")
        check = lambda s: list(s.results) == [2 * x for x in FAN["data"]]  # noqa: E731
        compiled = b.compile()

        async def invoke_f() -> Any:
            return await compiled.invoke(S(items=FAN["data"]))

        return invoke_f, getattr(compiled, "drain", _nothing), check
    compiled = b.compile()

    async def invoke() -> Any:
        return await compiled.invoke(S())

    return invoke, getattr(compiled, "drain", _nothing), check


# ------------------------------------------------------------------------------- ours
def build_ours(shape: str, items: int, observe: bool = False) -> Built:
    import msgspec

    try:
        from openarmature_nodes.graph import END, GraphBuilder, State, append
    except ImportError as e:
        raise C.Skip(f"openarmature_nodes.graph not importable ({e})") from None

    def state_type(name: str, fields: list[tuple[str, Any, Any]]) -> Any:
        return msgspec.defstruct(name, fields, bases=(State,), kw_only=True, frozen=True)

    if shape == "linear":
        S = state_type("S", [(f"f{i}", int, 0) for i in range(NODES)])
        b = GraphBuilder(S)
        for i in range(NODES):
            b.add_node(f"n{i}", _linear_node(i))
        for i in range(NODES - 1):
            b.add_edge(f"n{i}", f"n{i + 1}")
        b.add_edge(f"n{NODES - 1}", END)
        b.set_entry("n0")
        check: Callable[[Any], bool] = lambda s: getattr(s, f"f{NODES - 1}") == NODES  # noqa: E731
    elif shape == "agent":
        S = state_type(
            "S",
            [
                ("turns", int, 0),
                ("messages", Annotated[list[str], append], msgspec.field(default_factory=list)),
            ],
        )

        async def llm(state: Any) -> dict[str, Any]:
            return {"messages": [f"turn {state.turns}"], "turns": state.turns + 1}

        b = GraphBuilder(S)
        b.add_node("llm", llm)
        b.set_entry("llm")
        b.add_conditional_edge("llm", lambda s: "llm" if s.turns <= LOOPS else END)
        check = lambda s: len(s.messages) == LOOPS + 1  # noqa: E731
    else:
        W = state_type("W", [("item", int, 0), ("result", int, 0)])

        async def work(state: Any) -> dict[str, Any]:
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
        if not hasattr(b, "add_fan_out_node"):
            raise C.Skip("fan-out not built yet (GraphBuilder.add_fan_out_node missing)")
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
        check = lambda s: list(s.results) == [2 * x for x in FAN["data"]]  # noqa: E731
        compiled = b.compile()

        async def invoke_f() -> Any:
            return await compiled.invoke(S(items=FAN["data"]))

        return invoke_f, _nothing, check
    compiled = b.compile()
    if observe:
        seen = [0]

        async def observer(event: Any) -> None:
            seen[0] += 1

        compiled.attach(observer)

    async def invoke() -> Any:
        return await compiled.invoke(S())

    return invoke, getattr(compiled, "drain", _nothing), check


def build_ours_obs(shape: str, items: int) -> Built:
    """Ours with one no-op observer attached: every node event is built and delivered."""
    if shape == "fanout":
        raise C.Skip("observer row measured on linear and agent only")
    return build_ours(shape, items, observe=True)


BUILDERS = {
    "ours": build_ours,
    "ours_obs": build_ours_obs,
    "langgraph": build_langgraph,
    "openarmature": build_openarmature,
}


# ------------------------------------------------------------------------------- child
def child(a: argparse.Namespace) -> None:
    C.pin_cpu0()
    row: dict[str, Any] = {"engine": a.child, "shape": a.shape, "backend": a.backend}
    try:
        invoke, drain, check = BUILDERS[a.child](a.shape, a.items)
    except C.Skip as e:
        C.emit({**row, "skipped": str(e)})
        return
    fan = a.shape == "fanout"
    k = a.fan_k if fan else a.k
    warm = 3 if fan else a.warmup

    async def main() -> None:
        final = None
        FAN["data"] = list(range(min(a.items, 500)))  # warm-up fan-outs stay small
        for _ in range(warm):
            final = await invoke()
        if not check(final):
            raise RuntimeError(f"wrong final state: {final!r:.300}")
        FAN["data"] = list(range(a.items))
        await drain()
        # Batches of K invokes until at least --min-time seconds: a fast engine's K=500 invokes
        # take a few ms, too short a window to time reliably.
        done = 0
        cpu0, t0 = time.process_time(), time.perf_counter()
        while True:
            for _ in range(k):
                final = await invoke()
            done += k
            if fan or time.perf_counter() - t0 >= a.min_time:
                break
        await drain()
        t1, cpu1 = time.perf_counter(), time.process_time()
        if not check(final):
            raise RuntimeError(f"wrong final state after the timed run: {final!r:.300}")
        units = done * (a.items if fan else STEPS[a.shape])
        row.update(
            k=done,
            units=units,
            us_cpu=(cpu1 - cpu0) / units * 1e6,
            us_wall=(t1 - t0) / units * 1e6,
            ms_per_invoke=(t1 - t0) / done * 1e3,
        )

    C.run_loop(a.backend, main)
    row["rss_mb"] = C.peak_rss_mb()
    row["versions"] = C.versions()
    C.emit(row)


# ------------------------------------------------------------------------------- parent
def report(runs: list[dict[str, Any]], matrix: list[tuple[str, str]], a: argparse.Namespace) -> str:
    out: list[str] = []
    notes: list[str] = []
    for shape in SHAPES:
        med: dict[tuple[str, str], dict[str, Any]] = {}
        for eng, be in matrix:
            rows = [r for r in runs if (r["engine"], r["backend"], r["shape"]) == (eng, be, shape)]
            ok = [r for r in rows if "us_cpu" in r]
            if ok:
                med[(eng, be)] = {
                    k: C.median_of(ok, k) for k in ("us_cpu", "us_wall", "ms_per_invoke", "rss_mb")
                }
            elif rows:
                notes.append(
                    f"- `{eng}` / {be} / {shape}: {rows[0].get('skipped') or rows[0].get('error')}"
                )
        if not med:
            continue
        unit = "instance" if shape == "fanout" else "step"
        what = (
            f"{a.items:,} instances per invoke, {a.fan_k} timed invoke(s) after 3 of 500"
            if shape == "fanout"
            else f"{STEPS[shape]} steps per invoke, batches of K={a.k} invokes, >= {a.min_time} s"
        )
        out.append(f"### Engine, {shape} ({what}; medians of {a.repeats})\n")
        peers = [k for k in med if not k[0].startswith("ours")]
        rows_out = []
        for key, m in med.items():
            ratios = [C.ratio(m["us_cpu"] / med[p]["us_cpu"]) for p in peers]
            d = 2 if m["us_cpu"] < 10 else 1
            m["range"] = C.spread(
                [
                    r
                    for r in runs
                    if (r["engine"], r["backend"], r["shape"]) == (*key, shape) and "us_cpu" in r
                ],
                "us_cpu",
                d,
            )
            ms = m["ms_per_invoke"]
            rows_out.append(
                [
                    *key,
                    C.fmt(m["us_cpu"], d),
                    m["range"],
                    C.fmt(m["us_wall"], d),
                    C.fmt(ms, 3 if ms < 1 else 1),
                    C.fmt(m["rss_mb"]),
                    *ratios,
                ]
            )
        out.append(
            C.table(
                [
                    "engine",
                    "loop",
                    f"CPU µs/{unit}",
                    "[min-max]",
                    f"wall µs/{unit}",
                    "ms/invoke",
                    "peak RSS MB",
                ]
                + [f"÷ {p[0]}/{p[1]}" for p in peers],
                rows_out,
            )
        )
        if peers:
            out.append("\n`÷ X` = this row's CPU µs ÷ X's (< 1.00: cheaper than X).")
        out.append("")
    if notes:
        out.append("Skipped / failed:\n" + "\n".join(notes))
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--k", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--fan-k", type=int, default=1)
    ap.add_argument(
        "--min-time", type=float, default=1.0, help="seconds of timed work per row, at least"
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default="", help="comma list of engines or engine:loop")
    ap.add_argument("--shapes", default=",".join(SHAPES), help="comma list of shapes")
    ap.add_argument("--timeout", type=float, default=240)
    ap.add_argument("--json")
    ap.add_argument("--child")
    ap.add_argument("--shape", default="linear", choices=SHAPES)
    ap.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    a = ap.parse_args()
    if a.child:
        return child(a)
    sel = [s for s in a.only.split(",") if s]
    matrix = [(e, b) for e, b in MATRIX if not sel or e in sel or f"{e}:{b}" in sel]
    shapes = [s for s in a.shapes.split(",") if s in SHAPES]
    cells = (
        (
            {"engine": eng, "shape": shape, "backend": be, "repeat": rep},
            ["--child", eng, "--shape", shape, "--backend", be, "--k", str(a.k),
             "--warmup", str(a.warmup), "--items", str(a.items), "--fan-k", str(a.fan_k),
             "--min-time", str(a.min_time)],
        )
        for rep in range(a.repeats)
        for shape in shapes
        for eng, be in matrix
    )
    runs = C.run_cells(
        __file__, cells, a.timeout, measured="us_cpu",
        label=lambda c: f"[#{c['repeat']}] {c['shape']:6s} {c['engine']:12s} {c['backend']:7s}",
        figures=lambda r: (
            f"{r['us_cpu']:9.2f} CPU µs/unit {r['ms_per_invoke']:9.3f} ms/invoke "
            f"rss {r['rss_mb']:4.0f} MB"
        ),
    )
    print("## Graph engines\n")
    print(report(runs, matrix, a))
    C.save_json(a.json, {"k": a.k, "items": a.items, "repeats": a.repeats, "runs": runs})


if __name__ == "__main__":
    main()
