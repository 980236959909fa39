"""Categorized errors of the distributed fan-out executor.

Every error here has a ``category`` (the string a ``collect`` error record and
the engine's failure events carry) and says what to do about it.
"""

from __future__ import annotations

__all__ = [
    "ClusterUnavailable",
    "DistributedError",
    "NotImportable",
    "RemoteInstanceError",
    "WorkerRuntimeError",
]


class DistributedError(Exception):
    """Base of the distributed executor's own failures (never an instance's)."""

    category = "distributed_error"


class NotImportable(DistributedError, TypeError):
    """Something the workers must import by name cannot be (a class or factory
    defined in ``__main__``, a lambda, a closure). Raised before anything is sent."""

    category = "distributed_not_importable"


class ClusterUnavailable(DistributedError):
    """The cluster went away (scheduler connection lost, client closed) or made
    no progress within the executor's ``stall_timeout``. Outstanding work is
    cancelled before this is raised; nothing is left waiting."""

    category = "distributed_cluster_unavailable"


class WorkerRuntimeError(DistributedError):
    """A chunk failed on a worker outside any instance: the worker runtime could
    not be set up (factory raised, plugin missing), or a chunk kept losing its
    worker more than ``max_chunk_retries`` times."""

    category = "distributed_worker_runtime"


class RemoteInstanceError(Exception):
    """An instance's failure on a worker whose exception could not be pickled
    back: its category and message survive, the exception object does not."""

    def __init__(self, message: str, *, category: str, type_name: str) -> None:
        super().__init__(message)
        self.category = category
        self.type_name = type_name
