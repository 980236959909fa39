"""What fan-out and parallel branches share: field checks, fan-in merging, lineage.

Kept apart from :mod:`.fanout` and :mod:`.parallel` so each of those reads as
its own feature (:func:`need_field` serves subgraph nodes too). Nothing here is
public.

Both kinds have the same outer shape: a :meth:`ConcurrentKind._dispatch` that
runs several units (instances, branches) and returns one merged update, and
units that may be inline async callables. :class:`ConcurrentKind` holds the
``NodeKind`` plumbing around the dispatch, :func:`call_plain` and
:func:`call_observed` run one inline callable (the latter as its own event
source).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, get_origin

from openarmature_nodes.context import run_scope

from ._run import Level, Step
from .checkpoint.errors import SuspensionInUnsupportedContext
from .checkpoint.records import SignalDescriptor
from .errors import (
    GraphCompileError,
    GraphCompileWarning,
    MappingReferencesUndeclaredField,
    NodeException,
    StateValidationError,
)
from .reducers import Reducer, concat_flatten, last_write_wins, merge_all
from .state import Schema, _type_name
from .suspension import SuspendSignal, find_suspension, in_node_body

if TYPE_CHECKING:
    from .compiled import CompiledGraph
    from .nodes import Inner

__all__ = [
    "ConcurrentConfigInvalid",
    "ConcurrentKind",
    "call_observed",
    "call_plain",
    "check_values",
    "choice",
    "combine_contributions",
    "error_category",
    "is_list_type",
    "need_field",
    "resolve_maybe_async",
    "round_trip_warning",
    "run_with_lineage",
    "validate_errors_field",
    "view_step",
    "wrap_call_failure",
]

POLICIES: frozenset[str] = frozenset(("fail_fast", "collect"))


class ConcurrentConfigInvalid(GraphCompileError):
    """A fan-out / parallel-branches option has a value outside its allowed set."""

    category = "concurrent_node_config_invalid"


def need_field(schema: Schema, field: str, side: str, node: str, what: str) -> None:
    """Raise ``mapping_references_undeclared_field`` unless ``schema`` declares ``field``."""
    if field not in schema.fields:
        raise MappingReferencesUndeclaredField(
            f"node {node!r}: {what} names {side} field {field!r}, which the {side} schema "
            f"{schema.cls.__name__} does not declare"
        )


def is_list_type(tp: Any) -> bool:
    """Whether a field annotation is ``list`` or ``list[...]``."""
    return tp is list or get_origin(tp) is list


def validate_errors_field(
    schema: Schema, field: str, node: str, not_list: type[GraphCompileError]
) -> None:
    """``errors_field`` must be a declared list field with an extending reducer (§9.5)."""
    need_field(schema, field, "parent", node, "errors_field")
    spec = schema.fields[field]
    if not is_list_type(spec.type):
        raise not_list(
            f"node {node!r}: errors_field {field!r} is declared {_type_name(spec.type)}; "
            "it must be a list field"
        )
    if spec.reducer is last_write_wins:
        raise ConcurrentConfigInvalid(
            f"node {node!r}: errors_field {field!r} has no reducer; give it an extending "
            "reducer (e.g. append) so recorded errors accumulate"
        )


def round_trip_warning(
    node: str, parent_field: str, reducer: Reducer, how: str
) -> GraphCompileWarning:
    """The warning for a parent field carried into the units and back out through a
    reducer that would merge it twice (``how`` says which unit and field)."""
    return GraphCompileWarning(
        "projection_reducer_round_trip",
        f"node {node!r} carries parent field {parent_field!r} into its instances and back out "
        f"({how}) through reducer {reducer.name}, which is not round-trip-idempotent: the "
        "value would be merged again",
    )


def check_values(schema: Schema, values: Mapping[str, Any], where: str) -> None:
    """Type-check projected values against ``schema`` (only the fields given)."""
    fields = schema.fields
    for name, value in values.items():
        check = fields[name].check
        if check is not None and not check(value):
            raise StateValidationError(
                f"{where}: field {name!r} got {value!r:.60}, which is not a "
                f"{_type_name(fields[name].type)}",
                fields=(name,),
            )


async def resolve_maybe_async(fn: Callable[[Any], Any], state: Any) -> Any:
    """``fn(state)``, awaited when it returns an awaitable (sync and async options alike)."""
    value = fn(state)
    if isinstance(value, Awaitable):
        value = await value
    return value


def error_category(exc: BaseException) -> str:
    """The category recorded for a failed instance / branch (its surface category)."""
    category = getattr(exc, "category", None)
    return category if isinstance(category, str) and category else "node_exception"


def wrap_call_failure(name: str, exc: Exception, state: Any) -> NodeException:
    """A raw failure of an inline callable, carried like a node's (§6.3 cause fidelity)."""
    err = NodeException(
        f"{name!r} raised {type(exc).__name__}: {exc}", node_name=name, recoverable_state=state
    )
    err.__cause__ = exc
    return err


