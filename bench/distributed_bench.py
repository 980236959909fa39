"""Records per second of the fan-out enrichment, locally and on a Dask LocalCluster.

::

    .venv/bin/python bench/distributed_bench.py                     # 2000 records, 1 and 2 workers
    .venv/bin/python bench/distributed_bench.py --workers 1,2,4 --records 4000 --json out.json

The enrichment is ``examples/graphs/distributed_records.py``: one LLM call per
record through the default call onion, against the embedded endpoint run as its
own process (``python -m openarmature_nodes.testing --latency 0.03``), so every
row talks to the same server over loopback.

Rows:

- ``local C=..``: the fan-out in this process, ``concurrency`` C;
- ``dask W workers``: a ``LocalCluster`` of W worker processes (4 threads each),
  ``per_worker_concurrency`` 32, ``chunk_size`` given by ``--chunk-size``. Cluster
  start-up and the runtime's set-up on the workers (factory, provider, warm-up)
  are excluded from records/s and reported in their own columns.

Per-chunk dispatch overhead, with a no-I/O instance graph (``_distributed_graphs``)
on a 1-worker cluster: one instance per chunk, ``max_chunks_in_flight=1`` (the
full round trip of one chunk: encode, submit, schedule, run, reply, decode), and
with the default window (the amortized cost per chunk when chunks pipeline).

Each timed row is the median of ``--repeats`` runs (min-max in brackets). The
machine these figures come from is a shared 2-core VM: worker processes, the
server and this process compete for the same two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "examples" / "graphs")]

import anyio  # noqa: E402
from distributed_records import Catalogue, build_record_graph, record_onion  # noqa: E402

from openarmature_nodes.distributed import DaskExecutor, WorkerRuntime  # noqa: E402
from openarmature_nodes.graph import END, GraphBuilder  # noqa: E402
from openarmature_nodes.llm import OpenAIProvider  # noqa: E402

MODEL = "embedded-model"


def catalogue(subgraph: Any, **fan_out: Any) -> Any:
    return (
        GraphBuilder(Catalogue)
        .add_fan_out_node("enrich", subgraph, items_field="records", item_field="record",
                          collect_field="tagline", target_field="taglines", **fan_out)
        .add_edge("enrich", END).set_entry("enrich").compile()
    )


def start_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "openarmature_nodes.testing", "--latency", str(latency)],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("BASE_URL="):
        proc.kill()
        raise SystemExit(f"embedded server did not start: {line!r}")
    return proc, line.split("=", 1)[1]


async def timed(graph: Any, records: list[str]) -> float:
    began = time.perf_counter()
    final = await graph.invoke(Catalogue(records=records))
    elapsed = time.perf_counter() - began
    assert final.taglines == [f"echo: {r}" for r in records], "wrong or out-of-order result"
    return elapsed


def median(xs: list[float]) -> str:
    return f"{statistics.median(xs):.0f} [{min(xs):.0f}-{max(xs):.0f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--chunk-size", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.03)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    from distributed import Client, LocalCluster

    records = [f"product {i}" for i in range(args.records)]
    server, base_url = start_server(args.latency)
    rows: list[dict[str, Any]] = []
    try:
        async def local(concurrency: int) -> list[float]:
            async with OpenAIProvider(base_url, MODEL) as provider:
                graph = catalogue(build_record_graph(provider, record_onion(provider)),
                                  concurrency=concurrency)
                await timed(graph, records[:50])  # warm-up: pool, gate
                return [len(records) / await timed(graph, records) for _ in range(args.repeats)]

        for c in (32, 64):
            rps = anyio.run(local, c)
            rows.append({"row": f"local C={c}", "rps": rps, "startup_s": None, "setup_s": None})
            print(f"local C={c}: {median(rps)} records/s", file=sys.stderr)

        for w in [int(x) for x in args.workers.split(",")]:
            began = time.perf_counter()
            cluster = LocalCluster(n_workers=w, threads_per_worker=4, processes=True,
                                   host="127.0.0.1", dashboard_address="127.0.0.1:0")
            client = Client(cluster)
            startup = time.perf_counter() - began
            runtime = WorkerRuntime("distributed_records:make_record_graph",
                                    kwargs={"base_url": base_url, "model": MODEL})
            executor = DaskExecutor(client, runtime=runtime, chunk_size=args.chunk_size,
                                    per_worker_concurrency=32)

            async def remote(executor: DaskExecutor = executor) -> tuple[float, list[float]]:
                async with OpenAIProvider(base_url, MODEL) as provider:
                    graph = catalogue(build_record_graph(provider, record_onion(provider)),
                                      executor=executor)
                    setup = await timed(graph, records[:50])  # registers the runtime
                    return setup, [len(records) / await timed(graph, records)
                                   for _ in range(args.repeats)]

            try:
                setup, rps = anyio.run(remote)
                row: dict[str, Any] = {"row": f"dask {w} worker{'s' if w > 1 else ''}",
                                       "rps": rps, "startup_s": startup, "setup_s": setup}
                if w == 1:
                    row["overhead"] = anyio.run(overhead, client)
                rows.append(row)
                print(f"dask {w}: {median(rps)} records/s, start-up {startup:.1f} s",
                      file=sys.stderr)
            finally:
                executor.close()
                client.close()
                cluster.close()
    finally:
        server.terminate()
        server.wait(10)
    print_table(rows, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "args": vars(args),
                                               "cpus": os.cpu_count()}, indent=1))
    return 0


async def overhead(client: Any, chunks: int = 200) -> dict[str, float]:
    """Milliseconds per chunk of one no-I/O instance: round trip, and pipelined."""
    from _distributed_graphs import make_noop_graph

    out: dict[str, float] = {}
    records = [f"r{i}" for i in range(chunks)]
    runtime = WorkerRuntime("_distributed_graphs:make_noop_graph")
    for label, window in (("round_trip_ms", 1), ("pipelined_ms", None)):
        executor = DaskExecutor(client, runtime=runtime, chunk_size=1,
                                max_chunks_in_flight=window)
        graph = catalogue(make_noop_graph(), executor=executor)
        await graph.invoke(Catalogue(records=records[:10]))  # set-up
        began = time.perf_counter()
        final = await graph.invoke(Catalogue(records=records))
        out[label] = (time.perf_counter() - began) / chunks * 1000
        assert final.taglines == records
        out[label.replace("_ms", "_worker_ms")] = executor.stats.worker_seconds / chunks * 1000
        await anyio.to_thread.run_sync(executor.close)
    return out


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"### Distributed fan-out: {args.records} records, endpoint latency "
          f"{args.latency * 1000:.0f} ms, chunk_size {args.chunk_size}\n")
    print("| row | records/s | cluster start-up s | runtime set-up + 50 records s |")
    print("|---|---|---|---|")
    for r in rows:
        start = f"{r['startup_s']:.1f}" if r["startup_s"] is not None else "-"
        setup = f"{r['setup_s']:.2f}" if r["setup_s"] is not None else "-"
        print(f"| {r['row']} | {median(r['rps'])} | {start} | {setup} |")
    for r in rows:
        if "overhead" in r:
            o = r["overhead"]
            print(f"\nPer-chunk dispatch overhead (1 worker, 1 no-I/O instance per chunk): "
                  f"round trip {o['round_trip_ms']:.2f} ms/chunk (worker side "
                  f"{o['round_trip_worker_ms']:.2f} ms), pipelined {o['pipelined_ms']:.2f} "
                  f"ms/chunk.")
    print(f"\nMachine: {os.cpu_count()} CPUs, shared with other work while measured.")


if __name__ == "__main__":
    sys.exit(main())
