"""Checkpoint save cost per node step: ours (SQLite, PostgreSQL) next to LangGraph's SqliteSaver.

Two state shapes, the same for every row:

- ``fields10``: ten scalar fields (ints and short strings);
- ``agent1000``: a conversation of 1,000 messages (``{"role", "content"}``, ~100
  characters each) plus a turn counter.

One graph: a single node looping on itself ``STEPS`` times (a conditional edge),
each step changing one small field, so every step is one checkpoint save of
the whole state. Rows, each in a fresh child process, repeated and reported as
the median:

- ``ours/none``: no checkpointer (the baseline of the engine itself);
- ``ours/sqlite-json``, ``ours/sqlite-msgpack``: :class:`SQLiteCheckpointer` (WAL,
  ``synchronous=NORMAL``: durable across process crashes) on a file in a temp dir;
  ``ours/sqlite-json-full``: the same with ``synchronous=FULL`` (an fsync per commit,
  durable across power loss too, like SQLite's defaults that ``SqliteSaver`` keeps);
- ``ours/postgres``: :class:`PostgresCheckpointer` (when ``OPENARMATURE_POSTGRES_URL``
  is set);
- ``langgraph/none`` and ``langgraph/sqlite``: LangGraph's ``StateGraph`` with the
  same shape, without and with ``SqliteSaver`` (its defaults), ``invoke`` (sync).

Columns: wall µs per step, µs per save (the row minus its framework's
``none`` row), bytes per save (ours: the encoded record size; LangGraph: the
bytes its tables grew by, divided by the saves). LangGraph writes only the
channels a step changed (the messages blob once), we write full snapshots
(pipeline-utilities §10.3.1): the bytes column shows that difference.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

SHAPES = ("fields10", "agent1000")
ROWS = ("ours/none", "ours/sqlite-json", "ours/sqlite-msgpack", "ours/sqlite-json-full",
        "ours/postgres",
        "langgraph/none", "langgraph/sqlite")


def _initial(shape: str) -> dict[str, Any]:
    if shape == "fields10":
        return {"f0": 0, "f1": 1, "f2": 2, "f3": 3, "f4": 4,
                "f5": "alpha", "f6": "beta", "f7": "gamma", "f8": "delta", "f9": "epsilon"}
    text = "lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor ut"
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"{i:04d} {text}"}
            for i in range(1000)]
    return {"messages": msgs, "f0": 0}


# --- ours --------------------------------------------------------------------------------------

import msgspec  # noqa: E402

from openarmature_nodes.graph import State  # noqa: E402


class Fields10(State):
    f0: int = 0
    f1: int = 0
    f2: int = 0
    f3: int = 0
    f4: int = 0
    f5: str = ""
    f6: str = ""
    f7: str = ""
    f8: str = ""
    f9: str = ""


class Msg(msgspec.Struct, frozen=True):
    role: str
    content: str


class Agent1000(State):
    messages: list[Msg] = []
    f0: int = 0


def run_ours(shape: str, store: str, steps: int) -> dict[str, float]:
    import anyio

    from openarmature_nodes.graph import END, GraphBuilder, SQLiteCheckpointer
    from openarmature_nodes.graph.checkpoint.codec import Codec

    S = Fields10 if shape == "fields10" else Agent1000

    async def step(s: Any) -> dict[str, Any]:
        return {"f0": s.f0 + 1}

    def route(s: Any) -> Any:
        return "step" if s.f0 < steps else END

    tmp = tempfile.mkdtemp(prefix="ckbench-")
    cp: Any = None
    encoding = "msgpack" if store.endswith("msgpack") else "json"
    if store.startswith("sqlite"):
        sync = "FULL" if store.endswith("-full") else "NORMAL"
        cp = SQLiteCheckpointer(os.path.join(tmp, "c.db"), encoding=encoding,  # type: ignore[arg-type]
                                synchronous=sync)  # type: ignore[arg-type]
    elif store == "postgres":
        from openarmature_nodes.graph.checkpoint.postgres import PostgresCheckpointer

        cp = PostgresCheckpointer(os.environ["OPENARMATURE_POSTGRES_URL"],
                                  table=f"bench_{os.getpid()}")
    builder = (GraphBuilder(S).add_node("step", step).add_conditional_edge("step", route)
               .set_entry("step"))
    if cp is not None:
        builder.with_checkpointer(cp)
    graph = builder.compile()
    init = msgspec.convert(_initial(shape), S)

    async def main() -> dict[str, float]:
        await graph.invoke(init)  # warm-up: connection, table, imports
        t0 = time.perf_counter()
        final = await graph.invoke(init, invocation_id="bench")
        took = time.perf_counter() - t0
        assert final.f0 == steps
        size = 0.0
        if cp is not None:
            record = await cp.load("bench")
            size = float(len(Codec(encoding).encode(record)))  # type: ignore[arg-type]
            drop = getattr(cp, "drop_table", None)
            if drop is not None:
                await drop()
            await cp.aclose()
        return {"us_per_step": took / steps * 1e6, "bytes_per_save": size}

    return anyio.run(main)


# --- LangGraph -----------------------------------------------------------------------------------


def run_langgraph(shape: str, store: str, steps: int) -> dict[str, float]:
    import operator
    from typing import Annotated, TypedDict

    from langgraph.graph import END, StateGraph

    if shape == "fields10":
        fields: dict[str, Any] = {f"f{i}": (int if i < 5 else str) for i in range(10)}
    else:
        fields = {"messages": Annotated[list, operator.add], "f0": int}
    S = TypedDict("S", fields)  # type: ignore[misc]

    def step(s: Any) -> dict[str, Any]:
        return {"f0": s["f0"] + 1}

    def route(s: Any) -> Any:
        return "step" if s["f0"] < steps else END

    g = StateGraph(S)
    g.add_node("step", step)
    g.add_conditional_edges("step", route)
    g.set_entry_point("step")
    tmp = tempfile.mkdtemp(prefix="ckbench-lg-")
    path = os.path.join(tmp, "lg.db")
    conn = None
    if store == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver

        conn = sqlite3.connect(path, check_same_thread=False)
        graph = g.compile(checkpointer=SqliteSaver(conn))
    else:
        graph = g.compile()
    init = _initial(shape)
    cfg: dict[str, Any] = {"recursion_limit": steps + 10}
    graph.invoke(init, {**cfg, "configurable": {"thread_id": "warm"}})
    before = _db_bytes(conn)
    t0 = time.perf_counter()
    final = graph.invoke(init, {**cfg, "configurable": {"thread_id": "bench"}})
    took = time.perf_counter() - t0
    assert final["f0"] == steps
    size = (_db_bytes(conn) - before) / (steps + 1) if conn is not None else 0.0
    return {"us_per_step": took / steps * 1e6, "bytes_per_save": size}


def _db_bytes(conn: sqlite3.Connection | None) -> float:
    """Payload bytes in LangGraph's tables (checkpoint blobs + channel blobs + writes)."""
    if conn is None:
        return 0.0
    total = 0
    for table, cols in (("checkpoints", "checkpoint, metadata"), ("writes", "value")):
        for col in cols.split(", "):
            row = conn.execute(f"SELECT COALESCE(SUM(LENGTH({col})), 0) FROM {table}").fetchone()
            total += row[0]
    return float(total)


