"""The node that runs the tool calls a model asked for.

The tools themselves (:class:`FunctionTool`, made with :func:`tool`) live in
:mod:`openarmature_nodes.nodes.tools`; both names are re-exported here.

:class:`ToolNode` reads the last message of
the state's conversation (``messages`` by default); when that is an assistant
message with ``tool_calls``, it runs every call **concurrently**, in one anyio
task group, and returns ``{"messages": [ToolMessage, ...]}``: exactly one tool
message per call, **in the order of the calls**, whatever order they finish
in. The field must use the ``append`` reducer.

A failing call (an unknown tool, arguments that do not fit the schema, an
exception in the tool, a per-call timeout) becomes, by default, a tool message
that tells the model what went wrong (``on_error="message"``), so the model can
correct itself. With ``on_error="raise"`` the first failure (in call order)
cancels the calls still running and is raised as a :class:`ToolError`, which
the graph engine reports as the node's failure. Cancellation from outside is
never turned into a message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import anyio

from openarmature_nodes.llm import AssistantMessage, Tool, ToolCall, ToolMessage

from .observe import ToolCallScope
from .tools import FunctionTool, tool

__all__ = [
    "ErrorFormatter",
    "FunctionTool",
    "ToolArgumentsInvalid",
    "ToolError",
    "ToolExecutionError",
    "ToolNode",
    "ToolNotFound",
    "ToolTimeout",
    "tool",
]

ErrorFormatter = Callable[[ToolCall, "ToolError"], str]
"""``(call, error) -> text`` of the tool message answering a failed call."""


# --- errors ----------------------------------------------------------------------


class ToolError(Exception):
    """A tool call that could not produce a result. ``call`` is the model's request."""

    kind = "tool_error"

    def __init__(self, message: str, call: ToolCall) -> None:
        super().__init__(message)
        self.call = call

    @property
    def message(self) -> str:
        """The error's message (without the kind)."""
        return str(self.args[0])


class ToolNotFound(ToolError):
    """The model called a tool the node does not have."""

    kind = "tool_not_found"


class ToolArgumentsInvalid(ToolError):
    """The call's arguments are missing, unparsable, or do not fit the tool's schema."""

    kind = "tool_arguments_invalid"


class ToolTimeout(ToolError):
    """The call ran longer than the node's per-call ``timeout``."""

    kind = "tool_timeout"


class ToolExecutionError(ToolError):
    """The tool raised; the original exception is ``__cause__``."""

    kind = "tool_execution_error"


# --- the node --------------------------------------------------------------------


def _default_format(call: ToolCall, error: ToolError) -> str:
    return f"error ({error.kind}): {error.message}"


