"""Our own fixture-shaped cases, run through the same adapters as the spec's.

``tests/conformance/own_cases/<capability>/*.yaml`` are written by this project
(not copied from the spec) in the conformance-adapter §4 schema. They exercise
directives and adapter paths the spec fixtures at hand never use, and pin the
behaviours fixed for issue 11. They need no spec directory.
"""

from __future__ import annotations

import pytest

from .fixtures import OWN_CASES, Case, load_cases
from .matchers import fresh_bindings, reset_bindings
from .test_conformance import ADAPTERS, run_named

pytestmark = pytest.mark.anyio

_OWN: list[Case] = [
    case
    for capability in ADAPTERS
    for case in load_cases(capability, OWN_CASES / capability)
]


def test_own_cases_exist() -> None:
    assert {c.capability for c in _OWN} == set(ADAPTERS), "every adapter has own cases"


@pytest.mark.parametrize("case", _OWN, ids=[c.test_id for c in _OWN])
async def test_own_case(case: Case) -> None:
    table = fresh_bindings()
    try:
        await run_named(case)
    finally:
        reset_bindings(table)
