"""Results of the fault suite (``tests/test_fault_suite.py``), summarized by
``tests/conftest.py`` at the end of the pytest run."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RESULTS", "CaseResult", "summary_lines"]


@dataclass
class CaseResult:
    fault: str
    layer: str
    loop: str
    transport: str
    category: str = "?"
    attempts: int = -1
    passed: bool = False


RESULTS: list[CaseResult] = []


def summary_lines() -> list[str]:
    """The summary line, then one line per fault: each layer's category and
    attempt count (as seen on asyncio over the fast transport when they agree
    everywhere, else every differing combination)."""
    if not RESULTS:
        return []
    faults = sorted({r.fault for r in RESULTS}, key=[r.fault for r in RESULTS].index)
    layers = sorted({r.layer for r in RESULTS}, key=[r.layer for r in RESULTS].index)
    loops = sorted({r.loop for r in RESULTS})
    transports = sorted({r.transport for r in RESULTS})
    failed = [r for r in RESULTS if not r.passed]
    unclassified = [
        r for r in RESULTS if r.category != "ok" and not r.category.startswith(("provider_", "ok"))
    ]
    lines = [
        f"fault suite: {len(faults)} faults x {len(layers)} layers x {len(loops)} loops x "
        f"{len(transports)} transports = {len(RESULTS)} cases; failed: {len(failed)}; "
        f"unclassified: {len(unclassified)}"
    ]
    for fault in faults:
        parts = []
        for layer in layers:
            seen = {
                (r.category, r.attempts) for r in RESULTS if r.fault == fault and r.layer == layer
            }
            shown = ", ".join(f"{c}/{a} attempt(s)" for c, a in sorted(seen))
            parts.append(f"{layer}: {shown}")
        lines.append(f"  {fault}: " + "; ".join(parts))
    for r in failed:
        lines.append(f"  FAILED {r.fault} [{r.layer}, {r.loop}, {r.transport}]")
    return lines