async def call_plain(name: str, call: Callable[[Any], Awaitable[Any]], value: Any) -> Any:
    """``await call(value)`` for an unobserved run; a raw failure is carried as a
    ``node_exception`` naming ``name`` (:func:`wrap_call_failure`)."""
    try:
        return await call(value)
    except Exception as exc:
        raise wrap_call_failure(name, exc, value) from exc


async def call_observed(
    level: Level, name: str, call: Callable[[Any], Awaitable[Any]], value: Any
) -> Any:
    """:func:`call_plain` in an observed run: the callable is its own event source.

    A fan-out instance function or a call branch has no graph of its own to
    emit events, so one synthetic step named ``name`` at ``level`` reports the
    callable's started/completed pair (graph-engine §6), the completion carrying
    the wrapped failure when it raises.
    """
    own = Step(level, name, value)
    own.begin(value)
    token = in_node_body.set(True)
    try:
        result = await call(value)
    except SuspendSignal as sig:
        if not sig.attributed:
            sig.attributed = True
            own.suspended(sig.descriptor)
            sig.frame = (level, name, value, sig.mark_node_completed)
        raise
    except Exception as exc:
        err = wrap_call_failure(name, exc, value)
        own.finish_error(err)
        raise err from exc
    finally:
        in_node_body.reset(token)
    own.finish_ok(result)
    return result


class ConcurrentKind:
    """The ``NodeKind`` plumbing fan-out and parallel branches share.

    A subclass implements ``bind``, ``subgraphs`` and ``_dispatch(state, step)``
    (``step`` is ``None`` in an unobserved run); the dispatch calls
    ``step.begin(...)`` itself, once it knows the configuration to report.
    """

    name: str

    async def _dispatch(self, state: Any, step: Step | None) -> dict[str, Any]:
        raise NotImplementedError

    def subgraphs(self) -> Sequence[CompiledGraph[Any]]:
        """Compiled graphs the node runs (for observer snapshots)."""
        raise NotImplementedError

    def plain(self) -> Inner:
        """The inner callable for unobserved runs: one dispatch, no events."""
        dispatch = self._dispatch

        async def inner(state: Any) -> Any:
            return await dispatch(state, None)

        return inner

    def observed(self, step: Step) -> Inner:
        """The inner callable for one step of an observed run."""
        dispatch = self._dispatch

        async def inner(state: Any) -> Any:
            try:
                return await dispatch(state, step)
            except Exception as exc:
                step.fail(exc)  # a retry around this node reports the failed attempt
                raise

        return inner


