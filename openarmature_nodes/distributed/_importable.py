"""Refuse, before dispatch, what a worker could not import by name.

A worker rebuilds the subgraph from a factory named ``"package.module:function"``
and decodes instance states into the subgraph's state class, found the same way.
Objects defined in ``__main__`` (a script run with ``python script.py``), lambdas
and closures have no such name: pickling them by reference fails on the worker,
and in Dask that failure can drop the worker's scheduler connection so that every
later task times out. So they are refused here, with the fix in the message.
"""

from __future__ import annotations

import pickle
import pkgutil
from collections.abc import Sequence
from typing import Any

from .errors import NotImportable

__all__ = ["check_class", "check_picklable", "qualified_name", "resolve"]

_FIX = (
    "move it to a module the workers can import (a file in your package or on the "
    "workers' PYTHONPATH, not the script you run) and define it at module level"
)


def qualified_name(obj: Any, what: str) -> str:
    """``"module:qualname"`` of a module-level class or function, or :class:`NotImportable`."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise NotImportable(f"{what} {obj!r} has no importable name; {_FIX}")
    if module == "__main__":
        raise NotImportable(
            f"{what} {qualname!r} is defined in __main__, which Dask workers cannot import; "
            f"{_FIX}"
        )
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise NotImportable(
            f"{what} {module}.{qualname} is a lambda or is defined inside a function, so "
            f"workers cannot import it by name; {_FIX}"
        )
    return f"{module}:{qualname}"


def resolve(spec: str, what: str) -> Any:
    """Import ``"module:qualname"`` and return the object; :class:`NotImportable` if not."""
    module_name, sep, qualname = spec.partition(":")
    if not sep or not module_name or not qualname:
        raise NotImportable(f"{what} {spec!r} must be written 'package.module:name'")
    if module_name == "__main__":
        raise NotImportable(f"{what} {spec!r} lives in __main__; {_FIX}")
    try:  # the user's module, by the name the workers will use (never one of ours)
        obj: Any = pkgutil.resolve_name(spec)
    except (ImportError, AttributeError, ValueError) as exc:
        raise NotImportable(f"{what} {spec!r} cannot be imported here: {exc}") from exc
    return obj


def check_class(cls: type, what: str) -> str:
    """The class's importable name; refuses a class that would not resolve to itself."""
    name = qualified_name(cls, what)
    if resolve(name, what) is not cls:
        raise NotImportable(
            f"{what} {name} does not resolve to the same class when imported by name; {_FIX}"
        )
    return name


def check_picklable(objs: Sequence[Any], what: str) -> bytes:
    """Pickle ``objs`` (by reference, as workers will load them) or refuse them."""
    for obj in objs:
        for o in (obj, type(obj)):
            if callable(o) and getattr(o, "__module__", None) == "__main__":
                qualified_name(o, what)
    try:
        return pickle.dumps(tuple(objs))
    except Exception as exc:
        raise NotImportable(f"{what} cannot be pickled for the workers ({exc}); {_FIX}") from exc
