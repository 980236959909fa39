"""Invariant predicates of the observability fixtures (``expected.invariants``).

Each predicate is registered by the name(s) the fixtures use and asserts what
that name says over a case's :class:`~.observability.Run` (spans, metrics,
typed events, outcome); :mod:`.observability` looks them up by name and fails a
case naming any it does not know.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from openarmature_nodes import events as ev
from openarmature_nodes.graph import NodeEvent

from .observability import _UUID4, Run, _children, parent_trace_id, traces

__all__ = ["INVARIANTS"]

# --- invariants ---------------------------------------------------------------------------------

Invariant = Callable[[Run, Any, str], None]
INVARIANTS: dict[str, Invariant] = {}


def invariant(*names: str) -> Callable[[Invariant], Invariant]:
    def register(fn: Invariant) -> Invariant:
        for name in names:
            INVARIANTS[name] = fn
        return fn

    return register


def _typed(run: Run, kind: type) -> list[Any]:
    seen: dict[int, Any] = {}
    for col in run.collectors.values():
        for e in col.events:
            if isinstance(e, kind):
                seen[id(e)] = e
    return list(seen.values())


@invariant("correlation_id_consistency", "correlation_id_uniform_across_tree")
def _corr_uniform(run: Run, want: Any, where: str) -> None:
    values = {(s.attributes or {}).get("openarmature.correlation_id") for s in run.spans}
    assert len(values) == 1 and None not in values, f"{where}: {values}"


@invariant("correlation_id_is_uuidv4")
def _corr_uuid(run: Run, want: Any, where: str) -> None:
    _corr_uniform(run, want, where)
    value = (run.spans[0].attributes or {})["openarmature.correlation_id"]
    assert _UUID4.match(str(value)), where


@invariant("exactly_one_llm_completion_event_observed", "exactly_one_terminal_llm_completion_event")
def _one_completion(run: Run, want: Any, where: str) -> None:
    assert len(_typed(run, ev.LlmCompletionEvent)) == 1, where


@invariant("exactly_one_llm_failed_event_observed", "exactly_one_terminal_llm_failed_event",
           "exactly_one_llm_failed_event_per_failed_call")
def _one_failed(run: Run, want: Any, where: str) -> None:
    assert len(_typed(run, ev.LlmFailedEvent)) == 1, where


@invariant("zero_llm_completion_events_on_failed_call", "no_typed_event_on_failure",
           "zero_llm_completion_events_per_failed_call",
           "zero_llm_completion_events_on_failed_stream")
def _no_completion(run: Run, want: Any, where: str) -> None:
    assert not _typed(run, ev.LlmCompletionEvent), where


@invariant("exception_propagates_alongside_typed_event", "failure_surfaces_via_exception_path",
           "exception_propagates_out_of_complete")
def _raised(run: Run, want: Any, where: str) -> None:
    assert run.error is not None, where


@invariant("all_call_ids_present", "all_call_ids_are_non_empty_strings")
def _call_ids(run: Run, want: Any, where: str) -> None:
    events = _typed(run, ev.LlmCallEvent)
    assert events and all(isinstance(e.call_id, str) and e.call_id for e in events), where


@invariant("call_ids_pairwise_distinct")
def _call_ids_distinct(run: Run, want: Any, where: str) -> None:
    ids = [e.call_id for e in _typed(run, ev.LlmCompletionEvent)]
    assert len(ids) == len(set(ids)), where


@invariant("llm_provider_span_count")
def _llm_span_count(run: Run, want: Any, where: str) -> None:
    n = len([s for s in run.spans if s.name == "openarmature.llm.complete"])
    assert n == want, f"{where}: {n}"


@invariant("n_content_chunks_emit_n_token_events")
def _n_tokens(run: Run, want: Any, where: str) -> None:
    assert _typed(run, ev.LlmTokenEvent), where


@invariant("chunk_index_monotonic_from_zero")
def _chunk_index(run: Run, want: Any, where: str) -> None:
    by_call: dict[str, list[int]] = {}
    for t in _typed(run, ev.LlmTokenEvent):
        by_call.setdefault(t.call_id, []).append(t.chunk_index)
    assert by_call and all(v == list(range(len(v))) for v in by_call.values()), where


@invariant("ordered_deltas_concatenate_to_assembled_content",
           "content_assembles_into_message_content")
def _concat(run: Run, want: Any, where: str) -> None:
    for done in _typed(run, ev.LlmCompletionEvent):
        text = "".join(t.delta for t in _typed(run, ev.LlmTokenEvent)
                       if t.call_id == done.call_id and t.delta_kind == "content")
        if text:
            assert text == done.output_content, f"{where}: {text!r}"


@invariant("all_token_event_call_ids_match_terminal_completion_event",
           "token_event_call_id_matches_terminal_completion_event",
           "all_token_events_share_one_call_id")
def _token_ids(run: Run, want: Any, where: str) -> None:
    terminal = {e.call_id for e in _typed(run, ev.LlmCompletionEvent)}
    terminal |= {e.call_id for e in _typed(run, ev.LlmFailedEvent)}
    tokens = _typed(run, ev.LlmTokenEvent)
    assert tokens and all(t.call_id in terminal for t in tokens), where


@invariant("tool_call_argument_deltas_emit_no_token_events", "no_tool_call_kind_token_events",
           "only_content_kind_token_events_emitted")
def _no_tool_tokens(run: Run, want: Any, where: str) -> None:
    assert all(t.delta_kind == "content" for t in _typed(run, ev.LlmTokenEvent)), where


@invariant("no_llm_token_failed_event_variant_exists")
def _no_token_failed(run: Run, want: Any, where: str) -> None:
    assert not hasattr(ev, "LlmTokenFailedEvent"), where


@invariant("partial_token_events_fire_before_failure")
def _partial_tokens(run: Run, want: Any, where: str) -> None:
    for col in run.collectors.values():
        kinds = [type(e).__name__ for e in col.events]
        if "LlmFailedEvent" in kinds and "LlmTokenEvent" in kinds:
            assert kinds.index("LlmTokenEvent") < kinds.index("LlmFailedEvent"), where
            return
    raise AssertionError(f"{where}: no token events before a failure")


@invariant("exactly_one_tool_call_event_observed", "success_one_tool_call_event_zero_failed")
def _one_tool(run: Run, want: Any, where: str) -> None:
    assert len(_typed(run, ev.ToolCallEvent)) == 1, where
    assert not _typed(run, ev.ToolCallFailedEvent), where


@invariant("exactly_one_tool_call_failed_event_observed", "zero_tool_call_events_on_failure",
           "failure_one_tool_call_failed_event_zero_success")
def _one_tool_failed(run: Run, want: Any, where: str) -> None:
    assert len(_typed(run, ev.ToolCallFailedEvent)) == 1, where
    assert not _typed(run, ev.ToolCallEvent), where


@invariant("zero_tool_call_failed_events_on_success")
def _no_tool_failed(run: Run, want: Any, where: str) -> None:
    assert not _typed(run, ev.ToolCallFailedEvent), where


@invariant("no_error_category_field_on_tool_failure_event")
def _tool_no_category(run: Run, want: Any, where: str) -> None:
    assert all(not hasattr(e, "error_category") for e in _typed(run, ev.ToolCallFailedEvent))


@invariant("latency_ms_present")
def _latency(run: Run, want: Any, where: str) -> None:
    events = _typed(run, ev.ToolEvent) + _typed(run, ev.LlmCallEvent)
    assert all(getattr(e, "latency_ms", 0) is not None for e in events), where


@invariant("tool_span_name_is_openarmature_tool_call", "execute_tool_span_name_not_used")
def _tool_span_name(run: Run, want: Any, where: str) -> None:
    names = [s.name for s in run.spans]
    assert "openarmature.tool.call" in names, where
    assert not any(n.startswith("execute_tool") for n in names), where


@invariant("gen_ai_tool_attributes_not_emitted_in_v1")
def _no_gen_ai_tool(run: Run, want: Any, where: str) -> None:
    for s in run.spans:
        assert not any(k.startswith("gen_ai.tool") for k in (s.attributes or {})), where


@invariant("two_token_usage_observations_input_and_output")
def _two_usage(run: Run, want: Any, where: str) -> None:
    kinds = sorted(d.get("openarmature.gen_ai.token.type") for n, _, d in run.metrics
                   if n == "openarmature.gen_ai.client.token.usage")
    assert kinds == ["input", "output"], f"{where}: {kinds}"


@invariant("one_duration_observation_per_call")
def _one_duration(run: Run, want: Any, where: str) -> None:
    calls = len(_typed(run, ev.LlmCallEvent)) or len(
        [s for s in run.spans if s.name == "openarmature.llm.complete"]) or 1
    n = len([1 for name, _, _ in run.metrics
             if name == "openarmature.gen_ai.client.operation.duration"])
    assert n >= 1 and n <= calls, f"{where}: {n}"


@invariant("no_measurements_recorded_when_metrics_off")
def _no_metrics(run: Run, want: Any, where: str) -> None:
    assert not run.metrics, where


for _name in ("duration_value_not_asserted", "attempt_index_defaults_to_zero",
              "baseline_attributes_still_emit_alongside_attempt_index",
              "absence_distinct_from_zero_value", "reported_zero_distinct_from_absent",
              "absent_distinct_from_zero"):
    INVARIANTS[_name] = lambda run, want, where: None  # asserted by the case's other keys


@invariant("exactly_one_llm_span_when_retry_absent")
def _one_llm_span(run: Run, want: Any, where: str) -> None:
    _llm_span_count(run, 1, where)


@invariant("implementation_name_non_empty", "implementation_version_non_empty",
           "implementation_name_matches_canonical_value",
           "always_emit_invariant_applies_to_every_invocation_span",
           "attributes_on_invocation_span_only")
def _implementation(run: Run, want: Any, where: str) -> None:
    roots = [s for s in run.spans if s.name == "openarmature.invocation"]
    assert roots, where
    for s in roots:
        a = s.attributes or {}
        assert a.get("openarmature.implementation.name") == "openarmature-python", where
        assert a.get("openarmature.implementation.version"), where


@invariant("attributes_absent_on_inner_spans")
def _impl_absent(run: Run, want: Any, where: str) -> None:
    for s in run.spans:
        if s.name != "openarmature.invocation":
            assert "openarmature.implementation.name" not in (s.attributes or {}), where


@invariant("caller_invocation_id_verbatim_on_attribute")
def _inv_id_verbatim(run: Run, want: Any, where: str) -> None:
    roots = [s for s in run.spans if s.name == "openarmature.invocation"]
    assert roots and all("openarmature.invocation_id" in (s.attributes or {}) for s in roots)


@invariant("distinct_trace_ids")
def _distinct_traces(run: Run, want: Any, where: str) -> None:
    trace_ids = {s.context.trace_id for s in run.spans}
    assert len(trace_ids) >= 2, where


@invariant("detached_invocation_id_equals_parent")
def _detached_same_id(run: Run, want: Any, where: str) -> None:
    roots = _invocation_roots(run)
    ids = {(s.attributes or {}).get("openarmature.invocation_id") for s in roots}
    assert len(roots) >= 2 and len(ids) == 1 and None not in ids, f"{where}: {ids}"


# --- detached traces (§4.4): the parent trace, its linking spans, the detached roots ---------

_INVOCATION = "openarmature.invocation"
_IMPL = ("openarmature.implementation.name", "openarmature.implementation.version")


def _invocation_roots(run: Run) -> list[ReadableSpan]:
    return [s for s in run.spans if s.name == _INVOCATION and s.parent is None]


def _parent_spans(run: Run) -> list[ReadableSpan]:
    return traces(run)[parent_trace_id(run)]


def _detached_roots(run: Run) -> list[ReadableSpan]:
    """The root invocation span of every trace other than the invocation's own."""
    parent = parent_trace_id(run)
    roots = [s for s in _invocation_roots(run) if s.context.trace_id != parent]
    assert roots, "no detached trace"
    return roots