def view_step(step: Step, state: Any, *, fan_out_index: int | None = None,
              branch_name: str | None = None) -> Step:
    """A step standing for one instance / branch of ``step``'s node.

    Installed as the current step while that unit's middleware runs, so
    :func:`~openarmature_nodes.context.current_lineage` (failure isolation's event lineage) names
    the instance's ``fan_out_index`` / the branch's ``branch_name`` rather than
    only the wrapping node.
    """
    lv = step.level
    level = Level(
        lv.run, lv.graph_subs, lv.prefix, lv.parent_states, lv.fan_out_chain, lv.branch_chain,
        fan_out_index if fan_out_index is not None else lv.fan_out_index,
        branch_name if branch_name is not None else lv.branch_name, lv.subgraph_names,
    )
    return Step(level, step.node_name, state)


async def run_with_lineage(view: Step, call: Callable[[Any], Awaitable[Any]], value: Any) -> Any:
    """``await call(value)`` with ``view`` (see :func:`view_step`) as the current step."""
    token = run_scope.set(view)
    try:
        return await call(value)
    finally:
        run_scope.reset(token)


_LIST_OF_PARTS = (concat_flatten, merge_all)


def combine_contributions(reducer: Reducer, parts: list[Any]) -> Any:
    """One update equivalent to merging ``parts`` one after another through ``reducer``.

    The engine merges a node's update once per field, but several branches
    may contribute to the same field, in insertion order (§11.4). For the
    canonical reducers this folding is exact: list-of-parts reducers
    (``concat_flatten``, ``merge_all``) concatenate the parts; the others fold
    the parts with the reducer itself (``append``: ``a + b``; ``merge``:
    ``{**a, **b}``; ``last_write_wins``: the last part). A custom reducer is
    folded with itself too, which is exact when its updates have the field's
    own shape.
    """
    if len(parts) == 1:
        return parts[0]
    if reducer in _LIST_OF_PARTS and all(isinstance(p, list) for p in parts):
        return [x for p in parts for x in p]
    acc = parts[0]
    for p in parts[1:]:
        acc = reducer.fn(acc, p)
    return acc


def choice(value: Any, allowed: Collection[str], node: str, what: str) -> str:
    """``value`` when it is one of ``allowed``; else ``concurrent_node_config_invalid``."""
    if value not in allowed:
        raise ConcurrentConfigInvalid(
            f"node {node!r}: {what} must be one of {sorted(allowed)}, got {value!r}"
        )
    return str(value)


async def run_units_suspendable(
    run: Callable[[], Awaitable[Any]], node_name: str, collect: bool, label: str,
) -> tuple[Any, SuspendSignal | None]:
    """``await run()`` (a concurrent node's ``run_indexed``), catching a unit's suspension.

    Returns ``(result, None)``, or ``(None, signal)`` when one instance / branch
    suspended (its siblings are cancelled by then). In a ``collect``-mode node a
    suspension is rejected: ``suspension_in_unsupported_context`` (suspension
    §8.2, §8.3). ``label`` names the unit kind in that message.
    """
    try:
        return await run(), None
    except SuspendSignal as sig:
        found: SuspendSignal | None = sig
    except BaseExceptionGroup as group:
        found = find_suspension(group)
        if found is None:
            raise
    if collect:
        raise SuspensionInUnsupportedContext(
            f"a {label} of {node_name!r} called suspend(), but the node uses "
            "error_policy='collect', which cannot suspend (use 'fail_fast')",
            node_name=node_name,
        )
    return None, found


def unit_suspension(sig: SuspendSignal, key: str, value: Any,
                    update: dict[str, Any] | None) -> SuspendSignal:
    """The signal with which the whole concurrent node suspends, for a unit's ``sig``:
    the descriptor's metadata gains ``key`` (``fan_out_index`` / ``branch_name``)."""
    desc = sig.descriptor
    meta = {**(desc.metadata or {}), key: value}
    return SuspendSignal(
        SignalDescriptor(signal_id=desc.signal_id, metadata=meta), sig.mark_node_completed,
        update if sig.mark_node_completed else None,
    )
