"""Error categories of checkpointing (pipeline-utilities §10.10) and suspension (suspension §9).

Every runtime error is a :class:`~openarmature_nodes.graph.errors.GraphRuntimeError`
with the spec's ``category``; none is transient (``transient = False``: a
retry without a change cannot succeed). The one configuration-time category,
``checkpoint_state_migration_chain_ambiguous``, is a
:class:`~openarmature_nodes.graph.errors.GraphCompileError` raised when the
migration is registered (a duplicate pair) or the graph compiles (two
shortest chains).
"""

from __future__ import annotations

from typing import Any

from openarmature_nodes.graph.errors import GraphCompileError, GraphRuntimeError

__all__ = [
    "CheckpointError",
    "CheckpointNotFound",
    "CheckpointRecordInvalid",
    "CheckpointSaveFailed",
    "CheckpointStateMigrationChainAmbiguous",
    "CheckpointStateMigrationFailed",
    "CheckpointStateMigrationMissing",
    "SuspensionError",
    "SuspensionInUnsupportedContext",
    "SuspensionPersistenceFailed",
    "SuspensionRecordInvalid",
    "SuspensionResumePayloadInvalid",
]


class CheckpointError(GraphRuntimeError):
    """Base of the §10.10 runtime categories."""

    category = "checkpoint_error"
    transient = False
    passes_through = True
    """Raised as is through the nodes it crosses (an invocation-level failure)."""


class CheckpointNotFound(CheckpointError):
    """``invoke(resume_invocation=X)``: no record for ``X`` (or no checkpointer registered)."""

    category = "checkpoint_not_found"


class CheckpointSaveFailed(CheckpointError):
    """``Checkpointer.save`` raised; the backend's error is ``__cause__``.

    The engine raises it to the caller of ``invoke()`` at once (the choice
    §10.10 leaves open): the run stops at the node whose save failed, which
    has completed, so a resume continues after it from the last good save.
    """

    category = "checkpoint_save_failed"


class CheckpointRecordInvalid(CheckpointError):
    """The loaded record does not fit the graph: corrupt, wrong shape, a state that does
    not deserialize into the current class (after migration), or a fan-out count drift."""

    category = "checkpoint_record_invalid"


class CheckpointStateMigrationMissing(CheckpointError):
    """The record's ``schema_version`` differs from the graph's and no chain of
    registered migrations connects them (§10.12.2)."""

    category = "checkpoint_state_migration_missing"

    def __init__(
        self,
        message: str,
        *,
        from_version: str,
        to_version: str,
        registered_migrations_count: int,
        registry_description: str,
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
        self.from_version = from_version
        self.to_version = to_version
        self.registered_migrations_count = registered_migrations_count
        self.registry_description = registry_description


class CheckpointStateMigrationFailed(CheckpointError):
    """A migration function raised (its exception is ``__cause__``); later ones did not run."""

    category = "checkpoint_state_migration_failed"

    def __init__(self, message: str, *, from_version: str, to_version: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.from_version = from_version
        self.to_version = to_version


class CheckpointStateMigrationChainAmbiguous(GraphCompileError):
    """Two migrations for one ``(from, to)`` pair, or two distinct shortest chains."""

    category = "checkpoint_state_migration_chain_ambiguous"
    transient = False

    def __init__(
        self, message: str, *, from_version: str | None, to_version: str | None
    ) -> None:
        super().__init__(message)
        self.from_version = from_version
        self.to_version = to_version


class SuspensionError(GraphRuntimeError):
    """Base of the suspension §9 categories."""

    category = "suspension_error"
    transient = False
    passes_through = True


class SuspensionPersistenceFailed(SuspensionError):
    """The paused-invocation record could not be saved (or no checkpointer is registered)."""

    category = "suspension_persistence_failed"


class SuspensionRecordInvalid(SuspensionError):
    """Resume with ``signal_payload`` of an invocation that is not suspended (completed,
    still running, never existed, or already resumed)."""

    category = "suspension_record_invalid"


class SuspensionResumePayloadInvalid(SuspensionError):
    """The state with the signal payload overlaid does not fit the state schema."""

    category = "suspension_resume_payload_invalid"


class SuspensionInUnsupportedContext(SuspensionError):
    """``suspend()`` outside a node body: outside a run, in middleware, or in a
    ``collect``-mode fan-out instance / parallel branch."""

    category = "suspension_in_unsupported_context"
