"""Conformance adapter for ``spec/observability/conformance`` (the OpenTelemetry mapping).

Graphs are built by :mod:`.graph_build` (with the fan-out / parallel-branches
directives of :mod:`.composition` and the middleware types of
:mod:`.pipeline_utilities`); this module adds, through the same tables:

- node directives ``calls_llm`` (a real ``OpenAIProvider`` call, through
  :class:`~openarmature_nodes.nodes.observe.CallEventMiddleware`, against the
  case's ``mock_llm`` / ``mock_llm_stream`` replies served by
  ``httpx.MockTransport``), ``calls_llm_from_wrapper`` (the same call from a
  node middleware's pre / post phase), ``calls_tool`` (the tool-call
  instrumentation scope around a ``mock_tool``);
- the harness primitives of conformance-adapter §6.3 / §6.9: the real
  :class:`~openarmature_nodes.observability.otel.OTelObserver` on a private
  ``TracerProvider`` with an in-memory exporter, and an in-memory metric reader;
- ``typed_observers`` collectors (§5.5 typed-event collector directives);
- expectations ``span_tree`` (hierarchical, attribute subsets, placeholders
  per §5.10), ``observers.<collector>`` (``contains_event`` and the count
  forms), ``metrics``, ``no_spans_emitted``, ``no_llm_provider_span`` and the
  invariant predicates in :data:`INVARIANTS`.

A directive or invariant this adapter does not know fails the case naming it
(:class:`UnknownDirective`); nothing here looks at fixture names.
"""

from __future__ import annotations

import re
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import msgspec
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from openarmature_nodes import events as ev
from openarmature_nodes.graph import GraphRuntimeError, NodeEvent
from openarmature_nodes.llm import CompletionRequest, OpenAIProvider, RuntimeConfig, Tool
from openarmature_nodes.llm.call_retry import complete_with_retry
from openarmature_nodes.llm.transport import HttpxTransport
from openarmature_nodes.middleware import RetryMiddleware
from openarmature_nodes.nodes.observe import CallEventMiddleware, tool_call
from openarmature_nodes.observability.otel import OTelObserver
from openarmature_nodes.onion import compose
from openarmature_nodes.retrying import RetryConfig, constant_backoff
from tests.conformance.fixtures import Case, UnknownDirective, check_directives

from . import (
    composition,  # noqa: F401  (registers fan_out / parallel_branches)
    pipeline_utilities,  # noqa: F401  (registers retry / timing middleware)
)
from . import graph_build as gb
from .llm_provider import build_messages, build_tools
from .llm_provider_stream import sse_reply

__all__ = ["INVARIANTS", "run_case"]

_UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

OBSERVABILITY_CASE_KEYS = {
    "mock_llm", "mock_llm_stream", "typed_observers", "disable_llm_spans",
    "disable_provider_payload", "disable_genai_semconv", "enable_metrics",
    "detached_subgraphs", "detached_fan_outs", "caller_global_otel_active", "provider",
    "inner_subgraphs", "subgraphs",
}
gb.CASE_LEVEL_KEYS.update(OBSERVABILITY_CASE_KEYS)
CASE_KEYS = gb.CASE_LEVEL_KEYS | gb.GRAPH_KEYS


# --- the mock LLM server ---------------------------------------------------------------------


