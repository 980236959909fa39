"""The llm-provider conformance adapter refuses what it does not understand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conformance.adapters.llm_provider import match, run_case
from tests.conformance.fixtures import Case, UnknownDirective

pytestmark = pytest.mark.anyio

OK_BODY = {
    "id": "x",
    "model": "test-model",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
}


def _case(data: dict[str, Any]) -> Case:
    return Case("llm-provider", "999-synthetic", "main", data, data, Path("999-synthetic.yaml"))


def _call(**extra: Any) -> dict[str, Any]:
    return {"operation": "complete", "messages": [{"role": "user", "content": "hi"}], **extra}


@pytest.mark.parametrize(
    ("data", "name"),
    [
        ({"call": _call(), "frobnicate": 1}, "frobnicate"),
        ({"call": _call(temperature_schedule=[1])}, "temperature_schedule"),
        ({"call": _call(), "expected": {"response": {"vibes": "good"}}}, "vibes"),
        ({"call": _call(), "expected": {"invariants": {"moon_is_full": True}}}, "moon_is_full"),
        (
            {"call": _call(), "mock_provider": {"responses": [{"status": 200, "latency": 3}]}},
            "latency",
        ),
        ({"call": _call(messages=[{"role": "user", "content": "x", "name": "bob"}])}, "name"),
    ],
)
async def test_unknown_directive_fails_naming_it(data: dict[str, Any], name: str) -> None:
    data.setdefault("mock_provider", {"responses": [{"status": 200, "body": OK_BODY}]})
    with pytest.raises(UnknownDirective, match=name):
        await run_case(_case(data))


async def test_a_wrong_expectation_fails() -> None:
    data = {
        "call": _call(),
        "mock_provider": {"responses": [{"status": 200, "body": OK_BODY}]},
        "expected_wire_request": {
            "model": "test-model",
            "messages": [{"role": "user", "content": "bye"}],
        },
    }
    with pytest.raises(AssertionError, match="bye"):
        await run_case(_case(data))


def test_literal_wire_match() -> None:
    match({"a": "*", "b": [1, 2.0]}, {"a": "x", "b": [1, 2]}, "$")
    wrong = ({"a": "", "b": [1, 2]}, {"a": "x", "b": [1, 2], "c": 0}, {"a": "x", "b": [2, 1]})
    for actual in wrong:
        with pytest.raises(AssertionError):
            match({"a": "*", "b": [1, 2]}, actual, "$")
