"""Which failures are worth another attempt, and how long to wait before it.

The pure half of :mod:`openarmature_nodes.retrying` (which re-exports every
public name here): the §6.1 transient test, the graph-engine carrier test, the
server's ``retry_after``, and the two backoff strategies. Nothing here sleeps,
loops or imports the LLM layer: errors are classified by their ``category``
attribute against the category *names* (llm-provider §7), so any exception
that carries a category takes part.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

__all__ = [
    "TRANSIENT_CATEGORIES",
    "Backoff",
    "constant_backoff",
    "default_classifier",
    "exponential_full_jitter",
    "is_carrier",
    "is_transient",
    "retry_after_of",
]

Backoff = Callable[[int], float]
"""``(attempt_index) -> seconds``; ``attempt_index`` is the 0-based index of the
attempt that just failed."""

TRANSIENT_CATEGORIES: frozenset[str] = frozenset(
    {"provider_unavailable", "provider_rate_limit", "provider_model_not_loaded"}
)
"""The llm-provider §7 categories pipeline-utilities §6.1 retries by default."""

_CARRIER_CATEGORY_NAMES: frozenset[str] = frozenset(
    {"node_exception", "parallel_branches_branch_failed"}
)

_INHERITING_CATEGORY_NAMES: frozenset[str] = frozenset({"parallel_branches_branch_failed"})
"""Categories whose spec says they take the transient classification of the exception
they wrap (pipeline-utilities §11.9: a failed branch is as transient as its failure)."""


# --- classification ----------------------------------------------------------


def is_carrier(exc: BaseException) -> bool:
    """True when ``exc`` is a graph-engine §4 carrier wrapper (``node_exception``
    or a subtype): an error whose job is to carry its ``__cause__`` across a
    graph boundary. Recognized by a truthy ``carrier`` attribute or by category.
    """
    if getattr(exc, "carrier", False) is True:
        return True
    return getattr(exc, "category", None) in _CARRIER_CATEGORY_NAMES


def _transient_itself(exc: BaseException) -> bool:
    if getattr(exc, "transient", False) is True:
        return True
    category = getattr(exc, "category", None)
    return isinstance(category, str) and category in TRANSIENT_CATEGORIES


def is_transient(exc: BaseException) -> bool:
    """The §6.1 default transient test, one cause level deep.

    True when ``exc`` is an :class:`Exception` whose category is transient (or
    that marks itself ``transient``), or when ``exc`` is a carrier, or carries
    no category at all, and its direct ``__cause__`` is transient. A surface
    exception with a non-transient category of its own is never transient, even
    if it was raised from a transient one: the surface re-categorized it.
    ``parallel_branches_branch_failed`` is classified as the branch failure it
    wraps is (pipeline-utilities §11.9), so a retry around a parallel-branches
    node re-runs it for a transient branch failure (§11.6), as it does a fan-out.
    Cancellation is never transient.
    """
    if not isinstance(exc, Exception):
        return False
    if _transient_itself(exc):
        return True
    if getattr(exc, "category", None) in _INHERITING_CATEGORY_NAMES:
        cause = exc.__cause__
        return isinstance(cause, Exception) and cause is not exc and is_transient(cause)
    if getattr(exc, "category", None) is None or is_carrier(exc):
        cause = exc.__cause__
        return cause is not None and isinstance(cause, Exception) and _transient_itself(cause)
    return False


def default_classifier(exc: BaseException, state: Any = None) -> bool:
    """pipeline-utilities §6.1's default classifier: ignores ``state``."""
    return is_transient(exc)


def retry_after_of(exc: BaseException) -> float | None:
    """The server-requested wait carried by ``exc`` (or its direct cause), in
    seconds, or ``None``."""
    for candidate in (exc, exc.__cause__):
        if candidate is None:
            continue
        value = getattr(candidate, "retry_after", None)
        if (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value >= 0
        ):
            return float(value)
    return None


# --- backoff strategies --------------------------------------------------------


def exponential_full_jitter(
    base: float = 1.0, cap: float = 30.0, *, rng: Callable[[], float] = random.random
) -> Backoff:
    """§6.1's default: ``uniform(0, min(cap, base * 2 ** attempt_index))``.

    Full jitter spreads concurrent retriers over the whole window, so a burst of
    callers that failed together does not come back together.
    """

    def backoff(attempt_index: int) -> float:
        ceiling = cap if attempt_index >= 64 else min(cap, base * (2.0**attempt_index))
        return rng() * ceiling

    return backoff


def constant_backoff(seconds: float) -> Backoff:
    """The same wait after every failure (``0`` for tests and deterministic runs)."""

    def backoff(attempt_index: int) -> float:
        return seconds

    return backoff
