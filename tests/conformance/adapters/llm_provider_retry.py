"""Call-level retry cases of the llm-provider adapter (llm-provider §7.1).

The llm-provider adapter delegates every call carrying ``retry`` here
(:func:`run_retry_call`). The case runs the real §7.1 loop
(:func:`openarmature_nodes.llm.call_retry.complete_with_retry`, the loop
``complete(retry=...)`` runs) around the real provider's single-attempt call,
with the span layer inside the loop so each attempt emits its own
``openarmature.llm.complete`` span to a private in-memory exporter.

Directives handled here (conformance-adapter §5.11): ``call.retry`` with
``max_attempts``, ``backoff: {type: deterministic, seconds}``,
``per_attempt_override`` and ``reask: {template}`` (rendered with the error's
``output_content`` / ``error_message``, nothing added); ``expected.wire_requests``
(``sampling``, ``appended_messages`` with ``content`` or ``content_contains``),
``expected.llm_spans`` (``attempt_index``, ``attributes`` subset,
``attributes_absent``, ``error_category``) and the §7.1 invariants. The keys
handled here are removed from the call's (copied) ``expected`` before the base
adapter asserts the rest (``response``, ``raises``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from openarmature_nodes.llm import (
    CompletionRequest,
    OpenAIProvider,
    Response,
    RuntimeConfig,
    StructuredOutputInvalid,
)
from openarmature_nodes.llm.call_retry import complete_with_retry
from openarmature_nodes.llm.transport import RawResponse, Transport
from openarmature_nodes.middleware import SpanMiddleware, compose
from openarmature_nodes.retrying import RetryConfig, constant_backoff
from tests.conformance import vocabulary as _vocab
from tests.conformance.fixtures import UnknownDirective, check_directives, unknown_predicate

RETRY_KEYS = frozenset({"max_attempts", "backoff", "per_attempt_override", "reask", "classifier"})
WIRE_KEYS = frozenset({"sampling", "appended_messages"})
SPAN_KEYS = frozenset({"attempt_index", "attributes", "attributes_absent", "error_category"})
APPENDED_KEYS = frozenset({"role", "content", "content_contains"})
HANDLED_EXPECTED = frozenset({"wire_requests", "llm_spans", "invariants"})


class _Recorder:
    """A transport that records each chat request body and delegates."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.bodies: list[bytes] = []

    async def request(
        self, method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes | None
    ) -> RawResponse:
        if method == "POST" and body is not None:
            self.bodies.append(body)
        return await self.inner.request(method, url, headers, body)

    async def aclose(self) -> None:  # the wrapped transport belongs to the base adapter
        return None


@dataclass
class RetryRun:
    where: str
    messages: list[Any]
    config: RuntimeConfig | None
    bodies: list[bytes]
    spans: list[ReadableSpan]
    sleeps: list[float] = field(default_factory=list)
    messages_before: Any = None
    config_before: Any = None
    response: Response | None = None
    error: BaseException | None = None


def _backoff(spec: Any, where: str) -> Callable[[int], float] | None:
    if spec is None:
        return None
    check_directives(spec, {"type", "seconds"}, where)
    if spec.get("type") != "deterministic":
        raise UnknownDirective(f"backoff type {spec.get('type')!r} in {where}")
    return constant_backoff(float(spec.get("seconds", 0)))


def _reask(spec: Any, where: str) -> Callable[[StructuredOutputInvalid], str] | None:
    if spec is None:
        return None
    check_directives(spec, {"template"}, where)
    template = str(spec["template"])

    def builder(err: StructuredOutputInvalid) -> str:
        # Plain substitution (not str.format): the model output is full of braces.
        return template.replace("{output_content}", err.output_content or "").replace(
            "{error_message}", err.error_message
        )

    return builder


