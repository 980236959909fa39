"""Tools, and the node that runs the tool calls a model asked for.

A tool is a Python function plus the description the model sees. Make one
with :func:`tool`::

    class WeatherArgs(msgspec.Struct):
        city: str

    @tool(args=WeatherArgs)
    async def get_weather(args: WeatherArgs) -> dict:
        "Current weather for a city."
        return {"city": args.city, "sky": "clear"}

    @tool(parameters={"type": "object", "properties": {"tz": {"type": "string"}},
                      "required": ["tz"]})
    def get_time(tz: str) -> str:
        "Current time in a time zone."
        ...

With ``args=`` the JSON Schema is derived from the ``msgspec.Struct`` and the
model's arguments are converted into an instance (so the function receives
typed, validated arguments); with ``parameters=`` the schema is yours and the
arguments are passed as keyword arguments. The docstring is the description
unless ``description=`` is given. A function may be ``async`` or plain; a plain
one runs in the event loop, so keep it quick (or wrap slow work in
``anyio.to_thread.run_sync`` yourself). A result that is not a string is sent
to the model as JSON.

:class:`ToolNode` is the node that executes them. It reads the last message of
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

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, get_type_hints, overload

import anyio
import msgspec

from openarmature_nodes.llm import AssistantMessage, Tool, ToolCall, ToolMessage

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
_ENCODER = msgspec.json.Encoder()


# --- errors ----------------------------------------------------------------------


class ToolError(Exception):
    """A tool call that could not produce a result. ``call`` is the model's request."""

    kind = "tool_error"

    def __init__(self, message: str, call: ToolCall) -> None:
        super().__init__(message)
        self.call = call

    @property
    def message(self) -> str:
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


# --- tools -----------------------------------------------------------------------


class FunctionTool:
    """A Python function the model can call, with the :class:`Tool` it is described by.

    Usually made with :func:`tool`. ``await invoke(arguments)`` validates the
    arguments, calls the function and returns the result as text.
    """

    __slots__ = ("_signature", "_signature_args", "args", "fn", "spec")

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        args: type[msgspec.Struct] | None = None,
    ) -> None:
        if parameters is not None and args is not None:
            raise ValueError("give at most one of parameters= (a JSON Schema) or args= (a Struct)")
        # Neither: the function's own typed signature is the schema.
        self._signature_args = None
        if parameters is None and args is None:
            self._signature_args = _signature_struct(fn)
        struct = args or self._signature_args
        if struct is not None:
            parameters = _struct_schema(struct)
        assert parameters is not None
        if parameters.get("type") != "object":
            raise ValueError("a tool's parameters schema must have type 'object'")
        doc = inspect.getdoc(fn)
        self.spec = Tool(
            name=name or fn.__name__,
            description=description if description is not None else (doc or ""),
            parameters=dict(parameters),
        )
        self.fn = fn
        self.args = args
        self._signature = inspect.signature(fn)

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        return f"FunctionTool(name={self.spec.name!r})"

    def prepare(self, arguments: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Check ``arguments`` (parsed JSON) against the function; return ``(args, kwargs)``.

        Raises :class:`ValueError` when they do not fit: a Struct ``args=`` that
        rejects them, or keywords the function does not accept.
        """
        if self.args is not None:
            try:
                return (msgspec.convert(arguments, self.args),), {}
            except msgspec.ValidationError as exc:
                raise ValueError(str(exc)) from exc
        if self._signature_args is not None:
            try:
                checked = msgspec.convert(arguments, self._signature_args)
            except msgspec.ValidationError as exc:
                raise ValueError(str(exc)) from exc
            return (), {f: getattr(checked, f) for f in self._signature_args.__struct_fields__}
        try:
            self._signature.bind(**arguments)
        except TypeError as exc:
            raise ValueError(str(exc)) from exc
        return (), dict(arguments)

    async def invoke(self, arguments: Mapping[str, Any]) -> str:
        """Run the function on ``arguments`` (parsed JSON); return the result as text.

        Raises :class:`ValueError` for arguments that do not fit (see
        :meth:`prepare`); anything the function raises propagates.
        """
        args, kwargs = self.prepare(arguments)
        return await self.run(args, kwargs)

    async def run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """Call the function with prepared arguments; return the result as text."""
        result = self.fn(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, str):
            return result
        return _ENCODER.encode(result).decode()


@overload
def tool(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    args: type[msgspec.Struct] | None = None,
) -> FunctionTool: ...


@overload
def tool(
    fn: None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    args: type[msgspec.Struct] | None = None,
) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    args: type[msgspec.Struct] | None = None,
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Make a :class:`FunctionTool` from a function.

    ``@tool`` alone derives the arguments' JSON Schema from the function's typed
    signature (``async def get_weather(city: str) -> str``); ``@tool(args=S)``
    takes them as one ``msgspec.Struct`` ``S``; ``tool(fn, parameters=...)``
    takes a JSON Schema and passes the arguments as keywords. The description
    is the docstring unless ``description=`` is given.
    """

    def wrap(f: Callable[..., Any]) -> FunctionTool:
        return FunctionTool(f, name=name, description=description, parameters=parameters, args=args)

    return wrap(fn) if fn is not None else wrap


def _signature_struct(fn: Callable[..., Any]) -> type[msgspec.Struct]:
    """A Struct with one field per parameter of ``fn``, typed by its annotations.

    ``async def get_weather(city: str, days: int = 1)`` gives the schema
    ``{"type": "object", "properties": {"city": {"type": "string"}, "days":
    {"type": "integer", "default": 1}}, "required": ["city"]}``. Every parameter
    must be annotated and passable by keyword; unknown argument names are refused.
    """
    try:
        hints = get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise ValueError(f"cannot read the annotations of tool {fn.__name__!r}: {exc}") from exc
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            raise ValueError(
                f"tool {fn.__name__!r}: parameter {p.name!r} must be passable by keyword "
                "(or describe the arguments with args= / parameters=)"
            )
        if p.name not in hints:
            raise ValueError(
                f"tool {fn.__name__!r}: parameter {p.name!r} needs a type annotation "
                "(or describe the arguments with args= / parameters=)"
            )
        if p.default is p.empty:
            fields.append((p.name, hints[p.name]))
        else:
            fields.append((p.name, hints[p.name], p.default))
    return msgspec.defstruct(
        fn.__name__, fields, kw_only=True, forbid_unknown_fields=True
    )


def _struct_schema(args: type[msgspec.Struct]) -> dict[str, Any]:
    """The JSON Schema of a Struct, with the top-level ``$ref`` resolved.

    ``msgspec.json.schema`` answers ``{"$ref": "#/$defs/X", "$defs": {...}}``;
    tool ``parameters`` must have the object at the root, so X's schema is
    lifted up (other definitions stay under ``$defs`` for nested structs).
    """
    schema = msgspec.json.schema(args)
    ref = schema.get("$ref")
    if not isinstance(ref, str):
        return schema
    defs = dict(schema.get("$defs", {}))
    root = dict(defs.pop(ref.rsplit("/", 1)[-1]))
    if defs:
        root["$defs"] = defs
    return root


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
