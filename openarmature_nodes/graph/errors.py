"""Categorized graph errors: what went wrong, where, and what state survived.

Two families, matching graph-engine §2 and §4 of the spec:

- :class:`GraphCompileError` — raised by ``GraphBuilder.compile()`` (or, for
  reducer factories, at field registration) before any node body runs. Each
  subclass carries a ``category`` string from the spec and a message naming the
  offending node, edge or field.
- :class:`GraphRuntimeError` — raised by ``CompiledGraph.invoke()``. Each one
  names the node it came from and carries ``recoverable_state``: the state as it
  was before the failing merge, so a caller can inspect or resume from it. The
  original exception (a node's own error, a reducer's ``TypeError``, …) is kept
  as ``__cause__``.

Warnings (:class:`GraphCompileWarning`) are emitted through :mod:`warnings` and
never change behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "ConflictingProjectionForms",
    "ConflictingReducers",
    "DanglingEdge",
    "EdgeException",
    "GraphCompileError",
    "GraphCompileWarning",
    "GraphRuntimeError",
    "MappingReferencesUndeclaredField",
    "MultipleOutgoingEdges",
    "NoDeclaredEntry",
    "NodeException",
    "ReducerConfigurationInvalid",
    "ReducerError",
    "RoutingError",
    "StateValidationError",
    "StepLimitExceeded",
    "UnreachableNode",
]


# --- compile time --------------------------------------------------------------


class GraphCompileError(Exception):
    """A graph definition that cannot be compiled. ``category`` names the rule."""

    category: str = "compile_error"


class NoDeclaredEntry(GraphCompileError):
    """The graph declares no entry node (``set_entry``)."""

    category = "no_declared_entry"


class UnreachableNode(GraphCompileError):
    """A node no path from the entry reaches."""

    category = "unreachable_node"


class DanglingEdge(GraphCompileError):
    """An edge, or the entry, names a node the graph does not have."""

    category = "dangling_edge"


class MultipleOutgoingEdges(GraphCompileError):
    """A node has more than one outgoing edge (one edge, or one conditional edge)."""

    category = "multiple_outgoing_edges"


class ConflictingReducers(GraphCompileError):
    """A state field declares more than one reducer."""

    category = "conflicting_reducers"


class MappingReferencesUndeclaredField(GraphCompileError):
    """A projection or mapping names a field its schema does not declare."""

    category = "mapping_references_undeclared_field"


class ConflictingProjectionForms(GraphCompileError):
    """A subgraph node mixes ``projects_in``/``projects_out`` with ``inputs``/``outputs``."""

    category = "conflicting_projection_forms"


class ReducerConfigurationInvalid(GraphCompileError, ValueError):
    """A reducer factory got parameters it cannot work with (``max_len=0``, ``key=None``).

    Raised by the factory call itself, which for a ``State`` class happens when
    the class body is evaluated: long before anything runs.
    """

    category = "reducer_configuration_invalid"


class GraphCompileWarning(UserWarning):
    """A legal but suspicious graph. ``category`` names the heuristic that fired."""

    def __init__(self, category: str, message: str) -> None:
        super().__init__(message)
        self.category = category


# --- run time --------------------------------------------------------------------


class GraphRuntimeError(Exception):
    """Base of every error ``invoke()`` raises on behalf of the graph.

    Attributes:
        category: the spec's runtime category (``node_exception``, ...).
        node_name: the node whose step failed (``None`` for entry validation).
        recoverable_state: the state the failing step started from; nothing of
            the failed step has been merged into it.
    """

    category: str = "runtime_error"

    def __init__(
        self,
        message: str,
        *,
        node_name: str | None = None,
        recoverable_state: Any = None,
    ) -> None:
        super().__init__(message)
        self.node_name = node_name
        self.recoverable_state = recoverable_state


class NodeException(GraphRuntimeError):
    """A node (or a middleware around it, or a subgraph run as it) raised.

    The original exception is ``__cause__``. For a subgraph node the cause is
    the subgraph's own :class:`GraphRuntimeError`, so the chain leads down to
    the innermost failure.
    """

    category = "node_exception"
    carrier = True
    """Marks an engine wrapper: classifiers look through it to ``__cause__``."""


class EdgeException(GraphRuntimeError):
    """A conditional edge function raised; the original exception is ``__cause__``."""

    category = "edge_exception"


class RoutingError(GraphRuntimeError):
    """A conditional edge chose a destination that is neither a node nor ``END``."""

    category = "routing_error"

    def __init__(self, message: str, *, destination: object = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.destination = destination


class ReducerError(GraphRuntimeError):
    """A field's reducer rejected a node's update; the reducer's error is ``__cause__``."""

    category = "reducer_error"

    def __init__(
        self, message: str, *, field: str, reducer_name: str, **kw: Any
    ) -> None:
        super().__init__(message, **kw)
        self.field = field
        self.reducer_name = reducer_name


class StateValidationError(GraphRuntimeError, TypeError):
    """State (or an update) does not fit the schema: unknown field or wrong type."""

    category = "state_validation_error"

    def __init__(self, message: str, *, fields: Sequence[str] = (), **kw: Any) -> None:
        super().__init__(message, **kw)
        self.fields = tuple(fields)


class StepLimitExceeded(GraphRuntimeError):
    """A graph took more steps than the invocation's ``step_limit`` (a routing loop?).

    ``limit`` is the limit; ``last_nodes`` the names of the last nodes run,
    oldest first.
    """

    category = "step_limit_exceeded"
    transient = False
    passes_through = True

    def __init__(self, message: str, *, limit: int, last_nodes: tuple[str, ...], **kw: Any):
        super().__init__(message, **kw)
        self.limit = limit
        self.last_nodes = last_nodes