# --- driver ---------------------------------------------------------------------------------------


def child(row: str, shape: str, steps: int) -> dict[str, float]:
    framework, store = row.split("/")
    if framework == "ours":
        return run_ours(shape, store, steps)
    return run_langgraph(shape, store, steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="write raw results here")
    ap.add_argument("--child", nargs=2, metavar=("ROW", "SHAPE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.steps)))
        return
    rows = [r for r in ROWS if r != "ours/postgres" or os.environ.get("OPENARMATURE_POSTGRES_URL")]
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    for _ in range(args.repeats):
        for shape in SHAPES:
            for row in rows:
                out = subprocess.run(
                    [sys.executable, __file__, "--steps", str(args.steps), "--child", row, shape],
                    capture_output=True, text=True, check=False,
                )
                if out.returncode != 0:
                    print(f"{row} {shape} failed: {out.stderr[-400:]}", file=sys.stderr)
                    continue
                results.setdefault(shape, {}).setdefault(row, []).append(json.loads(out.stdout))
    print(f"### checkpoint save cost per node step ({args.steps} steps, median of "
          f"{args.repeats})\n")
    print("| shape | row | µs/step | µs/save | bytes/save |")
    print("|---|---|---:|---:|---:|")
    for shape, by_row in results.items():
        base = {fw: statistics.median(r["us_per_step"] for r in by_row.get(f"{fw}/none", []))
                for fw in ("ours", "langgraph") if by_row.get(f"{fw}/none")}
        for row, runs in by_row.items():
            us = statistics.median(r["us_per_step"] for r in runs)
            size = statistics.median(r["bytes_per_save"] for r in runs)
            fw = row.split("/")[0]
            save = f"{us - base[fw]:.1f}" if not row.endswith("/none") and fw in base else "-"
            print(f"| {shape} | {row} | {us:.1f} | {save} | {size:,.0f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
