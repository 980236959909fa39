"""Typed graph state: a frozen ``msgspec.Struct`` plus a per-field merge plan.

Declare state by subclassing :class:`State`::

    from typing import Annotated
    import msgspec
    from openarmature_nodes.graph import State, append

    class Agent(State):
        turns: int = 0
        messages: Annotated[list[str], append] = []
        notes: list[str] = msgspec.field(default_factory=lambda: ["seed"])

Instances are immutable (assigning an attribute raises); the engine builds a
new instance per merge with :func:`msgspec.structs.replace`, so untouched
fields are shared, never copied.

:func:`schema_of` introspects a class once and caches the result: for every
field its reducer (from ``Annotated`` metadata) and a *checker* used to
validate values at the graph boundary and at each merge. Checkers are cheap:
an ``isinstance`` for plain types, :func:`msgspec.convert` (C speed) for
generic containers such as ``list[str]``.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

import msgspec

from .errors import ConflictingReducers, StateValidationError
from .reducers import Reducer, last_write_wins

__all__ = ["FieldSpec", "Schema", "State", "check_state_class", "schema_of"]


class State(msgspec.Struct, frozen=True, kw_only=True):
    """Base class for graph state. Subclasses are frozen, keyword-only structs.

    Construction checks every field against its declared type, so
    ``Loop(turns="one")`` raises :class:`StateValidationError` at once rather
    than at ``invoke()`` (the same checkers the engine uses on updates; a
    class whose reducers are misdeclared is left for ``compile()`` to report).
    The engine's own merges skip this full check: they validate only the
    fields an update touches (see :func:`~._run.merge`).
    """

    def __post_init__(self) -> None:
        try:
            schema = schema_of(type(self))
        except (ConflictingReducers, TypeError):
            return  # compile() reports a misdeclared class, with its own error
        schema.validate(self, where=f"{type(self).__name__}(...)")


Checker = Callable[[Any], bool]


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """What the engine knows about one state field."""

    name: str
    type: Any
    reducer: Reducer
    check: Checker | None  # None: any value is acceptable
    has_default: bool

    @property
    def is_replace(self) -> bool:
        """Whether the field uses the default ``last_write_wins`` reducer."""
        return self.reducer is last_write_wins


MergePlan = tuple[Any, "Checker | None", Any, FieldSpec]
"""Per field: (reducer function or None for replace, checker, delta, spec)."""


@dataclass(frozen=True, slots=True)
class Schema:
    """What the engine knows about one ``State`` subclass (see :func:`schema_of`).

    ``plan`` is the same information flattened into tuples for the merge loop.
    """

    cls: type[State]
    fields: Mapping[str, FieldSpec]
    plan: Mapping[str, MergePlan]

    def validate(self, state: Any, *, where: str) -> None:
        """Check every field of ``state``; raise :class:`StateValidationError` naming them."""
        if not isinstance(state, self.cls):
            raise StateValidationError(
                f"{where}: expected {self.cls.__name__}, got {type(state).__name__}"
            )
        bad = [
            name
            for name, spec in self.fields.items()
            if spec.check is not None and not spec.check(getattr(state, name))
        ]
        if bad:
            detail = ", ".join(
                f"{n}={getattr(state, n)!r:.60} (expected {_type_name(self.fields[n].type)})"
                for n in bad
            )
            raise StateValidationError(f"{where}: invalid field(s) {detail}", fields=bad)

    def coerce(self, value: Any, *, where: str) -> State:
        """Turn a mapping (or an instance) into a validated instance of the schema."""
        if isinstance(value, self.cls):
            self.validate(value, where=where)
            return value
        if isinstance(value, Mapping):
            unknown = [k for k in value if k not in self.fields]
            if unknown:
                raise StateValidationError(
                    f"{where}: unknown field(s) {unknown} for {self.cls.__name__}", fields=unknown
                )
            try:
                state = self.cls(**value)
            except TypeError as exc:
                raise StateValidationError(f"{where}: {exc}") from exc
            self.validate(state, where=where)
            return state
        raise StateValidationError(
            f"{where}: expected {self.cls.__name__} or a mapping, got {type(value).__name__}"
        )


_SCHEMAS: dict[type, Schema] = {}


def schema_of(cls: type[State]) -> Schema:
    """The cached :class:`Schema` of ``cls``; raises ``ConflictingReducers``."""
    schema = _SCHEMAS.get(cls)
    if schema is None:
        schema = _build(cls)
        _SCHEMAS[cls] = schema
    return schema


def check_state_class(cls: Any) -> None:
    """The one rule for graph state classes: a subclass of :class:`State`.

    ``State`` is a frozen, keyword-only ``msgspec.Struct``; the engine relies on
    both (it shares untouched fields between states and merges by building a
    new instance), so a plain ``msgspec.Struct`` is rejected too.
    """
    if isinstance(cls, type) and issubclass(cls, State):
        return
    if isinstance(cls, type) and issubclass(cls, msgspec.Struct):
        got = f"the plain msgspec.Struct {cls.__name__}"
    else:
        got = repr(cls)
    raise TypeError(
        f"graph state must be a subclass of openarmature_nodes.graph.State (a frozen, "
        f"keyword-only msgspec.Struct), got {got}; declare it as `class "
        f"{getattr(cls, '__name__', 'MyState')}(State): ...`"
    )


def _build(cls: type[State]) -> Schema:
    check_state_class(cls)
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except NameError as exc:
        raise TypeError(
            f"cannot resolve the annotations of {cls.__name__} ({exc}); names used in a "
            "State's annotations (types, reducers) must be importable from its module"
        ) from exc
    out: dict[str, FieldSpec] = {}
    for f in msgspec.structs.fields(cls):
        annotated = hints.get(f.name, f.type)
        base, reducers = _split_annotated(annotated)
        if len(reducers) > 1:
            names = ", ".join(r.name for r in reducers)
            raise ConflictingReducers(
                f"{cls.__name__}.{f.name}: more than one reducer declared ({names})"
            )
        red = reducers[0] if reducers else last_write_wins
        has_default = (
            f.default is not msgspec.NODEFAULT or f.default_factory is not msgspec.NODEFAULT
        )
        out[f.name] = FieldSpec(f.name, base, red, make_checker(base), has_default)
    plan = {
        name: (None if spec.is_replace else spec.reducer.fn, spec.check, spec.reducer.delta, spec)
        for name, spec in out.items()
    }
    return Schema(cls, out, plan)


def _split_annotated(tp: Any) -> tuple[Any, list[Reducer]]:
    """Strip ``Annotated`` layers, collecting reducers found in the metadata."""
    reducers: list[Reducer] = []
    while get_origin(tp) is typing.Annotated:
        args = get_args(tp)
        tp = args[0]
        for meta in args[1:]:
            if isinstance(meta, Reducer):
                reducers.append(meta)
            elif callable(meta) and not isinstance(meta, (type, msgspec.Meta)):
                reducers.append(Reducer(meta, getattr(meta, "__name__", repr(meta))))
    return tp, reducers


def make_checker(tp: Any) -> Checker | None:
    """A predicate accepting exactly the values of type ``tp`` (``None``: anything)."""
    if tp is Any or tp is object:
        return None
    if tp is bool:
        return lambda v: v.__class__ is bool
    if tp is int:
        return lambda v: isinstance(v, int) and v.__class__ is not bool
    if tp is float:
        return lambda v: isinstance(v, (int, float)) and v.__class__ is not bool
    if tp is None or tp is type(None):
        return lambda v: v is None
    if isinstance(tp, type) and get_origin(tp) is None and not _is_typeddict(tp):
        return lambda v: isinstance(v, tp)
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        return lambda v: v in choices
    try:
        msgspec.inspect.type_info(tp)
    except (TypeError, ValueError):
        if isinstance(origin, type):
            return lambda v: isinstance(v, origin)
        return None
    full = _converting_checker(tp)
    args = get_args(tp)
    if origin is list and len(args) == 1 and args[0] in (str, int, float, bytes):
        return _list_of_exact(args[0], full)
    return full


def _list_of_exact(item: type, full: Checker) -> Checker:
    """Fast path for ``list[str]``-like types: exact-type items pass without converting."""

    def check(value: Any) -> bool:
        if value.__class__ is not list:
            return full(value)
        for x in value:
            if x.__class__ is not item:
                return full(value)
        return True

    return check


def _converting_checker(tp: Any) -> Checker:
    convert = msgspec.convert
    error = msgspec.ValidationError

    def check(value: Any) -> bool:
        try:
            convert(value, tp, strict=True)
        except error:
            return False
        return True

    return check


def _is_typeddict(tp: type) -> bool:
    return hasattr(tp, "__required_keys__")


def _type_name(tp: Any) -> str:
    name = getattr(tp, "__name__", None)
    return name if isinstance(name, str) and get_origin(tp) is None else str(tp)
