"""``graph.to_mermaid()`` against golden text: nodes, static and conditional edges
(declared destinations, undeclared routes), nested subgraphs, fan-out and
parallel-branch nodes."""

from __future__ import annotations

from typing import Annotated, Any

import pytest

from openarmature_nodes.graph import END, Branch, GraphBuilder, State, append
from openarmature_nodes.llm import OpenAIProvider
from openarmature_nodes.nodes import build_agent


class S(State):
    n: int = 0
    items: list[int] = []
    out: Annotated[list[int], append] = []
    a: int = 0
    b: int = 0


class Item(State):
    item: int = 0
    result: int = 0


async def noop(state: Any) -> None:
    return None


def item_graph() -> Any:
    return (
        GraphBuilder(Item).add_node("double", noop).add_node("check", noop)
        .add_edge("double", "check").set_entry("double").compile()
    )


def test_loop_with_declared_and_undeclared_routes() -> None:
    graph = (
        GraphBuilder(S)
        .add_node("plan", noop)
        .add_node("act", noop)
        .add_node("odd name!", noop)
        .add_conditional_edge("plan", lambda s: "act", destinations=("act", END))
        .add_conditional_edge("act", lambda s: "plan")
        .set_entry("plan")
        .compile()
    )
    assert graph.to_mermaid() == '''\
flowchart TD
    __start__([start])
    plan["plan"]
    act["act"]
    odd_name_["odd name!"]
    __end__([end])
    __start__ --> plan
    plan -.-> act
    plan -.-> __end__
    act__any{{"any node"}}
    act -.-> act__any
    odd_name_ --> __end__
'''


def test_subgraph_fan_out_and_parallel_branches_nest() -> None:
    async def call_branch(state: Any) -> None:
        return None

    graph = (
        GraphBuilder(S)
        .add_subgraph("prep", item_graph())
        .add_fan_out_node("fan", item_graph(), items_field="items", item_field="item",
                          collect_field="result", target_field="out")
        .add_fan_out_node("fan_fn", lambda s: noop(s), count=3, collect_field="result",
                          target_field="out")
        .add_parallel_branches_node(
            "both", {"left": Branch(subgraph=item_graph()), "right": call_branch}
        )
        .add_edge("prep", "fan")
        .add_edge("fan", "fan_fn")
        .add_edge("fan_fn", "both")
        .add_edge("both", END)
        .set_entry("prep")
        .compile()
    )
    assert graph.to_mermaid(direction="LR") == '''\
flowchart LR
    __start__([start])
    subgraph prep ["prep"]
        prep____start__([start])
        prep__double["double"]
        prep__check["check"]
        prep____end__([end])
        prep____start__ --> prep__double
        prep__double --> prep__check
        prep__check --> prep____end__
    end
    subgraph fan ["fan (fan-out over items)"]
        fan____start__([start])
        fan__double["double"]
        fan__check["check"]
        fan____end__([end])
        fan____start__ --> fan__double
        fan__double --> fan__check
        fan__check --> fan____end__
    end
    fan_fn[["fan_fn (fan-out count 3)"]]
    subgraph both ["both (parallel)"]
        subgraph both__left ["branch left"]
            both__left____start__([start])
            both__left__double["double"]
            both__left__check["check"]
            both__left____end__([end])
            both__left____start__ --> both__left__double
            both__left__double --> both__left__check
            both__left__check --> both__left____end__
        end
        both__right[["branch right"]]
    end
    __end__([end])
    __start__ --> prep
    prep --> fan
    fan --> fan_fn
    fan_fn --> both
    both --> __end__
'''


def test_the_agent_chart() -> None:
    agent = build_agent(OpenAIProvider("http://127.0.0.1:9", "m"), [])
    assert agent.to_mermaid() == '''\
flowchart TD
    __start__([start])
    llm["llm"]
    tools["tools"]
    __end__([end])
    __start__ --> llm
    llm -.-> tools
    llm -.-> __end__
    tools --> llm
'''


def test_labels_are_quoted_and_directions_checked() -> None:
    graph = GraphBuilder(S).add_node('say "hi"', noop).set_entry('say "hi"').compile()
    assert 'say__hi_["say #quot;hi#quot;"]' in graph.to_mermaid()
    with pytest.raises(ValueError, match="direction"):
        graph.to_mermaid(direction="sideways")
