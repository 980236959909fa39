"""The engine's extension surface: what new node kinds and engine tooling build on.

:mod:`openarmature_nodes.graph` exports what users build and observe graphs
with. This module (as ``trio.lowlevel`` is to ``trio``) holds the pieces a
node kind or an engine extension needs and an application does not:

- :class:`NodeKind`, :class:`Inner`, :class:`FunctionNode`,
  :class:`SubgraphNode`: the node-kind protocol and the two basic kinds;
- :class:`Level`, :class:`Step`: the per-invocation records a kind uses to run
  a nested graph and report its steps;
- :class:`Schema`, :class:`FieldSpec`, :func:`schema_of`: a state class's
  compiled field plan;
- :class:`Subscription`, :func:`subscribe`: observer registrations.

The run context that middleware reads (attempt index, lineage, the event
emitter) is :mod:`openarmature_nodes.context`.
"""

from ._run import Level, Step
from .nodes import FunctionNode, Inner, NodeKind, SubgraphNode
from .observers import Subscription, subscribe
from .state import FieldSpec, Schema, schema_of

__all__ = [
    "FieldSpec",
    "FunctionNode",
    "Inner",
    "Level",
    "NodeKind",
    "Schema",
    "Step",
    "SubgraphNode",
    "Subscription",
    "schema_of",
    "subscribe",
]