def build_retry(spec: dict[str, Any], where: str, sleeps: list[float]) -> RetryConfig:
    check_directives(spec, RETRY_KEYS, where)
    if spec.get("classifier", "default") not in ("default", None):
        raise UnknownDirective(f"retry.classifier {spec['classifier']!r} in {where}")

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    kw: dict[str, Any] = {"sleep": sleep}
    if "max_attempts" in spec:
        kw["max_attempts"] = int(spec["max_attempts"])
    backoff = _backoff(spec.get("backoff"), f"{where}.backoff")
    if backoff is not None:
        kw["backoff"] = backoff
    if spec.get("per_attempt_override") is not None:
        kw["per_attempt_override"] = [
            RuntimeConfig.from_mapping(e) for e in spec["per_attempt_override"]
        ]
    reask = _reask(spec.get("reask"), f"{where}.reask")
    if reask is not None:
        kw["reask"] = reask
    return RetryConfig(**kw)


async def run_retry_call(
    provider: OpenAIProvider,
    call: dict[str, Any],
    messages: list[Any],
    tools: Any,
    config: Any,
    choice: Any,
    outcome: Any,
) -> Response:
    where = f"{outcome.where}.retry"
    expected = dict(call.get("expected") or {})
    rest = {k: v for k, v in expected.items() if k not in HANDLED_EXPECTED}
    raises = rest.get("raises")
    if isinstance(raises, dict) and "message" in raises:
        # ``raises.message``: the server's message, kept in the categorized error.
        rest["raises"] = {k: v for k, v in raises.items() if k != "message"}
    call["expected"] = rest

    recorder = _Recorder(provider.transport)
    recording = OpenAIProvider(
        provider.base_url, provider.model, genai_system=provider.genai_system, transport=recorder
    )
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    run = RetryRun(outcome.where, messages, config, recorder.bodies, [])
    run.messages_before = msgspec.to_builtins(messages)
    run.config_before = msgspec.to_builtins(config)
    retry = build_retry(call["retry"], where, run.sleeps)
    send = compose([SpanMiddleware(recording, tracer_provider=tracer_provider)], recording.call)
    request = CompletionRequest(messages, tools, config, call.get("response_schema"), choice)
    try:
        run.response = await complete_with_retry(send, request, retry)
    except Exception as exc:
        run.error = exc
    finally:
        run.spans = sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0)
        tracer_provider.shutdown()

    _check(run, expected, call)
    if run.error is not None:
        raise run.error
    assert run.response is not None
    return run.response


# --- assertions ---------------------------------------------------------------------------


def _check(run: RetryRun, expected: dict[str, Any], call: dict[str, Any]) -> None:
    where = f"{run.where}.expected"
    raises = expected.get("raises")
    if isinstance(raises, dict) and "message" in raises:
        got = getattr(run.error, "message", str(run.error))
        assert run.error is not None and raises["message"] in got, (
            f"{where}.raises.message: {raises['message']!r} not in {got!r}")
    if "wire_requests" in expected:
        _check_wire(run, expected["wire_requests"], f"{where}.wire_requests")
    if "llm_spans" in expected:
        _check_spans(run, expected["llm_spans"], f"{where}.llm_spans")
    for name, want in (expected.get("invariants") or {}).items():
        check = _INVARIANTS.get(name)
        if check is None:
            unknown_predicate(name, f"{where}.invariants")
            continue
        if want:
            check(run, call, f"{where}.invariants.{name}")


def _wire(run: RetryRun) -> list[dict[str, Any]]:
    return [msgspec.json.decode(b) for b in run.bodies]


def _check_wire(run: RetryRun, entries: list[dict[str, Any]], where: str) -> None:
    wire = _wire(run)
    assert len(wire) == len(entries), f"{where}: {len(wire)} attempts sent, expected {len(entries)}"
    base = len(run.messages_before)
    for i, (entry, body) in enumerate(zip(entries, wire, strict=True)):
        check_directives(entry, WIRE_KEYS, f"{where}[{i}]")
        for key, want in (entry.get("sampling") or {}).items():
            got = body.get(key)
            assert got == want, f"{where}[{i}].sampling.{key}: {got!r} != {want!r}"
        if "appended_messages" in entry:
            appended = body["messages"][base:]
            want_list = entry["appended_messages"]
            assert len(appended) == len(want_list), (
                f"{where}[{i}].appended_messages: got {appended!r}")
            for j, (want_msg, got) in enumerate(zip(want_list, appended, strict=True)):
                mw = f"{where}[{i}].appended_messages[{j}]"
                check_directives(want_msg, APPENDED_KEYS, mw)
                assert got["role"] == want_msg["role"], f"{mw}: role {got['role']!r}"
                if "content" in want_msg:
                    assert got["content"] == want_msg["content"], f"{mw}: {got['content']!r}"
                for piece in want_msg.get("content_contains") or []:
                    assert piece in got["content"], f"{mw}: {piece!r} not in {got['content']!r}"