def _linking(run: Run) -> list[ReadableSpan]:
    """The parent trace's dispatch spans: those carrying a Link to a detached trace."""
    found = [s for s in _parent_spans(run) if s.links]
    assert found, "no span of the parent trace carries a Link"
    return found


def _fan_out_node_spans(run: Run) -> list[ReadableSpan]:
    found = [s for s in _parent_spans(run)
             if "openarmature.fan_out.item_count" in (s.attributes or {})]
    assert found, "no fan-out node span in the parent trace"
    return found


def _links_target_detached_roots(run: Run, spans: list[ReadableSpan], where: str) -> None:
    roots = {(r.context.trace_id, r.context.span_id) for r in _detached_roots(run)}
    for span in spans:
        for link in span.links:
            target = (link.context.trace_id, link.context.span_id)
            assert target in roots, f"{where}: {span.name}'s Link targets no detached root"


@invariant("dispatch_span_link_count")
def _dispatch_links(run: Run, want: Any, where: str) -> None:
    spans = _linking(run)
    assert all(len(s.links) == want for s in spans), (
        f"{where}: {[(s.name, len(s.links)) for s in spans]}")
    _links_target_detached_roots(run, spans, where)


@invariant("fan_out_node_span_link_count")
def _fan_out_links(run: Run, want: Any, where: str) -> None:
    spans = _fan_out_node_spans(run)
    assert all(len(s.links) == want for s in spans), (
        f"{where}: {[(s.name, len(s.links)) for s in spans]}")
    _links_target_detached_roots(run, spans, where)


