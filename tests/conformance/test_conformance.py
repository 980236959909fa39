"""One test per fixture case, for every capability that has an adapter.

Each capability's adapter is a module in ``tests/conformance/adapters/`` with
``async def run_case(case: Case) -> None`` that builds what the case declares
with the real implementation, runs it, and asserts the ``expected`` block.

Without the spec directory the module skips, except under ``CI=true``, where
it fails: CI must never go green without running the fixtures. In spec-drift
mode (``OPENARMATURE_CONFORMANCE_UNKNOWN=warn``) the predicates a case skipped
are attached to its report (``user_properties``) for the summary.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Awaitable, Callable

import pytest

from .fixtures import (
    Case,
    as_schema_error,
    check_version,
    deferral_reason,
    load_cases,
    load_deferrals,
    skipped_predicates,
    spec_dir,
)
from .matchers import fresh_bindings, reset_bindings

pytestmark = pytest.mark.anyio

# capability directory name -> adapter module name
ADAPTERS: dict[str, str] = {
    "llm-provider": "llm_provider",
    "graph-engine": "graph_engine",
    "pipeline-utilities": "pipeline_utilities",
    "observability": "observability",
    "suspension": "suspension",
}

_SPEC_PRESENT = (spec_dir() / "spec").is_dir()
_DEFERRALS = load_deferrals()
_CASES: list[Case] = []
if _SPEC_PRESENT:
    for _cap in ADAPTERS:
        _CASES.extend(load_cases(_cap))


def _runner(capability: str) -> Callable[[Case], Awaitable[None]]:
    module = importlib.import_module(f"tests.conformance.adapters.{ADAPTERS[capability]}")
    run: Callable[[Case], Awaitable[None]] = module.run_case
    return run


async def run_named(case: Case) -> None:
    """Run ``case``; a key the adapter needed but the fixture lacks fails naming it."""
    check_version(case)
    try:
        await _runner(case.capability)(case)
    except KeyError as exc:
        raise as_schema_error(exc, case.test_id) from exc


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


if not _SPEC_PRESENT:

    def test_conformance_spec_missing() -> None:
        message = (f"spec directory not found at {spec_dir()} (set OPENARMATURE_SPEC_DIR): "
                   "conformance fixtures not run")
        if under_ci():
            pytest.fail(message)
        pytest.skip(message)

else:

    @pytest.mark.parametrize("case", _CASES, ids=[c.test_id for c in _CASES])
    async def test_fixture(case: Case, request: pytest.FixtureRequest) -> None:
        reason = deferral_reason(case, _DEFERRALS)
        if reason is not None:
            pytest.skip(f"deferred: {reason}")
        skipped: list[tuple[str, str]] = []
        token = skipped_predicates.set(skipped)
        table = fresh_bindings()
        try:
            await run_named(case)
        finally:
            reset_bindings(table)
            skipped_predicates.reset(token)
            if skipped:
                request.node.user_properties.append(("skipped_predicates", skipped))
