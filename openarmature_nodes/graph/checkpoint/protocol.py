"""The ``Checkpointer`` protocol (pipeline-utilities §10.1).

Four async operations: ``save`` (durable when it returns, for a backend that
says it is durable), ``load`` (the latest record or ``None``), ``list`` and
``delete`` (a no-op for an unknown id). A backend also says whether it can
hand the engine a class-independent form of a saved state
(``supports_migration``, §10.12.1) and gives a short ``backend`` name for
events and error messages.

After each successful save of an observed invocation the engine emits a
:class:`~.records.CheckpointSaved` observer event (§10.8); a backend sets a
class or instance attribute ``emit_save_events = False`` to suppress it.

``save(..., fan_out_internal=True)`` marks a save fired from inside a fan-out
instance (§10.11.4): a backend MAY buffer those and MUST write everything
buffered on the next save without the flag.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .records import CheckpointFilter, CheckpointRecord, CheckpointSummary

__all__ = ["Checkpointer"]


@runtime_checkable
class Checkpointer(Protocol):
    """Where an invocation's checkpoint (and paused-invocation) records live."""

    @property
    def backend(self) -> str:
        """A short identifier of the backend (``"in_memory"``, ``"sqlite"``, ...)."""
        ...

    @property
    def supports_migration(self) -> bool:
        """Whether loaded states come back class-independent (builtins), so state
        migrations (§10.12) can run on them."""
        ...

    async def save(
        self, invocation_id: str, record: CheckpointRecord, *, fan_out_internal: bool = False
    ) -> None:
        """Persist ``record`` as the latest for ``invocation_id``."""
        ...

    async def load(self, invocation_id: str) -> CheckpointRecord | None:
        """The latest record saved for ``invocation_id``, or ``None``."""
        ...

    async def list(self, filter: CheckpointFilter | None = None) -> Sequence[CheckpointSummary]:
        """Summaries of the saved invocations passing ``filter``, oldest save first."""
        ...

    async def delete(self, invocation_id: str) -> None:
        """Remove every record of ``invocation_id`` (nothing happens for an unknown id)."""
        ...