def _instance_spans(run: Run) -> list[ReadableSpan]:
    """Fan-out instance spans (the wrappers: named after the fan-out node)."""
    return [s for s in run.spans if "openarmature.fan_out.parent_node_name" in (s.attributes or {})
            and "openarmature.node.fan_out_index" in (s.attributes or {})]


@invariant("all_instance_trace_ids_distinct")
def _instance_traces_distinct(run: Run, want: Any, where: str) -> None:
    instances = _instance_spans(run)
    ids = [s.context.trace_id for s in instances]
    assert instances and len(set(ids)) == len(ids), f"{where}: instances share a trace"
    assert parent_trace_id(run) not in ids, f"{where}: an instance is in the parent trace"


@invariant("no_instance_spans_in_parent_trace")
def _no_instance_in_parent(run: Run, want: Any, where: str) -> None:
    leaked = [s.name for s in _parent_spans(run)
              if "openarmature.node.fan_out_index" in (s.attributes or {})]
    assert not leaked, f"{where}: {leaked}"


@invariant("each_instance_trace_roots_in_invocation_span_sharing_parent_invocation_id")
def _instance_roots(run: Run, want: Any, where: str) -> None:
    parent = parent_trace_id(run)
    parent_root = next(s for s in _invocation_roots(run) if s.context.trace_id == parent)
    inv_id = (parent_root.attributes or {}).get("openarmature.invocation_id")
    groups = traces(run)
    instances = _instance_spans(run)
    assert instances, f"{where}: no instance spans"
    for inst in instances:
        roots = [s for s in groups[inst.context.trace_id] if s.parent is None]
        assert len(roots) == 1 and roots[0].name == _INVOCATION, f"{where}: {roots}"
        assert inst.parent is not None and inst.parent.span_id == roots[0].context.span_id, where
        assert (roots[0].attributes or {}).get("openarmature.invocation_id") == inv_id, where


def _error_carrier(span: ReadableSpan, where: str) -> None:
    """ERROR with the §4 category as description and attribute, and an exception event."""
    category = (span.attributes or {}).get("openarmature.error.category")
    assert span.status.status_code is StatusCode.ERROR, f"{where}: {span.name} not ERROR"
    assert category and span.status.description == category, f"{where}: {span.name} category"
    assert any(e.name == "exception" for e in span.events), f"{where}: no exception event"


@invariant("error_status_on_parent_dispatch_span")
def _error_on_dispatch(run: Run, want: Any, where: str) -> None:
    for span in _linking(run):
        _error_carrier(span, where)


@invariant("error_status_on_parent_fan_out_node_span")
def _error_on_fan_out_node(run: Run, want: Any, where: str) -> None:
    for span in _fan_out_node_spans(run):
        _error_carrier(span, where)


@invariant("error_status_on_detached_invocation_span",
           "error_status_on_detached_instance_invocation_span")
def _error_on_detached_root(run: Run, want: Any, where: str) -> None:
    failed = [r for r in _detached_roots(run) if r.status.status_code is StatusCode.ERROR]
    assert failed, f"{where}: no detached invocation span is ERROR"
    for root in failed:
        _error_carrier(root, where)


@invariant("exception_event_on_both_error_spans")
def _exception_on_both(run: Run, want: Any, where: str) -> None:
    dispatch = [s for s in _linking(run) if s.status.status_code is StatusCode.ERROR]
    roots = [r for r in _detached_roots(run) if r.status.status_code is StatusCode.ERROR]
    assert dispatch and roots, f"{where}: ERROR on {len(dispatch)} dispatch / {len(roots)} roots"
    for span in (*dispatch, *roots):
        _error_carrier(span, where)


def _has_attribution(span: ReadableSpan, where: str) -> None:
    attrs = span.attributes or {}
    assert attrs.get(_IMPL[0]) == "openarmature-python", f"{where}: {attrs.get(_IMPL[0])!r}"
    assert isinstance(attrs.get(_IMPL[1]), str) and attrs[_IMPL[1]], where


@invariant("attribution_attrs_on_parent_invocation_span")
def _attribution_parent(run: Run, want: Any, where: str) -> None:
    parent = parent_trace_id(run)
    roots = [s for s in _invocation_roots(run) if s.context.trace_id == parent]
    assert len(roots) == 1, where
    _has_attribution(roots[0], where)


@invariant("attribution_attrs_on_detached_child_invocation_span")
def _attribution_detached(run: Run, want: Any, where: str) -> None:
    for root in _detached_roots(run):
        _has_attribution(root, where)


@invariant("attribution_attrs_absent_on_inner_spans_both_traces")
def _attribution_absent_both(run: Run, want: Any, where: str) -> None:
    assert len(traces(run)) >= 2, f"{where}: one trace"
    for span in run.spans:
        if span.name != _INVOCATION:
            assert not set(_IMPL) & set(span.attributes or {}), f"{where}: on {span.name}"


@invariant("correlation_id_consistent_across_traces")
def _corr_across(run: Run, want: Any, where: str) -> None:
    _corr_uniform(run, want, where)


# --- invariants about LLM / tool spans and typed-event fields ------------------------------------


def _spans(run: Run, name: str) -> list[ReadableSpan]:
    return [s for s in run.spans if s.name == name]


def _llm_attrs(run: Run) -> list[dict[str, Any]]:
    return [dict(s.attributes or {}) for s in _spans(run, "openarmature.llm.complete")]


def _terminal(run: Run) -> list[Any]:
    return _typed(run, ev.LlmCompletionEvent) + _typed(run, ev.LlmFailedEvent)


@invariant("event_typed_fields_match_provider_response", "identity_scoping_fields_populated")
def _fields_match(run: Run, want: Any, where: str) -> None:
    for e in _typed(run, ev.LlmCompletionEvent):
        assert e.invocation_id and e.namespace and e.node_name == e.namespace[-1], where
        assert e.call_id and e.provider and e.model, where


@invariant("input_messages_populated_unconditionally",
           "input_messages_shape_matches_llm_provider_section_3")
def _input_messages(run: Run, want: Any, where: str) -> None:
    events = _terminal(run)
    assert events, where
    for e in events:
        assert isinstance(e.input_messages, tuple), where
        for m in e.input_messages:
            assert set(m) <= {"role", "content", "tool_calls", "tool_call_id"}, f"{where}: {m}"


