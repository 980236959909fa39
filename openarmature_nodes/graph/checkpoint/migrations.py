"""State migrations (pipeline-utilities §10.12): bridging ``schema_version`` changes on resume.

A migration is a pure function from a saved state at ``from_version`` (a plain
dict, independent of the current state class) to the state at
``to_version``. Register them on the builder::

    builder.with_state_migration("v1", "v2", lambda s: {**s, "lang": "en"})

On resume, a record whose ``schema_version`` differs from the graph's state
class's is migrated along the shortest chain of registered migrations (BFS);
the result is then converted into the current class. Errors, in the order
they are checked: ``checkpoint_state_migration_chain_ambiguous`` (a duplicate
pair at registration, or two shortest chains at compile time),
``checkpoint_state_migration_missing`` (no chain),
``checkpoint_state_migration_failed`` (a function raised; later ones do not
run), ``checkpoint_record_invalid`` (the migrated state does not fit).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from itertools import pairwise
from typing import Any

from .errors import (
    CheckpointStateMigrationChainAmbiguous,
    CheckpointStateMigrationFailed,
    CheckpointStateMigrationMissing,
)

__all__ = ["Migration", "MigrationRegistry"]

Migration = Callable[[dict[str, Any]], dict[str, Any]]
"""``(state at from_version as a dict) -> state at to_version as a dict``."""


class MigrationRegistry:
    """The migrations registered on one graph, keyed by ``(from_version, to_version)``."""

    __slots__ = ("_edges",)

    def __init__(self) -> None:
        self._edges: dict[tuple[str, str], Migration] = {}

    def __len__(self) -> int:
        return len(self._edges)

    def register(self, from_version: str, to_version: str, fn: Migration) -> None:
        """Add one migration; a second one for the same pair is ambiguous."""
        if not callable(fn):
            raise TypeError(f"migration {from_version!r} -> {to_version!r} must be callable")
        if (from_version, to_version) in self._edges:
            raise CheckpointStateMigrationChainAmbiguous(
                f"two state migrations registered for {from_version!r} -> {to_version!r}; "
                "keep one",
                from_version=from_version, to_version=to_version,
            )
        self._edges[(from_version, to_version)] = fn

    def describe(self) -> str:
        """The registered pairs, sorted: ``"v1->v2, v2->v3"`` (``"(none)"`` when empty)."""
        return ", ".join(f"{a}->{b}" for a, b in sorted(self._edges)) or "(none)"

    def _out(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for a, b in sorted(self._edges):
            out.setdefault(a, []).append(b)
        return out

    def _bfs(self, start: str) -> tuple[dict[str, int], dict[str, int], dict[str, str]]:
        """Distance, number of shortest paths and a predecessor per reachable version."""
        out = self._out()
        dist, count, prev = {start: 0}, {start: 1}, {}
        queue = deque([start])
        while queue:
            v = queue.popleft()
            for w in out.get(v, ()):
                if w not in dist:
                    dist[w], count[w], prev[w] = dist[v] + 1, count[v], v
                    queue.append(w)
                elif dist[w] == dist[v] + 1:
                    count[w] += count[v]
        return dist, count, prev

    def check_unambiguous(self) -> None:
        """Raise ``checkpoint_state_migration_chain_ambiguous`` if any version pair has
        two distinct shortest chains (run when the graph compiles)."""
        for start in sorted({a for a, _ in self._edges}):
            _, count, _ = self._bfs(start)
            for target, n in sorted(count.items()):
                if n > 1:
                    raise CheckpointStateMigrationChainAmbiguous(
                        f"state migrations give {n} distinct shortest chains from {start!r} to "
                        f"{target!r}; leave one canonical path",
                        from_version=start, to_version=target,
                    )

    def migrate(self, state: dict[str, Any], from_version: str, to_version: str) -> dict[str, Any]:
        """Run the chain from ``from_version`` to ``to_version`` over ``state``."""
        dist, count, prev = self._bfs(from_version)
        if to_version not in dist:
            raise CheckpointStateMigrationMissing(
                f"the checkpoint was saved with schema_version {from_version!r} but the graph's "
                f"state is {to_version!r}, and no chain of registered migrations connects them "
                f"(registered: {self.describe()}); register one with "
                "GraphBuilder.with_state_migration()",
                from_version=from_version, to_version=to_version,
                registered_migrations_count=len(self._edges),
                registry_description=self.describe(),
            )
        if count[to_version] > 1:
            raise CheckpointStateMigrationChainAmbiguous(
                f"{count[to_version]} distinct shortest migration chains lead from "
                f"{from_version!r} to {to_version!r}",
                from_version=from_version, to_version=to_version,
            )
        chain = [to_version]
        while chain[-1] != from_version:
            chain.append(prev[chain[-1]])
        chain.reverse()
        for a, b in pairwise(chain):
            try:
                state = self._edges[(a, b)](state)
            except Exception as exc:
                raise CheckpointStateMigrationFailed(
                    f"state migration {a!r} -> {b!r} raised {type(exc).__name__}: {exc}",
                    from_version=a, to_version=b,
                ) from exc
        return state
