"""The Dask fan-out executor on a 2-worker ``LocalCluster`` (processes, loopback).

The cluster is started once for the module and stopped at its end. Every test
runs its parent graph on asyncio and on trio, with workers on the same backend.
Graphs and factories come from ``tests/dask_graphs.py`` (workers import them).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

pytest.importorskip("distributed")

from distributed import Client, LocalCluster

from openarmature_nodes.distributed import (
    ClusterUnavailable,
    DaskExecutor,
    NotImportable,
    WorkerRuntime,
)
from openarmature_nodes.graph import END, GraphBuilder, GraphRuntimeError, State
from openarmature_nodes.graph.events import NodeEvent
from openarmature_nodes.llm import OpenAIProvider
from openarmature_nodes.testing import EmbeddedServer
from tests.dask_graphs import (
    MODEL,
    Batch,
    Record,
    build_llm_graph,
    make_pure_graph,
    parent,
)

pytestmark = [pytest.mark.anyio, pytest.mark.dask, pytest.mark.timeout(120)]

RECORDS = [f"record {i}" for i in range(500)]


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=4, processes=True, host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


async def _close(executor: DaskExecutor) -> None:
    await anyio.to_thread.run_sync(executor.close)


def _pure(client: Client, backend: str, **options: Any) -> DaskExecutor:
    runtime = WorkerRuntime("tests.dask_graphs:make_pure_graph", backend=backend)  # type: ignore[arg-type]
    return DaskExecutor(client, runtime=runtime, **options)


def _record_calls(server: EmbeddedServer) -> list[str]:
    """The records the server was asked about (warm-up probes left out)."""
    out = []
    for r in server.requests:
        messages = (r.json or {}).get("messages") or []
        text = str(messages[-1].get("content", "")) if messages else ""
        if text.startswith("record "):
            out.append(text)
    return out


async def test_llm_enrichment_matches_local_run_in_index_order(
    client: Client, anyio_backend: str
) -> None:
    async with (
        EmbeddedServer(model=MODEL, latency=0.002) as server,
        OpenAIProvider(server.base_url, MODEL) as provider,
    ):
        sub = build_llm_graph(provider)
        local = await parent(sub, concurrency=16).invoke(Batch(records=RECORDS))
        runtime = WorkerRuntime(
            "tests.dask_graphs:make_llm_graph", backend=anyio_backend,  # type: ignore[arg-type]
            kwargs={"base_url": server.base_url},
        )
        executor = DaskExecutor(client, runtime=runtime, chunk_size=50, per_worker_concurrency=16)
        try:
            server.reset_counters()
            remote = await parent(sub, executor=executor).invoke(Batch(records=RECORDS))
        finally:
            await _close(executor)
        sent = _record_calls(server)
    assert remote.summaries == local.summaries
    assert remote.summaries == [f"ECHO: {r}".upper() for r in RECORDS]
    assert sorted(sent) == sorted(RECORDS)  # no worker lost: every call made once
    assert executor.stats.chunks == 10


async def test_collect_matches_local(client: Client, anyio_backend: str) -> None:
    records = [("bad " if i in (7, 123, 499) else "") + f"r{i}" for i in range(500)]
    local = await parent(
        make_pure_graph(), error_policy="collect", errors_field="errors"
    ).invoke(Batch(records=records))
    executor = _pure(client, anyio_backend, chunk_size=40)
    try:
        remote = await parent(
            make_pure_graph(), error_policy="collect", errors_field="errors", executor=executor
        ).invoke(Batch(records=records))
    finally:
        await _close(executor)
    assert remote.summaries == local.summaries
    assert len(remote.summaries) == 497
    assert remote.errors == local.errors
    assert [e["fan_out_index"] for e in remote.errors] == ["7", "123", "499"]


async def test_instance_middleware_degrades_slots_as_locally(
    client: Client, anyio_backend: str
) -> None:
    from openarmature_nodes.middleware import FailureIsolationMiddleware

    records = [("bad " if i % 50 == 3 else "") + f"r{i}" for i in range(200)]
    degrade = [FailureIsolationMiddleware(
        degraded_update={"summary": "(unavailable)"}, event_name="degraded"
    )]
    from openarmature_nodes.middleware import FailureIsolationEvent

    async def observed(graph: Any, inv: str) -> tuple[Batch, list[tuple[Any, ...]]]:
        seen: list[Any] = []

        async def observer(event: Any) -> None:
            seen.append(event)

        final = await graph.invoke(Batch(records=records), observers=[observer],
                                   invocation_id=inv)
        await graph.drain_events_for(inv, timeout=10)
        isolation = [e for e in seen if isinstance(e, FailureIsolationEvent)]
        return final, sorted(
            (e.fan_out_index, e.namespace, e.invocation_id, e.lineage.fan_out_index_chain,
             e.post_state["summary"]) for e in isolation
        )

    local, local_events = await observed(
        parent(make_pure_graph(), instance_middleware=degrade), "run"
    )
    executor = _pure(client, anyio_backend, chunk_size=30)
    try:
        remote, remote_events = await observed(
            parent(make_pure_graph(), instance_middleware=degrade, executor=executor), "run"
        )
    finally:
        await _close(executor)
    assert remote.summaries == local.summaries
    assert remote_events == local_events
    assert [e[0] for e in remote_events] == [3, 53, 103, 153]
    assert remote.summaries.count("(unavailable)") == 4
    assert remote.summaries[3] == "(unavailable)"


async def test_fail_fast_matches_local_and_cancels_outstanding_chunks(
    client: Client, anyio_backend: str
) -> None:
    records = [("bad " if i == 5 else "") + f"r{i}" for i in range(500)]
    with pytest.raises(GraphRuntimeError) as local:
        await parent(make_pure_graph()).invoke(Batch(records=records))
    executor = _pure(client, anyio_backend, chunk_size=10, max_chunks_in_flight=4)
    try:
        with pytest.raises(GraphRuntimeError) as remote:
            await parent(make_pure_graph(), executor=executor).invoke(Batch(records=records))
    finally:
        await _close(executor)
    assert remote.value.node_name == local.value.node_name == "enrich"
    cause, local_cause = remote.value.__cause__, local.value.__cause__
    assert getattr(cause, "category", None) == getattr(local_cause, "category", None)
    assert "bad r5" in str(cause)
    assert executor.stats.chunks < 50  # outstanding chunks were never dispatched


async def test_fail_fast_cancels_running_chunks_on_their_workers(
    client: Client, anyio_backend: str
) -> None:
    from tests.dask_graphs import make_slow_graph, running_instances

    records = [f"r{i}" for i in range(40)]
    records[12] = "bad r12"  # chunk 2 fails at once; the other chunks would run for a minute
    runtime = WorkerRuntime("tests.dask_graphs:make_slow_graph", backend=anyio_backend)  # type: ignore[arg-type]
    executor = DaskExecutor(client, runtime=runtime, chunk_size=5, per_worker_concurrency=40)
    try:
        with pytest.raises(GraphRuntimeError) as err:
            await parent(make_slow_graph(), executor=executor).invoke(Batch(records=records))
        running = await anyio.to_thread.run_sync(lambda: client.run(running_instances))
    finally:
        await _close(executor)
    assert "bad r12" in str(err.value.__cause__)
    assert executor.stats.chunks > 1  # other chunks were running when the failure came
    assert sum(running.values()) == 0  # ... and were cancelled on their workers


async def test_worker_killed_mid_run_leaves_complete_ordered_result(
    client: Client, anyio_backend: str
) -> None:
    async with (
        EmbeddedServer(model=MODEL, latency=0.03) as server,
        OpenAIProvider(server.base_url, MODEL) as provider,
    ):
        runtime = WorkerRuntime(
            "tests.dask_graphs:make_llm_graph", backend=anyio_backend,  # type: ignore[arg-type]
            kwargs={"base_url": server.base_url},
        )
        executor = DaskExecutor(client, runtime=runtime, chunk_size=25, per_worker_concurrency=8)
        graph = parent(build_llm_graph(provider), executor=executor)
        result: list[Batch] = []

        async def run() -> None:
            result.append(await graph.invoke(Batch(records=RECORDS)))

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                await server.wait_for(lambda: len(server.requests) >= 100)
                pids = await anyio.to_thread.run_sync(lambda: client.run(os.getpid))
                victim = sorted(pids.values())[0]
                os.kill(victim, signal.SIGKILL)
        finally:
            await _close(executor)
        sent = _record_calls(server)
    (final,) = result
    assert final.summaries == [f"ECHO: {r}".upper() for r in RECORDS]
    assert len(set(final.summaries)) == len(RECORDS)
    assert set(sent) == set(RECORDS)  # at least once: the dead worker's calls made again
    assert len(sent) >= len(RECORDS)


async def test_in_flight_limit_holds_across_workers(client: Client, anyio_backend: str) -> None:
    async with EmbeddedServer(model=MODEL, latency=0.03) as server:
        async with OpenAIProvider(server.base_url, MODEL) as provider:
            sub = build_llm_graph(provider)
        runtime = WorkerRuntime(
            "tests.dask_graphs:make_llm_graph", backend=anyio_backend,  # type: ignore[arg-type]
            kwargs={"base_url": server.base_url, "inflight_limit": 3},
        )
        executor = DaskExecutor(client, runtime=runtime, chunk_size=10, per_worker_concurrency=8)
        try:
            server.reset_counters()
            final = await parent(sub, executor=executor).invoke(Batch(records=RECORDS[:120]))
        finally:
            await _close(executor)
        peak = server.max_in_flight
    assert final.summaries == [f"ECHO: {r}".upper() for r in RECORDS[:120]]
    assert 2 <= peak <= 3  # 16 slots across two workers, 3 leases cluster-wide


async def test_events_come_back_as_the_instances(client: Client, anyio_backend: str) -> None:
    seen: list[Any] = []

    async def observer(event: Any) -> None:
        seen.append(event)

    graph = parent(make_pure_graph(), executor=(executor := _pure(client, anyio_backend,
                                                                   chunk_size=4)))
    try:
        inv = "parent-run"
        await graph.invoke(Batch(records=[f"r{i}" for i in range(10)]), observers=[observer],
                           invocation_id=inv)
        await graph.drain_events_for(inv, timeout=10)
    finally:
        await _close(executor)
    inner = [e for e in seen if isinstance(e, NodeEvent) and e.node_name == "reverse"]
    assert sorted(e.fan_out_index for e in inner if e.phase == "completed") == list(range(10))
    assert {e.namespace for e in inner} == {("enrich", "reverse")}
    assert {e.invocation_id for e in inner} == {inv}
    assert all(e.fan_out_index_chain == (e.fan_out_index,) for e in inner)
    steps = [e.step for e in seen if isinstance(e, NodeEvent) and e.phase == "started"]
    assert len(steps) == len(set(steps)) == 11  # the fan-out node and ten instances


async def test_factory_building_another_graph_fails_clearly(
    client: Client, anyio_backend: str
) -> None:
    from openarmature_nodes.distributed import WorkerRuntimeError

    runtime = WorkerRuntime("tests.dask_graphs:make_other_graph", backend=anyio_backend)  # type: ignore[arg-type]
    executor = DaskExecutor(client, runtime=runtime, chunk_size=5)
    try:
        with pytest.raises(GraphRuntimeError) as err:
            await parent(make_pure_graph(), executor=executor).invoke(
                Batch(records=["a", "b", "c"])
            )
    finally:
        await _close(executor)
    cause = err.value.__cause__
    assert isinstance(cause, WorkerRuntimeError)
    assert "must build the same subgraph" in str(cause)
    assert executor.stats.resubmitted == 0  # a deterministic failure is not retried


async def test_on_result_is_called_once_per_index(client: Client, anyio_backend: str) -> None:
    from openarmature_nodes.graph.executors import FanOutBatch

    sub = make_pure_graph()
    records = [("bad " if i == 4 else "") + f"r{i}" for i in range(30)]
    seen: list[tuple[int, Any, str | None]] = []

    async def on_result(i: int, result: Any, error: Exception | None) -> None:
        seen.append((i, result, None if error is None else getattr(error, "category", "?")))

    async def never(i: int) -> Any:
        raise AssertionError("a remote executor must not run jobs locally")

    batch = FanOutBatch(
        node_name="enrich", count=30, limit=4, fail_fast=False, subgraph=sub, keys=("summary",),
        instance_middleware=(), instance=lambda i: Record(record=records[i]), job=never,
        on_result=on_result,
    )
    executor = _pure(client, anyio_backend, chunk_size=7)
    try:
        outcome = await executor.run(batch)
    finally:
        await _close(executor)
    assert sorted(i for i, _, _ in seen) == list(range(30))
    assert list(outcome.failures) == [4]
    assert outcome.results[3] == {"summary": "3r"}
    assert [e for i, _, e in seen if i == 4] == ["node_exception"]


class MainRecord(State):
    record: str = ""
    summary: str = ""


MainRecord.__module__ = "__main__"  # as if defined in the script being run


class _NoCalls:
    """A stand-in client that fails the test if the executor sends anything."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the executor used the client ({name}) before refusing")