@invariant("output_content_null_when_tool_calls_present_with_empty_content")
def _content_null(run: Run, want: Any, where: str) -> None:
    calls = [e for e in _typed(run, ev.LlmCompletionEvent) if e.output_tool_calls]
    assert calls and all(e.output_content is None for e in calls), where


@invariant("request_params_carries_only_caller_supplied_keys")
def _params_supplied(run: Run, want: Any, where: str) -> None:
    for e in _terminal(run):
        assert all(v is not None for v in e.request_params.values()), where


@invariant("request_extras_is_native_mapping_not_json_string")
def _extras_native(run: Run, want: Any, where: str) -> None:
    events = _terminal(run)
    assert events and all(isinstance(e.request_extras, Mapping) for e in events), where


@invariant("response_model_distinct_from_request_model")
def _response_model(run: Run, want: Any, where: str) -> None:
    events = _typed(run, ev.LlmCompletionEvent)
    assert events and all(e.response_model and e.response_model != e.model for e in events)


@invariant("response_model_null_when_absent_from_response")
def _response_model_null(run: Run, want: Any, where: str) -> None:
    events = _typed(run, ev.LlmCompletionEvent)
    assert events and all(e.response_model is None and e.model for e in events), where


@invariant("error_category_matches_raised_exception_category")
def _category_matches(run: Run, want: Any, where: str) -> None:
    chain: list[Any] = []
    exc: BaseException | None = run.error
    while exc is not None:
        chain.append(getattr(exc, "category", None))
        exc = exc.__cause__
    failed = _typed(run, ev.LlmFailedEvent)
    assert failed and all(e.error_category in chain for e in failed), f"{where}: {chain}"


@invariant("finish_reason_is_stop_not_truncation")
def _finish_stop(run: Run, want: Any, where: str) -> None:
    failed = _typed(run, ev.LlmFailedEvent)
    assert failed and all(e.finish_reason == "stop" for e in failed), where


@invariant("cache_read_attribute_equals_usage_field",
           "cache_read_attribute_emits_zero_when_reported",
           "reported_zero_distinct_from_absent")
def _cache_read(run: Run, want: Any, where: str) -> None:
    for e, a in zip(_typed(run, ev.LlmCompletionEvent), _llm_attrs(run), strict=False):
        cached = getattr(e.usage, "cached_tokens", None)
        assert cached is not None, where
        assert a.get("openarmature.llm.cache_read.input_tokens") == cached, where


@invariant("cache_attribute_absent_when_field_unpopulated",
           "cache_creation_attribute_absent_for_openai_compatible")
def _cache_absent(run: Run, want: Any, where: str) -> None:
    attrs = _llm_attrs(run)
    assert attrs, where
    for a in attrs:
        assert "openarmature.llm.cache_creation.input_tokens" not in a, where
        if "cache_attribute_absent" in where:
            assert "openarmature.llm.cache_read.input_tokens" not in a, where


def _tool_projection(run: Run, where: str) -> list[dict[str, Any]]:
    found = [a for a in _llm_attrs(run) if "openarmature.llm.output.tool_calls.count" in a]
    assert found, f"{where}: no tool-call identity projections"
    return found


@invariant("tool_call_names_and_ids_index_aligned", "count_equals_names_length",
           "tool_call_arrays_in_request_order", "identity_projections_survive_payload_off",
           "identity_projections_present_regardless_of_flag")
def _tool_identity(run: Run, want: Any, where: str) -> None:
    done = [e for e in _typed(run, ev.LlmCompletionEvent) if e.output_tool_calls] or None
    for a in _tool_projection(run, where):
        names = list(a["openarmature.llm.output.tool_calls.names"])
        ids = list(a["openarmature.llm.output.tool_calls.ids"])
        assert a["openarmature.llm.output.tool_calls.count"] == len(names) == len(ids), where
        if done:
            calls = done[0].output_tool_calls
            assert names == [c["name"] for c in calls] and ids == [c["id"] for c in calls]


@invariant("gated_output_tool_calls_suppressed_when_payload_off")
def _gated_tool_calls(run: Run, want: Any, where: str) -> None:
    assert all("openarmature.llm.output.tool_calls" not in a for a in _llm_attrs(run)), where


@invariant("tool_call_attributes_omitted_when_none_requested")
def _no_tool_identity(run: Run, want: Any, where: str) -> None:
    attrs = _llm_attrs(run)
    assert attrs and all(not any(k.startswith("openarmature.llm.output.tool_calls") for k in a)
                         for a in attrs), where


@invariant("tool_call_event_carries_full_field_set")
def _tool_fields(run: Run, want: Any, where: str) -> None:
    for e in _typed(run, ev.ToolCallEvent):
        assert e.call_id and e.tool_name and e.invocation_id and e.namespace, where
        assert e.latency_ms is not None and e.arguments is not None, where


@invariant("tool_call_id_matches_requesting_llm_output_tool_calls_id")
def _tool_id_links(run: Run, want: Any, where: str) -> None:
    requested = {c["id"] for e in _typed(run, ev.LlmCompletionEvent)
                 for c in e.output_tool_calls or ()}
    tools = _typed(run, ev.ToolCallEvent)
    assert tools and all(t.tool_call_id in requested for t in tools), f"{where}: {requested}"


@invariant("standalone_tool_call_id_is_null")
def _standalone(run: Run, want: Any, where: str) -> None:
    tools = _typed(run, ev.ToolEvent)
    assert tools and all(t.tool_call_id is None for t in tools), where


def _tool_span_attrs(run: Run, where: str) -> list[dict[str, Any]]:
    found = [dict(s.attributes or {}) for s in _spans(run, "openarmature.tool.call")]
    assert found, f"{where}: no tool span"
    return found


@invariant("payload_off_suppresses_tool_arguments_and_result")
def _tool_payload_off(run: Run, want: Any, where: str) -> None:
    for a in _tool_span_attrs(run, where):
        assert "openarmature.tool.call.arguments" not in a, where
        assert "openarmature.tool.call.result" not in a, where


@invariant("identity_attributes_present_with_payload_off", "oa_namespace_tool_attributes_emitted")
def _tool_identity_attrs(run: Run, want: Any, where: str) -> None:
    for a in _tool_span_attrs(run, where):
        assert a.get("openarmature.tool.name"), where


@invariant("payload_on_populates_tool_arguments_and_result")
def _tool_payload_on(run: Run, want: Any, where: str) -> None:
    for a in _tool_span_attrs(run, where):
        assert "openarmature.tool.call.arguments" in a, where
        assert "openarmature.tool.call.result" in a, where


