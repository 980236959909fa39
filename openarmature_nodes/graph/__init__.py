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

The engine knows nothing of LLMs: an LLM call is just a node.
"""

from openarmature_nodes.context import Lineage, current_lineage, emit_framework_event
from openarmature_nodes.onion import Middleware, compose

from ._run import Level, Step, current_correlation_id, current_invocation_id
from .builder import GraphBuilder
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
    UnreachableNode,
)
from .events import (
    FanOutConfig,
    InvocationEvent,
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
from .nodes import FunctionNode, Inner, NodeKind, SubgraphNode
from .observers import DrainSummary, Observer, ObserverErrorWarning, Subscription, subscribe
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
from .state import FieldSpec, Schema, State, schema_of

__all__ = [
    "FanOut",
    "FanOutCountModeAmbiguous",
    "FanOutDegradedUpdateMissingCollectField",
    "FanOutEmpty",
    "FanOutError",
    "FanOutFieldNotList",
    "FanOutInvalidConcurrency",
    "FanOutInvalidCount",
    "FanOutNullSlotWarning",
    "Branch",
    "ParallelBranches",
    "ParallelBranchesInvalidBranchSpec",
    "ParallelBranchesNoBranches",
    "ParallelBranchFailed",
    "END",
    "CompiledGraph",
    "ConflictingProjectionForms",
    "ConflictingReducers",
    "DanglingEdge",
    "DrainSummary",
    "EdgeException",
    "FanOutConfig",
    "FieldSpec",
    "FunctionNode",
    "GraphBuilder",
    "GraphCompileError",
    "GraphCompileWarning",
    "GraphRuntimeError",
    "Inner",
    "Level",
    "Lineage",
    "MappingReferencesUndeclaredField",
    "Middleware",
    "MultipleOutgoingEdges",
    "NoDeclaredEntry",
    "NodeError",
    "InvocationEvent",
    "NodeEvent",
    "NodeException",
    "NodeKind",
    "Observer",
    "ObserverErrorWarning",
    "ObserverEvent",
    "ParallelBranchesConfig",
    "Reducer",
    "ReducerConfigurationInvalid",
    "ReducerError",
    "RoutingError",
    "Schema",
    "State",
    "StateValidationError",
    "Step",
    "SubgraphNode",
    "Subscription",
    "UnreachableNode",
    "append",
    "bounded_append",
    "compose",
    "concat_flatten",
    "current_invocation_id",
    "current_correlation_id",
    "current_lineage",
    "dedupe_append",
    "emit_framework_event",
    "last_write_wins",
    "merge",
    "merge_all",
    "merge_by_key",
    "reducer",
    "schema_of",
    "subscribe",
]
