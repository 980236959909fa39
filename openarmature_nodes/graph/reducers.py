"""Reducers: how a node's partial update for one field meets the field's prior value.

A reducer is a pure, synchronous function ``(prior, update) -> new``. Attach one
to a state field with :data:`typing.Annotated`::

    class Chat(State):
        messages: Annotated[list[str], append] = []
        tags: Annotated[list[str], dedupe_append()] = []

A field without a reducer uses :data:`last_write_wins`. The eight canonical
reducers of graph-engine §2 live here; wrap your own function with
:func:`reducer` to give it a name (used in error messages) and to say whether
re-applying a value is a no-op (used by the projection round-trip warning).

Reducers never mutate ``prior``: they return a new object, or ``prior`` itself
when the update changes nothing. They raise ``TypeError``/``ValueError`` on a
contract violation; the engine wraps that as :class:`~.errors.ReducerError`
naming the field, the reducer and the node.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

from .errors import ReducerConfigurationInvalid

__all__ = [
    "Reducer",
    "append",
    "bounded_append",
    "concat_flatten",
    "dedupe_append",
    "last_write_wins",
    "merge",
    "merge_all",
    "merge_by_key",
    "reducer",
]

ReduceFn = Callable[[Any, Any], Any]


class Reducer:
    """A named reducer.

    Attributes:
        name: shown in errors (``"bounded_append(max_len=3)"``).
        round_trip_idempotent: ``True`` when merging a value the field already
            holds leaves the field unchanged (``merge``), ``False`` when it grows
            or breaks it (``append``).
        delta: for the canonical container reducers, a function giving the part
            of an update that ends up in the result, shaped like the field. The
            engine type-checks only that part, because the rest of the result is
            the already-validated prior value. ``None`` means "check the result".
    """

    __slots__ = ("delta", "fn", "name", "round_trip_idempotent")

    def __init__(
        self,
        fn: ReduceFn,
        name: str,
        *,
        round_trip_idempotent: bool = False,
        delta: Callable[[Any], Any] | None = None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.round_trip_idempotent = round_trip_idempotent
        self.delta = delta

    def __call__(self, prior: Any, update: Any) -> Any:
        return self.fn(prior, update)

    def __repr__(self) -> str:
        return f"<reducer {self.name}>"


def reducer(
    fn: ReduceFn, *, name: str | None = None, round_trip_idempotent: bool = False
) -> Reducer:
    """Name a custom reducer ``fn(prior, update) -> new``.

    Declare ``round_trip_idempotent=True`` when ``fn(x, x) == x`` for values the
    field holds; otherwise a subgraph projecting the field in and back out gets a
    compile warning (the value would be merged twice).
    """
    if not callable(fn):
        raise ReducerConfigurationInvalid(f"reducer must be callable, got {fn!r}")
    label = name or str(getattr(fn, "__name__", None) or repr(fn))
    return Reducer(fn, label, round_trip_idempotent=round_trip_idempotent)


def _kind(value: Any) -> str:
    return type(value).__name__


def _need_list(value: Any, what: str, name: str) -> None:
    if not isinstance(value, list):
        raise TypeError(f"{name}: {what} must be a list, got {_kind(value)} {value!r:.60}")


def _need_mapping(value: Any, what: str, name: str) -> None:
    if not isinstance(value, Mapping):
        raise TypeError(f"{name}: {what} must be a mapping, got {_kind(value)} {value!r:.60}")


def _identity(update: Any) -> Any:
    return update


# --- the five plain reducers -----------------------------------------------------


def _last_write_wins(prior: Any, update: Any) -> Any:
    return update


last_write_wins = Reducer(_last_write_wins, "last_write_wins", round_trip_idempotent=True)
"""The default: the update replaces the prior value."""


def _append(prior: Any, update: Any) -> Any:
    if not isinstance(update, list):
        _need_list(update, "update", "append")
    if not isinstance(prior, list):
        _need_list(prior, "prior value", "append")
    return prior + update if update else prior


append = Reducer(_append, "append", delta=_identity)
"""List field: ``prior + update``. The update must itself be a list."""


def _merge(prior: Any, update: Any) -> Any:
    _need_mapping(update, "update", "merge")
    _need_mapping(prior, "prior value", "merge")
    return {**prior, **update} if update else prior


merge = Reducer(_merge, "merge", round_trip_idempotent=True, delta=_identity)
"""Mapping field: shallow merge, the update's keys win."""


def _flatten(update: Any) -> list[Any]:
    out: list[Any] = []
    for i, sub in enumerate(update):
        if not isinstance(sub, list):
            raise TypeError(
                f"concat_flatten: update[{i}] must be a list, got {_kind(sub)} {sub!r:.60}"
            )
        out.extend(sub)
    return out


