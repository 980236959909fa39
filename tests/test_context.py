"""The run context module (:mod:`openarmature_nodes.context`) and the layering it keeps.

The context is the ground floor the engine and the middleware share; these
tests pin what it answers outside a run, that it imports nothing of the
package, and that the library reaches its own modules only through imports
(no ``importlib`` lookups that hide a dependency from mypy and the import graph).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from openarmature_nodes import context
from openarmature_nodes.context import (
    Lineage,
    attempt_index,
    current_lineage,
    emit_framework_event,
)
from openarmature_nodes.graph import END, GraphBuilder, State
from openarmature_nodes.middleware import FailureIsolationEvent, FailureIsolationMiddleware

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = [ROOT / "openarmature_nodes", ROOT / "middleware"]


def test_outside_a_run_there_is_no_lineage_and_events_are_dropped() -> None:
    assert current_lineage() is None
    assert emit_framework_event(object()) is False
    assert attempt_index.get() == 0


def test_context_imports_nothing_of_the_package() -> None:
    code = (
        "import sys; import openarmature_nodes.context; "
        "print(sorted(m for m in sys.modules if m.startswith('openarmature_nodes.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['openarmature_nodes.context']"


def _library_files() -> list[Path]:
    files = [p for root in LIBRARY for p in root.rglob("*.py")]
    # openarmature_nodes/middleware is the link to middleware/: read each file once.
    return sorted({p.resolve() for p in files})


def test_no_importlib_lookup_of_our_own_modules() -> None:
    offenders = []
    for path in _library_files():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name not in {"import_module", "__import__"}:
                continue
            arg = node.args[0] if node.args else None
            target = arg.value if isinstance(arg, ast.Constant) else None
            if not (isinstance(target, str) and not target.startswith("openarmature_nodes")):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


class S(State):
    out: str = ""


@pytest.mark.anyio
async def test_failure_isolation_reads_lineage_and_emitter_from_the_context() -> None:
    async def boom(state: S) -> dict[str, str]:
        raise RuntimeError("no")

    isolate = FailureIsolationMiddleware(degraded_update={"out": "degraded"}, event_name="site")
    graph = (
        GraphBuilder(S).add_node("n", boom, middleware=[isolate]).add_edge("n", END)
        .set_entry("n").compile()
    )
    seen: list[object] = []
    final = await graph.invoke(S(), observers=[seen.append], invocation_id="inv-1")
    await graph.drain()
    assert final.out == "degraded"
    events = [e for e in seen if isinstance(e, FailureIsolationEvent)]
    assert [e.lineage for e in events] == [
        Lineage(invocation_id="inv-1", namespace=("n",), fan_out_index_chain=(),
                branch_name_chain=())
    ]


def test_the_one_lineage_type_is_shared() -> None:
    from openarmature_nodes import graph, middleware

    assert middleware.Lineage is context.Lineage
    assert not hasattr(graph, "Lineage") and not hasattr(graph, "NodeLineage")
