"""A tool-calling agent: an LLM node, a tool node, and the loop edge between them.

Run it with nothing installed but this package (it starts a scripted embedded
endpoint)::

    python examples/graphs/agent.py
    python examples/graphs/agent.py --backend trio

or point it at a real server, e.g. vLLM started with tool calling on::

    vllm serve Qwen/Qwen2.5-7B-Instruct --enable-auto-tool-choice --tool-call-parser hermes
    python examples/graphs/agent.py --base-url http://localhost:8000 \\
        --model Qwen/Qwen2.5-7B-Instruct

What it shows:

* two tools made with ``@tool(args=SomeStruct)``: typed, validated arguments;
* :func:`~openarmature_nodes.nodes.build_agent`: ``llm -> tools -> llm ...``
  until the model answers without tool calls (or ``--max-turns`` is spent);
* the LLM node's call-level onion, outermost first: a usage tally written here
  (a middleware is just ``async (request, next) -> response``), then the
  default span, retry (honours ``Retry-After``), warm-up gate and
  structured-output layers;
* the warm-up gate opened eagerly, so the first real call does not pay for it.

Small or base models may never choose a tool on their own;
``--force-first-tool NAME`` forces that tool on the first turn (by name, which
llama.cpp's server supports) and lets the model choose afterwards.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import msgspec
from _common import endpoint, make_parser, print_conversation, run

from openarmature_nodes.llm import (
    CompletionRequest,
    OpenAIProvider,
    Response,
    RuntimeConfig,
    ToolChoice,
    ToolChoiceForce,
    UserMessage,
)
from openarmature_nodes.middleware import RetryMiddleware, WarmupGate
from openarmature_nodes.nodes import AgentState, build_agent, default_onion, tool
from openarmature_nodes.onion import Next
from openarmature_nodes.testing import ReceivedRequest, completion_body

SYSTEM = (
    "You are a concise assistant. Use the tools to look up weather and local time; "
    "then answer in one sentence."
)
QUESTION = "What is the weather in Paris, and what time is it in Tokyo?"

# --- the tools -------------------------------------------------------------------------


class CityArgs(msgspec.Struct):
    city: str


_WEATHER = {"paris": ("light rain", 14), "tokyo": ("clear", 22), "lima": ("overcast", 19)}
_UTC_OFFSET = {"paris": 1, "tokyo": 9, "lima": -5, "london": 0, "new york": -5}


@tool(args=CityArgs)
async def get_weather(args: CityArgs) -> dict[str, Any]:
    """Current weather for a city: sky and temperature in degrees Celsius."""
    sky, celsius = _WEATHER.get(args.city.strip().lower(), ("unknown", None))
    return {"city": args.city, "sky": sky, "celsius": celsius}


@tool(args=CityArgs)
async def get_time(args: CityArgs) -> dict[str, Any]:
    """Current local time in a city (24-hour clock)."""
    offset = _UTC_OFFSET.get(args.city.strip().lower())
    if offset is None:
        return {"city": args.city, "local_time": None, "note": "unknown city"}
    local = time.gmtime(time.time() + offset * 3600)
    return {"city": args.city, "local_time": time.strftime("%H:%M", local), "utc_offset": offset}


# --- a call-level middleware of our own -------------------------------------------------


class UsageTally:
    """Counts completions and tokens of every call that passes through."""

    def __init__(self) -> None:
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    async def __call__(
        self, request: CompletionRequest, next: Next[CompletionRequest, Response]
    ) -> Response:
        response = await next(request)
        self.calls += 1
        self.prompt_tokens += response.usage.prompt_tokens or 0
        self.completion_tokens += response.usage.completion_tokens or 0
        return response


# --- the embedded endpoint's script ------------------------------------------------------


def scripted_model(request: ReceivedRequest) -> Any:
    """Stand-in for a model on the embedded endpoint (deterministic, no ML).

    First turn: ask for both tools at once (parallel tool calls). After the
    tool results: answer from them. Anything else (the warm-up): the server's
    default reply.
    """
    body = request.json or {}
    messages = body.get("messages", [])
    if not body.get("tools") or not messages or body.get("max_tokens") == 1:
        return None
    last = messages[-1]
    if last.get("role") == "user":
        calls = [
            {"id": "call_weather_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_time_2", "type": "function",
             "function": {"name": "get_time", "arguments": '{"city": "Tokyo"}'}},
        ]
        return completion_body(None, tool_calls=calls, model=body.get("model", ""))
    if last.get("role") == "tool":
        results = [msgspec.json.decode(m["content"]) for m in messages if m.get("role") == "tool"]
        facts = "; ".join(
            f"{r['city']}: {r.get('sky', r.get('local_time'))}"
            + (f", {r['celsius']} °C" if r.get("celsius") is not None else "")
            for r in results
        )
        return completion_body(f"Here is what I found - {facts}.", model=body.get("model", ""))
    return None


# --- the program ---------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> int:
    async with endpoint(args, script=scripted_model) as ep, OpenAIProvider(
        ep.base_url, ep.model, api_key=ep.api_key, genai_system=args.genai_system
    ) as provider:
        tally = UsageTally()
        gate = WarmupGate(provider, deadline=args.warmup_deadline)
        onion = [
            tally,
            *default_onion(
                provider,
                retry=RetryMiddleware(max_attempts=4, deadline=60.0),
                warmup=gate,
            ),
        ]

        def choose_tool(state: AgentState) -> ToolChoice:
            if args.force_first_tool and state.llm_turns == 0:
                return ToolChoiceForce(name=args.force_first_tool)
            return "auto"

        graph = build_agent(
            provider,
            [get_weather, get_time],
            system=SYSTEM,
            config=RuntimeConfig(max_tokens=args.max_tokens, temperature=0.0),
            tool_choice=choose_tool,
            max_turns=args.max_turns,
            middleware=onion,
        )

        print(f"model {ep.model!r} at {ep.base_url}, backend {args.backend}")
        started = time.perf_counter()
        await gate.open()  # eager warm-up: ready() + a one-token completion
        print(f"warm-up: the model answered in {(time.perf_counter() - started) * 1000:.0f} ms")

        started = time.perf_counter()
        final = await graph.invoke({"messages": [UserMessage(content=args.question)]})
        took = time.perf_counter() - started

        print("--- conversation ---")
        print_conversation(final.messages, system=SYSTEM)
        tool_results = sum(1 for m in final.messages if m.role == "tool")
        print("--- done ---")
        print(
            f"{final.llm_turns} LLM turns, {tool_results} tool results, "
            f"stop reason: {final.stop_reason}, {took:.2f} s; "
            f"tokens: {tally.prompt_tokens} prompt + {tally.completion_tokens} completion "
            f"over {tally.calls} completions"
        )
        if final.stop_reason == "max_turns":
            print("(the model kept asking for tools: raise --max-turns, or use a model trained "
                  "for tool calling)")
    return 0


def parse_args() -> argparse.Namespace:
    parser = make_parser("A tool-calling agent graph (LLM node + tool node + loop edge).")
    parser.add_argument("--question", default=QUESTION, help="what to ask the agent")
    parser.add_argument("--max-turns", type=int, default=4, help="LLM turns before giving up")
    parser.add_argument("--max-tokens", type=int, default=128, help="max_tokens per completion")
    parser.add_argument(
        "--force-first-tool", metavar="NAME", choices=("get_weather", "get_time"),
        help="force this tool on the first turn (for models that will not choose one)",
    )
    parser.add_argument("--warmup-deadline", type=float, default=300.0,
                        help="seconds to wait for a loading model")
    parser.add_argument("--genai-system", default="openai",
                        help="backend name for telemetry: vllm, llama.cpp, openai ...")
    return parser.parse_args()


if __name__ == "__main__":
    run(main, parse_args())
