from __future__ import annotations

import pytest

from .fixtures import deferral_reason, load_deferrals


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    deferred = [
        r for r in terminalreporter.stats.get("skipped", [])
        if "deferred:" in str(getattr(r, "longrepr", ""))
    ]
    passed = [
        r for r in terminalreporter.stats.get("passed", [])
        if "test_conformance.py::test_fixture" in r.nodeid
    ]
    if deferred or passed:
        by_backend: dict[str, int] = {}
        for r in passed:
            backend = "trio" if r.nodeid.endswith("-trio]") else "asyncio"
            by_backend[backend] = by_backend.get(backend, 0) + 1
        terminalreporter.write_sep("=", "conformance")
        terminalreporter.write_line(
            f"fixture cases passed: {by_backend}; deferred (per backend run): {len(deferred)}"
        )


__all__ = ["deferral_reason", "load_deferrals"]