async def _echo(state: MainRecord) -> dict[str, str]:
    return {"summary": state.record}


async def test_main_state_class_refused_before_anything_is_sent() -> None:
    sub = (GraphBuilder(MainRecord).add_node("echo", _echo).add_edge("echo", END)
           .set_entry("echo").compile())
    executor = DaskExecutor(
        _NoCalls(), runtime=WorkerRuntime("tests.dask_graphs:make_pure_graph")
    )
    with pytest.raises(GraphRuntimeError) as err:
        await parent(sub, executor=executor).invoke(Batch(records=["a", "b"]))
    cause = err.value.__cause__
    assert isinstance(cause, NotImportable)
    assert "__main__" in str(cause) and "move it to a module" in str(cause)


def test_unimportable_factories_refused() -> None:
    def closure() -> None: ...

    for bad in (lambda: None, closure):
        with pytest.raises(NotImportable, match="lambda or is defined inside a function"):
            WorkerRuntime(bad)
    runtime = WorkerRuntime("tests.dask_graphs:no_such_factory")
    executor = DaskExecutor(_NoCalls(), runtime=runtime)
    with pytest.raises(GraphRuntimeError) as err:
        anyio.run(parent(make_pure_graph(), executor=executor).invoke, Batch(records=["a"]))
    assert isinstance(err.value.__cause__, NotImportable)


