"""Durable runs: checkpoints, resume and suspension records (pipeline-utilities §10).

Register a :class:`Checkpointer` on the builder (``with_checkpointer``) and
the engine saves a :class:`CheckpointRecord` after every completed node;
``invoke(..., resume_invocation=id)`` continues a crashed or failed run from
its last save, re-running only what had not completed (fan-out instances
included). The same store holds suspended invocations (see
:mod:`openarmature_nodes.graph.suspension`).

Backends: :class:`InMemoryCheckpointer` (not durable), :class:`SQLiteCheckpointer`
(the embedded default) and, with the ``postgres`` extra,
``openarmature_nodes.graph.checkpoint.postgres.PostgresCheckpointer`` (several
processes or machines sharing one store).
"""

from .codec import Encoding
from .errors import (
    CheckpointError,
    CheckpointNotFound,
    CheckpointRecordInvalid,
    CheckpointSaveFailed,
    CheckpointStateMigrationChainAmbiguous,
    CheckpointStateMigrationFailed,
    CheckpointStateMigrationMissing,
    SuspensionError,
    SuspensionInUnsupportedContext,
    SuspensionPersistenceFailed,
    SuspensionRecordInvalid,
    SuspensionResumePayloadInvalid,
)
from .memory import InMemoryCheckpointer
from .migrations import Migration, MigrationRegistry
from .protocol import Checkpointer
from .records import (
    CheckpointFilter,
    CheckpointRecord,
    CheckpointSaved,
    CheckpointSummary,
    FanOutInstanceProgress,
    FanOutLineageLink,
    FanOutProgress,
    NodePosition,
    RecordStatus,
    SignalDescriptor,
)
from .sqlite import SQLiteCheckpointer

__all__ = [
    "CheckpointError",
    "CheckpointFilter",
    "CheckpointNotFound",
    "CheckpointRecord",
    "CheckpointRecordInvalid",
    "CheckpointSaved",
    "CheckpointSaveFailed",
    "CheckpointStateMigrationChainAmbiguous",
    "CheckpointStateMigrationFailed",
    "CheckpointStateMigrationMissing",
    "CheckpointSummary",
    "Checkpointer",
    "Encoding",
    "FanOutInstanceProgress",
    "FanOutLineageLink",
    "FanOutProgress",
    "InMemoryCheckpointer",
    "Migration",
    "MigrationRegistry",
    "NodePosition",
    "RecordStatus",
    "SQLiteCheckpointer",
    "SignalDescriptor",
    "SuspensionError",
    "SuspensionInUnsupportedContext",
    "SuspensionPersistenceFailed",
    "SuspensionRecordInvalid",
    "SuspensionResumePayloadInvalid",
]
