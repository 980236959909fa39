"""ToolNode: concurrency, call order, errors as messages or raised, cancellation.

Overlap is proven with anyio Events (each tool waits for the other to have
started, which deadlocks unless they run at the same time), never with sleeps.
A ``fail_after`` bounds each such wait so a regression fails instead of hanging.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
import msgspec
import pytest

from openarmature_nodes.graph import END, GraphBuilder, NodeException, State, append
from openarmature_nodes.llm import AssistantMessage, Message, ToolCall, ToolMessage, UserMessage
from openarmature_nodes.nodes import (
    FunctionTool,
    ToolArgumentsInvalid,
    ToolError,
    ToolExecutionError,
    ToolNode,
    ToolNotFound,
    ToolTimeout,
    tool,
)

pytestmark = pytest.mark.anyio

GUARD = 5.0  # seconds: only reached when a test is broken (it would otherwise hang)


class Convo(State, frozen=True, kw_only=True):
    messages: Annotated[list[Message], append] = msgspec.field(default_factory=list)


class CityArgs(msgspec.Struct):
    city: str
    days: int = 1


def asking(*calls: ToolCall) -> Convo:
    reply = AssistantMessage(content="", tool_calls=calls)
    return Convo(messages=[UserMessage(content="q"), reply])


def call(id: str, name: str, arguments: dict[str, Any] | None = None) -> ToolCall:
    return ToolCall(id=id, name=name, arguments={} if arguments is None else arguments)


def contents(update: Any) -> list[tuple[str, str]]:
    return [(m.tool_call_id, m.content) for m in update["messages"]]


# --- tools ---------------------------------------------------------------------------------


def test_tool_from_struct_args_has_an_object_schema_and_docstring() -> None:
    @tool(args=CityArgs)
    async def weather(args: CityArgs) -> str:
        """Weather for a city."""
        return args.city

    assert isinstance(weather, FunctionTool)
    assert weather.spec.name == "weather"
    assert weather.spec.description == "Weather for a city."
    params = weather.spec.parameters
    assert params["type"] == "object" and "$ref" not in params
    assert set(params["properties"]) == {"city", "days"}
    assert params["required"] == ["city"]


def test_tool_takes_at_most_one_schema_source() -> None:
    def f() -> str:
        return ""

    with pytest.raises(ValueError, match="at most one"):
        tool(f, parameters={"type": "object"}, args=CityArgs)
    with pytest.raises(ValueError, match="type 'object'"):
        tool(f, parameters={"type": "string"})


def test_duplicate_names_and_non_tools_are_refused() -> None:
    a = tool(lambda: "", name="x", parameters={"type": "object"})
    with pytest.raises(ValueError, match="two tools"):
        ToolNode([a, a])
    with pytest.raises(TypeError, match="FunctionTool"):
        ToolNode([lambda: ""])  # type: ignore[list-item]


# --- order and concurrency -------------------------------------------------------------------


async def test_calls_overlap_and_answers_keep_call_order() -> None:
    started = {"a": anyio.Event(), "b": anyio.Event(), "c": anyio.Event()}
    finished: list[str] = []

    async def run(name: str, waits_for: list[str]) -> str:
        started[name].set()
        for other in waits_for:
            await started[other].wait()  # only possible if `other` runs concurrently
        finished.append(name)
        return f"result {name}"

    # every call waits for the others to have started: only a concurrent run gets through
    tools = [
        tool(lambda: run("a", ["b", "c"]), name="a", parameters={"type": "object"}),
        tool(lambda: run("b", ["a", "c"]), name="b", parameters={"type": "object"}),
        tool(lambda: run("c", ["a", "b"]), name="c", parameters={"type": "object"}),
    ]
    node = ToolNode(tools)
    with anyio.fail_after(GUARD):
        update = await node(asking(call("1", "a"), call("2", "b"), call("3", "c")))
    assert contents(update) == [("1", "result a"), ("2", "result b"), ("3", "result c")]
    assert all(isinstance(m, ToolMessage) for m in update["messages"])  # type: ignore[index]
    assert len(finished) == 3


async def test_answers_in_call_order_when_completion_order_is_reversed() -> None:
    gates = [anyio.Event() for _ in range(4)]
    done: list[int] = []

    async def step(i: int) -> str:
        # call i may finish only after call i+1 has finished: reverse completion order
        if i + 1 < len(gates):
            await gates[i + 1].wait()
        done.append(i)
        gates[i].set()
        return f"r{i}"

    node = ToolNode([tool(step, parameters={"type": "object"})])
    calls = [call(f"id{i}", "step", {"i": i}) for i in range(4)]
    with anyio.fail_after(GUARD):
        update = await node(asking(*calls))
    assert done == [3, 2, 1, 0]
    assert contents(update) == [(f"id{i}", f"r{i}") for i in range(4)]


async def test_max_concurrency_bounds_overlap() -> None:
    running = 0
    peak = 0
    release = anyio.Event()

    async def work(i: int) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 2:  # the limit is reached: let everyone go from now on
            release.set()
        await release.wait()
        await anyio.lowlevel.checkpoint()
        running -= 1
        return str(i)

    node = ToolNode([tool(work, parameters={"type": "object"})], max_concurrency=2)
    with anyio.fail_after(GUARD):
        update = await node(asking(*[call(str(i), "work", {"i": i}) for i in range(6)]))
    assert [c for _, c in contents(update)] == [str(i) for i in range(6)]
    assert peak == 2


async def test_sync_tools_and_structured_results_are_json() -> None:
    @tool(args=CityArgs)
    def forecast(args: CityArgs) -> dict[str, Any]:
        """Forecast."""
        return {"city": args.city, "days": args.days}

    update = await ToolNode([forecast])(asking(call("f", "forecast", {"city": "Oslo"})))
    assert contents(update) == [("f", '{"city":"Oslo","days":1}')]


async def test_nothing_to_do_without_pending_calls() -> None:
    node = ToolNode([tool(lambda: "", name="t", parameters={"type": "object"})])
    assert await node(Convo()) is None
    assert await node(Convo(messages=[UserMessage(content="hi")])) is None
    assert await node(Convo(messages=[AssistantMessage(content="plain")])) is None


# --- errors ---------------------------------------------------------------------------------


@tool(args=CityArgs)
async def weather(args: CityArgs) -> str:
    """Weather."""
    if args.city == "Atlantis":
        raise LookupError("no such city")
    return f"sunny in {args.city}"


@tool(parameters={"type": "object", "properties": {"tz": {"type": "string"}}})
def clock(tz: str) -> str:
    """Time."""
    return f"12:00 {tz}"


async def test_errors_become_tool_messages_by_default() -> None:
    never = anyio.Event()

    async def hang() -> str:
        await never.wait()
        return "unreachable"

    node = ToolNode(
        [weather, clock, tool(hang, parameters={"type": "object"})], timeout=0.05
    )
    state = asking(
        call("ok", "weather", {"city": "Rome"}),
        call("boom", "weather", {"city": "Atlantis"}),
        call("missing", "teleport"),
        call("badargs", "weather", {"town": "Rome"}),
        call("badkw", "clock", {"zone": "UTC"}),
        ToolCall(id="unparsed", name="clock", arguments=None),
        call("slow", "hang"),
        call("ok2", "clock", {"tz": "UTC"}),
    )
    with anyio.fail_after(GUARD):
        update = await node(state)
    got = dict(contents(update))
    assert [m.tool_call_id for m in update["messages"]] == [  # type: ignore[index]
        "ok", "boom", "missing", "badargs", "badkw", "unparsed", "slow", "ok2"
    ]
    assert got["ok"] == "sunny in Rome" and got["ok2"] == "12:00 UTC"
    assert got["boom"].startswith("error (tool_execution_error)") and "no such city" in got["boom"]
    assert got["missing"].startswith("error (tool_not_found)") and "teleport" in got["missing"]
    assert got["badargs"].startswith("error (tool_arguments_invalid)")
    assert got["badkw"].startswith("error (tool_arguments_invalid)")
    assert got["unparsed"].startswith("error (tool_arguments_invalid)")
    assert got["slow"].startswith("error (tool_timeout)")


async def test_custom_error_formatter() -> None:
    def fmt(c: ToolCall, e: ToolError) -> str:
        return f"{c.name}/{type(e.__cause__).__name__}"

    node = ToolNode([weather], format_error=fmt)
    update = await node(asking(call("x", "weather", {"city": "Atlantis"})))
    assert contents(update) == [("x", "weather/LookupError")]


async def test_raise_mode_raises_first_failure_and_cancels_the_rest() -> None:
    sibling_started = anyio.Event()
    sibling_cancelled = False

    async def waits_forever() -> str:
        nonlocal sibling_cancelled
        sibling_started.set()
        try:
            await anyio.Event().wait()
        except anyio.get_cancelled_exc_class():
            sibling_cancelled = True
            raise
        return "unreachable"

    async def fails_after_sibling_started() -> str:
        await sibling_started.wait()
        raise RuntimeError("tool broke")

    node = ToolNode(
        [
            tool(waits_forever, parameters={"type": "object"}),
            tool(fails_after_sibling_started, parameters={"type": "object"}),
        ],
        on_error="raise",
    )
    with anyio.fail_after(GUARD), pytest.raises(ToolExecutionError) as info:
        await node(asking(call("w", "waits_forever"), call("f", "fails_after_sibling_started")))
    assert sibling_cancelled
    assert info.value.call.id == "f"
    assert isinstance(info.value.__cause__, RuntimeError)


async def test_raise_mode_reports_the_first_failure_in_call_order() -> None:
    node = ToolNode([weather], on_error="raise")
    with pytest.raises(ToolNotFound) as info:
        await node(asking(call("a", "nope"), call("b", "weather", {"city": "Atlantis"})))
    assert info.value.call.id == "a"


async def test_raise_mode_inside_a_graph_is_a_node_exception() -> None:
    async def ask_tools(s: Convo) -> dict[str, Any]:
        msg = AssistantMessage(content="", tool_calls=[call("1", "weather", {"city": 3})])
        return {"messages": [msg]}

    graph = (
        GraphBuilder(Convo)
        .add_node("llm", ask_tools)
        .add_node("tools", ToolNode([weather], on_error="raise"))
        .add_edge("llm", "tools")
        .add_edge("tools", END)
        .set_entry("llm")
        .compile()
    )
    with pytest.raises(NodeException) as info:
        await graph.invoke(Convo())
    assert info.value.node_name == "tools"
    assert isinstance(info.value.__cause__, ToolArgumentsInvalid)


async def test_outside_cancellation_propagates_and_is_not_a_message() -> None:
    started = anyio.Event()
    cancelled = False

    async def blocker() -> str:
        nonlocal cancelled
        started.set()
        try:
            await anyio.Event().wait()
        except anyio.get_cancelled_exc_class():
            cancelled = True
            raise
        return "unreachable"

    node = ToolNode([tool(blocker, parameters={"type": "object"})])
    result: list[Any] = []
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            result.append(await node(asking(call("b", "blocker"))))

        tg.start_soon(run)
        with anyio.fail_after(GUARD):
            await started.wait()
        tg.cancel_scope.cancel()
    assert cancelled
    assert result == []


async def test_timeout_error_raised_by_a_tool_is_not_a_node_timeout() -> None:
    async def times_out_itself() -> str:
        raise TimeoutError("upstream timed out")

    node = ToolNode([tool(times_out_itself, parameters={"type": "object"})], timeout=30)
    update = await node(asking(call("t", "times_out_itself")))
    assert contents(update)[0][1].startswith("error (tool_execution_error)")


def test_tool_timeout_is_a_tool_error() -> None:
    assert issubclass(ToolTimeout, ToolError)


async def test_plain_tool_takes_its_schema_from_the_signature() -> None:
    @tool
    async def forecast(city: str, days: int = 1) -> str:
        """Forecast for a city."""
        return f"{city}:{days}"

    params = forecast.spec.parameters
    assert params["type"] == "object"
    assert params["properties"]["city"] == {"type": "string"}
    assert params["properties"]["days"]["type"] == "integer"
    assert params["required"] == ["city"]
    assert forecast.spec.description == "Forecast for a city."
    assert await forecast.invoke({"city": "Oslo"}) == "Oslo:1"
    assert await forecast.invoke({"city": "Oslo", "days": 3}) == "Oslo:3"
    with pytest.raises(ValueError):
        await forecast.invoke({"city": 5})
    with pytest.raises(ValueError):
        await forecast.invoke({"city": "Oslo", "hours": 2})


def test_plain_tool_needs_annotated_keyword_parameters() -> None:
    def untyped(city):  # type: ignore[no-untyped-def]
        return city

    def star(*cities: str) -> str:
        return ""

    with pytest.raises(ValueError, match="annotation"):
        tool(untyped)
    with pytest.raises(ValueError, match="keyword"):
        tool(star)
