"""Extending an ``append`` field's list in place when nobody else can see it.

The ``append`` reducer is ``prior + update``: a new list every merge, so an
agent loop whose message list has grown to N items copies N references per
step. The copy is what keeps state immutable from the outside: a previous
state, an event's ``pre_state``, a checkpoint or a node that kept
``state.messages`` must not see a later step's messages.

When nobody else holds the previous state or its list, nobody can see the
difference, and the engine may extend the list in place instead (O(appended)).
This module says when that is provably so, by reference counts, the way CPython
itself appends to a string in place (``s += t``) when no one else holds ``s``:

- the plain loop (:func:`~._run.run_plain`) holds the current state in one local
  variable and replaces it with the merge's result; it tells
  :func:`~._run.merge` so (``sole``);
- :func:`~._run.merge` then takes the in-place path for an ``append`` field
  holding at least :data:`MIN_LENGTH` items only when the state's reference
  count is exactly :data:`STATE_REFS` (the loop's local, merge's parameter,
  ``getrefcount``'s argument: no observer's event, no checkpoint, no caller, no
  node kept it) and the list's is exactly
  :data:`LIST_REFS` (the state's field, merge's local, the argument: no other
  state, no node kept the list). Anything else holding either one raises its
  count, and the merge copies as before.

The counts are exact only on CPython with the GIL before 3.14 (3.14 may skip
the reference a local variable's load used to take, so a count could read one
low). :data:`ENABLED` is ``True`` only there, and only if a probe shaped like the
merge reads the expected counts; everywhere else every merge copies.
"""

from __future__ import annotations

import sys
import sysconfig
from typing import Any

from .reducers import append

__all__ = ["APPEND", "ENABLED", "LIST_REFS", "MIN_LENGTH", "STATE_REFS", "refcount"]

APPEND = append.fn
"""The function of the ``append`` reducer, as it appears in a schema's merge plan."""

STATE_REFS = 3
"""References to a state that only the plain loop holds, counted inside ``merge``."""

LIST_REFS = 3
"""References to a list that only one state holds, counted inside ``merge`` (in a local)."""

MIN_LENGTH = 64
"""Shorter lists are copied anyway: copying a few dozen references costs no more than the
checks (measured: the in-place path breaks even at about 40-60 items)."""

refcount = sys.getrefcount


def _probe(state: list[Any]) -> tuple[int, int]:
    """``merge``'s shape: the state a parameter, its list read into a local."""
    prior = state[0]
    return refcount(state), refcount(prior)


def _enabled() -> bool:
    if sys.implementation.name != "cpython" or sys.version_info >= (3, 14):
        return False
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        return False
    held: list[Any] = [[]]  # the loop's one local reference
    return _probe(held) == (STATE_REFS, LIST_REFS)


ENABLED = _enabled()
"""Whether reference counts are exact here (see the module documentation)."""