class MockLLM:
    """Serves ``mock_llm`` bodies / ``mock_llm_stream`` chunk lists in arrival order."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.replies: deque[Any] = deque()
        for spec in data.get("mock_llm") or ():
            self.replies.append(("body", spec))
        for chunks in data.get("mock_llm_stream") or ():
            if isinstance(chunks, Mapping) and "wire_attempts" in chunks:
                for attempt in chunks["wire_attempts"]:
                    self.replies.append(("stream", attempt))
            else:
                self.replies.append(("stream", chunks))

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"object": "list", "data": []})
        if not self.replies:
            raise AssertionError("the provider sent a request but the mock has no reply left")
        kind, spec = self.replies.popleft()
        if kind == "stream":
            chunks = list(spec)
            for i, chunk in enumerate(chunks):
                if isinstance(chunk, Mapping) and "error" in chunk:
                    status = int(chunk["error"].get("status", 500))
                    if i == 0:
                        return httpx.Response(status, json={"error": {"message": "mock"}})
                    chunks = chunks[:i]
                    return sse_reply(200, chunks, None)  # the stream breaks off mid-way
            return sse_reply(200, [*chunks, "[DONE]"], None)
        check_directives(spec, {"status", "body", "headers"}, "mock_llm[]")
        body = spec.get("body")
        content = msgspec.json.encode(body) if not isinstance(body, str) else body.encode()
        return httpx.Response(int(spec.get("status", 200)), content=content,
                              headers={"content-type": "application/json"})

    def first_model(self) -> str:
        """The bound model, by the suite's convention: ``test-model`` (its span
        fixtures), unless the mock replies name another model family; ``gpt-test``
        (its typed-event fixtures) for streamed replies, which name none."""
        for kind, spec in self.replies:
            body = spec.get("body") if kind == "body" else None
            if isinstance(body, Mapping) and isinstance(body.get("model"), str):
                model = str(body["model"])
                return "test-model" if model.startswith("test-model") else model
        return "gpt-test" if any(kind == "stream" for kind, _ in self.replies) else "test-model"

    def tool_names(self) -> list[str]:
        """Tools the mock model calls (declared to the provider when a case declares none)."""
        names: list[str] = []
        for kind, spec in self.replies:
            chunks = spec if kind == "stream" else [spec.get("body")]
            for body in chunks:
                if not isinstance(body, Mapping):
                    continue
                for choice in body.get("choices") or ():
                    part = choice.get("message") or choice.get("delta") or {}
                    for call in part.get("tool_calls") or ():
                        name = (call.get("function") or {}).get("name")
                        if name and name not in names:
                            names.append(str(name))
        return names


# --- node directives ----------------------------------------------------------------------------

CALL_KEYS = {"messages", "stores_response_in", "config", "model", "response_schema", "retry",
             "stream", "tools", "response"}


def _expand(value: Any) -> Any:
    """The suite's generated payloads: ``content_repeat: {char, bytes}`` and
    ``base64_data_synthetic: {bytes}`` become the text / data they describe."""
    if isinstance(value, list):
        return [_expand(v) for v in value]
    if not isinstance(value, Mapping):
        return value
    out: dict[str, Any] = {}
    for key, v in value.items():
        if key == "content_repeat":
            out["content"] = str(v["char"]) * int(v["bytes"])
        elif key == "base64_data_synthetic":
            out["base64_data"] = "A" * int(v["bytes"])
        else:
            out[key] = _expand(v)
    return out


def _provider(ctx: gb.BuildContext, model: str | None, reply: Any = None) -> OpenAIProvider:
    mock: MockLLM = ctx.scratch["mock_llm"]
    if reply is not None:  # this node's own canned reply (concurrent branches)
        mock = MockLLM({"mock_llm": [{"status": 200, "body": {
            "id": f"cc-{uuid.uuid4().hex[:8]}", "object": "chat.completion",
            "model": model or "test-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": str(reply)},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}}]})
    pspec = ctx.scratch.get("provider_spec") or {}
    provider = OpenAIProvider(
        "http://mock-llm.test", model or mock.first_model(),
        genai_system=str(pspec.get("genai_system") or "openai"),
        transport=HttpxTransport(transport=httpx.MockTransport(mock.handler)),
    )
    ctx.scratch.setdefault("providers", []).append(provider)
    return provider


def _llm_call(ctx: gb.BuildContext, spec: Mapping[str, Any], where: str
              ) -> Callable[[], Any]:
    check_directives(spec, CALL_KEYS | {"phase"}, where)
    provider = _provider(ctx, spec.get("model"), spec.get("response"))
    raw_messages = list(spec.get("messages") or ()) or [{"role": "user", "content": "hi"}]
    messages = build_messages(_expand(raw_messages), f"{where}.messages")
    config = RuntimeConfig.from_mapping(spec["config"]) if spec.get("config") else None
    tool_specs = [t.get("function", t) for t in spec.get("tools") or ()]
    tools = build_tools(tool_specs or None, f"{where}.tools")
    if tools is None:
        mock: MockLLM = ctx.scratch["mock_llm"]
        names = mock.tool_names()
        tools = [Tool(name=n, description="", parameters={"type": "object"})
                 for n in names] or None
    request = CompletionRequest(messages=tuple(messages), tools=tools, config=config,
                                response_schema=spec.get("response_schema"),
                                stream=bool(spec.get("stream")))
    send: Any = provider.call
    if spec.get("retry"):
        rspec = spec["retry"]
        check_directives(rspec, {"max_attempts", "backoff"}, f"{where}.retry")
        seconds = float((rspec.get("backoff") or {}).get("seconds", 0))
        retry = RetryConfig(max_attempts=int(rspec.get("max_attempts", 3)),
                            backoff=constant_backoff(seconds))

        async def send(request: Any) -> Any:
            return await complete_with_retry(provider.call, request, retry)

    handler = compose([CallEventMiddleware(provider)], send)

    async def call() -> Any:
        return await handler(request)

    return call


def _calls_llm(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    call = _llm_call(ctx, value, f"{nb.graph_name}.nodes.{nb.name}.calls_llm")
    field = value.get("stores_response_in")

    async def act(state: Any) -> dict[str, Any] | None:
        response = await call()
        if field is None:
            return None
        content = response.message.content
        return {field: content if isinstance(content, str) else ""}

    nb.actions.append(act)


def _calls_llm_from_wrapper(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    call = _llm_call(ctx, value, f"{nb.graph_name}.nodes.{nb.name}.calls_llm_from_wrapper")
    phase = value.get("phase", "pre")

    async def wrapper(state: Any, nxt: Any) -> Any:
        if phase == "pre":
            await call()
            return await nxt(state)
        out = await nxt(state)
        await call()
        return out

    nb.middleware.append(wrapper)


class MockToolError(Exception):
    """What a ``mock_tool: {raises: ...}`` raises; its type name is the fixture's."""


