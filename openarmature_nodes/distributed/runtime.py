"""The per-worker runtime: the subgraph (and its providers, pools, warm-up and
cooldown) built once per worker, on the event loop the user chose.

:class:`WorkerRuntime` is a Dask worker plugin. When registered (the
:class:`~.executor.DaskExecutor` does it on first use), every worker, and every
worker that joins later, runs :meth:`WorkerRuntime.setup`:

1. it starts an event loop of the chosen backend (``"asyncio"`` or ``"trio"``)
   in a thread of its own, through an anyio blocking portal: Dask's own loop is
   asyncio and is never used for graph work;
2. on that loop it imports and calls the factory ``"package.module:function"``
   (with ``kwargs``). The factory returns the instance subgraph (a
   ``CompiledGraph``), or an async context manager yielding it: the way to open
   providers and pools and wait for a warm-up gate once, and close them at
   teardown::

       @asynccontextmanager
       async def make_graph(base_url: str) -> AsyncIterator[CompiledGraph[Record]]:
           async with OpenAIProvider(base_url, "my-model") as provider:
               yield build_record_graph(provider)

A chunk task then blocks one Dask worker thread while the chunk's instances
run concurrently on the runtime's loop. ``per_worker_concurrency`` caps the
instances in flight on a worker across all of its chunks; give each worker at
least ``ceil(per_worker_concurrency / chunk_size) + 1`` threads
(``--nthreads``) so that enough chunks run at once to use the cap.

Instance middleware (the fan-out's ``instance_middleware``) is pickled once per
run on the parent and unpickled once per worker (cached by its digest), so a
stateful middleware lives per worker, like the provider.
"""

from __future__ import annotations

import hashlib
import math
import pickle
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, Literal

import anyio
import msgspec
from anyio.from_thread import BlockingPortal, start_blocking_portal
from distributed import WorkerPlugin, get_worker

from openarmature_nodes.context import Lineage, attempt_index, run_scope
from openarmature_nodes.graph import CompiledGraph
from openarmature_nodes.graph._pool import run_indexed
from openarmature_nodes.onion import Middleware, compose

from . import _wire
from ._importable import qualified_name, resolve
from .errors import WorkerRuntimeError

__all__ = ["WorkerRuntime", "current_worker", "run_chunk"]

Backend = Literal["asyncio", "trio"]

_worker: Any = None  # the Dask worker of this process, set by WorkerRuntime.setup


def current_worker() -> Any:
    """This process's Dask worker (``None`` outside a worker with a runtime)."""
    return _worker


