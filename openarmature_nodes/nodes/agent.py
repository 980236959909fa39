"""A tool-calling agent in three parts: an LLM node, a tool node, and the loop edge.

::

    graph = build_agent(provider, [get_weather, get_time],
                        system="You are a helpful assistant. Use the tools.",
                        config=RuntimeConfig(max_tokens=256))
    final = await graph.invoke({"messages": [UserMessage("Weather in Paris?")]})
    for message in final.messages:
        ...

The graph it builds is the classic loop::

    llm --(reply has tool calls)--> tools --> llm
     \\--(plain answer, or max_turns reached)--> END

``llm`` is an :class:`~openarmature_nodes.nodes.LLMNode` over the conversation
(with ``system`` prepended, if given) and the tools' descriptions; ``tools``
is a :class:`~openarmature_nodes.nodes.ToolNode`. The state is
:class:`AgentState` or your subclass of it (add fields for your own nodes).
:func:`agent_builder` returns the :class:`~openarmature_nodes.graph.GraphBuilder`
before ``compile()`` so you can add nodes, edges or graph middleware.

Every LLM turn counts towards ``max_turns``; a turn that still asks for tools
when the budget is spent ends the run with ``stop_reason == "max_turns"``
(the unanswered tool calls stay visible as the last message).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from openarmature_nodes.graph import END, CompiledGraph, GraphBuilder, State, append
from openarmature_nodes.llm import (
    AssistantMessage,
    Message,
    Response,
    RuntimeConfig,
    SystemMessage,
    ToolChoice,
)

from .llm_node import CallMiddleware, CallProvider, LLMNode
from .tool_node import ErrorFormatter, ToolNode
from .tools import FunctionTool

__all__ = ["AgentState", "agent_builder", "build_agent"]

A = TypeVar("A", bound="AgentState")


class AgentState(State, frozen=True, kw_only=True):
    """The state of an agent run.

    ``messages``: the conversation (appended to by both nodes).
    ``llm_turns``: how many completions the run has made.
    ``stop_reason``: ``""`` while running, then ``"answer"`` (the model
    replied without tool calls) or ``"max_turns"``.
    """

    messages: Annotated[list[Message], append] = msgspec.field(default_factory=list)
    llm_turns: int = 0
    stop_reason: str = ""


def _replayable(message: AssistantMessage) -> AssistantMessage:
    """The reply as it should be kept in the history.

    A tool-call reply often has ``content: null``. OpenAI accepts that when the
    history is sent back, but llama.cpp's server rejects it (HTTP 500) and
    wants a string, so the agent stores ``""``, which every server accepts.
    """
    if message.tool_calls and message.content is None:
        return AssistantMessage(content="", tool_calls=message.tool_calls)
    return message


def agent_builder(
    provider: CallProvider,
    tools: Iterable[FunctionTool],
    *,
    system: str | None = None,
    state: type[A] = AgentState,  # type: ignore[assignment]
    config: RuntimeConfig | Mapping[str, Any] | None = None,
    tool_choice: ToolChoice | Callable[[A], ToolChoice | None] | None = "auto",
    middleware: Sequence[CallMiddleware] | None = None,
    max_turns: int = 8,
    on_tool_error: Literal["message", "raise"] = "message",
    format_tool_error: ErrorFormatter | None = None,
    tool_timeout: float | None = None,
    llm_name: str = "llm",
    tools_name: str = "tools",
    stream: bool = False,
) -> GraphBuilder[A]:
    """Wire an LLM node, a tool node and the loop edge; return the builder.

    ``tool_choice`` is sent on every turn (a function of the state may vary
    it, for example forcing a tool on the first turn). ``middleware`` is the
    LLM node's call-level onion (``None``: :func:`default_onion`).
    ``on_tool_error``, ``format_tool_error`` and ``tool_timeout`` configure the
    tool node. ``stream=True`` streams each LLM turn (see :class:`LLMNode`):
    the text arrives as token events (``graph.stream(..., mode="tokens")``),
    the state is the same. Raises ``ValueError`` for ``max_turns < 1``.
    """
    if max_turns < 1:
        raise ValueError("max_turns must be at least 1")
    if not (isinstance(state, type) and issubclass(state, AgentState)):
        raise TypeError("state must be AgentState or a subclass of it")
    tool_node = ToolNode(
        tools,
        on_error=on_tool_error,
        format_error=format_tool_error,
        timeout=tool_timeout,
    )
    preamble: tuple[Message, ...] = (SystemMessage(content=system),) if system else ()

    def prompt(s: A) -> list[Message]:
        return [*preamble, *s.messages]

    def update(response: Response, s: A) -> dict[str, Any]:
        turns = s.llm_turns + 1
        if not response.message.tool_calls:
            reason = "answer"
        elif turns >= max_turns:
            reason = "max_turns"
        else:
            reason = ""
        return {
            "messages": [_replayable(response.message)],
            "llm_turns": turns,
            "stop_reason": reason,
        }

    def route(s: A) -> str:
        return tools_name if not s.stop_reason else END

    llm = LLMNode(
        provider,
        prompt,
        update,
        tools=tool_node.tools,
        tool_choice=tool_choice if tool_node.tools else None,
        config=config,
        middleware=middleware,
        name=llm_name,
        stream=stream,
    )
    return (
        GraphBuilder(state)
        .add_node(llm_name, llm)
        .add_node(tools_name, tool_node)
        .add_conditional_edge(llm_name, route, destinations=(tools_name, END))
        .add_edge(tools_name, llm_name)
        .set_entry(llm_name)
    )


def build_agent(
    provider: CallProvider,
    tools: Iterable[FunctionTool],
    **options: Any,
) -> CompiledGraph[Any]:
    """:func:`agent_builder` (same arguments), compiled."""
    return agent_builder(provider, tools, **options).compile()
