"""``InMemoryCheckpointer``: records in a dict. **Not durable**: a crash loses them.

For tests, short runs and development. It keeps the engine's live record
(states are the graph's own frozen state objects), so it accepts any state
shape and costs one dict store per save; for the same reason it cannot hand
a class-independent state to state migrations (``supports_migration`` is
``False``: a version mismatch with migrations registered raises
``checkpoint_record_invalid``, §10.12.1). Records seeded as builtins (dict
states) load and convert like a durable backend's.

``fan_out_batch_every=N`` buffers fan-out-internal saves and writes every
N-th (§10.11.4): a crash loses up to N-1 instance completions, which re-run on
resume. Any other save writes at once, and so does ``flush()``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._common import SaveBuffer
from .records import CheckpointFilter, CheckpointRecord, CheckpointSummary, summarize

__all__ = ["InMemoryCheckpointer"]


class InMemoryCheckpointer:
    """A dict of the latest record per invocation id (see the module documentation)."""

    backend = "in_memory"
    supports_migration = False

    def __init__(self, *, fan_out_batch_every: int | None = None) -> None:
        self._saves = SaveBuffer(fan_out_batch_every)
        self._records: dict[str, CheckpointRecord] = {}

    async def save(
        self, invocation_id: str, record: CheckpointRecord, *, fan_out_internal: bool = False
    ) -> None:
        """Store ``record`` (or buffer it: see ``fan_out_batch_every``)."""
        if self._saves.hold(invocation_id, record, fan_out_internal):
            return
        self._records[invocation_id] = record

    def flush(self) -> None:
        """Write every buffered fan-out-internal save."""
        self._records.update(self._saves.pending)
        self._saves.pending.clear()

    def discard_buffered(self) -> None:
        """Drop the buffered saves, as a crash would (for crash tests)."""
        self._saves.pending.clear()

    async def load(self, invocation_id: str) -> CheckpointRecord | None:
        """The latest written record (buffered saves are not visible)."""
        return self._records.get(invocation_id)

    async def list(self, filter: CheckpointFilter | None = None) -> Sequence[CheckpointSummary]:
        """Every stored invocation passing ``filter``, oldest save first."""
        out = [summarize(r) for r in self._records.values()]
        if filter is not None:
            out = [s for s in out if filter.matches(s)]
        return sorted(out, key=lambda s: s.last_saved_at)

    async def delete(self, invocation_id: str) -> None:
        """Forget ``invocation_id`` (no error when unknown)."""
        self._records.pop(invocation_id, None)
        self._saves.pending.pop(invocation_id, None)