@invariant("token_events_group_by_call_id_into_two_streams",
           "two_call_ids_distinct_and_non_null",
           "call1_token_events_share_call1_completion_call_id",
           "call2_token_events_share_call2_completion_call_id",
           "chunk_index_restarts_at_zero_per_call")
def _two_streams(run: Run, want: Any, where: str) -> None:
    done = _typed(run, ev.LlmCompletionEvent)
    ids = [e.call_id for e in done]
    assert len(ids) == 2 and len(set(ids)) == 2 and all(ids), where
    for e in done:
        mine = [t.chunk_index for t in _typed(run, ev.LlmTokenEvent) if t.call_id == e.call_id]
        assert mine == list(range(len(mine))) and mine, where


@invariant("all_token_events_node_level_attempt_index_zero",
           "wire_retry_does_not_advance_node_level_attempt_index")
def _token_attempt_zero(run: Run, want: Any, where: str) -> None:
    tokens = _typed(run, ev.LlmTokenEvent)
    assert tokens and all(t.attempt_index == 0 for t in tokens), where


@invariant("no_per_attempt_typed_event_for_caught_transient")
def _no_per_attempt(run: Run, want: Any, where: str) -> None:
    assert not _typed(run, ev.LlmFailedEvent) and len(_typed(run, ev.LlmCompletionEvent)) == 1


@invariant("assembled_response_reflects_successful_attempt_only")
def _assembled(run: Run, want: Any, where: str) -> None:
    _concat(run, want, where)


@invariant("reasoning_content_field_recognized_as_reasoning_kind",
           "reasoning_field_recognized_as_reasoning_kind",
           "both_reasoning_field_names_produce_identical_token_events")
def _reasoning_kind(run: Run, want: Any, where: str) -> None:
    assert any(t.delta_kind == "reasoning" for t in _typed(run, ev.LlmTokenEvent)), where


@invariant("reasoning_deltas_precede_content_deltas",
           "ordered_reasoning_then_content_chunk_indices")
def _reasoning_first(run: Run, want: Any, where: str) -> None:
    kinds = [t.delta_kind for t in sorted(_typed(run, ev.LlmTokenEvent),
                                          key=lambda t: t.chunk_index)]
    assert kinds and kinds == sorted(kinds, key=lambda k: k != "reasoning"), where


@invariant("reasoning_assembles_into_terminal_thinking_block")
def _reasoning_assembles(run: Run, want: Any, where: str) -> None:
    assert any(t.delta_kind == "reasoning" for t in _typed(run, ev.LlmTokenEvent)), where


@invariant("terminal_output_tool_calls_reassembled_complete_and_parsed",
           "reassembled_tool_calls_identical_to_non_streamed")
def _reassembled(run: Run, want: Any, where: str) -> None:
    done = [e for e in _typed(run, ev.LlmCompletionEvent) if e.output_tool_calls]
    assert done and all(isinstance(c["arguments"], dict) for c in done[0].output_tool_calls)


@invariant("input_usage_attributes_omitted_when_prompt_tokens_null",
           "gen_ai_input_tokens_never_sourced_from_null_counter",
           "span_omits_both_input_usage_attributes",
           "span_omits_both_input_usage_attributes_on_malformed_wire_counter")
def _no_input_usage(run: Run, want: Any, where: str) -> None:
    attrs = _llm_attrs(run)
    assert attrs, where
    for a in attrs:
        assert "gen_ai.usage.input_tokens" not in a, where
        assert "openarmature.llm.usage.prompt_tokens" not in a, where


@invariant("output_and_total_usage_attributes_emitted_when_sound")
def _output_usage(run: Run, want: Any, where: str) -> None:
    for a in _llm_attrs(run):
        assert "gen_ai.usage.output_tokens" in a and "openarmature.llm.usage.total_tokens" in a


@invariant("span_omits_all_usage_attributes_when_all_counters_malformed")
def _no_usage(run: Run, want: Any, where: str) -> None:
    for a in _llm_attrs(run):
        assert not any("usage" in k for k in a), where


@invariant("malformed_wire_prompt_tokens_nulled_before_event_and_span",
           "event_usage_prompt_tokens_null_not_verbatim_wire_value")
def _event_prompt_null(run: Run, want: Any, where: str) -> None:
    done = _typed(run, ev.LlmCompletionEvent)
    assert done and all(e.usage is not None and e.usage.prompt_tokens is None for e in done)


@invariant("all_three_malformed_wire_counters_nulled_before_event_and_span",
           "event_usage_is_present_record_of_nulls_not_null_record")
def _event_all_null(run: Run, want: Any, where: str) -> None:
    done = _typed(run, ev.LlmCompletionEvent)
    assert done and all(e.usage is not None and e.usage.prompt_tokens is None
                        and e.usage.completion_tokens is None for e in done), where


def _usage_obs(run: Run, kind: str) -> list[Any]:
    return [v for n, v, d in run.metrics if n == "openarmature.gen_ai.client.token.usage"
            and d.get("openarmature.gen_ai.token.type") == kind]


@invariant("no_input_token_usage_observation_when_prompt_tokens_null",
           "no_input_token_usage_observation")
def _no_input_obs(run: Run, want: Any, where: str) -> None:
    assert not _usage_obs(run, "input"), where


@invariant("output_token_usage_observation_recorded_when_completion_sound")
def _output_obs(run: Run, want: Any, where: str) -> None:
    assert _usage_obs(run, "output"), where


@invariant("errored_call_records_duration_with_error_type")
def _duration_error(run: Run, want: Any, where: str) -> None:
    assert any(n == "openarmature.gen_ai.client.operation.duration" and "error.type" in d
               for n, _, d in run.metrics), where


@invariant("no_token_usage_observation_on_failure")
def _no_usage_on_failure(run: Run, want: Any, where: str) -> None:
    assert not _usage_obs(run, "input") and not _usage_obs(run, "output"), where


@invariant("error_span_carries_output_usage_finish_reason",
           "finish_reason_usage_and_error_status_unchanged_under_payload_disabled",
           "error_status_and_exception_event_unchanged")
def _error_span(run: Run, want: Any, where: str) -> None:
    spans = _spans(run, "openarmature.llm.complete")
    assert spans, where
    for s in spans:
        a = s.attributes or {}
        assert s.status.status_code is StatusCode.ERROR, where
        assert "openarmature.llm.finish_reason" in a, where
        assert "openarmature.llm.usage.completion_tokens" in a, where
        assert any(e.name == "exception" for e in s.events), where


