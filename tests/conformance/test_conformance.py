"""One test per fixture case, for every capability that has an adapter.

Each capability's adapter is a module in ``tests/conformance/adapters/`` with
``async def run_case(case: Case) -> None`` that builds what the case declares
with the real implementation, runs it, and asserts the ``expected`` block.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable

import pytest

from .fixtures import Case, deferral_reason, load_cases, load_deferrals, spec_dir

pytestmark = pytest.mark.anyio

# capability directory name -> adapter module name
ADAPTERS: dict[str, str] = {
    "llm-provider": "llm_provider",
    "graph-engine": "graph_engine",
    "pipeline-utilities": "pipeline_utilities",
    "observability": "observability",
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


if not _SPEC_PRESENT:

    @pytest.mark.skip(
        reason=f"spec directory not found at {spec_dir()} (set OPENARMATURE_SPEC_DIR): "
        "conformance fixtures skipped"
    )
    def test_conformance_spec_missing() -> None:
        pass

else:

    @pytest.mark.parametrize("case", _CASES, ids=[c.test_id for c in _CASES])
    async def test_fixture(case: Case) -> None:
        reason = deferral_reason(case, _DEFERRALS)
        if reason is not None:
            pytest.skip(f"deferred: {reason}")
        await _runner(case.capability)(case)
