"""An agent that asks a human before it calls a tool, and waits (durably) for the answer.

The graph is the agent loop with a gate between the model and the tools::

    llm --(tool calls)--> approve --(approved)--> tools --> llm
     |                       \\--(denied)--> deny -------> llm
     \\--(answer)--> END

``approve`` calls :func:`~openarmature_nodes.graph.suspend`: the run stops, the
engine saves it in the SQLite checkpoint file and the program exits, printing
the invocation id. A later run of the program (another process, tomorrow)
resumes it from that file with the human's decision merged into the state::

    python examples/graphs/approval_agent.py --db /tmp/approvals.db
    #  -> suspended: invocation 5f0c... awaits approval of get_weather({"city":"Paris"})
    python examples/graphs/approval_agent.py --db /tmp/approvals.db --resume 5f0c... --approve
    python examples/graphs/approval_agent.py --db /tmp/approvals.db --resume 5f0c... --deny

``--demo`` does both steps in one go (suspend, then resume with ``--approve``
from a fresh checkpointer on the same file). Without ``--base-url`` the
example starts the scripted embedded endpoint (see ``_common.py``); the
endpoint is only needed while the model is being asked, not while the run
waits for the human.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import msgspec
from _common import endpoint, make_parser, print_conversation, run

from openarmature_nodes.graph import (
    END,
    GraphBuilder,
    SQLiteCheckpointer,
    Suspended,
    suspend,
)
from openarmature_nodes.llm import (
    AssistantMessage,
    OpenAIProvider,
    Response,
    RuntimeConfig,
    ToolMessage,
    UserMessage,
)
from openarmature_nodes.nodes import AgentState, LLMNode, ToolNode, tool
from openarmature_nodes.testing import ReceivedRequest, completion_body

QUESTION = "What is the weather in Paris?"


class CityArgs(msgspec.Struct):
    city: str


@tool(args=CityArgs)
async def get_weather(args: CityArgs) -> dict[str, Any]:
    """Current weather for a city: sky and temperature in degrees Celsius."""
    return {"city": args.city, "sky": "light rain", "celsius": 14}


class ApprovalState(AgentState, frozen=True, kw_only=True):
    """The agent's state plus the human's decision on the pending tool calls."""

    decision: str = ""  # "", "approve" or "deny"


# --- the nodes ------------------------------------------------------------------------------


async def approve(state: ApprovalState) -> None:
    """Suspend until a human approves or denies the tool calls of the last message."""
    calls = state.messages[-1].tool_calls or ()  # type: ignore[union-attr]
    await suspend(
        f"approve-{calls[0].id}",
        metadata={"calls": [{"name": c.name, "arguments": c.arguments} for c in calls]},
    )


async def deny(state: ApprovalState) -> dict[str, Any]:
    """Answer every pending tool call with a refusal, so the model can go on without it."""
    calls = state.messages[-1].tool_calls or ()  # type: ignore[union-attr]
    refusals = [ToolMessage(content='{"error": "a human denied this call"}', tool_call_id=c.id)
                for c in calls]
    return {"messages": refusals, "decision": ""}


async def reset(state: ApprovalState) -> dict[str, Any]:
    """The decision applies to one batch of tool calls only."""
    return {"decision": ""}


def build(provider: OpenAIProvider, checkpointer: SQLiteCheckpointer) -> Any:
    tools = ToolNode([get_weather])

    def update(response: Response, s: ApprovalState) -> dict[str, Any]:
        message = response.message
        if message.tool_calls and message.content is None:
            message = AssistantMessage(content="", tool_calls=message.tool_calls)
        return {"messages": [message], "llm_turns": s.llm_turns + 1,
                "stop_reason": "" if message.tool_calls else "answer"}

    llm = LLMNode(provider, lambda s: list(s.messages), update, tools=tools.tools,
                  tool_choice="auto", config=RuntimeConfig(max_tokens=128, temperature=0.0))
    return (
        GraphBuilder(ApprovalState)
        .add_node("llm", llm)
        .add_node("approve", approve)
        .add_node("tools", tools)
        .add_node("reset", reset)
        .add_node("deny", deny)
        .add_conditional_edge("llm", lambda s: END if s.stop_reason else "approve")
        .add_conditional_edge(
            "approve", lambda s: "tools" if s.decision == "approve" else "deny")
        .add_edge("tools", "reset")
        .add_edge("reset", "llm")
        .add_edge("deny", "llm")
        .set_entry("llm")
        .with_checkpointer(checkpointer)
        .compile()
    )


# --- the embedded endpoint's script ------------------------------------------------------------


def scripted_model(request: ReceivedRequest) -> Any:
    """First turn: ask for the weather tool. After the tool's answer: reply from it."""
    body = request.json or {}
    messages = body.get("messages", [])
    if not body.get("tools") or not messages:
        return None
    last = messages[-1]
    if last.get("role") == "user":
        call = {"id": "call_weather_1", "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        return completion_body(None, tool_calls=[call], model=body.get("model", ""))
    if last.get("role") == "tool":
        result = json.loads(last["content"])
        if "error" in result:
            return completion_body("I was not allowed to look that up.",
                                   model=body.get("model", ""))
        return completion_body(f"In {result['city']}: {result['sky']}, {result['celsius']} °C.",
                               model=body.get("model", ""))
    return None


# --- the program -------------------------------------------------------------------------------


async def start(args: argparse.Namespace, provider: OpenAIProvider) -> str | None:
    async with SQLiteCheckpointer(args.db) as store:
        outcome = await build(provider, store).run(
            {"messages": [UserMessage(content=args.question)]})
    if isinstance(outcome, Suspended):
        calls = (outcome.descriptor.metadata or {}).get("calls", [])
        wanted = ", ".join(f"{c['name']}({json.dumps(c['arguments'], separators=(',', ':'))})"
                           for c in calls)
        print(f"suspended: invocation {outcome.invocation_id} awaits approval of {wanted}")
        print(f"  resume with: --db {args.db} --resume {outcome.invocation_id} --approve "
              "(or --deny)")
        return outcome.invocation_id
    print("--- finished without asking for a tool ---")
    print_conversation(outcome.state.messages)
    return None


async def resume(args: argparse.Namespace, provider: OpenAIProvider, invocation: str,
                 decision: str) -> None:
    async with SQLiteCheckpointer(args.db) as store:  # a fresh store: nothing kept in memory
        outcome = await build(provider, store).run(
            None, resume_invocation=invocation, signal_payload={"decision": decision})
    if isinstance(outcome, Suspended):  # the model asked for another tool
        print(f"suspended again: invocation {outcome.invocation_id} awaits another approval")
        return
    print(f"--- resumed invocation {outcome.invocation_id} ({decision}) ---")
    print_conversation(outcome.state.messages)
    print(f"--- done: {outcome.state.llm_turns} LLM turns, stop reason: "
          f"{outcome.state.stop_reason} ---")


async def main(args: argparse.Namespace) -> int:
    async with endpoint(args, script=scripted_model) as ep, OpenAIProvider(
        ep.base_url, ep.model, api_key=ep.api_key
    ) as provider:
        print(f"model {ep.model!r} at {ep.base_url}, backend {args.backend}, store {args.db}")
        if args.resume:
            await resume(args, provider, args.resume, "deny" if args.deny else "approve")
            return 0
        invocation = await start(args, provider)
        if args.demo and invocation is not None:
            print("--- the human approves ---")
            await resume(args, provider, invocation, "approve")
    return 0


def parse_args() -> argparse.Namespace:
    parser = make_parser("An agent that suspends for a human's approval before calling a tool.")
    parser.add_argument("--db", default=str(Path(tempfile.gettempdir()) / "oa-approvals.db"),
                        help="the SQLite checkpoint file (default: in the temp directory)")
    parser.add_argument("--question", default=QUESTION, help="what to ask the agent")
    parser.add_argument("--resume", metavar="INVOCATION_ID", help="resume this invocation")
    decision = parser.add_mutually_exclusive_group()
    decision.add_argument("--approve", action="store_true", help="approve the pending calls")
    decision.add_argument("--deny", action="store_true", help="deny the pending calls")
    parser.add_argument("--demo", action="store_true",
                        help="suspend, then resume with an approval, in one run")
    return parser.parse_args()


if __name__ == "__main__":
    run(main, parse_args())
