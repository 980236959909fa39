"""Prints a conformance summary: cases passed, failed and deferred per capability and backend."""

from __future__ import annotations

import re

import pytest

_ID = re.compile(r"test_fixture\[(asyncio|trio)-([a-z-]+)/")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for outcome in ("passed", "failed", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            match = _ID.search(getattr(report, "nodeid", ""))
            if match is None or getattr(report, "when", "call") == "teardown":
                continue
            kind = outcome
            if outcome == "skipped":
                kind = "deferred" if "deferred:" in str(report.longrepr) else "skipped"
            key = (match.group(2), match.group(1))
            bucket = counts.setdefault(key, {})
            bucket[kind] = bucket.get(kind, 0) + 1
    if not counts:
        return
    terminalreporter.write_sep("=", "conformance fixture cases")
    for (capability, backend), bucket in sorted(counts.items()):
        parts = ", ".join(f"{n} {kind}" for kind, n in sorted(bucket.items()))
        terminalreporter.write_line(f"{capability:<20} {backend:<8} {parts}")
