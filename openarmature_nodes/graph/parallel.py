"""Parallel branches: run a fixed set of heterogeneous branches side by side.

A parallel-branches node (pipeline-utilities §11) holds named branches and
runs all of them at once when it is reached; when every branch is done it
merges their contributions into the parent state, in the order the branches
were declared::

    builder.add_parallel_branches_node("analyse", {
        "sentiment": Branch(subgraph=sentiment_graph,
                            inputs={"text": "document"}, outputs={"mood": "label"}),
        "entities": Branch(subgraph=ner_graph, outputs={"entities": "found"},
                           middleware=[RetryMiddleware(max_attempts=3)]),
        "keywords": Branch(call=extract_keywords),          # async (parent_state) -> update
        "vector": Branch(call=vector_search, when=lambda s: s.embedding is not None),
    })

A branch is either a compiled ``subgraph`` (parent fields copied in through
``inputs`` = {subgraph field: parent field}; exit values copied out through
``outputs`` = {parent field: subgraph field}) or an inline ``call``: an async
function of the parent state returning a parent-shaped partial update. A bare
compiled graph or async function is accepted as shorthand for either.

- ``when``: ``(parent_state) -> bool``, checked once at dispatch; a false
  branch is skipped entirely (no work, no contribution, no events).
- ``middleware``: wraps the branch's whole run (the subgraph, or the call);
  it sees and returns the branch's contribution (subgraph field names for a
  subgraph branch). A degraded contribution that leaves out an ``outputs``
  field simply contributes nothing to that parent field.
- Fan-in: contributions are buffered and merged once, in declaration order,
  through each parent field's reducer (two branches writing one ``merge``
  field: the later branch's keys win).
- ``error_policy="fail_fast"`` (default): the first failing branch cancels
  the rest and the node raises :class:`ParallelBranchFailed`
  (``parallel_branches_branch_failed``, with ``branch_name``; the branch's
  error is its ``__cause__``). ``"collect"``: every branch runs; failures
  contribute nothing and are recorded as
  ``{"branch_name": ..., "category": ...}`` in ``errors_field``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from openarmature_nodes.onion import Middleware, compose

from ._kinds import (
    POLICIES,
    ConcurrentKind,
    call_observed,
    call_plain,
    check_values,
    choice,
    combine_contributions,
    error_category,
    need_field,
    resolve_maybe_async,
    round_trip_warning,
    run_units_suspendable,
    run_with_lineage,
    unit_suspension,
    validate_errors_field,
    view_step,
)
from ._pool import run_indexed
from ._run import run_observed, run_plain
from .errors import GraphCompileError, GraphCompileWarning, NodeException
from .events import ParallelBranchesConfig
from .nodes import Inner
from .state import Schema

if TYPE_CHECKING:
    from ._run import Step
    from .compiled import CompiledGraph

__all__ = [
    "Branch",
    "ParallelBranchFailed",
    "ParallelBranches",
    "ParallelBranchesInvalidBranchSpec",
    "ParallelBranchesNoBranches",
    "default_branch_error_record",
]

CallFn = Callable[[Any], Awaitable[Mapping[str, Any] | None]]


class ParallelBranchesNoBranches(GraphCompileError):
    """The node declares no branches."""

    category = "parallel_branches_no_branches"


class ParallelBranchesInvalidBranchSpec(GraphCompileError):
    """A branch is malformed: a bad name, not exactly one of subgraph/call, a sync call,
    or inputs/outputs on a call branch."""

    category = "parallel_branches_invalid_branch_spec"


class _ErrorsFieldNotList(GraphCompileError):
    category = "parallel_branches_errors_field_not_list"


class ParallelBranchFailed(NodeException):
    """A branch failed under ``fail_fast``: the parallel-branches node's own error.

    A ``node_exception`` subtype (a carrier: classifiers look through it to
    the branch's error, its ``__cause__``). ``branch_name`` names the branch.
    """

    category = "parallel_branches_branch_failed"
    raised_for_node = True

    def __init__(self, message: str, *, branch_name: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.branch_name = branch_name


def default_branch_error_record(branch_name: str, exc: Exception) -> dict[str, str]:
    """``{"branch_name": ..., "category": ...}``: the ``errors_field`` record of a
    failed branch under ``error_policy="collect"``."""
    return {"branch_name": branch_name, "category": error_category(exc)}


@dataclass(frozen=True)
class Branch:
    """One branch: exactly one of ``subgraph`` / ``call``, plus options (module docs)."""

    subgraph: CompiledGraph[Any] | None = None
    call: CallFn | None = None
    inputs: Mapping[str, str] | None = None
    outputs: Mapping[str, str] | None = None
    middleware: Sequence[Middleware[Any, Any]] = field(default_factory=tuple)
    when: Callable[[Any], Any] | None = None


class ParallelBranches(ConcurrentKind):
    """A parallel-branches node. Add it with ``GraphBuilder.add_parallel_branches_node``."""

    def __init__(
        self,
        branches: Mapping[str, Branch | CompiledGraph[Any] | CallFn],
        *,
        error_policy: Literal["fail_fast", "collect"] = "fail_fast",
        errors_field: str | None = None,
        error_record: Callable[[str, Exception], Any] = default_branch_error_record,
    ) -> None:
        self.branches = {name: _as_branch(name, b) for name, b in branches.items()}
        self.error_policy = error_policy
        self.errors_field = errors_field
        self.error_record = error_record
        self.name = ""
        self._schema: Schema | None = None
        self._plain: dict[str, Inner] = {}
        self._entry_where = ""  # the entry check's error prefix, fixed once the name is

    # --- compile time ---------------------------------------------------------------------

    def bind(self, name: str, schema: Schema) -> Sequence[GraphCompileWarning]:
        """Check every branch against the parent's (and its subgraph's) schema."""
        self.name = name
        self._entry_where = f"parallel branch entry of {name!r}"
        self._schema = schema
        if not self.branches:
            raise ParallelBranchesNoBranches(
                f"parallel-branches node {name!r} declares no branches"
            )
        choice(self.error_policy, POLICIES, name, "error_policy")
        if self.errors_field is not None:
            validate_errors_field(schema, self.errors_field, name, _ErrorsFieldNotList)
        warnings: list[GraphCompileWarning] = []
        for bname, b in self.branches.items():
            where = f"{name}.branches[{bname!r}]"
            if not isinstance(bname, str) or not bname:
                raise ParallelBranchesInvalidBranchSpec(
                    f"node {name!r}: branch names must be non-empty strings, got {bname!r}"
                )
            if (b.subgraph is None) == (b.call is None):
                raise ParallelBranchesInvalidBranchSpec(
                    f"node {name!r}: branch {bname!r} must declare exactly one of subgraph "
                    "and call"
                )
            if b.call is not None and (b.inputs is not None or b.outputs is not None):
                raise ParallelBranchesInvalidBranchSpec(
                    f"node {name!r}: branch {bname!r} is a call branch; inputs/outputs apply "
                    "to subgraph branches only (a call reads and returns parent fields)"
                )
            sync_fn = inspect.isfunction(b.call) and not inspect.iscoroutinefunction(b.call)
            if b.call is not None and sync_fn:
                raise ParallelBranchesInvalidBranchSpec(
                    f"node {name!r}: branch {bname!r} call must be async (async def ...)"
                )
            if b.subgraph is not None:
                sub = b.subgraph.schema
                for s, p in (b.inputs or {}).items():
                    need_field(sub, s, "subgraph", name, f"{where} inputs")
                    need_field(schema, p, "parent", name, f"{where} inputs")
                for p, s in (b.outputs or {}).items():
                    need_field(schema, p, "parent", name, f"{where} outputs")
                    need_field(sub, s, "subgraph", name, f"{where} outputs")
                for s, p in (b.inputs or {}).items():
                    red = schema.fields[p].reducer
                    if (b.outputs or {}).get(p) == s and not red.round_trip_idempotent:
                        how = f"branch {bname!r} via {s!r}"
                        warnings.append(round_trip_warning(name, p, red, how))
            self._plain[bname] = compose(tuple(b.middleware), self._plain_branch(bname, b))
        return warnings

    # --- run time ---------------------------------------------------------------------------

    def subgraphs(self) -> Sequence[CompiledGraph[Any]]:
        """The subgraphs of the subgraph branches."""
        return tuple(b.subgraph for b in self.branches.values() if b.subgraph is not None)

    async def _dispatch(self, state: Any, step: Step | None) -> dict[str, Any]:
        try:
            names = [n for n, b in self.branches.items()
                     if b.when is None or await resolve_maybe_async(b.when, state)]
        except Exception:
            if step is not None:
                step.begin(state)
            raise
        if step is not None:
            step.begin(state, parallel_branches_config=ParallelBranchesConfig(
                branch_names=tuple(self.branches), branch_count=len(names),
                error_policy=self.error_policy, parent_node_name=self.name,
            ))

        async def job(i: int) -> Any:
            bname = names[i]
            if step is None:
                return await self._plain[bname](state)
            b = self.branches[bname]
            run = compose(tuple(b.middleware), self._observed_branch(step, bname, b))
            return await run_with_lineage(view_step(step, state, branch_name=bname), run, state)

        outcome, sig = await run_units_suspendable(
            lambda: run_indexed(
                len(names), job, limit=None, fail_fast=self.error_policy == "fail_fast"
            ),
            self.name, self.error_policy == "collect", "branch",
        )
        if sig is not None:
            level = sig.frame[0] if sig.frame is not None else None
            bname = level.branch_name if level is not None else None
            raise unit_suspension(sig, "branch_name", bname, None) from None
        if outcome.failures and self.error_policy == "fail_fast":
            i, exc = next(iter(outcome.failures.items()))
            raise ParallelBranchFailed(
                f"branch {names[i]!r} of parallel-branches node {self.name!r} failed: {exc}",
                branch_name=names[i], node_name=self.name, recoverable_state=state,
            ) from exc
        return self._fan_in(names, outcome.results, outcome.failures)

    def _enter(self, b: Branch, state: Any) -> Any:
        assert b.subgraph is not None
        sub = b.subgraph.schema
        values = {s: getattr(state, p) for s, p in (b.inputs or {}).items()}
        if values:
            check_values(sub, values, self._entry_where)
        return sub.cls(**values)

    @staticmethod
    def _exit(b: Branch, final: Any) -> dict[str, Any]:
        return {s: getattr(final, s) for s in dict.fromkeys((b.outputs or {}).values())}

    def _plain_branch(self, bname: str, b: Branch) -> Inner:
        graph, call = b.subgraph, b.call
        if graph is not None:

            async def run_graph(state: Any) -> Any:
                return self._exit(b, await run_plain(graph, self._enter(b, state)))

            return run_graph
        assert call is not None

        async def run_call(state: Any) -> Any:
            return await call_plain(bname, call, state)

        return run_call

    def _observed_branch(self, step: Step, bname: str, b: Branch) -> Inner:
        graph, call = b.subgraph, b.call
        level = step.level.child(self.name, step.state, graph, branch_name=bname)
        if graph is not None:

            async def run_graph(state: Any) -> Any:
                return self._exit(b, await run_observed(graph, self._enter(b, state), level))

            return run_graph
        assert call is not None

        async def run_call(state: Any) -> Any:
            return await call_observed(level, bname, call, state)

        return run_call

    def _fan_in(
        self, names: list[str], results: list[Any], failures: Mapping[int, Exception]
    ) -> dict[str, Any]:
        parts: dict[str, list[Any]] = {}
        for i, bname in enumerate(names):
            if i in failures:
                continue
            result = results[i]
            if not isinstance(result, Mapping):
                continue  # None (a call returning nothing) contributes nothing
            b = self.branches[bname]
            if b.subgraph is not None:
                contribution = {p: result[s] for p, s in (b.outputs or {}).items() if s in result}
            else:
                contribution = dict(result)
            for key, value in contribution.items():
                parts.setdefault(key, []).append(value)
        schema = self._schema
        assert schema is not None
        update: dict[str, Any] = {}
        for key, values in parts.items():
            spec = schema.fields.get(key)
            if spec is None:  # undeclared: left for the engine's merge to reject, naming it
                update[key] = values[-1]
            else:
                update[key] = combine_contributions(spec.reducer, values)
        if self.errors_field is not None:
            records = [self.error_record(names[i], exc) for i, exc in failures.items()]
            if self.errors_field in update:
                update[self.errors_field] = combine_contributions(
                    schema.fields[self.errors_field].reducer, [update[self.errors_field], records]
                )
            else:
                update[self.errors_field] = records
        return update


def _as_branch(name: str, value: Any) -> Branch:
    from .compiled import CompiledGraph

    if isinstance(value, Branch):
        return value
    if isinstance(value, CompiledGraph):
        return Branch(subgraph=value)
    if callable(value):
        return Branch(call=value)
    raise TypeError(f"branch {name!r}: expected a Branch, a CompiledGraph or an async callable")