async def test_cluster_going_away_raises_a_categorized_error(anyio_backend: str) -> None:
    async with EmbeddedServer(model=MODEL, latency=0.01) as server:
        cluster = await anyio.to_thread.run_sync(lambda: LocalCluster(
            n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ))
        own = await anyio.to_thread.run_sync(Client, cluster)
        runtime = WorkerRuntime(
            "tests.dask_graphs:make_llm_graph", backend=anyio_backend,  # type: ignore[arg-type]
            kwargs={"base_url": server.base_url},
        )
        executor = DaskExecutor(own, runtime=runtime, chunk_size=5, reconnect_grace=2,
                                poll_interval=0.2)
        async with OpenAIProvider(server.base_url, MODEL) as provider:
            graph = parent(build_llm_graph(provider), executor=executor)
        server.hold()  # every call waits: the run cannot finish on its own
        errors: list[BaseException] = []

        async def run() -> None:
            try:
                await graph.invoke(Batch(records=RECORDS[:40]))
            except GraphRuntimeError as exc:
                errors.append(exc)

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                await server.wait_for(lambda: len(server.requests) >= 1)
                await anyio.to_thread.run_sync(cluster.close)
        finally:
            server.release()
            await anyio.to_thread.run_sync(own.close)
    (exc,) = errors
    assert isinstance(exc.__cause__, ClusterUnavailable)
    assert exc.__cause__.category == "distributed_cluster_unavailable"


def test_record_is_importable() -> None:
    assert Record.__module__ == "tests.dask_graphs"
