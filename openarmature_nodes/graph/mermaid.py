"""``graph.to_mermaid()``: a compiled graph drawn as a Mermaid flowchart.

Paste the text into any Mermaid renderer (GitHub renders fenced ``mermaid``
blocks). What is drawn:

- every node, in declaration order, as a box labelled with its name; the
  run's start and end as ``start`` / ``end`` terminals;
- a static edge as a solid arrow; a node without an outgoing edge as a solid
  arrow to ``end`` (the run ends after it);
- a conditional edge as dashed arrows to each destination declared with
  ``add_conditional_edge(..., destinations=...)``; an undeclared route as one
  dashed arrow to a ``any node`` marker, since it may go anywhere;
- a subgraph node as a nested block holding the subgraph's own chart;
- a fan-out node as a block marked ``fan-out`` (with its items field,
  count field or count, and the instance subgraph inside), or, for an instance
  function, a subroutine box marked ``fan-out``;
- a parallel-branches node as a block marked ``parallel`` with one nested
  block per branch (a subgraph's chart, or a box for a call branch).

Node ids are the node names with anything but letters, digits and ``_``
replaced, prefixed by the enclosing node's id inside nested blocks; labels
are quoted, so any node name is safe.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .compiled import CompiledGraph

__all__ = ["to_mermaid"]

_DIRECTIONS = frozenset(("TD", "TB", "BT", "LR", "RL"))


def to_mermaid(graph: CompiledGraph[Any], *, direction: str = "TD") -> str:
    """The Mermaid ``flowchart`` text of ``graph`` (see the module docstring)."""
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {sorted(_DIRECTIONS)}, got {direction!r}")
    out = _Writer()
    out.line(0, f"flowchart {direction}")
    _graph(out, graph, prefix="", depth=1)
    return "\n".join(out.lines) + "\n"


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.used: set[str] = set()

    def line(self, depth: int, text: str) -> None:
        self.lines.append("    " * depth + text)

    def ident(self, prefix: str, name: str) -> str:
        base = prefix + (re.sub(r"[^0-9A-Za-z_]", "_", name) or "_")
        ident, n = base, 1
        while ident in self.used:
            n += 1
            ident = f"{base}_{n}"
        self.used.add(ident)
        return ident


def _label(text: str) -> str:
    return '"' + text.replace('"', "#quot;") + '"'


def _graph(out: _Writer, graph: CompiledGraph[Any], *, prefix: str, depth: int) -> None:
    start = out.ident(prefix, "__start__")
    end = out.ident(prefix, "__end__")
    out.line(depth, f"{start}([start])")
    ids: dict[str, str] = {}
    nodes = graph._nodes
    for name in nodes:
        ids[name] = out.ident(prefix, name)
    for name, node in nodes.items():
        _node(out, name, node.kind, ids[name], depth)
    out.line(depth, f"{end}([end])")
    out.line(depth, f"{start} --> {ids[graph._entry.name]}")
    for name, node in nodes.items():
        src = ids[name]
        if node.route is not None:
            if node.destinations is None:
                marker = out.ident(prefix, f"{name}__any")
                out.line(depth, f"{marker}{{{{{_label('any node')}}}}}")
                out.line(depth, f"{src} -.-> {marker}")
            else:
                for dest in node.destinations:
                    target = ids[dest] if isinstance(dest, str) and dest in ids else end
                    out.line(depth, f"{src} -.-> {target}")
        elif node.next is not None:
            out.line(depth, f"{src} --> {ids[node.next.name]}")
        else:
            out.line(depth, f"{src} --> {end}")


def _node(out: _Writer, name: str, kind: Any, ident: str, depth: int) -> None:
    from .fanout import FanOut
    from .nodes import SubgraphNode
    from .parallel import ParallelBranches

    if isinstance(kind, SubgraphNode):
        out.line(depth, f"subgraph {ident} [{_label(name)}]")
        _graph(out, kind.graph, prefix=f"{ident}__", depth=depth + 1)
        out.line(depth, "end")
    elif isinstance(kind, FanOut):
        if kind.items_field is not None:
            over = f"over {kind.items_field}"
        elif kind.count_field is not None:
            over = f"count from {kind.count_field}"
        else:
            over = f"count {kind.count}" if kind.count is not None else ""
        label = f"{name} (fan-out {over})" if over else f"{name} (fan-out)"
        if kind.graph is None:
            out.line(depth, f"{ident}[[{_label(label)}]]")
            return
        out.line(depth, f"subgraph {ident} [{_label(label)}]")
        _graph(out, kind.graph, prefix=f"{ident}__", depth=depth + 1)
        out.line(depth, "end")
    elif isinstance(kind, ParallelBranches):
        out.line(depth, f"subgraph {ident} [{_label(f'{name} (parallel)')}]")
        for branch_name, branch in kind.branches.items():
            bid = out.ident(f"{ident}__", branch_name)
            label = _label(f"branch {branch_name}")
            if branch.subgraph is not None:
                out.line(depth + 1, f"subgraph {bid} [{label}]")
                _graph(out, branch.subgraph, prefix=f"{bid}__", depth=depth + 2)
                out.line(depth + 1, "end")
            else:
                out.line(depth + 1, f"{bid}[[{label}]]")
        out.line(depth, "end")
    else:
        out.line(depth, f"{ident}[{_label(name)}]")