def _concat_flatten(prior: Any, update: Any) -> Any:
    _need_list(update, "update", "concat_flatten")
    _need_list(prior, "prior value", "concat_flatten")
    if not update:
        return prior
    return prior + _flatten(update)


concat_flatten = Reducer(_concat_flatten, "concat_flatten", delta=_flatten)
"""List field fed lists of lists: ``prior + [x for sub in update for x in sub]``."""


def _fold(update: Any) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for i, sub in enumerate(update):
        if not isinstance(sub, Mapping):
            raise TypeError(
                f"merge_all: update[{i}] must be a mapping, got {_kind(sub)} {sub!r:.60}"
            )
        out.update(sub)
    return out


def _merge_all(prior: Any, update: Any) -> Any:
    _need_list(update, "update", "merge_all")
    _need_mapping(prior, "prior value", "merge_all")
    if not update:
        return prior
    return {**prior, **_fold(update)}


merge_all = Reducer(_merge_all, "merge_all", delta=_fold)
"""Mapping field fed a list of mappings: merge each in turn, later keys win."""


# --- the three factories ---------------------------------------------------------


def bounded_append(max_len: int) -> Reducer:
    """``append``, then keep only the newest ``max_len`` items (oldest dropped first).

    An empty update returns the prior list untouched, even if it is already
    longer than ``max_len``: the bound applies to merges, not to the prior.
    """
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ReducerConfigurationInvalid(
            f"bounded_append(max_len={max_len!r}): max_len must be an integer >= 1"
        )
    name = f"bounded_append(max_len={max_len})"

    def _bounded(prior: Any, update: Any) -> Any:
        _need_list(update, "update", name)
        _need_list(prior, "prior value", name)
        if not update:
            return prior
        out = prior + update
        return out[-max_len:] if len(out) > max_len else out

    return Reducer(_bounded, name, delta=_identity)


def _key_of(key: Callable[[Any], Any] | None, item: Any, name: str) -> Hashable:
    try:
        k = item if key is None else key(item)
    except Exception as exc:
        raise ValueError(f"{name}: key function raised on {item!r:.60}: {exc}") from exc
    try:
        hash(k)
    except TypeError as exc:
        raise TypeError(f"{name}: key {k!r:.60} is not hashable") from exc
    return k  # type: ignore[no-any-return]


def dedupe_append(key: Callable[[Any], Any] | None = None) -> Reducer:
    """``append`` that skips items whose key is already in the list (or earlier in the update).

    ``key`` maps an item to its identity; by default the item itself (which
    must then be hashable). Existing items are never removed or reordered.
    """
    if key is not None and not callable(key):
        raise ReducerConfigurationInvalid(f"dedupe_append(key={key!r}): key must be callable")
    name = "dedupe_append()" if key is None else f"dedupe_append(key={_fn_name(key)})"

    def _dedupe(prior: Any, update: Any) -> Any:
        _need_list(update, "update", name)
        _need_list(prior, "prior value", name)
        if not update:
            return prior
        seen = {_key_of(key, item, name) for item in prior}
        out = list(prior)
        for item in update:
            k = _key_of(key, item, name)
            if k not in seen:
                seen.add(k)
                out.append(item)
        return out

    return Reducer(_dedupe, name, round_trip_idempotent=True, delta=_identity)


def merge_by_key(key: Callable[[Any], Any] | None) -> Reducer:
    """List of records merged by ``key(item)``: matching keys replace in place, new keys append.

    ``key`` is required. Within one update the last item with a key wins. When
    the prior list already holds duplicate keys, the last of them is the one
    replaced; earlier duplicates stay where they are.
    """
    if key is None or not callable(key):
        raise ReducerConfigurationInvalid(
            f"merge_by_key(key={key!r}): key must be a callable mapping an item to its key"
        )
    name = f"merge_by_key(key={_fn_name(key)})"

    def _merge_by_key(prior: Any, update: Any) -> Any:
        _need_list(update, "update", name)
        _need_list(prior, "prior value", name)
        if not update:
            return prior
        out = list(prior)
        index: dict[Hashable, int] = {}
        for i, item in enumerate(out):
            index[_key_of(key, item, name)] = i  # explicit loop: last duplicate wins
        for item in update:
            k = _key_of(key, item, name)
            at = index.get(k)
            if at is None:
                index[k] = len(out)
                out.append(item)
            else:
                out[at] = item
        return out

    return Reducer(_merge_by_key, name, round_trip_idempotent=True, delta=_identity)


def _fn_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", None) or repr(fn)