@invariant("output_content_redacted_under_payload_disabled")
def _output_redacted(run: Run, want: Any, where: str) -> None:
    assert all("openarmature.llm.output.content" not in a for a in _llm_attrs(run)), where


def _parent_of(run: Run, span: ReadableSpan) -> ReadableSpan | None:
    if span.parent is None:
        return None
    return next((s for s in run.spans if s.context.span_id == span.parent.span_id), None)


@invariant("orphan_llm_span_parents_under_inner_fan_out_instance",
           "orphan_llm_span_not_under_coincidentally_indexed_sibling",
           "orphan_llm_span_not_under_fan_out_node_or_invocation",
           "orphan_llm_span_sibling_of_calling_node_span",
           "orphan_llm_span_parents_under_branch_dispatch_span",
           "orphan_llm_span_routed_to_correct_branch_by_name",
           "orphan_llm_span_not_under_dispatcher_node_or_invocation",
           "orphan_llm_span_sibling_of_guard_node_span",
           "llm_span_parents_under_own_lineage_calling_node")
def _orphan_parent(run: Run, want: Any, where: str) -> None:
    spans = _spans(run, "openarmature.llm.complete")
    assert spans, where
    for span in spans:
        parent = _parent_of(run, span)
        assert parent is not None and parent.name != "openarmature.invocation", where
        attrs = parent.attributes or {}
        assert ("openarmature.node.fan_out_index" in attrs or "openarmature.node.branch_name"
                in attrs or "openarmature.node.name" in attrs), f"{where}: {parent.name}"
        assert "openarmature.fan_out.item_count" not in attrs, f"{where}: fan-out node parent"
        assert "openarmature.parallel_branches.branch_count" not in attrs, where


@invariant("no_inner_spans_dropped_under_concurrent_nesting")
def _no_dropped(run: Run, want: Any, where: str) -> None:
    starts = [e for col in run.collectors.values() for e in col.events
              if isinstance(e, NodeEvent) and e.phase == "started"]
    node_spans = [s for s in run.spans if "openarmature.node.step" in (s.attributes or {})]
    if starts:
        assert len(node_spans) >= len(starts), where
    assert node_spans, where


@invariant("each_invocation_correlation_id_uniform")
def _corr_per_invocation(run: Run, want: Any, where: str) -> None:
    for root in _spans(run, "openarmature.invocation"):
        trace_spans = [s for s in run.spans if s.context.trace_id == root.context.trace_id]
        values = {(s.attributes or {}).get("openarmature.correlation_id") for s in trace_spans}
        assert len(values) == 1 and None not in values, f"{where}: {values}"


@invariant("correlation_ids_differ_across_invocations")
def _corr_differ(run: Run, want: Any, where: str) -> None:
    values = [(s.attributes or {}).get("openarmature.correlation_id")
              for s in _spans(run, "openarmature.invocation")]
    assert len(values) >= 2 and len(set(values)) == len(values), f"{where}: {values}"


@invariant("all_correlation_ids_uuidv4")
def _corr_all_uuid(run: Run, want: Any, where: str) -> None:
    values = {(s.attributes or {}).get("openarmature.correlation_id") for s in run.spans}
    assert values and all(_UUID4.match(str(v)) for v in values), f"{where}: {values}"


@invariant("inner_node_span_count")
def _inner_count(run: Run, want: Any, where: str) -> None:
    inner = [s for s in run.spans
             if len((s.attributes or {}).get("openarmature.node.namespace") or ()) >= 3]
    assert len(inner) == want, f"{where}: {len(inner)}"


@invariant("dispatch_spans_close_in_declaration_order")
def _dispatch_order(run: Run, want: Any, where: str) -> None:
    dispatch = [s for s in run.spans if "openarmature.parallel_branches.parent_node_name"
                in (s.attributes or {})]
    names = [s.name for s in sorted(dispatch, key=lambda s: s.end_time or 0)]
    assert names == list(want), f"{where}: {names}"


@invariant("callable_branch_renders_one_span_keyed_by_branch_name",
           "callable_branch_span_has_no_inner_node_spans")
def _callable_branch(run: Run, want: Any, where: str) -> None:
    dispatch = [s for s in run.spans if "openarmature.parallel_branches.parent_node_name"
                in (s.attributes or {})]
    assert dispatch, where
    for span in dispatch:
        assert span.name == (span.attributes or {}).get("openarmature.node.branch_name"), where
        assert not _children(run, span), f"{where}: {span.name} has children"


@invariant("when_skipped_branch_emits_no_span", "branch_count_is_dispatched_count_not_declared")
def _skipped_branch(run: Run, want: Any, where: str) -> None:
    dispatch = [s for s in run.spans if "openarmature.parallel_branches.parent_node_name"
                in (s.attributes or {})]
    nodes = [s for s in run.spans
             if "openarmature.parallel_branches.branch_count" in (s.attributes or {})]
    assert nodes, where
    for node in nodes:
        count = (node.attributes or {})["openarmature.parallel_branches.branch_count"]
        mine = [d for d in dispatch if d.parent and d.parent.span_id == node.context.span_id]
        assert count == len(mine), f"{where}: branch_count {count}, {len(mine)} dispatched"


@invariant("unique_fan_out_indices_per_node_span_under")
def _unique_indices(run: Run, want: Any, where: str) -> None:
    spans = [s for s in run.spans if (s.attributes or {}).get("openarmature.node.name")
             and want in ((s.attributes or {}).get("openarmature.node.namespace") or ())]
    assert spans, where
    seen = [(tuple((s.attributes or {})["openarmature.node.namespace"]),
             s.parent.span_id if s.parent else None) for s in spans]
    assert len(seen) == len(set(seen)), f"{where}: duplicate spans"


@invariant("fan_out_index_range")
def _index_range(run: Run, want: Any, where: str) -> None:
    lo, hi = want
    indices = {(s.attributes or {}).get("openarmature.node.fan_out_index") for s in run.spans}
    indices.discard(None)
    assert indices and all(lo <= i <= hi for i in indices), f"{where}: {indices}"


def _attempt_spans(run: Run) -> list[ReadableSpan]:
    return [s for s in run.spans if (s.attributes or {}).get("openarmature.node.step") is not None
            and _parent_of(run, s) is not None
            and _parent_of(run, s).name == "openarmature.invocation"]  # type: ignore[union-attr]


@invariant("sibling_attempt_count_under_invocation")
def _sibling_attempts(run: Run, want: Any, where: str) -> None:
    assert len(_attempt_spans(run)) == want, f"{where}: {len(_attempt_spans(run))}"


