"""The two things failure isolation needs from the graph engine, looked up lazily.

A node-level middleware does not know which node it wraps or where the
observers are. While the engine runs a node it knows both; this module asks it,
through ``openarmature_nodes.graph``'s optional hooks:

- ``current_lineage()``: an object with ``invocation_id``, ``namespace``,
  ``attempt_index``, ``fan_out_index`` and ``branch_name`` (``None`` when the
  run is not observed);
- ``emit_framework_event(event)``: put a framework event on the observer queue
  of the running invocation (``False`` when nobody listens).

Outside a graph run (a unit test calling the middleware directly), or with an
engine that offers no hooks, there is nowhere to deliver: the event is dropped
and the lineage is empty (``attempt_index`` still comes from the context).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from openarmature_nodes.onion import attempt_index

from .isolation import Lineage

__all__ = ["current_emitter", "current_lineage"]


def _graph_hook(name: str) -> Callable[..., Any] | None:
    try:
        graph = importlib.import_module("openarmature_nodes.graph")
    except ImportError:  # pragma: no cover - the engine ships with the package
        return None
    hook = getattr(graph, name, None)
    return hook if callable(hook) else None


def current_emitter() -> Callable[[Any], Any] | None:
    """The engine's ``emit_framework_event``, or ``None`` without one."""
    return _graph_hook("emit_framework_event")


def current_lineage() -> Lineage:
    """The running node's lineage, as a :class:`Lineage` (empty outside a run)."""
    hook = _graph_hook("current_lineage")
    raw = hook() if hook is not None else None
    if raw is None:
        return Lineage(attempt_index=attempt_index.get())
    if isinstance(raw, Lineage):
        return raw
    return Lineage(
        tuple(getattr(raw, "namespace", ())),
        int(getattr(raw, "attempt_index", attempt_index.get())),
        getattr(raw, "fan_out_index", None),
        getattr(raw, "branch_name", None),
        getattr(raw, "invocation_id", None),
    )
