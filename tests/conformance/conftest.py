"""Prints the conformance summary: fixture cases passed / failed / deferred / warned
per capability and backend, then (spec-drift mode) every skipped predicate with
its fixture case."""

from __future__ import annotations

import re

import pytest

_ID = re.compile(r"test_fixture\[(asyncio|trio)-([a-z-]+)/(.*)\]$")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    counts: dict[tuple[str, str], dict[str, int]] = {}
    skipped: list[tuple[str, str, str, str]] = []  # backend, case, predicate, where
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            match = _ID.search(getattr(report, "nodeid", ""))
            when = getattr(report, "when", "call")
            if match is None or (when != "call" and outcome == "passed"):
                continue
            if when == "teardown" and outcome != "error":
                continue
            kind = "failed" if outcome == "error" else outcome
            if outcome == "skipped":
                kind = "deferred" if "deferred:" in str(report.longrepr) else "skipped"
            backend, capability, case = match.groups()
            bucket = counts.setdefault((capability, backend), {})
            bucket[kind] = bucket.get(kind, 0) + 1
            for key, value in getattr(report, "user_properties", ()):
                if key == "skipped_predicates" and when == "call":
                    bucket["warned"] = bucket.get("warned", 0) + 1
                    skipped.extend((backend, f"{capability}/{case}", p, w) for p, w in value)
    if not counts:
        return
    terminalreporter.write_sep("=", "conformance fixture cases")
    for (capability, backend), bucket in sorted(counts.items()):
        parts = ", ".join(f"{bucket.get(k, 0)} {k}" for k in ("passed", "deferred", "warned"))
        extra = ", ".join(f"{n} {k}" for k, n in sorted(bucket.items())
                          if k not in ("passed", "deferred", "warned"))
        terminalreporter.write_line(f"{capability:<20} {backend:<8} {parts}"
                                    + (f", {extra}" if extra else ""))
    if skipped:
        terminalreporter.write_sep("-", "skipped fixture-specific predicates (spec-drift mode)")
        for backend, case, predicate, where in skipped:
            terminalreporter.write_line(f"{backend:<8} {case}: {predicate} ({where})")
