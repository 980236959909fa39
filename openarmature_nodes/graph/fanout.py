"""Fan-out: run one subgraph per item, concurrently, and collect the results.

A fan-out node (pipeline-utilities §9) runs a compiled subgraph (or an async
callable) once per element of a list field of the parent state, or a given
number of times, with at most ``concurrency`` instances in flight; then it
merges every instance's result into the parent in instance order::

    builder.add_fan_out_node(
        "enrich", enrich_one,            # a compiled graph over EnrichOne
        items_field="records",           # parent list: one instance per element
        item_field="record",             # ... assigned to this subgraph field
        collect_field="summary",         # each instance's final value of this field
        target_field="summaries",        # ... collected here, in input order
        concurrency=32,
        instance_middleware=[RetryMiddleware(max_attempts=4)],
    )

Instances start in index order and finish in whatever order they finish;
the collected list is always in index order. Nothing is merged into the
parent until every instance is done, so a failure leaves the parent exactly
as it was at fan-out entry (``recoverable_state``).

Error policy: ``"fail_fast"`` (default) cancels the running siblings on the
first failure and raises it (the engine wraps it as the fan-out node's
``node_exception``); ``"collect"`` runs every instance, leaves failed ones out
of the collection and records ``{"fan_out_index": "<i>", "category": ...}``
per failure in ``errors_field`` (pass ``error_record=`` for another shape).

Middleware layering, outside in: the parent graph's and the node's own
middleware see the whole fan-out as one dispatch; ``instance_middleware``
wraps each instance's whole subgraph run (a retry there re-runs only that
instance, from a fresh state); the subgraph's own middleware wraps its nodes.
An instance middleware returns the instance's *contribution*: a mapping in
subgraph field names holding ``collect_field`` (and any ``extra_outputs``
fields). A failure-isolation middleware degrading an instance therefore
returns e.g. ``{"summary": ""}``; a missing ``collect_field`` leaves a
``None`` in that instance's slot rather than dropping it.

Where instances run: here by default; ``executor=`` hands the projected
instances to a :class:`~.executors.FanOutExecutor` (e.g. a Dask cluster, see
:mod:`openarmature_nodes.distributed`) under the same contract.
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from openarmature_nodes.onion import Middleware, compose

from ._fanout_checks import (
    FanOutCountModeAmbiguous,
    FanOutDegradedUpdateMissingCollectField,
    FanOutFieldNotList,
    check,
    is_int,
)
from ._kinds import (
    ConcurrentKind,
    call_observed,
    call_plain,
    check_values,
    error_category,
    resolve_maybe_async,
    run_units_suspendable,
    run_with_lineage,
    unit_suspension,
    view_step,
)
from ._pool import run_indexed
from ._run import run_observed, run_plain
from .errors import GraphCompileWarning
from .events import FanOutConfig
from .executors import FanOutBatch, FanOutExecutor, Outcome
from .nodes import Inner
from .reducers import last_write_wins
from .state import Schema

if TYPE_CHECKING:
    from ._durable import FanOutTracker
    from ._run import Step
    from .compiled import CompiledGraph

__all__ = [
    "FanOut",
    "FanOutCountModeAmbiguous",
    "FanOutDegradedUpdateMissingCollectField",
    "FanOutEmpty",
    "FanOutError",
    "FanOutFieldNotList",
    "FanOutInvalidConcurrency",
    "FanOutInvalidCount",
    "FanOutNullSlotWarning",
    "default_error_record",
]

IntOrFn = int | Callable[[Any], int]
ErrorRecord = Callable[[int, Exception], Any]


# --- run-time errors ---------------------------------------------------------------------


class FanOutError(Exception):
    """A fan-out that cannot run as configured; the engine reports it as the node's
    ``node_exception`` (this error is its ``__cause__``). Never transient."""

    category = "fan_out_error"


class FanOutEmpty(FanOutError):
    """The resolved instance count is zero and ``on_empty="raise"`` (the default)."""

    category = "fan_out_empty"


class FanOutInvalidCount(FanOutError, ValueError):
    """``count`` resolved to something other than a non-negative int."""

    category = "fan_out_invalid_count"


class FanOutInvalidConcurrency(FanOutError, ValueError):
    """``concurrency`` resolved to something other than a positive int or ``None``."""

    category = "fan_out_invalid_concurrency"


class _ItemsNotList(FanOutError, TypeError):
    category = "fan_out_field_not_list"


class FanOutNullSlotWarning(UserWarning):
    """Instances contributed no ``collect_field``: their slots in ``target_field`` are ``None``.

    Legal (a callable degraded update may leave the field out, §9.3) but usually
    a mistake: a degrade SHOULD supply ``collect_field``.
    """


def default_error_record(index: int, exc: Exception) -> dict[str, str]:
    """``{"fan_out_index": "<i>", "category": ...}``: strings only, so the record
    fits a ``list[dict[str, str]]`` field."""
    return {"fan_out_index": str(index), "category": error_category(exc)}


# --- the node kind ------------------------------------------------------------------------


class FanOut(ConcurrentKind):
    """A fan-out node (see the module documentation). Add it with
    ``GraphBuilder.add_fan_out_node(name, subgraph, ...)`` (same keywords)."""

    def __init__(
        self,
        subgraph: CompiledGraph[Any] | Callable[[dict[str, Any]], Awaitable[Mapping[str, Any]]],
        *,
        collect_field: str,
        target_field: str,
        items_field: str | None = None,
        item_field: str | None = None,
        count: IntOrFn | None = None,
        concurrency: int | Callable[[Any], int | None] | None = 10,
        error_policy: Literal["fail_fast", "collect"] = "fail_fast",
        errors_field: str | None = None,
        on_empty: Literal["raise", "noop"] = "raise",
        count_field: str | None = None,
        inputs: Mapping[str, str] | None = None,
        extra_outputs: Mapping[str, str] | None = None,
        instance_middleware: Sequence[Middleware[Any, Any]] = (),
        error_record: ErrorRecord = default_error_record,
        executor: FanOutExecutor | None = None,
    ) -> None:
        from .compiled import CompiledGraph

        if isinstance(subgraph, CompiledGraph):
            self.graph: CompiledGraph[Any] | None = subgraph
            self.fn: Callable[[dict[str, Any]], Awaitable[Any]] | None = None
        elif callable(subgraph):
            self.graph, self.fn = None, subgraph
        else:
            raise TypeError(
                f"fan-out subgraph must be a CompiledGraph or an async callable, got {subgraph!r}"
            )
        self.collect_field = collect_field
        self.target_field = target_field
        self.items_field = items_field
        self.item_field = item_field
        self.count = count
        self.concurrency = concurrency
        self.error_policy = error_policy
        self.errors_field = errors_field
        self.on_empty = on_empty
        self.count_field = count_field
        self.inputs = dict(inputs or {})
        self.extra_outputs = dict(extra_outputs or {})
        self.instance_middleware = tuple(instance_middleware)
        self.error_record = error_record
        self.executor = executor  # None: run_indexed here (see .executors)
        self.name = ""
        self._keys: tuple[str, ...] = ()
        self._lww_extra: frozenset[str] = frozenset()
        self._plain_chain: Inner | None = None

    # --- compile time ---------------------------------------------------------------------

    def bind(self, name: str, schema: Schema) -> Sequence[GraphCompileWarning]:
        """Check the configuration against the parent's and the subgraph's schemas."""
        self.name = name
        warnings = check(self, name, schema)
        self._keys = (self.collect_field, *dict.fromkeys(self.extra_outputs.values()))
        self._lww_extra = frozenset(
            p for p in self.extra_outputs if schema.fields[p].reducer is last_write_wins
        )
        self._plain_chain = compose(self.instance_middleware, self._plain_instance)
        return warnings

    # --- run time ---------------------------------------------------------------------------

    def subgraphs(self) -> Sequence[CompiledGraph[Any]]:
        """The instance subgraph (none for an instance callable)."""
        return (self.graph,) if self.graph is not None else ()

    def _execute(
        self, count: int, job: Callable[[int], Awaitable[Any]], limit: int | None,
        enter: Callable[[int], Any], step: Step | None,
    ) -> Awaitable[Outcome]:
        """Run every instance: in this loop, or through ``executor`` (see :mod:`.executors`)."""
        fail_fast = self.error_policy == "fail_fast"
        if self.executor is None:
            return run_indexed(count, job, limit=limit, fail_fast=fail_fast)
        return self.executor.run(FanOutBatch(
            node_name=self.name, count=count, limit=limit, fail_fast=fail_fast,
            subgraph=self.graph, keys=self._keys, instance_middleware=self.instance_middleware,
            instance=enter, job=job, step=step,
        ))

    async def _resolve(self, state: Any) -> tuple[int, list[Any] | None, int | None]:
        items: list[Any] | None = None
        if self.items_field is not None:
            value = getattr(state, self.items_field)
            if not isinstance(value, list):
                raise _ItemsNotList(
                    f"fan-out {self.name!r}: items_field {self.items_field!r} holds "
                    f"{type(value).__name__}, not a list"
                )
            items, count = value, len(value)
        else:
            raw = self.count
            resolved: Any = await resolve_maybe_async(raw, state) if callable(raw) else raw
            if not is_int(resolved) or resolved < 0:
                raise FanOutInvalidCount(
                    f"fan-out {self.name!r}: count resolved to {resolved!r}; it must be an "
                    "int >= 0"
                )
            count = int(resolved)
        conc = self.concurrency
        limit = await resolve_maybe_async(conc, state) if callable(conc) else conc
        if limit is not None and (not is_int(limit) or limit < 1):
            raise FanOutInvalidConcurrency(
                f"fan-out {self.name!r}: concurrency resolved to {limit!r}; it must be an "
                "int >= 1 or None (unbounded)"
            )
        return count, items, limit

    async def _dispatch(self, state: Any, step: Step | None) -> dict[str, Any]:
        try:
            count, items, limit = await self._resolve(state)
        except Exception:
            if step is not None:
                step.begin(state)
            raise
        if step is not None:
            step.begin(state, fan_out_config=FanOutConfig(
                item_count=count, concurrency=limit, error_policy=self.error_policy,
                parent_node_name=self.name,
            ))
        durable = step.level.run.durable if step is not None else None
        tracker = None
        if durable is not None and step is not None:
            tracker = durable.fan_out_begin(step.level, self.name, count)
        try:
            return await self._run_instances(state, step, count, items, limit, tracker)
        finally:
            if durable is not None and tracker is not None:
                durable.fan_out_end(tracker)

    async def _run_instances(
        self, state: Any, step: Step | None, count: int, items: list[Any] | None,
        limit: int | None, tracker: FanOutTracker | None,
    ) -> dict[str, Any]:
        if count == 0:
            if self.on_empty == "raise":
                raise FanOutEmpty(
                    f"fan-out {self.name!r} has no instances to run (set on_empty='noop' if "
                    "an empty input is expected)"
                )
            return self._fan_in([], {}, 0)
        shared = {s: getattr(state, p) for s, p in self.inputs.items()}
        sub = self.graph.schema if self.graph is not None else None
        if sub is not None and shared:
            check_values(sub, shared, f"fan-out {self.name!r} inputs")
        item_list: list[Any] = items if items is not None else []
        item_field = self.item_field if items is not None else None
        item_ok = sub.fields[item_field].check if sub is not None and item_field else None

        def enter(i: int) -> Any:
            values = dict(shared)
            if item_field is not None:
                item = values[item_field] = item_list[i]
                if item_ok is not None and not item_ok(item):
                    assert sub is not None  # item_ok is the subgraph field's checker
                    # Raises, naming the item; the message is only built for a bad one.
                    check_values(sub, {item_field: item}, f"fan-out {self.name!r} item {i}")
            return sub.cls(**values) if sub is not None else values

        if step is None:
            chain = self._plain_chain
            assert chain is not None

            async def job(i: int) -> Any:
                return await chain(enter(i))
        else:

            async def job(i: int) -> Any:
                if tracker is not None:
                    saved = tracker.saved(i)
                    if saved is not None:  # completed before the resume: roll it forward
                        if saved.result_is_error:
                            raise _SavedError(saved.result)
                        return {self.collect_field: saved.result, **(saved.extra or {})}
                    tracker.started(i)
                inst = enter(i)
                run = compose(self.instance_middleware, self._observed_instance(step, i))
                view = view_step(step, inst, fan_out_index=i)
                if tracker is None:
                    return await run_with_lineage(view, run, inst)
                try:
                    result = await run_with_lineage(view, run, inst)
                except Exception as exc:
                    if self.error_policy == "collect":
                        tracker.completed(i, self.error_record(i, exc), error=True, extra=None)
                        await self._saved(step, state)
                    raise
                extra = {k: _slot(result, k) for k in self._keys[1:]} or None
                tracker.completed(i, _slot(result, self.collect_field), error=False, extra=extra)
                await self._saved(step, state)
                return result

        outcome, sig = await run_units_suspendable(
            lambda: self._execute(count, job, limit, enter, step),
            self.name, self.error_policy == "collect", "fan-out instance",
        )
        if sig is not None:
            level = sig.frame[0] if sig.frame is not None else None
            index = level.fan_out_index if level is not None else None
            partial = self._partial(tracker) if tracker is not None else None
            raise unit_suspension(sig, "fan_out_index", index, partial) from None
        if outcome.failures and self.error_policy == "fail_fast":
            raise next(iter(outcome.failures.values()))
        return self._fan_in(outcome.results, outcome.failures, count)

    async def _saved(self, step: Step, state: Any) -> None:
        durable = step.level.run.durable
        if durable is not None:
            await durable.instance_done(step.level, self.name, state)

    def _partial(self, tracker: FanOutTracker) -> dict[str, Any]:
        """The fan-in of the instances completed so far (a suspension's aggregate, §8.2)."""
        results: list[Any] = []
        failures: dict[int, Exception] = {}
        for e in tracker.instances:
            if e.state != "completed":
                continue
            if e.result_is_error:
                failures[len(results)] = _SavedError(e.result)
                results.append(None)
            else:
                results.append({self.collect_field: e.result, **(e.extra or {})})
        return self._fan_in(results, failures, len(results))

    def _project(self, final: Any) -> dict[str, Any]:
        if isinstance(final, Mapping):
            return {k: final.get(k) for k in self._keys}
        return {k: getattr(final, k) for k in self._keys}

    async def _plain_instance(self, inst: Any) -> dict[str, Any]:
        if self.graph is not None:
            return self._project(await run_plain(self.graph, inst))
        assert self.fn is not None
        return self._project(_mapping(await call_plain(self.name, self.fn, inst), self.name))

    def _observed_instance(self, step: Step, i: int) -> Inner:
        graph, fn, name = self.graph, self.fn, self.name
        level = step.level.child(name, step.state, graph, fan_out_index=i)
        if graph is not None:

            async def run_graph(inst: Any) -> Any:
                return self._project(await run_observed(graph, inst, level))

            return run_graph
        assert fn is not None

        async def checked(inst: Any) -> Mapping[str, Any]:
            return _mapping(await fn(inst), name)

        async def run_fn(inst: Any) -> Any:
            return self._project(await call_observed(level, name, checked, inst))

        return run_fn

    def _fan_in(
        self, results: list[Any], failures: Mapping[int, Exception], count: int
    ) -> dict[str, Any]:
        ok = [r for i, r in enumerate(results) if i not in failures]
        key = self.collect_field
        empty = [i for i, r in enumerate(results)
                 if i not in failures and not (isinstance(r, Mapping) and key in r)]
        if empty:
            warnings.warn(FanOutNullSlotWarning(
                f"fan-out {self.name!r}: instance(s) {empty[:10]} contributed no {key!r}; "
                "their slots are None"
            ), stacklevel=2)
        update: dict[str, Any] = {self.target_field: [_slot(r, self.collect_field) for r in ok]}
        for parent, sub_field in self.extra_outputs.items():
            values = [_slot(r, sub_field) for r in ok]
            if parent in self._lww_extra:
                if values:
                    update[parent] = values[-1]
            else:
                update[parent] = values
        if self.errors_field is not None:
            update[self.errors_field] = [
                exc.record if isinstance(exc, _SavedError) else self.error_record(i, exc)
                for i, exc in failures.items()
            ]
        if self.count_field is not None:
            update[self.count_field] = count
        return update


class _SavedError(Exception):
    """A ``collect``-mode failure recorded before a resume: its error entry rolls forward."""

    def __init__(self, record: Any) -> None:
        super().__init__("failed before the resume")
        self.record = record


def _slot(result: Any, key: str) -> Any:
    """An instance's value for ``key``: ``None`` when its contribution lacks it (§9.3)."""
    return result.get(key) if isinstance(result, Mapping) else None


def _mapping(result: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(result, Mapping):
        raise TypeError(
            f"fan-out {name!r}: the instance callable returned {type(result).__name__}; it "
            "must return a mapping of field names to values"
        )
    return result
