"""A graph with a conditional loop and a subgraph, no LLM needed.

An "agent" drafts a text, asks a reviewer subgraph to score it, and loops until
the score is good enough (or it runs out of turns). The reviewer is its own
compiled graph, used as one node; only the fields named in its projection cross
the boundary. An observer prints every node event as it is delivered.

Run:  python examples/graphs/loop_and_subgraph.py --backend trio
"""



from __future__ import annotations

import argparse
from typing import Annotated, Any

import anyio

from openarmature_nodes.graph import END, GraphBuilder, NodeEvent, State, append


# --- the reviewer subgraph: its own state, its own nodes ------------------------------------
class Review(State):
    draft: str = ""
    score: int = 0
    notes: Annotated[list[str], append] = []


async def count_words(state: Review) -> dict[str, Any]:
    words = len(state.draft.split())
    return {"score": min(10, words), "notes": [f"{words} words"]}


async def judge(state: Review) -> dict[str, Any]:
    verdict = "good" if state.score >= 6 else "too short"
    return {"notes": [verdict]}


reviewer = (
    GraphBuilder(Review)
    .add_node("count_words", count_words)
    .add_node("judge", judge)
    .add_edge("count_words", "judge")
    .add_edge("judge", END)
    .set_entry("count_words")
    .compile()
)


# --- the outer loop -------------------------------------------------------------------------
class Agent(State):
    turn: int = 0
    draft: str = ""
    score: int = 0
    history: Annotated[list[str], append] = []


async def write(state: Agent) -> dict[str, Any]:
    draft = " ".join(["word"] * (2 + 2 * state.turn))
    return {"turn": state.turn + 1, "draft": draft, "history": [f"turn {state.turn + 1}: wrote"]}


async def record(state: Agent) -> dict[str, Any]:
    return {"history": [f"turn {state.turn}: scored {state.score}"]}


def next_step(state: Agent) -> Any:
    return END if state.score >= 6 or state.turn >= 5 else "write"


graph = (
    GraphBuilder(Agent)
    .add_node("write", write)
    # `draft` goes in; only `score` comes back (the reviewer's notes stay inside it).
    .add_subgraph("review", reviewer, projects_in=["draft"], projects_out=["score"])
    .add_node("record", record)
    .add_edge("write", "review")
    .add_edge("review", "record")
    .add_conditional_edge("record", next_step, destinations=["write", END])
    .set_entry("write")
    .compile()
)


async def show(event: NodeEvent) -> None:
    if event.phase == "completed":
        path = " / ".join(event.namespace)
        print(f"  step {event.step:2}  {path:<22} -> {_changed(event)}")


def _changed(event: NodeEvent) -> str:
    before, after = event.pre_state, event.post_state
    fields = [f for f in type(after).__struct_fields__ if getattr(before, f) != getattr(after, f)]
    return ", ".join(f"{f}={getattr(after, f)!r}" for f in fields if f != "history") or "(history)"


async def main() -> None:
    graph.attach(show)
    async with graph:  # observer delivery runs beside the graph, off its execution path
        final = await graph.invoke(Agent())
        summary = await graph.drain(timeout=5)
    print(f"\nfinal: turn={final.turn} score={final.score}")
    for line in final.history:
        print("  " + line)
    print(f"observer delivery: {summary}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    anyio.run(main, backend=parser.parse_args().backend)
