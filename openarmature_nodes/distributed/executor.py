"""``DaskExecutor``: a fan-out's instances run on a Dask cluster.

::

    from distributed import Client
    from openarmature_nodes.distributed import DaskExecutor, WorkerRuntime

    client = Client("tcp://scheduler:8786")
    runtime = WorkerRuntime("mypkg.enrich:make_record_graph", backend="trio",
                            kwargs={"base_url": "http://vllm:8000"})
    builder.add_fan_out_node(
        "enrich", make_record_graph_locally(),   # the same subgraph, for compile checks
        items_field="records", item_field="record",
        collect_field="summary", target_field="summaries",
        executor=DaskExecutor(client, runtime=runtime, chunk_size=100,
                              per_worker_concurrency=32),
    )

How a run goes:

1. **Checks before anything is sent**: the subgraph's state class and the
   factory must be importable by name on the workers (not in ``__main__``, not
   a lambda or closure), the instance middleware must pickle, the first chunk
   must encode: else :class:`~.errors.NotImportable`, and nothing reached the
   cluster.
2. The runtime plugin is registered once per executor (every worker builds the
   subgraph once, see :mod:`.runtime`).
3. Instances go out in **chunks** of ``chunk_size`` consecutive indices (a Dask
   task costs milliseconds of scheduling, as much as an LLM call: one task per
   instance would double the cost). At most ``max_chunks_in_flight`` chunks are
   submitted at once; the rest wait on the parent, so millions of records never
   sit in the scheduler's memory.
4. Replies are merged **by index** as chunks finish, in any order. An index that
   already has a result is never overwritten (exactly once in the output).
5. ``fail_fast``: the first failing chunk's lowest failed index is the failure
   reported; outstanding chunks are cancelled on the scheduler and running
   ones on their workers. ``collect``: every chunk runs.
6. Observed runs: each instance's events (its subgraph's node and call events,
   and the events its instance middleware emits, e.g. a failure isolation's)
   ride back with its chunk's reply and are re-emitted, as that instance's
   (``fan_out_index``, namespace, lineage chains and step numbers re-stamped),
   onto the parent's observer queue when the chunk's reply arrives: instance by
   instance in index order within a chunk, chunks in completion order. Events
   are therefore delivered per chunk, not live; an event that does not pickle
   is dropped.

**Delivery is at least once.** When a worker dies mid-chunk, Dask re-runs the
chunk on another worker (after ``allowed-failures`` losses Dask gives up, and
this executor resubmits the chunk up to ``max_chunk_retries`` times). The output
holds each instance exactly once, but the LLM calls the dead worker had made
for that chunk are **made again**: an endpoint may see a request twice, and a
side effect of an instance may happen twice.

**Bounded waits.** The parent polls its futures every ``poll_interval`` s; a
client that stops running (scheduler gone) for ``reconnect_grace`` s, or no
chunk finishing for ``stall_timeout`` s, raises :class:`~.errors.ClusterUnavailable`
after cancelling what is outstanding: never a hang.

**Concurrency.** ``per_worker_concurrency`` caps instances in flight per worker
(default: the fan-out's resolved ``concurrency``). A fleet-wide cap per
endpoint is :class:`~.fleet.FleetInflightLimit`, a call middleware.

**A Ray backend** would fit the same seam: a ``RayExecutor`` with the same
:class:`~openarmature_nodes.graph.executors.FanOutExecutor` ``run(batch)``; the
runtime becomes a Ray actor per node (one ``WorkerRuntime`` inside, built in the
actor's ``__init__``, its loop thread the same portal), chunks are actor-method
calls (``actor.run.remote(task_bytes, middleware)``), ``ray.wait`` with a
timeout replaces ``distributed.wait``, ``ray.cancel`` the cancellation, and the
fleet semaphore a named actor holding an ``anyio`` semaphore. The wire messages
(:mod:`._wire`), the import checks and the merge by index are backend-neutral
and would be shared.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
import uuid
from collections.abc import Mapping
from typing import Any, NamedTuple

import anyio
import msgspec

from openarmature_nodes.graph.executors import FanOutBatch, Outcome

from . import _wire
from ._importable import check_class, check_picklable, resolve
from .errors import ClusterUnavailable, DistributedError, NotImportable, WorkerRuntimeError
from .runtime import WorkerRuntime, cancel_run, run_chunk

__all__ = ["DaskExecutor", "DispatchStats"]


class DispatchStats(msgspec.Struct, kw_only=True):
    """What the last run cost (for benchmarks and logs)."""

    chunks: int = 0
    resubmitted: int = 0
    duplicates_dropped: int = 0
    worker_seconds: float = 0.0  # sum over chunks of time spent on the worker
    wall_seconds: float = 0.0  # parent-side, first submit to last reply


class DaskExecutor:
    """Run fan-out instances on a Dask cluster (see the module documentation).

    Args:
        client: a ``distributed.Client`` (synchronous: the default kind).
        runtime: the :class:`~.runtime.WorkerRuntime` that builds the subgraph
            on each worker.
        chunk_size: instances per Dask task.
        per_worker_concurrency: instances in flight per worker, across its
            chunks (``None``: the fan-out's ``concurrency``).
        max_chunks_in_flight: chunks submitted at once (``None``: twice the
            chunks the workers can run at once).
        max_chunk_retries: resubmissions of a chunk whose worker kept dying.
        poll_interval / reconnect_grace / stall_timeout: the bounded waits
            (seconds; ``stall_timeout=None`` disables the no-progress bound).
    """

    def __init__(
        self,
        client: Any,
        *,
        runtime: WorkerRuntime,
        chunk_size: int = 100,
        per_worker_concurrency: int | None = None,
        max_chunks_in_flight: int | None = None,
        max_chunk_retries: int = 2,
        poll_interval: float = 0.5,
        reconnect_grace: float = 10.0,
        stall_timeout: float | None = 600.0,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if per_worker_concurrency is not None and per_worker_concurrency < 1:
            raise ValueError("per_worker_concurrency must be >= 1 or None")
        if max_chunks_in_flight is not None and max_chunks_in_flight < 1:
            raise ValueError("max_chunks_in_flight must be >= 1 or None")
        self.client = client
        self.runtime = runtime
        self.chunk_size = chunk_size
        self.per_worker_concurrency = per_worker_concurrency
        self.max_chunks_in_flight = max_chunks_in_flight
        self.max_chunk_retries = max_chunk_retries
        self.poll_interval = poll_interval
        self.reconnect_grace = reconnect_grace
        self.stall_timeout = stall_timeout
        self.stats = DispatchStats()
        self._registered = False

    def __repr__(self) -> str:
        return (f"DaskExecutor(runtime={self.runtime!r}, chunk_size={self.chunk_size}, "
                f"per_worker_concurrency={self.per_worker_concurrency})")

    # --- parent side ------------------------------------------------------------------------

    def _preflight(self, batch: FanOutBatch) -> tuple[str, bytes, str]:
        """Every check that needs no cluster: the state class's importable name, the
        pickled instance middleware and its digest."""
        if batch.subgraph is None:
            raise NotImportable(
                f"fan-out {batch.node_name!r}: a DaskExecutor runs a compiled subgraph built "
                "by the worker runtime's factory; an instance callable cannot be shipped"
            )
        state_class = check_class(
            batch.subgraph.schema.cls, f"fan-out {batch.node_name!r} subgraph state"
        )
        factory = resolve(self.runtime.factory, "worker runtime factory")
        if not callable(factory):
            raise NotImportable(f"worker runtime factory {self.runtime.factory!r} is not callable")
        if not batch.instance_middleware:
            return state_class, b"", ""
        blob = check_picklable(
            batch.instance_middleware, f"fan-out {batch.node_name!r} instance_middleware"
        )
        return state_class, blob, hashlib.sha256(blob).hexdigest()[:16]

    def _encode_chunk(self, plan: _Plan, chunk: int) -> bytes:
        batch = plan.batch
        start = chunk * self.chunk_size
        indices = list(range(start, min(start + self.chunk_size, batch.count)))
        try:
            states = _wire.encode([batch.instance(i) for i in indices])
        except (TypeError, msgspec.EncodeError) as exc:
            raise NotImportable(
                f"fan-out {batch.node_name!r}: instance inputs of chunk {chunk} cannot be "
                f"encoded for the workers: {exc}"
            ) from exc
        return _wire.encode(_wire.ChunkTask(
            run_id=plan.run_id, chunk=chunk, indices=indices, states=msgspec.Raw(states),
            keys=list(batch.keys), fail_fast=batch.fail_fast, observed=batch.observed,
            limit=plan.limit, middleware_digest=plan.digest, state_class=plan.state_class,
        ))

    async def run(self, batch: FanOutBatch) -> Outcome:
        """Dispatch ``batch`` in chunks and merge the replies by index."""
        state_class, blob, digest = self._preflight(batch)
        plan = _Plan(batch, uuid.uuid4().hex, self.per_worker_concurrency or batch.limit,
                     state_class, digest)
        n_chunks = math.ceil(batch.count / self.chunk_size)
        first = self._encode_chunk(plan, 0)  # fails here, before anything is sent
        self.stats = DispatchStats()
        merge = _Merge(batch, self.stats)
        await anyio.to_thread.run_sync(self._ensure_registered)
        window = self.max_chunks_in_flight
        if window is None:
            window = await anyio.to_thread.run_sync(self._default_window, plan.limit)
        retries: dict[int, int] = {}
        pending: dict[Any, int] = {}  # future -> chunk
        next_chunk = 0
        began = last_progress = time.monotonic()
        not_running_since: float | None = None
        try:
            while (next_chunk < n_chunks or pending) and not merge.stopped:
                submit: list[tuple[int, bytes]] = []
                while next_chunk < n_chunks and len(pending) + len(submit) < window:
                    data = first if next_chunk == 0 else self._encode_chunk(plan, next_chunk)
                    submit.append((next_chunk, data))
                    next_chunk += 1
                if submit:
                    pending.update(await anyio.to_thread.run_sync(self._submit, submit, blob))
                    merge.stats.chunks += len(submit)
                replies, status = await anyio.to_thread.run_sync(
                    self._wait, list(pending), abandon_on_cancel=True
                )
                now = time.monotonic()
                for fut, outcome in replies:
                    chunk = pending.pop(fut)
                    if isinstance(outcome, bytes):
                        last_progress = now
                        await merge.absorb(_wire.decode_reply(outcome))
                        continue
                    self._check_retry(batch, chunk, outcome, status, fut, retries)
                    retries[chunk] = retries.get(chunk, 0) + 1
                    merge.stats.resubmitted += 1
                    pending.update(await anyio.to_thread.run_sync(
                        self._submit, [(chunk, self._encode_chunk(plan, chunk))], blob
                    ))
                if status == "running":
                    not_running_since = None
                elif not_running_since is None:
                    not_running_since = now
                elif now - not_running_since > self.reconnect_grace:
                    raise ClusterUnavailable(
                        f"fan-out {batch.node_name!r}: the Dask client has been {status!r} "
                        f"for {self.reconnect_grace:g} s; the cluster is gone"
                    )
                if self.stall_timeout is not None and now - last_progress > self.stall_timeout:
                    raise ClusterUnavailable(
                        f"fan-out {batch.node_name!r}: no chunk finished for "
                        f"{self.stall_timeout:g} s (stall_timeout); {len(pending)} chunks "
                        "outstanding were cancelled"
                    )
        finally:
            if pending or merge.stopped:
                with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                    await anyio.to_thread.run_sync(
                        self._cancel, list(pending), plan.run_id, abandon_on_cancel=True
                    )
            merge.stats.wall_seconds = time.monotonic() - began
        return merge.outcome()

    def _check_retry(
        self, batch: FanOutBatch, chunk: int, exc: BaseException, status: str, fut: Any,
        retries: dict[int, int],
    ) -> None:
        """A chunk whose task failed: raise unless it may be resubmitted (a lost worker)."""
        if status != "running" or getattr(fut, "status", "") == "cancelled":
            raise ClusterUnavailable(
                f"fan-out {batch.node_name!r}: chunk {chunk} was lost with the cluster "
                f"connection (client {status})"
            ) from exc
        if isinstance(exc, DistributedError):  # deterministic (set-up, schema): no retry
            raise WorkerRuntimeError(
                f"fan-out {batch.node_name!r}: chunk {chunk} failed on its worker: {exc}"
            ) from exc
        if retries.get(chunk, 0) >= self.max_chunk_retries:
            raise WorkerRuntimeError(
                f"fan-out {batch.node_name!r}: chunk {chunk} failed on the cluster "
                f"{retries.get(chunk, 0) + 1} times: {type(exc).__name__}: {exc}"
            ) from exc

    # --- blocking helpers (run in worker threads; the client is synchronous) ----------------

    def _ensure_registered(self) -> None:
        if self._registered:
            return
        try:
            self.client.register_plugin(self.runtime, name=self.runtime.name)
        except Exception as exc:
            raise WorkerRuntimeError(
                f"the worker runtime {self.runtime.factory!r} could not be set up on the "
                f"workers: {type(exc).__name__}: {exc}"
            ) from exc
        self._registered = True

    def _default_window(self, limit: int | None) -> int:
        workers = len(self.client.scheduler_info().get("workers", {})) or 1
        per_worker = math.ceil((limit or self.chunk_size) / self.chunk_size)
        return max(2, 2 * workers * per_worker)

    def _submit(self, chunks: list[tuple[int, bytes]], blob: bytes) -> dict[Any, int]:
        return {
            self.client.submit(run_chunk, self.runtime.name, data, blob, pure=False,
                               key=f"openarmature-chunk-{chunk}-{uuid.uuid4().hex[:8]}"): chunk
            for chunk, data in chunks
        }

    def _wait(self, futures: list[Any]) -> tuple[list[tuple[Any, bytes | BaseException]], str]:
        from distributed import wait

        status = str(getattr(self.client, "status", "running"))
        if not futures:
            return [], status
        try:
            finished, _ = wait(  # type: ignore[no-untyped-call]
                futures, timeout=self.poll_interval, return_when="FIRST_COMPLETED"
            )
        except TimeoutError:
            return [], str(getattr(self.client, "status", "running"))
        except Exception as exc:  # futures cancelled under us: the scheduler went away
            raise ClusterUnavailable(
                f"the cluster cancelled this run's chunks ({type(exc).__name__}); the "
                f"scheduler is gone or was restarted (client {self.client.status!r})"
            ) from exc
        out: list[tuple[Any, bytes | BaseException]] = []
        for fut in finished:
            try:
                out.append((fut, fut.result(timeout=self.poll_interval * 20)))
            except BaseException as exc:
                out.append((fut, exc))
        return out, str(getattr(self.client, "status", "running"))

    def _cancel(self, futures: list[Any], run_id: str) -> None:
        try:
            if futures:
                self.client.cancel(futures)
            self.client.run(cancel_run, self.runtime.name, run_id)
        except Exception:
            pass

    def close(self) -> None:
        """Unregister the runtime (each worker closes its providers and stops its loop)."""
        if self._registered:
            self._registered = False
            with contextlib.suppress(Exception):
                self.client.unregister_worker_plugin(self.runtime.name)


class _Plan(NamedTuple):
    """What every chunk of one run shares."""

    batch: FanOutBatch
    run_id: str
    limit: int | None  # per-worker instance concurrency
    state_class: str
    digest: str  # instance middleware digest ("" without)


class _Merge:
    """Fan-in of chunk replies by index: each index contributes once (exactly once in
    the output, whatever the delivery); events relayed as each reply arrives."""

    def __init__(self, batch: FanOutBatch, stats: DispatchStats) -> None:
        self.batch = batch
        self.stats = stats
        self.results: list[Any] = [None] * batch.count
        self.done = [False] * batch.count
        self.failures: dict[int, Exception] = {}
        self.finished: set[int] = set()
        self.decoder = _contribution_decoder(batch)
        self.stopped = False

    async def absorb(self, reply: _wire.ChunkReply) -> None:
        batch, stats = self.batch, self.stats
        if reply.chunk in self.finished:
            stats.duplicates_dropped += len(reply.ok) + len(reply.failed)
            return
        self.finished.add(reply.chunk)
        stats.worker_seconds += reply.elapsed_s
        for index, raw in reply.ok:
            if self.done[index]:
                stats.duplicates_dropped += 1
                continue
            self.done[index] = True
            self.results[index] = _as_mapping(self.decoder.decode(raw))
            if batch.on_result is not None:
                await batch.on_result(index, self.results[index], None)
        for f in sorted(reply.failed, key=lambda f: f.index):
            if not self.done[f.index]:
                self.done[f.index] = True
                exc = self.failures[f.index] = _wire.failure_exception(f)
                if batch.on_result is not None:
                    await batch.on_result(f.index, None, exc)
        for index, events in reply.events:
            batch.relay(index, _unpickle_events(events))
        if batch.fail_fast and self.failures:
            self.stopped = True

    def outcome(self) -> Outcome:
        failures = self.failures
        if self.batch.fail_fast and failures:
            first = min(failures)
            return Outcome(self.results, {first: failures[first]})
        return Outcome(self.results, dict(sorted(failures.items())))


def _contribution_decoder(batch: FanOutBatch) -> msgspec.msgpack.Decoder[Any]:
    """A decoder turning a contribution back into its subgraph field types."""
    assert batch.subgraph is not None
    fields = batch.subgraph.schema.fields
    spec = [(k, fields[k].type | msgspec.UnsetType, msgspec.UNSET) for k in batch.keys]
    return msgspec.msgpack.Decoder(msgspec.defstruct("Contribution", spec, kw_only=True))


def _as_mapping(contrib: Any) -> Mapping[str, Any]:
    return {
        f: v for f in contrib.__struct_fields__
        if (v := getattr(contrib, f)) is not msgspec.UNSET
    }


def _unpickle_events(blob: bytes) -> list[object]:
    import pickle

    try:
        events = pickle.loads(blob)
    except Exception:
        return []
    return list(events) if isinstance(events, list) else []