class ToolNode:
    """Run the last assistant message's tool calls, concurrently; answer each in order.

    ``tools``: :class:`FunctionTool` objects (names must be unique).
    ``messages_field``: the state field holding the conversation.
    ``on_error``: ``"message"`` (default) answers a failed call with a tool
    message made by ``format_error(call, error)``; ``"raise"`` raises the first
    failure in call order, after cancelling the calls still running.
    ``timeout``: seconds allowed per call (``None``: no limit).
    ``max_concurrency``: at most this many calls run at once (``None``: all).
    """

    __slots__ = (
        "_by_name",
        "_limiter",
        "format_error",
        "messages_field",
        "on_error",
        "timeout",
    )

    def __init__(
        self,
        tools: Iterable[FunctionTool],
        *,
        messages_field: str = "messages",
        on_error: Literal["message", "raise"] = "message",
        format_error: ErrorFormatter | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
    ) -> None:
        by_name: dict[str, FunctionTool] = {}
        for t in tools:
            if not isinstance(t, FunctionTool):
                raise TypeError(f"expected FunctionTool (see tool()), got {t!r}")
            if t.name in by_name:
                raise ValueError(f"two tools are named {t.name!r}")
            by_name[t.name] = t
        if on_error not in ("message", "raise"):
            raise ValueError("on_error must be 'message' or 'raise'")
        self._by_name = by_name
        self.messages_field = messages_field
        self.on_error = on_error
        self.format_error = format_error or _default_format
        self.timeout = timeout
        self._limiter = anyio.CapacityLimiter(max_concurrency) if max_concurrency else None

    def __repr__(self) -> str:
        return f"ToolNode(tools={list(self._by_name)!r}, on_error={self.on_error!r})"

    @property
    def tools(self) -> list[Tool]:
        """The tool descriptions to send to the model (``LLMNode(tools=node.tools)``)."""
        return [t.spec for t in self._by_name.values()]

    def pending_calls(self, state: Any) -> Sequence[ToolCall]:
        """The tool calls of the last message of the conversation, if it is an
        assistant message that has any; otherwise an empty sequence."""
        messages = getattr(state, self.messages_field)
        if not messages:
            return ()
        last = messages[-1]
        if isinstance(last, AssistantMessage) and last.tool_calls:
            return last.tool_calls
        return ()

    async def __call__(self, state: Any) -> Mapping[str, Any] | None:
        calls = self.pending_calls(state)
        if not calls:
            return None
        return {self.messages_field: await self.run_calls(calls)}

    async def run_calls(self, calls: Sequence[ToolCall]) -> list[ToolMessage]:
        """Run ``calls`` concurrently; return one tool message per call, in call order."""
        results: list[str | None] = [None] * len(calls)
        errors: list[ToolError | None] = [None] * len(calls)
        raise_mode = self.on_error == "raise"
        async with anyio.create_task_group() as tg:
            for index, call in enumerate(calls):
                tg.start_soon(self._run_one, call, index, results, errors, tg.cancel_scope,
                              raise_mode, name=f"tool:{call.name}")
        if raise_mode:
            first = next((e for e in errors if e is not None), None)
            if first is not None:
                raise first
        out: list[ToolMessage] = []
        for call, result, error in zip(calls, results, errors, strict=True):
            if error is not None:
                result = self.format_error(call, error)
            assert result is not None
            out.append(ToolMessage(content=result, tool_call_id=call.id))
        return out

    async def _run_one(
        self,
        call: ToolCall,
        index: int,
        results: list[str | None],
        errors: list[ToolError | None],
        scope: anyio.CancelScope,
        raise_mode: bool,
    ) -> None:
        try:
            if self._limiter is not None:
                async with self._limiter:
                    results[index] = await self._execute(call)
            else:
                results[index] = await self._execute(call)
        except ToolError as exc:
            errors[index] = exc
            if raise_mode:
                scope.cancel()  # the other calls' results will not be used

    async def _execute(self, call: ToolCall) -> str:
        scope = ToolCallScope(call.name, call.arguments, tool_call_id=call.id)
        try:
            result = await self._execute_unobserved(call)
        except ToolError as exc:
            scope.failed(exc.__cause__ if exc.__cause__ is not None else exc)
            raise
        scope.succeeded(result)
        return result

    async def _execute_unobserved(self, call: ToolCall) -> str:
        impl = self._by_name.get(call.name)
        if impl is None:
            known = ", ".join(sorted(self._by_name)) or "none"
            raise ToolNotFound(f"no tool named {call.name!r} (known: {known})", call)
        if call.arguments is None:
            raise ToolArgumentsInvalid(
                f"the arguments of the call to {call.name!r} were not valid JSON", call
            )
        try:
            args, kwargs = impl.prepare(call.arguments)
        except ValueError as exc:
            raise ToolArgumentsInvalid(f"invalid arguments for {call.name!r}: {exc}", call) from exc
        try:
            if self.timeout is None:
                return await impl.run(args, kwargs)
            with anyio.move_on_after(self.timeout):
                return await impl.run(args, kwargs)
        except Exception as exc:
            raise ToolExecutionError(
                f"{call.name!r} raised {type(exc).__name__}: {exc}", call
            ) from exc
        raise ToolTimeout(f"the call to {call.name!r} took longer than {self.timeout} s", call)
