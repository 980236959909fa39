"""Compile-time checks of a fan-out node (pipeline-utilities §9, §9.3, §9.8).

Run by :meth:`.fanout.FanOut.bind` when the owning graph compiles: every
misconfiguration raises a :class:`~.errors.GraphCompileError` whose
``category`` is the spec's and whose message names the node and the field;
suspicious-but-legal configurations come back as warnings.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

from ._kinds import (
    POLICIES,
    ConcurrentConfigInvalid,
    choice,
    is_list_type,
    need_field,
    round_trip_warning,
    validate_errors_field,
)
from .errors import GraphCompileError, GraphCompileWarning, MappingReferencesUndeclaredField
from .reducers import last_write_wins
from .state import Schema, _type_name

__all__ = [
    "FanOutConfigView",
    "FanOutCountModeAmbiguous",
    "FanOutDegradedUpdateMissingCollectField",
    "FanOutFieldNotList",
    "check",
    "is_int",
]


class FanOutConfigView(Protocol):
    """What the checks read of a fan-out node's configuration (``FanOut`` satisfies it;
    this module does not import ``fanout``, which imports it)."""

    graph: Any  # CompiledGraph | None: only its ``schema`` is read
    collect_field: str
    target_field: str
    items_field: str | None
    item_field: str | None
    count: Any
    concurrency: Any
    error_policy: Literal["fail_fast", "collect"]
    errors_field: str | None
    on_empty: Literal["raise", "noop"]
    count_field: str | None
    inputs: dict[str, str]
    extra_outputs: dict[str, str]
    instance_middleware: tuple[Any, ...]


# --- compile errors -------------------------------------------------------------------------------


class FanOutCountModeAmbiguous(GraphCompileError):
    """Not exactly one of ``items_field`` / ``count`` (or ``item_field`` in the wrong mode)."""

    category = "fan_out_count_mode_ambiguous"


class FanOutFieldNotList(GraphCompileError):
    """``items_field`` (or ``errors_field``) is not declared as a list."""

    category = "fan_out_field_not_list"


class FanOutDegradedUpdateMissingCollectField(GraphCompileError):
    """A static degraded update in ``instance_middleware`` omits ``collect_field`` (§9.8)."""

    category = "fan_out_degraded_update_missing_collect_field"


class _CompileInvalidCount(GraphCompileError):
    category = "fan_out_invalid_count"


class _CompileInvalidConcurrency(GraphCompileError):
    category = "fan_out_invalid_concurrency"


# --- the checks ----------------------------------------------------------------------


def check(fo: FanOutConfigView, name: str, schema: Schema) -> list[GraphCompileWarning]:
    """Check fan-out ``fo`` (node ``name``) against the parent ``schema``; return warnings."""
    _check_mode(fo, name)
    choice(fo.error_policy, POLICIES, name, "error_policy")
    choice(fo.on_empty, ("raise", "noop"), name, "on_empty")
    _check_bounds(fo, name)
    sub = fo.graph.schema if fo.graph is not None else None
    parent_refs = [("target_field", fo.target_field)]
    parent_refs += [("inputs", p) for p in fo.inputs.values()]
    parent_refs += [("extra_outputs", p) for p in fo.extra_outputs]
    for what, field in parent_refs:
        need_field(schema, field, "parent", name, what)
    if fo.items_field is not None:
        need_field(schema, fo.items_field, "parent", name, "items_field")
        spec = schema.fields[fo.items_field]
        if not is_list_type(spec.type):
            raise FanOutFieldNotList(
                f"node {name!r}: items_field {fo.items_field!r} is declared "
                f"{_type_name(spec.type)}; it must be a list field"
            )
    if fo.count_field is not None:
        need_field(schema, fo.count_field, "parent", name, "count_field")
        if schema.fields[fo.count_field].type is not int:
            raise MappingReferencesUndeclaredField(
                f"node {name!r}: count_field {fo.count_field!r} must be declared int, "
                f"not {_type_name(schema.fields[fo.count_field].type)}"
            )
    if fo.errors_field is not None:
        validate_errors_field(schema, fo.errors_field, name, FanOutFieldNotList)
    if sub is not None:
        sub_refs = [("collect_field", fo.collect_field)]
        sub_refs += [("item_field", fo.item_field)] if fo.item_field else []
        sub_refs += [("inputs", s) for s in fo.inputs]
        sub_refs += [("extra_outputs", s) for s in fo.extra_outputs.values()]
        for what, field in sub_refs:
            need_field(sub, field, "subgraph", name, what)
    written = [fo.target_field, *fo.extra_outputs, fo.errors_field, fo.count_field]
    written = [w for w in written if w is not None]
    if len(set(written)) != len(written):
        raise ConcurrentConfigInvalid(
            f"node {name!r}: target_field, extra_outputs, errors_field and count_field "
            f"must name distinct parent fields, got {written}"
        )
    _check_degrade_coverage(fo, name)
    return _warnings(fo, name, schema)

def _check_mode(fo: FanOutConfigView, name: str) -> None:
    if (fo.items_field is None) == (fo.count is None):
        raise FanOutCountModeAmbiguous(
            f"node {name!r}: give exactly one of items_field and count "
            f"(got items_field={fo.items_field!r}, count={fo.count!r})"
        )
    if fo.items_field is not None and not fo.item_field:
        raise FanOutCountModeAmbiguous(
            f"node {name!r}: items_field {fo.items_field!r} needs item_field (the "
            "subgraph field each item is assigned to)"
        )
    if fo.count is not None and fo.item_field is not None:
        raise FanOutCountModeAmbiguous(
            f"node {name!r}: item_field {fo.item_field!r} is only for items_field mode; "
            "count mode has no per-item value"
        )

def _check_bounds(fo: FanOutConfigView, name: str) -> None:
    count, conc = fo.count, fo.concurrency
    if count is not None and not callable(count) and (not is_int(count) or count < 0):
        raise _CompileInvalidCount(
            f"node {name!r}: count must be a non-negative int or a callable, got {count!r}"
        )
    if callable(count):
        hints = _return_hint(count)
        if hints is not None and hints is not int:
            raise _CompileInvalidCount(
                f"node {name!r}: the count callable is annotated to return {hints!r}, not int"
            )
    if conc is not None and not callable(conc) and (not is_int(conc) or conc < 1):
        raise _CompileInvalidConcurrency(
            f"node {name!r}: concurrency must be a positive int, a callable or None, "
            f"got {conc!r}"
        )

def _check_degrade_coverage(fo: FanOutConfigView, name: str) -> None:
    for mw in fo.instance_middleware:
        degraded = getattr(mw, "degraded_update", None)
        if isinstance(degraded, Mapping) and fo.collect_field not in degraded:
            raise FanOutDegradedUpdateMissingCollectField(
                f"node {name!r}: instance middleware {mw!r} degrades to "
                f"{dict(degraded)!r}, which has no collect_field {fo.collect_field!r}; a "
                "degraded instance would leave a null in target_field"
            )

def _warnings(fo: FanOutConfigView, name: str, schema: Schema) -> list[GraphCompileWarning]:
    out: list[GraphCompileWarning] = []
    for sub_field, parent in fo.inputs.items():
        red = schema.fields[parent].reducer
        if fo.extra_outputs.get(parent) == sub_field and not red.round_trip_idempotent:
            how = f"inputs/extra_outputs via {sub_field!r}"
            out.append(round_trip_warning(name, parent, red, how))
    target_red = schema.fields[fo.target_field].reducer
    seeded = fo.inputs.get(fo.collect_field) == fo.target_field or (
        fo.item_field == fo.collect_field and fo.items_field == fo.target_field
    )
    if seeded and not target_red.round_trip_idempotent:
        out.append(
            round_trip_warning(name, fo.target_field, target_red,
                               f"seeding and collecting {fo.collect_field!r}")
        )
    if fo.errors_field is not None and fo.error_policy == "fail_fast":
        out.append(GraphCompileWarning(
            "fan_out_errors_field_unused",
            f"node {name!r}: errors_field {fo.errors_field!r} is only written under "
            "error_policy='collect'; with 'fail_fast' the first failure raises instead",
        ))
    for parent in fo.extra_outputs:
        if schema.fields[parent].reducer is last_write_wins:
            out.append(GraphCompileWarning(
                "fan_out_extra_output_last_write_wins",
                f"node {name!r}: extra_outputs field {parent!r} has no reducer, so only the "
                "last instance's value is kept; give it an extending reducer (e.g. append) "
                "to keep every instance's",
            ))
    return out


def is_int(value: Any) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def _return_hint(fn: Callable[..., Any]) -> Any:
    """The callable's declared return type, if it declares one we can resolve."""
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else getattr(fn, "__call__", None)  # noqa: B004
    try:
        return typing.get_type_hints(target).get("return") if target is not None else None
    except Exception:
        return None
