"""Caller-supplied invocation metadata (observability §3.4), ground floor.

A caller passes ``invoke(state, metadata={"tenantId": "acme"})``; every span of
that invocation then carries ``openarmature.user.tenantId``. Code running inside
the invocation reads the mapping with :func:`get_invocation_metadata` and adds
entries with :func:`set_invocation_metadata`::

    async def classify(state):
        set_invocation_metadata(audit_kind="fraud")   # this context and what follows
        ...

The mapping lives in a :class:`~contextvars.ContextVar`: an addition is seen by
the rest of the calling flow (later nodes of the same graph run) and by
dispatches started after it, never by sibling fan-out instances or parallel
branches (each runs in its own copy of the context). Each addition is also put on
the observer queue as a :class:`MetadataAugmentedEvent`, so tracing observers can
update the spans still open in the augmenting context.

Keys are strings outside the reserved ``openarmature.*`` / ``gen_ai.*``
namespaces and not one of the names the observability mappings write themselves
(:data:`RESERVED_NAMES`); values are OpenTelemetry attribute values (str, int,
float, bool, or a homogeneous list of one of them). Anything else raises
``ValueError`` / ``TypeError`` where it is passed, before any work.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

from openarmature_nodes.context import current_lineage, emit_framework_event
from openarmature_nodes.events import ObserverEvent

__all__ = [
    "RESERVED_NAMES",
    "MetadataAugmentedEvent",
    "bind_invocation_metadata",
    "get_invocation_metadata",
    "set_invocation_metadata",
    "validate_metadata",
]

RESERVED_NAMES: frozenset[str] = frozenset((
    "correlation_id", "entry_node", "spec_version", "detached_child_trace_ids", "namespace",
    "step", "attempt_index", "fan_out_index", "subgraph_name", "fan_out_item_count",
    "fan_out_concurrency", "fan_out_error_policy", "fan_out_parent_node_name",
    "prompt_group_name", "request_extras", "finish_reason", "system", "response_model",
    "response_id", "prompt", "invocation_id", "branch_name", "detached",
    "detached_from_invocation_id", "implementation_name", "implementation_version",
    "parallel_branches_branch_count", "parallel_branches_error_policy",
    "parallel_branches_parent_node_name",
))
"""Exact key names the observability mappings emit themselves (§3.4)."""

_RESERVED_PREFIXES = ("openarmature.", "gen_ai.")
_SCALARS = (str, bool, int, float)
_EMPTY: Mapping[str, Any] = MappingProxyType({})

_metadata: ContextVar[Mapping[str, Any]] = ContextVar("openarmature_metadata", default=_EMPTY)


class MetadataAugmentedEvent(ObserverEvent, frozen=True, kw_only=True):
    """``set_invocation_metadata`` added ``entries`` in the context of the node at
    ``namespace`` (with its lineage). No ``phase``: every observer receives it."""

    entries: Mapping[str, Any]


def _check_value(key: str, value: Any) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (list, tuple)) and value:
        kinds = {bool if isinstance(v, bool) else type(v) for v in value}
        if len(kinds) == 1 and next(iter(kinds)) in _SCALARS:
            return tuple(value)
    raise TypeError(
        f"invocation metadata {key!r}: values must be str, int, float, bool or a non-empty "
        f"homogeneous list of one of them, got {value!r:.60}"
    )


def validate_metadata(entries: Mapping[str, Any]) -> dict[str, Any]:
    """The entries, checked against §3.4's key and value rules (raises on the first
    violation: ``ValueError`` for a reserved key, ``TypeError`` for a bad type)."""
    if not isinstance(entries, Mapping):
        raise TypeError(f"invocation metadata must be a mapping, got {type(entries).__name__}")
    out: dict[str, Any] = {}
    for key, value in entries.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"invocation metadata keys must be non-empty strings, got {key!r}")
        if key.startswith(_RESERVED_PREFIXES):
            raise ValueError(
                f"invocation metadata key {key!r} is in a reserved namespace "
                f"({', '.join(p + '*' for p in _RESERVED_PREFIXES)})"
            )
        if key in RESERVED_NAMES:
            raise ValueError(f"invocation metadata key {key!r} is reserved by the observability "
                             "mappings")
        out[key] = _check_value(key, value)
    return out


def get_invocation_metadata() -> Mapping[str, Any]:
    """The metadata in scope here (read-only); empty outside an invocation."""
    return _metadata.get()


def set_invocation_metadata(**entries: Any) -> None:
    """Add ``entries`` to the metadata of the running context (see module docs).

    Raises before changing anything when a key or value breaks the §3.4 rules.
    """
    checked = validate_metadata(entries)
    if not checked:
        return
    _metadata.set(MappingProxyType({**_metadata.get(), **checked}))
    lineage = current_lineage()
    if lineage is not None and lineage.invocation_id is not None:
        emit_framework_event(MetadataAugmentedEvent(
            invocation_id=lineage.invocation_id, namespace=lineage.namespace,
            attempt_index=lineage.attempt_index, fan_out_index=lineage.fan_out_index,
            branch_name=lineage.branch_name, fan_out_index_chain=lineage.fan_out_index_chain,
            branch_name_chain=lineage.branch_name_chain,
            subgraph_name_chain=lineage.subgraph_name_chain, entries=MappingProxyType(checked),
        ))


@contextmanager
def bind_invocation_metadata(entries: Mapping[str, Any] | None) -> Iterator[Mapping[str, Any]]:
    """Install ``entries`` (already validated) as an invocation's baseline metadata
    for the ``with`` block; reset afterwards."""
    mapping: Mapping[str, Any] = MappingProxyType(dict(entries)) if entries else _EMPTY
    token = _metadata.set(mapping)
    try:
        yield mapping
    finally:
        _metadata.reset(token)
