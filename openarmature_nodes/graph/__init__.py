"""The typed graph engine: state, reducers, nodes, edges, subgraphs and observers.

The whole API in one example::

    from typing import Annotated
    from openarmature_nodes.graph import END, GraphBuilder, State, append

    class Loop(State):
        turns: int = 0
        log: Annotated[list[str], append] = []

    async def work(state: Loop) -> dict:
        return {"turns": state.turns + 1, "log": [f"turn {state.turns}"]}

    graph = (
        GraphBuilder(Loop)
        .add_node("work", work)
        .add_conditional_edge("work", lambda s: "work" if s.turns < 3 else END)
        .set_entry("work")
        .compile()
    )
    final = await graph.invoke(Loop())   # Loop(turns=3, log=[...])

Observers (``graph.attach(fn)`` or ``invoke(..., observers=[fn])``) receive
:class:`NodeEvent` records off the execution path; see :mod:`.observers` for
where delivery runs and how ``drain`` bounds it.

The engine knows nothing of LLMs: an LLM call is just a node. What new node
kinds and engine tooling build on (node-kind protocol, run records, schemas,
subscriptions) is in :mod:`.lowlevel`; the run context middleware reads is
:mod:`openarmature_nodes.context`.
"""

from openarmature_nodes.onion import Middleware

from ._run import current_invocation_id
from .builder import GraphBuilder
from .checkpoint import InMemoryCheckpointer, SQLiteCheckpointer
from .compiled import END, CompiledGraph
from .errors import (
    ConflictingProjectionForms,
    ConflictingReducers,
    DanglingEdge,
    EdgeException,
    GraphCompileError,
    GraphCompileWarning,
    GraphRuntimeError,
    MappingReferencesUndeclaredField,
    MultipleOutgoingEdges,
    NoDeclaredEntry,
    NodeException,
    ReducerConfigurationInvalid,
    ReducerError,
    RoutingError,
    StateValidationError,
    StepLimitExceeded,
    UnreachableNode,
)
from .events import (
    FanOutConfig,
    NodeError,
    NodeEvent,
    ObserverEvent,
    ParallelBranchesConfig,
)
from .fanout import (
    FanOut,
    FanOutCountModeAmbiguous,
    FanOutDegradedUpdateMissingCollectField,
    FanOutEmpty,
    FanOutError,
    FanOutFieldNotList,
    FanOutInvalidConcurrency,
    FanOutInvalidCount,
    FanOutNullSlotWarning,
)
from .observers import DrainSummary, Observer, ObserverErrorWarning
from .parallel import (
    Branch,
    ParallelBranches,
    ParallelBranchesInvalidBranchSpec,
    ParallelBranchesNoBranches,
    ParallelBranchFailed,
)
from .reducers import (
    Reducer,
    append,
    bounded_append,
    concat_flatten,
    dedupe_append,
    last_write_wins,
    merge,
    merge_all,
    merge_by_key,
    reducer,
)
from .state import State
from .suspension import GraphSuspended, Suspended, suspend

__all__ = [
    # building and running
    "END",
    "CompiledGraph",
    "GraphBuilder",
    "Middleware",
    "State",
    "current_invocation_id",
    # durable runs (the rest in .checkpoint and .suspension)
    "GraphSuspended",
    "InMemoryCheckpointer",
    "SQLiteCheckpointer",
    "Suspended",
    "suspend",
    # node kinds beyond plain functions and subgraphs
    "Branch",
    "FanOut",
    "ParallelBranches",
    # reducers
    "Reducer",
    "append",
    "bounded_append",
    "concat_flatten",
    "dedupe_append",
    "last_write_wins",
    "merge",
    "merge_all",
    "merge_by_key",
    "reducer",
    # observing
    "DrainSummary",
    "FanOutConfig",
    "NodeError",
    "NodeEvent",
    "Observer",
    "ObserverErrorWarning",
    "ObserverEvent",
    "ParallelBranchesConfig",
    # errors and warnings
    "ConflictingProjectionForms",
    "ConflictingReducers",
    "DanglingEdge",
    "EdgeException",
    "FanOutCountModeAmbiguous",
    "FanOutDegradedUpdateMissingCollectField",
    "FanOutEmpty",
    "FanOutError",
    "FanOutFieldNotList",
    "FanOutInvalidConcurrency",
    "FanOutInvalidCount",
    "FanOutNullSlotWarning",
    "GraphCompileError",
    "GraphCompileWarning",
    "GraphRuntimeError",
    "MappingReferencesUndeclaredField",
    "MultipleOutgoingEdges",
    "NoDeclaredEntry",
    "NodeException",
    "ParallelBranchFailed",
    "ParallelBranchesInvalidBranchSpec",
    "ParallelBranchesNoBranches",
    "ReducerConfigurationInvalid",
    "ReducerError",
    "RoutingError",
    "StateValidationError",
    "StepLimitExceeded",
    "UnreachableNode",
]