class WorkerRuntime(WorkerPlugin):
    """A Dask worker plugin that builds the fan-out's subgraph once per worker.

    Args:
        factory: ``"package.module:function"`` (or the module-level function
            itself) returning a ``CompiledGraph`` or an async context manager
            yielding one; sync or async. It must be importable on the workers:
            not defined in ``__main__``, not a lambda or closure.
        backend: the event loop the graph runs on in each worker.
        kwargs: keyword arguments for the factory (plain, picklable data: an
            endpoint URL, a model name). Never put secrets here; read them on
            the worker (environment) instead.
        setup_timeout: seconds the factory may take (warm-up included).
    """

    def __init__(
        self,
        factory: str | Callable[..., Any],
        *,
        backend: Backend = "asyncio",
        kwargs: Mapping[str, Any] | None = None,
        setup_timeout: float = 300.0,
    ) -> None:
        if not isinstance(factory, str):
            factory = qualified_name(factory, "worker runtime factory")
        if backend not in ("asyncio", "trio"):
            raise ValueError(f"backend must be 'asyncio' or 'trio', got {backend!r}")
        self.factory = factory
        self.backend: Backend = backend
        self.kwargs = dict(kwargs or {})
        self.setup_timeout = setup_timeout
        digest = hashlib.sha256(
            pickle.dumps((factory, backend, sorted(self.kwargs.items())))
        ).hexdigest()[:16]
        self.name = f"openarmature-runtime-{digest}"
        self._reset()

    def _reset(self) -> None:
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._graph_cm: AbstractContextManager[Any] | None = None
        self.graph: CompiledGraph[Any] | None = None
        self._limiters: dict[int | None, anyio.CapacityLimiter] = {}
        self._middleware: dict[str, tuple[Middleware[Any, Any], ...]] = {}
        # run id -> {scope of a running chunk: set when that chunk has unwound}
        self._scopes: dict[str, dict[anyio.CancelScope, anyio.Event]] = {}
        self._cancelled: set[str] = set()
        self.worker_name = ""

    def __getstate__(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("factory", "backend", "kwargs", "setup_timeout",
                                             "name")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def __repr__(self) -> str:
        return f"WorkerRuntime({self.factory!r}, backend={self.backend!r})"

    # --- Dask WorkerPlugin protocol -------------------------------------------------------

    def setup(self, worker: Any) -> None:
        """Start this worker's loop thread and build the subgraph on it.

        Dask calls this on its own loop; the build runs on the runtime's loop and
        is bounded by ``setup_timeout`` (a worker whose factory fails or times out
        reports the error to ``register_plugin``, so the run fails before dispatch).
        """
        global _worker
        _worker = worker
        self.worker_name = str(getattr(worker, "address", "worker"))
        self._start()

    def teardown(self, worker: Any) -> None:
        """Close the factory's context (providers, pools) and stop the loop thread."""
        self.close()

    # --- lifecycle (worker side) ------------------------------------------------------------

    def _start(self) -> None:
        self._portal_cm = start_blocking_portal(self.backend)
        portal = self._portal = self._portal_cm.__enter__()
        try:
            self.graph = portal.call(self._bounded_build)
        except BaseException:
            self.close()
            raise

    async def _bounded_build(self) -> CompiledGraph[Any]:
        with anyio.fail_after(self.setup_timeout):
            return await self._build()

    async def _build(self) -> CompiledGraph[Any]:
        factory = resolve(self.factory, "worker runtime factory")
        made = factory(**self.kwargs)
        if hasattr(made, "__await__"):
            made = await made
        if not isinstance(made, CompiledGraph) and (
            isinstance(made, AbstractAsyncContextManager) or hasattr(made, "__aenter__")
        ):
            self._graph_ctx = made
            made = await made.__aenter__()
        if not isinstance(made, CompiledGraph):
            raise WorkerRuntimeError(
                f"worker runtime factory {self.factory!r} returned {type(made).__name__}; it "
                "must return a CompiledGraph or an async context manager yielding one"
            )
        return made

    async def _exit_graph_ctx(self) -> None:
        ctx = getattr(self, "_graph_ctx", None)
        if ctx is not None:
            self._graph_ctx = None
            with anyio.move_on_after(30, shield=True):
                await ctx.__aexit__(None, None, None)

    def close(self) -> None:
        """Worker side: exit the factory's context and stop the loop (idempotent)."""
        portal, cm = self._portal, self._portal_cm
        self._portal = self._portal_cm = None
        if portal is not None and cm is not None:
            try:
                portal.call(self._cancel_all)  # running chunks end now, not when done
                portal.call(self._exit_graph_ctx)
            finally:
                cm.__exit__(None, None, None)

    # --- chunks (worker side) ---------------------------------------------------------------

    def run(self, task: bytes, middleware: bytes) -> bytes:
        """Run one chunk (called from a Dask worker thread); returns the encoded reply."""
        portal = self._portal
        if portal is None or self.graph is None:
            raise WorkerRuntimeError(
                f"the worker runtime {self.factory!r} is not set up on this worker"
            )
        return portal.call(self._run_chunk, _wire.decode_task(task), middleware)

    def cancel(self, run_id: str) -> None:
        """Stop every running chunk of ``run_id`` on this worker (fail-fast, cancellation)."""
        portal = self._portal
        if portal is not None:  # done when this returns: the scopes are cancelled
            portal.start_task_soon(self._cancel, run_id).result(timeout=10)

    async def _cancel(self, run_id: str) -> None:
        """Cancel ``run_id``'s chunks here and wait (bounded) until they have unwound."""
        self._cancelled.add(run_id)
        scopes = self._scopes.pop(run_id, {})
        for scope in scopes:
            scope.cancel()
        with anyio.move_on_after(10):
            for finished in scopes.values():
                await finished.wait()

    async def _cancel_all(self) -> None:
        for run_id in list(self._scopes):
            await self._cancel(run_id)

    def _limiter(self, limit: int | None) -> anyio.CapacityLimiter:
        lim = self._limiters.get(limit)
        if lim is None:
            lim = self._limiters[limit] = anyio.CapacityLimiter(
                math.inf if limit is None else limit
            )
        return lim

    def _instance_middleware(
        self, digest: str, blob: bytes
    ) -> tuple[Middleware[Any, Any], ...]:
        if not digest:
            return ()
        mws = self._middleware.get(digest)
        if mws is None:
            mws = self._middleware[digest] = tuple(pickle.loads(blob))
        return mws

    async def _run_chunk(self, task: _wire.ChunkTask, blob: bytes) -> bytes:
        began = time.monotonic()
        graph = self.graph
        assert graph is not None
        n = len(task.indices)
        ok: list[tuple[int, msgspec.Raw]] = []
        failed: list[_wire.Failure] = []
        events: list[tuple[int, bytes]] = []
        if task.run_id in self._cancelled:
            return self._reply(task, ok, failed, events, began)
        cls = graph.schema.cls
        if f"{cls.__module__}:{cls.__qualname__}" != task.state_class:
            raise WorkerRuntimeError(
                f"the worker runtime {self.factory!r} built a graph over "
                f"{cls.__module__}:{cls.__qualname__}, but the fan-out's subgraph state is "
                f"{task.state_class}: the factory must build the same subgraph"
            )
        try:
            states = msgspec.msgpack.decode(task.states, type=list[cls])  # type: ignore[valid-type]
        except msgspec.ValidationError as exc:
            raise WorkerRuntimeError(f"chunk {task.chunk}: instance states: {exc}") from exc
        keys = tuple(task.keys)
        limiter = self._limiter(task.limit)
        middleware = self._instance_middleware(task.middleware_digest, blob)

        completed: set[int] = set()  # a fail-fast stop leaves the others unfinished

        async def job(k: int) -> Any:
            index = task.indices[k]
            seen: list[object] = []

            async def inner(inst: Any) -> Mapping[str, Any]:
                if task.observed:
                    inv = f"{task.run_id}-{index}-{uuid.uuid4().hex[:8]}"

                    async def collect(event: object) -> None:
                        seen.append(event)

                    final = await graph.invoke(inst, observers=[collect], invocation_id=inv)
                    await graph.drain_events_for(inv, timeout=30)
                else:
                    final = await graph.invoke(inst)
                return {key: getattr(final, key) for key in keys}

            chain = compose(middleware, inner)
            async with limiter:
                token = run_scope.set(_Collect(task.run_id, seen)) if task.observed else None
                try:
                    result = await chain(states[k])
                finally:
                    if token is not None:
                        run_scope.reset(token)
                    if seen:
                        events.append((index, _pickle_events(seen)))
            if isinstance(result, Mapping):
                result = {key: result[key] for key in keys if key in result}
            completed.add(k)
            return result

        scope, finished = anyio.CancelScope(), anyio.Event()
        self._scopes.setdefault(task.run_id, {})[scope] = finished
        try:
            with scope:
                outcome = await run_indexed(n, job, limit=None, fail_fast=task.fail_fast)
                for k, result in enumerate(outcome.results):
                    if k in completed:
                        ok.append((task.indices[k], msgspec.Raw(_wire.encode(result))))
                for k, err in outcome.failures.items():
                    failed.append(_wire.failure(task.indices[k], err))
        finally:
            finished.set()
            scopes = self._scopes.get(task.run_id)
            if scopes is not None:
                scopes.pop(scope, None)
                if not scopes:
                    del self._scopes[task.run_id]
        if scope.cancel_called:  # the run was cancelled: report nothing
            ok, failed = [], []
        events.sort(key=lambda e: e[0])
        return self._reply(task, ok, failed, events, began)

    def _reply(
        self,
        task: _wire.ChunkTask,
        ok: list[tuple[int, msgspec.Raw]],
        failed: list[_wire.Failure],
        events: list[tuple[int, bytes]],
        began: float,
    ) -> bytes:
        return _wire.encode(_wire.ChunkReply(
            run_id=task.run_id, chunk=task.chunk, worker=self.worker_name, ok=ok,
            failed=failed, events=events, elapsed_s=time.monotonic() - began,
        ))


class _Collect:
    """The run scope around an instance's middleware on a worker (observed runs): the
    events it emits (e.g. a failure isolation's) are kept for the reply, with a
    lineage the parent re-stamps as the instance's."""

    __slots__ = ("invocation_id", "seen")

    def __init__(self, invocation_id: str, seen: list[object]) -> None:
        self.invocation_id = invocation_id
        self.seen = seen

    def lineage(self) -> Lineage:
        return Lineage(invocation_id=self.invocation_id, attempt_index=attempt_index.get())

    def emit(self, event: object) -> bool:
        self.seen.append(event)
        return True


def _pickle_events(events: list[object]) -> bytes:
    try:
        return pickle.dumps(events)
    except Exception:  # an event holding something unpicklable: ship the picklable ones
        keep = []
        for e in events:
            try:
                pickle.dumps(e)
            except Exception:
                continue
            keep.append(e)
        return pickle.dumps(keep)


def _find_runtime(worker: Any, name: str) -> WorkerRuntime:
    plugin = getattr(worker, "plugins", {}).get(name)
    if not isinstance(plugin, WorkerRuntime):
        raise WorkerRuntimeError(
            f"worker {getattr(worker, 'address', '?')} has no runtime {name!r} (its setup "
            "failed or it was unregistered)"
        )
    return plugin


def run_chunk(runtime_name: str, task: bytes, middleware: bytes) -> bytes:
    """The Dask task: run one chunk on this worker's runtime."""
    return _find_runtime(get_worker(), runtime_name).run(task, middleware)


def cancel_run(runtime_name: str, run_id: str, dask_worker: Any = None) -> None:
    """Run on every worker by ``client.run``: stop ``run_id``'s running chunks."""
    plugin = getattr(dask_worker, "plugins", {}).get(runtime_name)
    if isinstance(plugin, WorkerRuntime):
        plugin.cancel(run_id)

