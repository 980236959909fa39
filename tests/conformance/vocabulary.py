"""The directive vocabulary the conformance adapters interpret: one table per capability.

conformance-adapter §5 enumerates the canonical vocabulary (directives,
expectation keys, mock-input forms, canonical invariant predicates, value
matchers). ``tests/conformance/test_vocabulary.py`` extracts those names from
the spec text and fails, listing them, for any name no adapter has registered
here. So every adapter module registers what it interprets, in one call per
table, at import::

    from tests.conformance.vocabulary import register, register_resolver

    register("observability", NODE_DIRECTIVES)          # a live dict / set: read at check time
    register("observability", {"otel_spans", "metrics"})
    register_resolver("graph-engine", resolves)         # grammar-based names (predicates)

- ``register(table, names)`` keeps a *reference* to ``names`` (a dict's keys or a
  set), so a table another module extends later (``NODE_DIRECTIVES.update(...)``)
  is read as it is when the vocabulary is checked.
- ``register_resolver(table, fn)``: ``fn(name) -> bool`` for names interpreted by
  grammar rather than listed (e.g. ``<node>_node_events_count``); the vocabulary
  test probes spec templates such as ``<node_name>_node_events_count`` with a
  sample node name.

Tables are named after the capability (``graph-engine``, ``pipeline-utilities``,
``llm-provider``, ``observability``, ``checkpoint``, ``suspension``) or after a
shared concern (``value-matchers``, ``carries``). A name registered here must be
interpreted for real: an own case under ``tests/conformance/own_cases/`` should
exercise it when no spec fixture at hand does.

Every module under ``tests/conformance/adapters/`` is imported by
:func:`load_adapters`, so a new adapter module registers itself just by existing.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Collection, Mapping

__all__ = ["known", "load_adapters", "register", "register_resolver", "tables"]

_TABLES: dict[str, list[Collection[str]]] = {}
_RESOLVERS: dict[str, list[Callable[[str], bool]]] = {}


def register(table: str, names: Collection[str] | Mapping[str, object]) -> None:
    """Add ``names`` (kept by reference) to ``table``."""
    _TABLES.setdefault(table, []).append(names)


def register_resolver(table: str, resolver: Callable[[str], bool]) -> None:
    """Add a grammar-based name resolver to ``table``."""
    _RESOLVERS.setdefault(table, []).append(resolver)


def tables() -> dict[str, frozenset[str]]:
    """Every table's listed names, as they are now."""
    return {t: frozenset(n for src in srcs for n in src) for t, srcs in _TABLES.items()}


def known(name: str) -> str | None:
    """The table that interprets ``name``, or ``None``."""
    for table, names in tables().items():
        if name in names:
            return table
    for table, resolvers in _RESOLVERS.items():
        if any(r(name) for r in resolvers):
            return table
    return None


def load_adapters() -> None:
    """Import every adapter module (each registers its names)."""
    from . import adapters

    for info in pkgutil.iter_modules(adapters.__path__):
        importlib.import_module(f"{adapters.__name__}.{info.name}")