@invariant("attempt_indices")
def _attempt_indices(run: Run, want: Any, where: str) -> None:
    got = [(s.attributes or {}).get("openarmature.node.attempt_index") for s in
           sorted(_attempt_spans(run), key=lambda s: s.start_time or 0)]
    assert got == list(want), f"{where}: {got}"


@invariant("all_attempt_spans_error")
def _all_error(run: Run, want: Any, where: str) -> None:
    spans = _attempt_spans(run)
    assert spans and all(s.status.status_code is StatusCode.ERROR for s in spans), where


# --- caller metadata (§3.4) ---------------------------------------------------------------


def _captures(run: Run) -> list[Any]:
    return list(run.scratch.get("captures") or ())


@invariant("read_returns_caller_baseline", "read_returns_in_node_write",
           "capture_after_augment_sees_write", "outside_invocation_does_not_raise",
           "outside_invocation_returns_empty_mapping")
def _capture_seen(run: Run, want: Any, where: str) -> None:
    assert run.error is None, where  # the values themselves: expected.final_state


@invariant("read_returns_immutable_mapping", "outside_invocation_return_is_immutable",
           "snapshot_is_immutable_mapping")
def _immutable(run: Run, want: Any, where: str) -> None:
    values = _captures(run) + [e.caller_invocation_metadata for e in _typed(run, ev.LlmCallEvent)
                               if e.caller_invocation_metadata is not None]
    assert values, where
    for value in values:
        assert isinstance(value, Mapping) and not isinstance(value, dict), f"{where}: {value!r}"


@invariant("capture_before_augment_misses_write")
def _capture_before(run: Run, want: Any, where: str) -> None:
    captures = _captures(run)
    assert captures and "marker" not in captures[0], f"{where}: {captures}"


@invariant("opt_in_disabled_yields_null_caller_metadata")
def _opt_in_off(run: Run, want: Any, where: str) -> None:
    events = _typed(run, ev.LlmCallEvent)
    assert events and all(e.caller_invocation_metadata is None for e in events), where


@invariant("opt_in_enabled_yields_snapshot_caller_metadata")
def _opt_in_on(run: Run, want: Any, where: str) -> None:
    events = _typed(run, ev.LlmCallEvent)
    assert events and all(e.caller_invocation_metadata for e in events), where


def _arrival(run: Run) -> list[Any]:
    """The first collector's events in arrival order (every collector sees one queue)."""
    return list(next(iter(run.collectors.values())).events) if run.collectors else []


def _completion_between(run: Run, where: str, *, after: bool, before: bool) -> None:
    events = _arrival(run)
    calls = [i for i, e in enumerate(events) if isinstance(e, ev.LlmCompletionEvent)]
    assert calls, f"{where}: no LlmCompletionEvent"
    for i in calls:
        node = events[i].node_name
        started = [j for j, e in enumerate(events) if isinstance(e, NodeEvent)
                   and e.node_name == node and e.phase == "started"]
        completed = [j for j, e in enumerate(events) if isinstance(e, NodeEvent)
                     and e.node_name == node and e.phase == "completed"]
        if after:
            assert started and min(started) < i, f"{where}: not after {node} started"
        if before:
            assert completed and i < max(completed), f"{where}: not before {node} completed"


@invariant("typed_event_arrives_within_calling_node_span")
def _within_node(run: Run, want: Any, where: str) -> None:
    _completion_between(run, where, after=True, before=True)


@invariant("typed_event_arrives_after_node_started")
def _after_started(run: Run, want: Any, where: str) -> None:
    _completion_between(run, where, after=True, before=False)


@invariant("typed_event_arrives_before_node_completed")
def _before_completed(run: Run, want: Any, where: str) -> None:
    _completion_between(run, where, after=False, before=True)


def _completions(run: Run, where: str) -> list[Any]:
    events = _typed(run, ev.LlmCompletionEvent)
    assert events, f"{where}: no LlmCompletionEvent"
    return events


@invariant("per_instance_fan_out_index_populated")
def _fan_out_index_set(run: Run, want: Any, where: str) -> None:
    assert all(isinstance(e.fan_out_index, int) for e in _completions(run, where)), where


@invariant("sibling_instances_have_distinct_fan_out_index")
def _fan_out_index_distinct(run: Run, want: Any, where: str) -> None:
    indices = [e.fan_out_index for e in _completions(run, where)]
    assert len(indices) == len(set(indices)), f"{where}: {indices}"


@invariant("branch_name_null_outside_parallel_branches")
def _no_branch_name(run: Run, want: Any, where: str) -> None:
    assert all(e.branch_name is None for e in _completions(run, where)), where


@invariant("per_branch_branch_name_populated")
def _branch_name_set(run: Run, want: Any, where: str) -> None:
    assert all(isinstance(e.branch_name, str) and e.branch_name
               for e in _completions(run, where)), where


@invariant("sibling_branches_have_distinct_branch_name")
def _branch_name_distinct(run: Run, want: Any, where: str) -> None:
    names = [e.branch_name for e in _completions(run, where)]
    assert len(names) == len(set(names)), f"{where}: {names}"


@invariant("fan_out_index_null_outside_fan_out")
def _no_fan_out_index(run: Run, want: Any, where: str) -> None:
    assert all(e.fan_out_index is None for e in _completions(run, where)), where


def _dispatch_spans(run: Run) -> list[ReadableSpan]:
    return [s for s in run.spans if "openarmature.parallel_branches.parent_node_name"
            in (s.attributes or {})]


@invariant("same_named_inner_spans_disambiguated_by_dispatch_parent")
def _inner_by_dispatch(run: Run, want: Any, where: str) -> None:
    dispatch = {s.context.span_id: s for s in _dispatch_spans(run)}
    inner = [s for s in run.spans if s.parent is not None and s.parent.span_id in dispatch]
    by_name: dict[str, list[ReadableSpan]] = {}
    for span in inner:
        by_name.setdefault(span.name, []).append(span)
    shared = [spans for spans in by_name.values() if len(spans) > 1]
    assert shared, f"{where}: no same-named inner spans under dispatch spans"
    for spans in shared:
        parents = [dispatch[s.parent.span_id] for s in spans if s.parent is not None]
        assert len({p.context.span_id for p in parents}) == len(spans), f"{where}: one parent"
        for span, parent in zip(spans, parents, strict=True):
            branch = (span.attributes or {}).get("openarmature.node.branch_name")
            assert branch == (parent.attributes or {}).get("openarmature.node.branch_name"), where


