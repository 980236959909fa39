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
from typing import TYPE_CHECKING, Any

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
from .state import Schema, _type_name

if TYPE_CHECKING:
    from .fanout import FanOut as FanOutConfigLike

__all__ = [
    "FanOutCountModeAmbiguous",
    "FanOutDegradedUpdateMissingCollectField",
    "FanOutFieldNotList",
    "check",
    "is_int",
]


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


def check(self: FanOutConfigLike, name: str, schema: Schema) -> list[GraphCompileWarning]:
    _check_mode(self, name)
    choice(self.error_policy, POLICIES, name, "error_policy")
    choice(self.on_empty, ("raise", "noop"), name, "on_empty")
    _check_bounds(self, name)
    sub = self.graph.schema if self.graph is not None else None
    parent_refs = [("target_field", self.target_field)]
    parent_refs += [("inputs", p) for p in self.inputs.values()]
    parent_refs += [("extra_outputs", p) for p in self.extra_outputs]
    for what, field in parent_refs:
        need_field(schema, field, "parent", name, what)
    if self.items_field is not None:
        need_field(schema, self.items_field, "parent", name, "items_field")
        spec = schema.fields[self.items_field]
        if not is_list_type(spec.type):
            raise FanOutFieldNotList(
                f"node {name!r}: items_field {self.items_field!r} is declared "
                f"{_type_name(spec.type)}; it must be a list field"
            )
    if self.count_field is not None:
        need_field(schema, self.count_field, "parent", name, "count_field")
        if schema.fields[self.count_field].type is not int:
            raise MappingReferencesUndeclaredField(
                f"node {name!r}: count_field {self.count_field!r} must be declared int, "
                f"not {_type_name(schema.fields[self.count_field].type)}"
            )
    if self.errors_field is not None:
        validate_errors_field(schema, self.errors_field, name, FanOutFieldNotList)
    if sub is not None:
        sub_refs = [("collect_field", self.collect_field)]
        sub_refs += [("item_field", self.item_field)] if self.item_field else []
        sub_refs += [("inputs", s) for s in self.inputs]
        sub_refs += [("extra_outputs", s) for s in self.extra_outputs.values()]
        for what, field in sub_refs:
            need_field(sub, field, "subgraph", name, what)
    written = [self.target_field, *self.extra_outputs, self.errors_field, self.count_field]
    written = [w for w in written if w is not None]
    if len(set(written)) != len(written):
        raise ConcurrentConfigInvalid(
            f"node {name!r}: target_field, extra_outputs, errors_field and count_field "
            f"must name distinct parent fields, got {written}"
        )
    _check_degrade_coverage(self, name)
    return _warnings(self, name, schema)

def _check_mode(self: FanOutConfigLike, name: str) -> None:
    if (self.items_field is None) == (self.count is None):
        raise FanOutCountModeAmbiguous(
            f"node {name!r}: give exactly one of items_field and count "
            f"(got items_field={self.items_field!r}, count={self.count!r})"
        )
    if self.items_field is not None and not self.item_field:
        raise FanOutCountModeAmbiguous(
            f"node {name!r}: items_field {self.items_field!r} needs item_field (the "
            "subgraph field each item is assigned to)"
        )
    if self.count is not None and self.item_field is not None:
        raise FanOutCountModeAmbiguous(
            f"node {name!r}: item_field {self.item_field!r} is only for items_field mode; "
            "count mode has no per-item value"
        )

def _check_bounds(self: FanOutConfigLike, name: str) -> None:
    count, conc = self.count, self.concurrency
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

def _check_degrade_coverage(self: FanOutConfigLike, name: str) -> None:
    for mw in self.instance_middleware:
        degraded = getattr(mw, "degraded_update", None)
        if isinstance(degraded, Mapping) and self.collect_field not in degraded:
            raise FanOutDegradedUpdateMissingCollectField(
                f"node {name!r}: instance middleware {mw!r} degrades to "
                f"{dict(degraded)!r}, which has no collect_field {self.collect_field!r}; a "
                "degraded instance would leave a null in target_field"
            )

def _warnings(self: FanOutConfigLike, name: str, schema: Schema) -> list[GraphCompileWarning]:
    out: list[GraphCompileWarning] = []
    for sub_field, parent in self.inputs.items():
        red = schema.fields[parent].reducer
        if self.extra_outputs.get(parent) == sub_field and not red.round_trip_idempotent:
            how = f"inputs/extra_outputs via {sub_field!r}"
            out.append(round_trip_warning(name, parent, red, how))
    target_red = schema.fields[self.target_field].reducer
    seeded = self.inputs.get(self.collect_field) == self.target_field or (
        self.item_field == self.collect_field and self.items_field == self.target_field
    )
    if seeded and not target_red.round_trip_idempotent:
        out.append(
            round_trip_warning(name, self.target_field, target_red,
                               f"seeding and collecting {self.collect_field!r}")
        )
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
