"""Distributed enrichment: the fan-out's instances run on a Dask cluster.

::

    python examples/graphs/distributed_enrichment.py                   # LocalCluster, 2 workers
    python examples/graphs/distributed_enrichment.py --backend trio --records 400
    python examples/graphs/distributed_enrichment.py --scheduler tcp://10.0.0.5:8786 \\
        --base-url http://vllm:8000 --model MODEL --inflight-limit 64

The same per-record graph as ``fanout_enrichment.py`` (one LLM call writes a
tagline per record), but the fan-out node is given a
:class:`~openarmature_nodes.distributed.DaskExecutor`: records go to the workers
in chunks of ``--chunk-size``; each worker built the per-record graph once (its
own provider, connection pool and warm-up) from the factory
``distributed_records:make_record_graph``, on the ``--backend`` event loop, and
runs up to ``--per-worker-concurrency`` records at once. The taglines come back
in record order, identical to a local run (the script checks this on a sample).

Without ``--scheduler`` the script starts a ``LocalCluster`` of ``--workers``
processes on loopback, and stops it at the end. Without ``--base-url`` it serves
the embedded endpoint (with ``--latency`` s per request) from this process;
workers reach it over loopback, so with a remote ``--scheduler`` give a
``--base-url`` the workers can reach.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import anyio
from _common import endpoint, make_parser, run, show
from distributed_records import Catalogue, build_record_graph, record_onion

from openarmature_nodes.distributed import DaskExecutor, WorkerRuntime
from openarmature_nodes.graph import END, GraphBuilder
from openarmature_nodes.llm import OpenAIProvider

PRODUCTS = [
    "Cast-iron skillet, 26 cm, pre-seasoned, oven safe to 260 C",
    "Merino wool hiking socks, cushioned sole, three pairs",
    "Noise-cancelling headphones, 30 h battery, foldable",
    "Stainless steel water bottle, 750 ml, keeps drinks cold 24 h",
    "Bamboo cutting board with juice groove, 45 x 30 cm",
    "LED desk lamp, dimmable, USB-C charging port",
]


def catalogue_graph(subgraph: Any, **fan_out: Any) -> Any:
    return (
        GraphBuilder(Catalogue)
        .add_fan_out_node(
            "enrich", subgraph, items_field="records", item_field="record",
            collect_field="tagline", target_field="taglines", **fan_out,
        )
        .add_edge("enrich", END).set_entry("enrich").compile()
    )


def start_cluster(args: argparse.Namespace) -> tuple[Any, Any]:
    from distributed import Client, LocalCluster

    if args.scheduler:
        return None, Client(args.scheduler)
    cluster = LocalCluster(
        n_workers=args.workers, threads_per_worker=args.threads, processes=True,
        host="127.0.0.1", dashboard_address="127.0.0.1:0",
    )
    return cluster, Client(cluster)


async def main(args: argparse.Namespace) -> int:
    records = [f"{PRODUCTS[i % len(PRODUCTS)]} (lot {i})" for i in range(args.records)]
    async with endpoint(args, latency=args.latency) as ep:
        began = time.monotonic()
        cluster, client = await anyio.to_thread.run_sync(start_cluster, args)
        where = args.scheduler or f"a LocalCluster of {args.workers} worker processes"
        print(f"cluster: {where}, up in {time.monotonic() - began:.1f} s")
        runtime = WorkerRuntime(
            "distributed_records:make_record_graph", backend=args.backend,
            kwargs={"base_url": ep.base_url, "model": ep.model,
                    "inflight_limit": args.inflight_limit},
        )
        executor = DaskExecutor(
            client, runtime=runtime, chunk_size=args.chunk_size,
            per_worker_concurrency=args.per_worker_concurrency,
        )
        try:
            async with OpenAIProvider(ep.base_url, ep.model, api_key=ep.api_key) as provider:
                subgraph = build_record_graph(provider, record_onion(provider))
                graph = catalogue_graph(subgraph, executor=executor)
                print(f"enriching {len(records)} records in chunks of {args.chunk_size}, "
                      f"{args.per_worker_concurrency} per worker, workers on {args.backend}")
                began = time.monotonic()
                final = await graph.invoke(Catalogue(records=records))
                elapsed = time.monotonic() - began
                sample = records[: args.check]
                local = await catalogue_graph(subgraph, concurrency=8).invoke(
                    Catalogue(records=sample)
                )
        finally:
            await anyio.to_thread.run_sync(executor.close)
            await anyio.to_thread.run_sync(client.close)
            if cluster is not None:
                await anyio.to_thread.run_sync(cluster.close)
    for record, line in list(zip(final.records, final.taglines, strict=True))[:5]:
        print(f"  {show(record, 48):48} -> {line}")
    stats = executor.stats
    same = final.taglines[: len(sample)] == local.taglines
    print(f"{len(final.taglines)} taglines in record order in {elapsed:.2f} s "
          f"({len(records) / elapsed:.0f} records/s); {stats.chunks} chunks, "
          f"{stats.resubmitted} resubmitted")
    print(f"first {len(sample)} identical to a local run: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    parser = make_parser(__doc__.splitlines()[0] if __doc__ else "distributed enrichment")
    parser.add_argument("--scheduler", help="tcp://host:port of a running Dask scheduler "
                        "(default: start a LocalCluster)")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    parser.add_argument("--threads", type=int, default=4, help="LocalCluster threads per worker")
    parser.add_argument("--records", type=int, default=200, help="how many records")
    parser.add_argument("--chunk-size", type=int, default=25, help="records per Dask task")
    parser.add_argument("--per-worker-concurrency", type=int, default=16,
                        help="records in flight per worker")
    parser.add_argument("--inflight-limit", type=int, default=None,
                        help="calls in flight to the endpoint across all workers (off)")
    parser.add_argument("--latency", type=float, default=0.03,
                        help="embedded endpoint only: seconds per request")
    parser.add_argument("--check", type=int, default=20,
                        help="records re-run locally to compare")
    run(main, parser.parse_args())