def _check_spans(run: RetryRun, entries: list[dict[str, Any]], where: str) -> None:
    spans = run.spans
    assert len(spans) == len(entries), f"{where}: {len(spans)} spans, expected {len(entries)}"
    for i, (entry, span) in enumerate(zip(entries, spans, strict=True)):
        sw = f"{where}[{i}]"
        check_directives(entry, SPAN_KEYS, sw)
        attrs = dict(span.attributes or {})
        if "attempt_index" in entry:
            assert attrs.get("openarmature.llm.attempt_index") == entry["attempt_index"], sw
        for key, want in (entry.get("attributes") or {}).items():
            assert attrs.get(key) == want, f"{sw}.attributes.{key}: {attrs.get(key)!r} != {want!r}"
        for key in entry.get("attributes_absent") or []:
            assert key not in attrs, f"{sw}: attribute {key!r} must be absent"
        if "error_category" in entry:
            got = attrs.get("openarmature.error.category")
            assert got == entry["error_category"], f"{sw}.error_category: {got!r}"


def _count_spans(n: int) -> Callable[[RetryRun, dict[str, Any], str], None]:
    def check(run: RetryRun, call: dict[str, Any], where: str) -> None:
        assert len(run.spans) == n == len(run.bodies), f"{where}: {len(run.spans)} spans"

    return check


def _n_attempts_n_spans(run: RetryRun, call: dict[str, Any], where: str) -> None:
    assert len(run.spans) == len(run.bodies) >= 1, f"{where}: {len(run.spans)} vs {len(run.bodies)}"


def _distinct_attempt_indices(run: RetryRun, call: dict[str, Any], where: str) -> None:
    got = [dict(s.attributes or {}).get("openarmature.llm.attempt_index") for s in run.spans]
    assert got == list(range(len(run.spans))), f"{where}: {got}"


def _succeeded(run: RetryRun, call: dict[str, Any], where: str) -> None:
    assert run.error is None and run.response is not None, f"{where}: {run.error!r}"
    assert len(run.bodies) >= 2, f"{where}: no retry happened"


def _failed_after_all_attempts(run: RetryRun, call: dict[str, Any], where: str) -> None:
    assert run.error is not None, f"{where}: the call succeeded"
    assert len(run.bodies) == int(call["retry"].get("max_attempts", 3)), where


def _every_span_has_error(run: RetryRun, call: dict[str, Any], where: str) -> None:
    cats = [dict(s.attributes or {}).get("openarmature.error.category") for s in run.spans]
    assert cats and all(cats), f"{where}: {cats}"


def _one_attempt(run: RetryRun, call: dict[str, Any], where: str) -> None:
    assert run.error is not None and len(run.bodies) == 1, f"{where}: {len(run.bodies)} attempts"


def _no_sleep(run: RetryRun, call: dict[str, Any], where: str) -> None:
    assert run.sleeps == [], f"{where}: slept {run.sleeps}"


def _structured_failure_propagates(run: RetryRun, call: dict[str, Any], where: str) -> None:
    assert isinstance(run.error, StructuredOutputInvalid), f"{where}: {run.error!r}"


def _messages_unmutated(run: RetryRun, call: dict[str, Any], where: str) -> None:
    assert msgspec.to_builtins(run.messages) == run.messages_before, where


def _config_unmutated(run: RetryRun, call: dict[str, Any], where: str) -> None:
    assert msgspec.to_builtins(run.config) == run.config_before, where


def _base_attempt_config(run: RetryRun, call: dict[str, Any], where: str) -> None:
    first = _wire(run)[0]
    for key, value in (call.get("config") or {}).items():
        assert first.get(key) == value, f"{where}: attempt 0 sent {key}={first.get(key)!r}"


