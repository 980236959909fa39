"""Cause-chain classification (pipeline-utilities §6.4).

When a failure crosses a graph boundary (a subgraph, a fan-out instance, a
parallel branch) the engine wraps it in a ``node_exception`` *carrier* whose
``__cause__`` is the real failure. A check on the surface exception then sees
only the carrier. :func:`classify_causes` is the one shared walk that sees
through carriers; the failure-isolation ``catch`` gate, its event report, a
custom retry classifier, a router or a metric should all use it, so that every
consumer classifies a wrapped failure the same way::

    chain = classify_causes(exc)
    chain.category          # "provider_unavailable", resolved through carriers
    [link.category for link in chain.links]   # ["node_exception", "provider_unavailable"]

The walk follows ``__cause__`` from the caught exception (outermost, index 0)
to the originating raise (innermost). It stops at the first link whose cause is
not an exception and on a repeated reference, so a cyclic chain cannot hang it.
"""

from __future__ import annotations

from dataclasses import dataclass

from openarmature_nodes.retrying import is_carrier

__all__ = ["CauseChain", "CauseLink", "classify_causes", "derived_category"]


@dataclass(frozen=True, slots=True)
class CauseLink:
    """One exception of a cause chain.

    ``category`` is the failure category the exception carries (llm-provider §7,
    graph-engine §4), or ``None``; ``message`` is its own message; ``carrier``
    tells whether it is a graph-engine carrier wrapper.
    """

    category: str | None
    message: str
    carrier: bool


@dataclass(frozen=True, slots=True)
class CauseChain:
    """The ordered links (outermost first) and the values derived from them.

    ``category`` is the category of the outermost non-carrier link that has
    one, else ``None``. ``message`` is that link's message; when no non-carrier
    link has a category, the outermost non-carrier link's message (``None`` only
    when every link is a carrier).
    """

    links: tuple[CauseLink, ...]
    category: str | None
    message: str | None


def _message_of(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    if isinstance(message, str):
        return message
    return str(exc)


def _category_of(exc: BaseException) -> str | None:
    category = getattr(exc, "category", None)
    return category if isinstance(category, str) and category else None


def classify_causes(exc: BaseException) -> CauseChain:
    """Walk ``exc``'s cause chain and derive its category (see the module doc)."""
    links: list[CauseLink] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        links.append(CauseLink(_category_of(current), _message_of(current), is_carrier(current)))
        nxt = current.__cause__
        current = nxt if isinstance(nxt, BaseException) else None

    category: str | None = None
    message: str | None = None
    first_plain: str | None = None
    for link in links:
        if link.carrier:
            continue
        if first_plain is None:
            first_plain = link.message
        if link.category is not None:
            category, message = link.category, link.message
            break
    if category is None:
        message = first_plain
    return CauseChain(tuple(links), category, message)


def derived_category(exc: BaseException) -> str | None:
    """Shortcut for ``classify_causes(exc).category``."""
    return classify_causes(exc).category
