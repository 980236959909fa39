"""Node kinds that sit on the graph engine, the LLM layer and the middleware.

- :class:`LLMNode`: one chat completion per visit, through a call-level onion
  (:func:`default_onion`: span, retry, warm-up gate, structured-output check);
- :class:`ToolNode`: runs the model's tool calls concurrently and answers
  each, in call order; tools are made with :func:`tool`;
- :func:`build_agent` / :func:`agent_builder`: the LLM node, the tool node
  and the loop edge as one agent graph over :class:`AgentState`.

::

    from openarmature_nodes.nodes import build_agent, tool
"""

from .agent import AgentState, agent_builder, build_agent
from .llm_node import CallProvider, LLMNode, append_reply, default_onion
from .tool_node import (
    ErrorFormatter,
    ToolArgumentsInvalid,
    ToolError,
    ToolExecutionError,
    ToolNode,
    ToolNotFound,
    ToolTimeout,
)
from .tools import FunctionTool, tool

__all__ = [
    "AgentState",
    "CallProvider",
    "ErrorFormatter",
    "FunctionTool",
    "LLMNode",
    "ToolArgumentsInvalid",
    "ToolError",
    "ToolExecutionError",
    "ToolNode",
    "ToolNotFound",
    "ToolTimeout",
    "agent_builder",
    "append_reply",
    "build_agent",
    "default_onion",
    "tool",
]