def _reask_pairs_accumulate(run: RetryRun, call: dict[str, Any], where: str) -> None:
    wire = _wire(run)
    base = len(run.messages_before)
    reasons = _reasons(run)
    pairs = 0
    for i, body in enumerate(wire):
        pairs += reasons[i] == "reask"
        appended = body["messages"][base:]
        assert [m["role"] for m in appended] == ["assistant", "user"] * pairs, (
            f"{where}: attempt {i} appended {appended!r}")
        if i:
            previous = wire[i - 1]["messages"]
            assert body["messages"][: len(previous)] == previous, (
                f"{where}: attempt {i} rewrote the transcript instead of appending")


def _reasons(run: RetryRun) -> list[Any]:
    return [dict(s.attributes or {}).get("openarmature.llm.retry_reason") for s in run.spans]


def _override_and_reask(run: RetryRun, call: dict[str, Any], where: str) -> None:
    schedule = call["retry"].get("per_attempt_override") or []
    wire = _wire(run)
    for i, body in enumerate(wire[1:], start=1):
        entry = schedule[min(i - 1, len(schedule) - 1)]
        for key, value in entry.items():
            assert body.get(key) == value, f"{where}: attempt {i} {key}={body.get(key)!r}"
    _reask_pairs_accumulate(run, call, where)


def _transient_keeps_transcript(run: RetryRun, call: dict[str, Any], where: str) -> None:
    wire = _wire(run)
    reasons = _reasons(run)
    hits = [i for i, r in enumerate(reasons) if r == "transient"]
    assert hits, f"{where}: no transient retry"
    for i in hits:
        assert wire[i]["messages"] == wire[i - 1]["messages"], f"{where}: attempt {i}"


def _reasons_distinct(run: RetryRun, call: dict[str, Any], where: str) -> None:
    reasons = _reasons(run)
    assert reasons[0] is None and {"reask", "transient"} <= set(reasons[1:]), f"{where}: {reasons}"


def _reask_retries_structured(run: RetryRun, call: dict[str, Any], where: str) -> None:
    assert "reask" in _reasons(run), f"{where}: no reask retry"


_INVARIANTS: dict[str, Callable[[RetryRun, dict[str, Any], str], None]] = {
    "call_returns_successful_response_after_transient_retry": _succeeded,
    "n_attempts_emit_n_llm_spans": _n_attempts_n_spans,
    "attempt_index_attribute_distinct_per_span": _distinct_attempt_indices,
    "exhaustion_propagates_final_error": _failed_after_all_attempts,
    "every_attempt_span_carries_error_category": _every_span_has_error,
    "non_transient_exits_retry_loop_on_first_occurrence": _one_attempt,
    "exactly_one_attempt_span_for_non_transient": _count_spans(1),
    "no_backoff_sleep_invoked": _no_sleep,
    "reask_exhausts_max_attempts_budget": _failed_after_all_attempts,
    "final_structured_output_invalid_propagates": _structured_failure_propagates,
    "structured_output_invalid_not_retried_without_reask": _one_attempt,
    "exactly_one_attempt_issued": _one_attempt,
    "second_mock_response_never_consumed": _one_attempt,
    "override_and_reask_compose_on_reask_retries": _override_and_reask,
    "reask_transcript_accumulates_across_retries": _reask_pairs_accumulate,
    "base_attempt_uses_caller_config": _base_attempt_config,
    "caller_messages_unmutated": _messages_unmutated,
    "caller_config_unmutated": _config_unmutated,
    "transient_retry_carries_accumulated_reask_transcript": _transient_keeps_transcript,
    "retry_reason_discriminates_reask_vs_transient_in_one_loop": _reasons_distinct,
    "reask_makes_structured_output_invalid_retryable": _reask_retries_structured,
}


_vocab.register("llm-provider", RETRY_KEYS | WIRE_KEYS | SPAN_KEYS | HANDLED_EXPECTED)
_vocab.register("llm-provider", APPENDED_KEYS | {"template", "seconds", "type"})
_vocab.register("llm-provider", _INVARIANTS)