def _calls_tool(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    where = f"{nb.graph_name}.nodes.{nb.name}.calls_tool"
    check_directives(value, {"tool_name", "tool_call_id", "arguments", "mock_tool",
                             "stores_result_in"}, where)
    mock = value.get("mock_tool") or {}
    check_directives(mock, {"returns", "raises"}, f"{where}.mock_tool")
    field = value.get("stores_result_in")

    async def run() -> Any:
        if "raises" in mock:
            spec = mock["raises"]
            error_cls = type(str(spec.get("error_type", "Exception")), (MockToolError,), {})
            raise error_cls(str(spec.get("message", "")))
        return mock.get("returns")

    async def act(state: Any) -> dict[str, Any] | None:
        result = await tool_call(str(value["tool_name"]), run,
                                 arguments=value.get("arguments"),
                                 tool_call_id=value.get("tool_call_id"))
        return {field: result} if field else None

    nb.actions.append(act)


def _also_emits_via_global_tracer(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    check_directives(value, {"span_name"}, f"{nb.graph_name}.nodes.{nb.name}.also_emits")
    provider = ctx.scratch.get("global_provider")
    if provider is None:
        raise UnknownDirective("also_emits_via_global_tracer needs caller_global_otel_active")
    tracer = provider.get_tracer("external.instrumentation")

    async def act(state: Any) -> None:
        tracer.start_span(str(value["span_name"])).end()
        return None

    nb.actions.append(act)


def _category_chain(exc: BaseException | None) -> list[Any]:
    out: list[Any] = []
    while exc is not None and len(out) < 10:
        out.append(getattr(exc, "category", None))
        exc = exc.__cause__
    return out


_BASE_RETRY = gb.MIDDLEWARE_TYPES["retry"]


def _retry(ctx: gb.BuildContext, cfg: Mapping[str, Any]) -> gb.Middleware:
    """``retry`` with the suite's ``classifier: {transient_categories: [...]}`` form."""
    classifier = cfg.get("classifier")
    if not (isinstance(classifier, Mapping) and "transient_categories" in classifier):
        return _BASE_RETRY(ctx, cfg)
    check_directives(classifier, {"transient_categories"}, "retry.classifier")
    wanted = set(classifier["transient_categories"])
    check_directives(cfg, {"type", "name", "max_attempts", "backoff", "classifier"}, "retry")
    seconds = float((cfg.get("backoff") or {}).get("seconds", 0))
    return RetryMiddleware(RetryConfig(
        max_attempts=int(cfg.get("max_attempts", 3)), backoff=constant_backoff(seconds),
        classifier=lambda exc: bool(wanted & set(_category_chain(exc)))))


class FlakyFailure(Exception):
    """What the suite's ``flaky: {fail_count, category}`` raises."""

    def __init__(self, message: str, category: str) -> None:
        super().__init__(message)
        self.category = category


_BASE_FLAKY = gb.NODE_DIRECTIVES["flaky"]


def _flaky(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    """``flaky: {fail_count, category, on_success}``: fail the first N attempts."""
    if not (isinstance(value, Mapping) and "fail_count" in value):
        _BASE_FLAKY(ctx, nb, value)
        return
    where = f"{nb.graph_name}.nodes.{nb.name}.flaky"
    check_directives(value, {"fail_count", "category", "on_success"}, where)
    calls = [0]

    async def act(state: Any) -> dict[str, Any] | None:
        calls[0] += 1
        if calls[0] <= int(value["fail_count"]):
            raise FlakyFailure(f"attempt {calls[0]} fails", str(value.get("category")))
        return dict(value.get("on_success") or {}) or None

    nb.actions.append(act)


_BASE_FAN_OUT = gb.NODE_DIRECTIVES["fan_out"]


def _fan_out(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    """``fan_out`` accepting the suite's ``inner_subgraph`` for ``subgraph``."""
    if isinstance(value, Mapping) and "inner_subgraph" in value:
        value = {("subgraph" if k == "inner_subgraph" else k): v for k, v in value.items()}
    _BASE_FAN_OUT(ctx, nb, value)


gb.MIDDLEWARE_TYPES["retry"] = _retry
gb.NODE_DIRECTIVES.update({
    "flaky": _flaky,
    "fan_out": _fan_out,
    "also_emits_via_global_tracer": _also_emits_via_global_tracer,
    "calls_llm": _calls_llm,
    "calls_llm_from_wrapper": _calls_llm_from_wrapper,
    "calls_tool": _calls_tool,
})


# --- typed-event collectors -----------------------------------------------------------------------


class Collector:
    """A ``typed_event_collector``: keeps every typed event (optionally one family)."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        check_directives(spec, {"name", "kind", "filter_event_type", "retains_arrival_order"},
                         "typed_observers[]")
        if spec.get("kind") != "typed_event_collector":
            raise UnknownDirective(f"typed observer kind {spec.get('kind')!r}")
        self.name = str(spec["name"])
        self.only = spec.get("filter_event_type")
        self.events: list[Any] = []

    async def __call__(self, event: Any) -> None:
        if self.only is None or type(event).__name__ == self.only:
            self.events.append(event)


# --- running a case -------------------------------------------------------------------------------


class Run:
    """What a case produced: spans, metrics, events, the outcome."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []
        self.metrics: list[tuple[str, Any, dict[str, Any]]] = []
        self.collectors: dict[str, Collector] = {}
        self.final: Any = None
        self.error: GraphRuntimeError | None = None
        self.bindings: dict[str, Any] = {}
        self.invocations = 0
        self.global_spans: list[ReadableSpan] = []


async def run_case(case: Case) -> None:
    data = case.data
    where = case.test_id
    check_directives(data, CASE_KEYS, where)
    if data.get("caller_metadata") is not None:
        raise UnknownDirective("caller_metadata (observability §3.4) is not implemented")
    ctx = gb.BuildContext(case)
    ctx.collect_subgraphs(data, case.document)
    for name, sdef in (data.get("inner_subgraphs") or {}).items():
        ctx.subgraph_defs[str(name)] = dict(sdef)
    ctx.scratch["mock_llm"] = MockLLM(data)
    ctx.scratch["provider_spec"] = data.get("provider")
    if data.get("caller_global_otel_active"):
        # A stand-in for the application's global provider: a second SDK provider the
        # "external instrumentation" writes to (the process-wide global is set once
        # per process in OpenTelemetry, so the harness does not replace it).
        global_exporter = InMemorySpanExporter()
        global_provider = TracerProvider()
        global_provider.add_span_processor(SimpleSpanProcessor(global_exporter))
        ctx.scratch["global_exporter"] = global_exporter
        ctx.scratch["global_provider"] = global_provider
    token = gb.bind_context(ctx)
    run = Run()
    try:
        graph = gb.build_graph(ctx, data, name="outer").compile()
        ctx.outer = graph
        exporter = InMemorySpanExporter()
        reader = InMemoryMetricReader()
        otel = OTelObserver(
            span_processors=[SimpleSpanProcessor(exporter)],
            enable_metrics=bool(data.get("enable_metrics")), metric_readers=[reader],
            disable_llm_spans=bool(data.get("disable_llm_spans")),
            disable_provider_payload=bool(data.get("disable_provider_payload", True)),
            disable_genai_semconv=bool(data.get("disable_genai_semconv")),
            detached_subgraphs=data.get("detached_subgraphs") or (),
            detached_fan_outs=data.get("detached_fan_outs") or (),
        )
        graph.attach(otel)
        for spec in data.get("typed_observers") or ():
            col = Collector(spec)
            run.collectors[col.name] = col
            graph.attach(col)
        gb.attach_observers(ctx, list(data.get("observers") or ()))
        count = data.get("invocations", 1)
        if not isinstance(count, int):
            raise UnknownDirective("invocations: a list of invocation specs")
        for _ in range(count):
            try:
                run.final = await graph.invoke(
                    dict(data.get("initial_state") or {}),
                    invocation_id=data.get("caller_invocation_id"),
                    correlation_id=data.get("caller_correlation_id"),
                )
            except GraphRuntimeError as exc:
                run.error = exc
            run.invocations += 1
        await graph.drain()
        otel.shutdown()
        for provider in ctx.scratch.get("providers") or ():
            await provider.aclose()
        run.spans = list(exporter.get_finished_spans())
        global_exporter = ctx.scratch.get("global_exporter")
        if global_exporter is not None:
            run.global_spans = list(global_exporter.get_finished_spans())
        run.metrics = _observations(reader)
        _check(ctx, data, run, where)
    finally:
        gb._CTX.reset(token)


def _observations(reader: InMemoryMetricReader) -> list[tuple[str, Any, dict[str, Any]]]:
    out: list[tuple[str, Any, dict[str, Any]]] = []
    data = reader.get_metrics_data()
    if data is None:
        return out
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "sum", None)
                    if value is None:
                        value = getattr(point, "value", None)
                    out.append((metric.name, value, dict(point.attributes or {})))
    return out


EXPECTED_KEYS = {
    "span_tree_private", "span_tree_global", "no_openarmature_spans_on_global",
    "invocation_count", "node_completed_event_carries_error",
    "span_tree", "observers", "invariants", "metrics", "no_spans_emitted", "final_state",
    "no_llm_provider_span", "no_langfuse_observations_emitted", "llm_span_attributes",
    "llm_span_attributes_absent", "response_usage",
}


def _check(ctx: gb.BuildContext, data: Mapping[str, Any], run: Run, where: str) -> None:
    expected = dict(data.get("expected") or {})
    check_directives(expected, EXPECTED_KEYS, f"{where}.expected")
    if "expected_error" in data:
        spec = data["expected_error"]
        check_directives(spec, {"category", "raised_from"}, f"{where}.expected_error")
        assert run.error is not None, f"{where}: the invocation succeeded"
        chain: list[Any] = []
        exc: BaseException | None = run.error
        while exc is not None and len(chain) < 10:
            chain.append(getattr(exc, "category", None))
            exc = exc.__cause__
        assert spec["category"] in chain, f"{where}: {run.error!r} ({chain})"
        if "raised_from" in spec:
            assert run.error.node_name == spec["raised_from"], f"{where}: {run.error!r}"
    elif (run.error is not None and "'ERROR'" not in repr(expected)
          and "node_completed_event_carries_error" not in expected):
        raise AssertionError(f"{where}: unexpected {run.error!r}") from run.error
    if "final_state" in expected:
        got = msgspec.to_builtins(run.final)
        for key, want in expected["final_state"].items():
            assert got.get(key) == want, f"{where}.final_state.{key}: {got.get(key)!r}"
    if "span_tree" in expected:
        _match_forest(run, list(expected["span_tree"]), _roots(run.spans), f"{where}.span_tree")
    if "span_tree_private" in expected:
        _match_forest(run, list(expected["span_tree_private"]), _roots(run.spans),
                      f"{where}.span_tree_private")
    if "span_tree_global" in expected:
        _match_forest(run, list(expected["span_tree_global"]), _roots(run.global_spans),
                      f"{where}.span_tree_global")
    if expected.get("no_openarmature_spans_on_global"):
        assert not [s for s in run.global_spans if s.name.startswith("openarmature")
                    or "openarmature.correlation_id" in (s.attributes or {})], where
    if "node_completed_event_carries_error" in expected:
        spec = expected["node_completed_event_carries_error"]
        check_directives(spec, {"node_name", "error_category"}, where)
        found = [e for col in run.collectors.values() for e in col.events
                 if isinstance(e, NodeEvent) and e.phase == "completed"
                 and e.node_name == spec["node_name"] and e.error is not None]
        assert found, f"{where}: no failed completed event for {spec['node_name']}"
        assert spec["error_category"] in _category_chain(found[0].error.exception), where
    if "invocation_count" in expected:
        roots = [s for s in run.spans if s.name == "openarmature.invocation"]
        assert run.invocations == len(roots) == expected["invocation_count"], where
    if expected.get("no_spans_emitted"):
        assert not run.spans, f"{where}: spans were emitted"
    if expected.get("no_llm_provider_span"):
        assert not [s for s in run.spans if s.name == "openarmature.llm.complete"], where
    for name, want in (expected.get("observers") or {}).items():
        _check_collector(run, run.collectors[name], want, f"{where}.observers.{name}")
    if "metrics" in expected:
        _check_metrics(run, list(expected["metrics"] or ()), f"{where}.metrics")
    llm = [s for s in run.spans if s.name == "openarmature.llm.complete"]
    if "llm_span_attributes" in expected:
        assert llm, f"{where}: no LLM span"
        _match_attrs(run, dict(expected["llm_span_attributes"]), llm[0],
                     f"{where}.llm_span_attributes")
    for name in expected.get("llm_span_attributes_absent") or ():
        assert all(name not in (s.attributes or {}) for s in llm), f"{where}: {name} present"
    invariants = dict(data.get("invariants") or {})
    invariants.update(expected.get("invariants") or {})
    for name, want in invariants.items():
        check = INVARIANTS.get(name)
        if check is None:
            raise UnknownDirective(f"unknown invariant {name!r} in {where}")
        check(run, want, f"{where}.invariants.{name}")


# --- span-tree matching -----------------------------------------------------------------------


def _roots(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    ids = {s.context.span_id for s in spans}
    return sorted((s for s in spans if s.parent is None or s.parent.span_id not in ids),
                  key=lambda s: s.start_time or 0)


def _children(run: Run, span: ReadableSpan) -> list[ReadableSpan]:
    return sorted((s for s in [*run.spans, *run.global_spans]
                   if s.parent is not None and s.parent.span_id == span.context.span_id),
                  key=lambda s: s.start_time or 0)


_STATUS = {"OK": StatusCode.OK, "ERROR": StatusCode.ERROR, "UNSET": StatusCode.UNSET}
SPAN_KEYS = {"name", "attributes", "attributes_absent", "status", "children", "links",
             "status_description", "events", "attributes_present", "attribute_parses_as_messages",
             "attribute_parses_as_object", "exception_recorded", "attribute_truncation",
             "attribute_does_not_contain"}


def _match_forest(run: Run, want: list[Any], got: list[ReadableSpan], where: str) -> None:
    assert len(want) == len(got), (
        f"{where}: {len(got)} spans {[s.name for s in got]}, expected {len(want)} "
        f"{[w.get('name') for w in want]}")
    errors: list[str] = []
    if _try_match(run, want, got, where, errors):
        return
    raise AssertionError(errors[0] if errors else where)


def _try_match(run: Run, want: list[Any], got: list[ReadableSpan], where: str,
               errors: list[str]) -> bool:
    """Match ``want`` to ``got`` in order, else in any order (concurrent siblings)."""
    saved = dict(run.bindings)
    try:
        for i, (w, g) in enumerate(zip(want, got, strict=True)):
            _match_span(run, w, g, f"{where}[{i}]")
        return True
    except AssertionError as exc:
        errors.append(str(exc))
        run.bindings = saved
    used: set[int] = set()

    def place(i: int) -> bool:
        if i == len(want):
            return True
        for j, g in enumerate(got):
            if j in used:
                continue
            before = dict(run.bindings)
            try:
                _match_span(run, want[i], g, f"{where}[{i}]")
            except AssertionError as exc:
                errors.append(str(exc))
                run.bindings = before
                continue
            used.add(j)
            if place(i + 1):
                return True
            used.discard(j)
            run.bindings = before
        return False

    return place(0)


def _match_span(run: Run, want: Mapping[str, Any], span: ReadableSpan, where: str) -> None:
    check_directives(want, SPAN_KEYS, where)
    where = f"{where}({span.name})"
    if "name" in want:
        assert span.name == want["name"], f"{where}: name {span.name!r} != {want['name']!r}"
    if "status" in want:
        status = _STATUS[str(want["status"])]
        assert span.status.status_code is status, f"{where}: status {span.status.status_code}"
    if "status_description" in want:
        assert span.status.description == want["status_description"], where
    _match_attrs(run, dict(want.get("attributes") or {}), span, where)
    attrs = dict(span.attributes or {})
    for name in want.get("attributes_absent") or ():
        assert name not in attrs, f"{where}: attribute {name} present"
    for name in want.get("attributes_present") or ():
        assert name in attrs, f"{where}: attribute {name} absent"
    for key in ("attribute_parses_as_messages", "attribute_parses_as_object"):
        for name, parsed in (want.get(key) or {}).items():
            assert name in attrs, f"{where}: attribute {name} absent"
            match_value(run, parsed, msgspec.json.decode(str(attrs[name])), f"{where}.{name}")
    for name, rule in (want.get("attribute_truncation") or {}).items():
        check_directives(rule, {"max_bytes", "marker_pattern", "utf8_valid",
                                "prefix_of_full_serialization"}, f"{where}.{name}")
        text = str(attrs[name])
        assert len(text.encode()) <= int(rule["max_bytes"]), f"{where}: {len(text.encode())}"
        assert re.search(str(rule["marker_pattern"]), text), f"{where}: no truncation marker"
    for name, rule in (want.get("attribute_does_not_contain") or {}).items():
        check_directives(rule, {"forbidden_substring_kind"}, f"{where}.{name}")
        if rule["forbidden_substring_kind"] != "synthetic_base64_prefix":
            raise UnknownDirective(f"forbidden_substring_kind {rule['forbidden_substring_kind']}")
        assert "A" * 64 not in str(attrs.get(name, "")), f"{where}: inline image bytes present"
    if want.get("exception_recorded"):
        assert any(e.name == "exception" for e in span.events), f"{where}: no exception event"
    if "links" in want:
        assert len(span.links) == len(want["links"]), f"{where}: {len(span.links)} links"
    if "children" in want:
        kids = _children(run, span)
        wanted = list(want["children"] or ())
        assert len(kids) == len(wanted), (
            f"{where}: children {[k.name for k in kids]}, expected "
            f"{[w.get('name') for w in wanted]}")
        errors: list[str] = []
        if not _try_match(run, wanted, kids, f"{where}.children", errors):
            raise AssertionError(errors[0] if errors else where)


def _match_attrs(run: Run, want: Mapping[str, Any], span: ReadableSpan, where: str) -> None:
    attrs = dict(span.attributes or {})
    for key, value in want.items():
        assert key in attrs, f"{where}: attribute {key} missing (has {sorted(attrs)})"
        match_value(run, value, attrs[key], f"{where}.{key}")


def match_value(run: Run, want: Any, got: Any, where: str) -> None:
    """§5.10 value matching: literals, format matchers, binding tokens, sub-keys."""
    if isinstance(got, tuple):
        got = list(got)
    if isinstance(want, str) and want.startswith("<") and want.endswith(">"):
        token = want[1:-1]
        if token == "uuid":
            assert isinstance(got, str) and _UUID4.match(got), f"{where}: {got!r} not a UUIDv4"
            return
        if token == "any-string":
            assert isinstance(got, str) and got, f"{where}: {got!r} is not a non-empty string"
            return
        if token.startswith("uuid-hex"):
            assert isinstance(got, str) and re.fullmatch(r"[0-9a-f]{32}", got), where
            return
        bound = run.bindings.setdefault(want, got)
        assert bound == got, f"{where}: {got!r} != {want} bound to {bound!r}"
        return
    if isinstance(want, Mapping) and set(want) <= {"non_empty_string", "harness_parameterized"}:
        if want.get("non_empty_string"):
            assert isinstance(got, str) and got, f"{where}: {got!r}"
        if "harness_parameterized" in want:
            assert got == HARNESS_PARAMETERS[want["harness_parameterized"]], f"{where}: {got!r}"
        return
    if isinstance(want, Mapping):
        assert got is not None, f"{where}: expected a record, got null"
        view = got if isinstance(got, Mapping) else _field(got)
        assert isinstance(view, Mapping), f"{where}: {got!r} is not a record"
        for key, sub in want.items():
            assert key in view, f"{where}: {key} missing"
            match_value(run, sub, view[key], f"{where}.{key}")
        return
    if isinstance(want, list):
        got_list = list(got) if isinstance(got, (list, tuple)) else got
        assert isinstance(got_list, list) and len(got_list) == len(want), f"{where}: {got!r}"
        for i, (w, g) in enumerate(zip(want, got_list, strict=True)):
            match_value(run, w, g, f"{where}[{i}]")
        return
    if isinstance(got, msgspec.Struct):
        got = msgspec.to_builtins(got)
    assert got == want, f"{where}: {got!r} != {want!r}"


HARNESS_PARAMETERS: dict[str, Any] = {"implementation_name": "openarmature-python"}


# --- typed events -----------------------------------------------------------------------------

COLLECTOR_KEYS = {"contains_event", "contains_event_of_type", "contains_exactly_one_event_of_type",
                  "event_count", "event_counts", "contains_events_in_order"}


def _of_type(col: Collector, name: str) -> list[Any]:
    return [e for e in col.events if type(e).__name__ == name]


def _check_collector(run: Run, col: Collector, want: Mapping[str, Any], where: str) -> None:
    check_directives(want, COLLECTOR_KEYS, where)
    if "contains_event" in want:
        spec = want["contains_event"]
        check_directives(spec, {"event_type", "fields", "fields_absent_keys"},
                         f"{where}.contains_event")
        candidates = _of_type(col, str(spec["event_type"]))
        kinds = [type(e).__name__ for e in col.events]
        assert candidates, f"{where}: no {spec['event_type']} (got {kinds})"
        errors: list[str] = []
        for event in candidates:
            before = dict(run.bindings)
            try:
                for key, value in (spec.get("fields") or {}).items():
                    assert hasattr(event, key), f"{where}: field {key} absent"
                    match_value(run, value, _field(getattr(event, key)), f"{where}.{key}")
                for key, absent in (spec.get("fields_absent_keys") or {}).items():
                    present = set(getattr(event, key) or {})
                    assert not present & set(absent), f"{where}.{key}: {present & set(absent)}"
                return
            except AssertionError as exc:
                errors.append(str(exc))
                run.bindings = before
        raise AssertionError(errors[0])
    if "contains_events_in_order" in want:
        spec = want["contains_events_in_order"]
        check_directives(spec, {"event_type", "events"}, f"{where}.contains_events_in_order")
        got = _of_type(col, str(spec["event_type"]))
        wanted = list(spec["events"])
        assert len(got) == len(wanted), f"{where}: {len(got)} events, expected {len(wanted)}"
        for i, (w, e) in enumerate(zip(wanted, got, strict=True)):
            for key, value in w.items():
                assert hasattr(e, key), f"{where}[{i}]: field {key} absent"
                match_value(run, value, _field(getattr(e, key)), f"{where}[{i}].{key}")
    if "contains_event_of_type" in want:
        assert _of_type(col, str(want["contains_event_of_type"])), where
    if "contains_exactly_one_event_of_type" in want:
        n = len(_of_type(col, str(want["contains_exactly_one_event_of_type"])))
        assert n == 1, f"{where}: {n} events"
    counts = list(want.get("event_counts") or ())
    if "event_count" in want:
        counts.append(want["event_count"])
    for spec in counts:
        n = len(_of_type(col, str(spec["event_type"])))
        assert n == spec["count"], f"{where}: {n} {spec['event_type']}, expected {spec['count']}"


def _field(value: Any) -> Any:
    if isinstance(value, msgspec.Struct):  # every field, a None one included
        return {k: _field(v) for k, v in msgspec.structs.asdict(value).items()}
    if isinstance(value, tuple):
        return [_field(v) for v in value]
    return value


# --- metrics ------------------------------------------------------------------------------------


def _check_metrics(run: Run, want: list[Mapping[str, Any]], where: str) -> None:
    if not want:
        assert not run.metrics, f"{where}: measurements recorded {run.metrics}"
        return
    for i, spec in enumerate(want):
        check_directives(spec, {"instrument", "dimensions", "value"}, f"{where}[{i}]")
        found = [
            (name, value, dims) for name, value, dims in run.metrics
            if name == spec["instrument"] and dims == dict(spec.get("dimensions") or {})
            and ("value" not in spec or value == spec["value"])
        ]
        assert found, f"{where}[{i}]: no {spec} in {run.metrics}"


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
    traces = {s.context.trace_id for s in run.spans}
    assert len(traces) >= 2, where


@invariant("detached_invocation_id_equals_parent")
def _detached_same_id(run: Run, want: Any, where: str) -> None:
    ids = {(s.attributes or {}).get("openarmature.invocation_id") for s in run.spans
           if s.name == "openarmature.invocation"}
    assert len(ids) == 1, where


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