@invariant("dispatch_spans_close_before_node_span")
def _dispatch_before_node(run: Run, want: Any, where: str) -> None:
    dispatch = _dispatch_spans(run)
    assert dispatch, where
    for span in dispatch:
        parent = _parent_of(run, span)
        assert parent is not None, f"{where}: {span.name} has no parent"
        assert (span.end_time or 0) <= (parent.end_time or 0), f"{where}: {span.name}"


# --- observer_event_invariants (over the ``record`` observers' raw NodeEvents) -----------------


def _is_callable_branch(e: NodeEvent) -> bool:
    """A callable branch's synthetic pair: the branch itself is the event source."""
    return e.branch_name is not None and len(e.namespace) >= 2 and e.node_name == e.branch_name


def _attempts_seen(events: list[NodeEvent], want: Any, where: str) -> None:
    got = sorted({e.attempt_index for e in events})
    assert got == sorted(want), f"{where}: attempt indices {got}"


def _callable_current_attempt(events: list[NodeEvent], want: Any, where: str) -> None:
    """Each callable-branch event carries the attempt of the dispatching node's open attempt."""
    open_attempt: dict[tuple[str, ...], int] = {}
    checked = 0
    for e in events:
        if _is_callable_branch(e):
            parent = e.namespace[:-1]
            assert parent in open_attempt, f"{where}: {e.node_name} outside its node's attempt"
            assert e.attempt_index == open_attempt[parent], (
                f"{where}: {e.node_name} attempt {e.attempt_index}, node at {open_attempt[parent]}")
            checked += 1
        elif e.phase == "started":
            open_attempt[e.namespace] = e.attempt_index
    assert checked, f"{where}: no callable-branch events"
    assert any(e.attempt_index > 0 for e in events if _is_callable_branch(e)) or not want, where


def _callable_both_phases_on_retry(events: list[NodeEvent], want: Any, where: str) -> None:
    retry = [e for e in events if _is_callable_branch(e) and e.attempt_index == 1]
    assert retry, f"{where}: no callable-branch event on the retry attempt"
    for branch in {e.branch_name for e in retry}:
        phases = {e.phase for e in retry if e.branch_name == branch}
        assert phases >= {"started", "completed"}, f"{where}: {branch} {phases}"


OBSERVER_EVENT_INVARIANTS: dict[str, Callable[[list[NodeEvent], Any, str], None]] = {
    "callable_branch_events_report_current_attempt_index": _callable_current_attempt,
    "callable_branch_started_and_completed_carry_attempt_index_one_on_retry":
        _callable_both_phases_on_retry,
}


def check_observer_event_invariant(events: list[NodeEvent], name: str, want: Any,
                                   where: str) -> None:
    """One ``observer_event_invariants`` entry; ``<node>_node_attempt_indices_seen`` and
    ``<branch>_callable_branch_attempt_indices_seen`` take their subject from the name."""
    check = OBSERVER_EVENT_INVARIANTS.get(name)
    if check is not None:
        check(events, want, where)
        return
    for suffix, pick in (
        ("_callable_branch_attempt_indices_seen",
         lambda e, s: _is_callable_branch(e) and e.branch_name == s),
        ("_node_attempt_indices_seen",
         lambda e, s: e.node_name == s and not _is_callable_branch(e)),
    ):
        if name.endswith(suffix):
            subject = name[: -len(suffix)]
            mine = [e for e in events if pick(e, subject)]
            assert mine, f"{where}: no events of {subject}"
            _attempts_seen(mine, want, where)
            return
    raise AssertionError(f"{where}: unknown observer_event_invariants predicate {name!r}")


def _pb_node_spans(run: Run) -> list[ReadableSpan]:
    return [s for s in run.spans
            if "openarmature.parallel_branches.branch_count" in (s.attributes or {})]


def _attempt(span: ReadableSpan) -> Any:
    return (span.attributes or {}).get("openarmature.node.attempt_index")


@invariant("sibling_parallel_branches_node_spans_per_attempt")
def _pb_per_attempt(run: Run, want: Any, where: str) -> None:
    nodes = _pb_node_spans(run)
    assert len(nodes) == want, f"{where}: {len(nodes)} parallel-branches node spans"
    assert len({_attempt(s) for s in nodes}) == len(nodes), f"{where}: attempts repeat"
    assert len({s.parent.span_id if s.parent else None for s in nodes}) == 1, f"{where}: parents"


@invariant("retry_callable_branch_dispatch_span_attempt_index_is_one",
           "callable_branch_attempt_index_sourced_from_node_event_not_zero")
def _dispatch_attempt_follows_node(run: Run, want: Any, where: str) -> None:
    retried = [s for s in _pb_node_spans(run) if _attempt(s) == 1]
    assert retried, f"{where}: no retry-attempt node span"
    for node in _pb_node_spans(run):
        for child in _dispatch_spans(run):
            if child.parent is not None and child.parent.span_id == node.context.span_id:
                assert _attempt(child) == _attempt(node), f"{where}: {child.name}"
    assert any(_attempt(d) == 1 for d in _dispatch_spans(run)), f"{where}: no attempt-1 dispatch"


# --- log correlation (§7) -------------------------------------------------------------------


@invariant("all_logs_same_trace_id")
def _logs_one_trace(run: Run, want: Any, where: str) -> None:
    ids = {r.trace_id for r in run.logs}
    assert run.logs and len(ids) == 1, f"{where}: {ids}"
    assert ids <= {s.context.trace_id for s in run.spans}, f"{where}: not a span's trace"


@invariant("log_trace_ids_differ_when_detached")
def _logs_traces_differ(run: Run, want: Any, where: str) -> None:
    ids = [r.trace_id for r in run.logs]
    assert len(ids) >= 2 and len(set(ids)) == len(ids), f"{where}: {ids}"


@invariant("log_span_ids_match_active_span_at_emission")
def _logs_under_node_spans(run: Run, want: Any, where: str) -> None:
    """Each record's span is the node span that was running when it was written: a
    node span (not the invocation's), distinct per node, in the record's trace."""
    spans = {s.context.span_id: s for s in run.spans}
    owners = []
    for record in run.logs:
        span = spans.get(record.span_id)
        assert span is not None, f"{where}: {record.body!r} under no exported span"
        assert span.context.trace_id == record.trace_id, where
        assert "openarmature.node.name" in (span.attributes or {}), f"{where}: {span.name}"
        owners.append(span.context.span_id)
    assert len(set(owners)) == len(owners), f"{where}: records share a span"


@invariant("all_logs_carry_correlation_id")
def _logs_correlation(run: Run, want: Any, where: str) -> None:
    got = [(r.attributes or {}).get("openarmature.correlation_id") for r in run.logs]
    assert got and all(v == want for v in got), f"{where}: {got}"
