"""The ground-floor typed events: shapes, defaults, immutability and layering."""

from __future__ import annotations

import ast
import pathlib

import msgspec
import pytest

from openarmature_nodes import events
from openarmature_nodes.events import (
    LlmCompletionEvent,
    LlmFailedEvent,
    LlmTokenEvent,
    ObserverEvent,
    ToolCallEvent,
    ToolCallFailedEvent,
    new_call_id,
)
from openarmature_nodes.graph import NodeEvent

IDENTITY = {"invocation_id": "inv", "namespace": ("a",), "node_name": "a"}


def test_every_typed_event_is_an_observer_event_without_phase() -> None:
    built = [
        LlmCompletionEvent(**IDENTITY, call_id="c", provider="vllm", model="m"),
        LlmFailedEvent(
            **IDENTITY, call_id="c", provider="vllm", model="m",
            error_category="provider_unavailable",
        ),
        LlmTokenEvent(
            **IDENTITY, call_id="c", provider="vllm", model="m",
            chunk_index=0, delta_kind="content", delta="hi",
        ),
        ToolCallEvent(**IDENTITY, call_id="t", tool_name="add", result=3),
        ToolCallFailedEvent(**IDENTITY, call_id="t", tool_name="add", error_type="ValueError"),
    ]
    for event in built:
        assert isinstance(event, ObserverEvent)
        assert not hasattr(event, "phase")
    assert issubclass(NodeEvent, ObserverEvent)


def test_defaults_mean_not_supplied() -> None:
    event = LlmCompletionEvent(**IDENTITY, call_id="c", provider="vllm", model="m")
    assert event.attempt_index == 0
    assert event.fan_out_index is None and event.fan_out_index_chain == ()
    assert event.input_messages == ()
    assert event.request_params == {} and event.request_extras == {}
    assert event.output_tool_calls is None and event.caller_invocation_metadata is None
    failed = LlmFailedEvent(
        **IDENTITY, call_id="c", provider="vllm", model="m", error_category="provider_rate_limit"
    )
    assert failed.error_message == "" and failed.usage is None


def test_events_are_frozen() -> None:
    event = ToolCallEvent(**IDENTITY, call_id="t", tool_name="add")
    with pytest.raises(AttributeError):
        event.tool_name = "sub"  # type: ignore[misc]


def test_call_ids_are_distinct() -> None:
    ids = {new_call_id() for _ in range(1000)}
    assert len(ids) == 1000


def test_events_module_imports_only_ground_floor() -> None:
    tree = ast.parse(pathlib.Path(events.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    ours = {m for m in imported if m.startswith("openarmature_nodes")}
    assert ours <= {"openarmature_nodes.context"}, ours
    assert msgspec.structs.fields(LlmTokenEvent)
