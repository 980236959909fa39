"""Fan-out instances on a Dask cluster (optional extra ``dask``).

Install with ``pip install 'openarmature-nodes[dask]'``. The pieces:

- :class:`DaskExecutor` (:mod:`.executor`): the fan-out executor; pass it as a
  fan-out node's ``executor=``. Same results, order and error policies as a
  local run (pipeline-utilities §9); delivery is at least once (an LLM call may
  be repeated after a worker loss), results exactly once.
- :class:`WorkerRuntime` (:mod:`.runtime`): the worker plugin that builds the
  subgraph once per worker from an importable factory, on asyncio or trio.
- :class:`FleetInflightLimit`, :class:`FleetCooldown` (:mod:`.fleet`): optional
  cluster-wide backpressure per endpoint.
- errors (:mod:`.errors`): :class:`NotImportable` (refused before dispatch),
  :class:`ClusterUnavailable`, :class:`WorkerRuntimeError`.

Only this package imports ``distributed``; the graph engine's seam is
:mod:`openarmature_nodes.graph.executors` and knows nothing of Dask.
"""

from __future__ import annotations

from .errors import (
    ClusterUnavailable,
    DistributedError,
    NotImportable,
    RemoteInstanceError,
    WorkerRuntimeError,
)
from .executor import DaskExecutor, DispatchStats
from .fleet import FleetCooldown, FleetInflightLimit
from .runtime import WorkerRuntime

__all__ = [
    "ClusterUnavailable",
    "DaskExecutor",
    "DispatchStats",
    "DistributedError",
    "FleetCooldown",
    "FleetInflightLimit",
    "NotImportable",
    "RemoteInstanceError",
    "WorkerRuntime",
    "WorkerRuntimeError",
]
