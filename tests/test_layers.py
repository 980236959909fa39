"""The layers of ARCHITECTURE.md import downward only.

Every ``import`` / ``from ... import`` statement of the library (type-checking
imports included: they are dependencies too) is resolved to the package module
it names, and each module's layer may import only the layers below it:

    observability   (anything below)
    nodes           graph, llm, middleware
    middleware      llm, the ground floor
    graph | llm     the ground floor; never each other
    retrying        the ground floor only
    ground floor    context, onion, events (nothing of the package); metadata (context, events)

So, for instance, the span middleware cannot reach the observer's modules for the
GenAI attribute mapping: the mapping lives in ``llm/genai.py``, below both.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "openarmature_nodes"

GROUND = {"context", "onion", "events", "metadata"}
RETRYING = {"retrying", "_retry_rules"}
# layer -> the layers (first component under openarmature_nodes) it may import
ALLOWED: dict[str, set[str]] = {
    "context": set(),
    "onion": set(),
    "events": set(),
    "metadata": {"context", "events"},
    "retrying": GROUND | RETRYING,
    "_retry_rules": GROUND | RETRYING,
    "graph": GROUND | RETRYING | {"graph"},
    "llm": GROUND | RETRYING | {"llm"},
    "middleware": GROUND | RETRYING | {"llm", "middleware"},
    "nodes": GROUND | RETRYING | {"graph", "llm", "middleware", "nodes"},
}
# the layers above everything the table covers (observability, testing, cli, ...)
# may import anything; they are not listed.


def _module_of(path: Path) -> tuple[str, ...]:
    """``openarmature_nodes/llm/genai.py`` -> ``("llm", "genai")``; the middleware
    folder sits at the repository top but is installed as ``openarmature_nodes.middleware``."""
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts
    if parts[0] == "middleware":
        parts = (PACKAGE, *parts)
    assert parts[0] == PACKAGE, path
    parts = parts[1:]
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imports(path: Path) -> list[tuple[int, tuple[str, ...]]]:
    """The package modules ``path`` imports, as parts under the package."""
    module = _module_of(path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, tuple[str, ...]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = tuple(alias.name.split("."))
                if parts[0] == PACKAGE and len(parts) > 1:
                    found.append((node.lineno, parts[1:]))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module if is_package else module[:-1]
                up = node.level - 1
                base = base[: len(base) - up] if up else base
                target = (*base, *(node.module.split(".") if node.module else ()))
            elif node.module and node.module.split(".")[0] == PACKAGE:
                target = tuple(node.module.split(".")[1:])
            else:
                continue
            if target:
                found.append((node.lineno, target))
            else:  # `from openarmature_nodes import x` / `from .. import x`
                found.extend((node.lineno, (a.name,)) for a in node.names)
    return found


def _library_files() -> list[Path]:
    files = [*(ROOT / PACKAGE).rglob("*.py"), *(ROOT / "middleware").rglob("*.py")]
    # openarmature_nodes/middleware is a link to middleware/: take the real files once
    return sorted(p for p in files if not p.is_relative_to(ROOT / PACKAGE / "middleware"))


def test_layers_import_downward_only() -> None:
    offenders: list[str] = []
    checked = 0
    for path in _library_files():
        module = _module_of(path)
        if not module:
            continue  # the package's own __init__ (the public facade) sits on top
        allowed = ALLOWED.get(module[0])
        if allowed is None:
            continue
        checked += 1
        for line, target in _imports(path):
            if target[0] not in allowed and target[0] != module[0]:
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {'.'.join(target)}")
    assert checked > 50  # the table covers the library, not a handful of files
    assert offenders == []


def test_the_genai_mapping_is_one_module_below_its_two_users() -> None:
    spans = _imports(ROOT / "middleware" / "spans.py")
    otel = _imports(ROOT / PACKAGE / "observability" / "otel.py")
    assert ("llm", "genai") in {t for _, t in spans}
    assert ("llm", "genai") in {t for _, t in otel}
    assert not (ROOT / PACKAGE / "observability" / "genai.py").exists()


def test_the_resolver_reads_relative_imports() -> None:
    found = {t for _, t in _imports(ROOT / PACKAGE / "graph" / "nodes.py")}
    assert ("graph", "_run") in found and ("graph", "state") in found
