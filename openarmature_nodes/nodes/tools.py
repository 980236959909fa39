"""Tools: a Python function plus the description the model sees.

Make one with :func:`tool`::

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

    @tool
    async def get_forecast(city: str, days: int = 1) -> str:
        "Forecast for the next days."
        ...

With ``args=`` the JSON Schema is derived from the ``msgspec.Struct`` and the
model's arguments are converted into an instance (so the function receives
typed, validated arguments); with ``parameters=`` the schema is yours and the
arguments are passed as keyword arguments; with neither, the function's typed
signature is the schema. The docstring is the description unless
``description=`` is given. A function may be ``async`` or plain; a plain one
runs in the event loop, so keep it quick (or wrap slow work in
``anyio.to_thread.run_sync`` yourself). A result that is not a string is sent
to the model as JSON.

:class:`~openarmature_nodes.nodes.ToolNode` runs the calls a model makes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, get_type_hints, overload

import msgspec

from openarmature_nodes.llm import Tool

__all__ = ["FunctionTool", "tool"]

_ENCODER = msgspec.json.Encoder()


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
        strict: bool = False,
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
            strict=bool(strict),
        )
        self.fn = fn
        self.args = args
        self._signature = inspect.signature(fn)

    @property
    def name(self) -> str:
        """The tool's name, as the model calls it."""
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
    strict: bool = False,
) -> FunctionTool: ...


@overload
def tool(
    fn: None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    args: type[msgspec.Struct] | None = None,
    strict: bool = False,
) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    args: type[msgspec.Struct] | None = None,
    strict: bool = False,
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Make a :class:`FunctionTool` from a function.

    ``@tool`` alone derives the arguments' JSON Schema from the function's typed
    signature (``async def get_weather(city: str) -> str``); ``@tool(args=S)``
    takes them as one ``msgspec.Struct`` ``S``; ``tool(fn, parameters=...)``
    takes a JSON Schema and passes the arguments as keywords. The description
    is the docstring unless ``description=`` is given. ``strict=True`` asks
    the server to constrain the arguments to the schema (see
    :class:`~openarmature_nodes.llm.Tool`; vLLM does so only for strict tools).
    """

    def wrap(f: Callable[..., Any]) -> FunctionTool:
        return FunctionTool(
            f, name=name, description=description, parameters=parameters, args=args,
            strict=strict,
        )

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
