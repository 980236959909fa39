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
  per §5.10; ``children`` exactly, ``children: []`` none; in the per-trace trees
  of ``traces`` / ``parent_trace`` a non-empty list asserts each listed child, a
  fixture there may leave out one it is not about; ``links`` match each Link's
  target trace id, ``link_count`` counts them),
  ``traces`` (every trace the run produced, each by its ``trace_id`` binding token
  and its own ``span_tree``), ``parent_trace`` / ``detached_trace_count`` (the
  invocation's own trace -- the one no Link targets -- and how many others),
  ``observers.<collector>`` (``contains_event`` and the count forms), ``metrics``,
  ``no_spans_emitted``, ``no_llm_provider_span`` and the invariant predicates of
  :mod:`.observability_checks` (:data:`INVARIANTS`).

A directive or invariant this adapter does not know fails the case naming it
(:class:`UnknownDirective`); nothing here looks at fixture names.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
import msgspec
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode, format_span_id, format_trace_id

from openarmature_nodes.graph import GraphRuntimeError, NodeEvent
from openarmature_nodes.llm import CompletionRequest, OpenAIProvider, RuntimeConfig, Tool
from openarmature_nodes.llm.call_retry import complete_with_retry
from openarmature_nodes.llm.transport import HttpxTransport
from openarmature_nodes.metadata import get_invocation_metadata, set_invocation_metadata
from openarmature_nodes.middleware import RetryMiddleware
from openarmature_nodes.nodes.observe import CallEventMiddleware, tool_call
from openarmature_nodes.observability.logs import RunLogHandler
from openarmature_nodes.observability.otel import OTelObserver
from openarmature_nodes.onion import compose
from openarmature_nodes.retrying import RetryConfig, constant_backoff
from tests.conformance import vocabulary as _vocab
from tests.conformance.fixtures import Case, UnknownDirective, check_directives

from . import (
    composition,  # noqa: F401  (registers fan_out / parallel_branches)
    pipeline_utilities,
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
    "inner_subgraphs", "subgraphs", "direct_call", "caller_metadata",
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
    """``flaky: {fail_count, category, on_success}``: fail the first N attempts.

    Other forms go to the handler registered before this one when it is another
    adapter's compact form, else to the pipeline-utilities one (a handler another
    adapter installed before pipeline-utilities registered may wrap nothing)."""
    if not (isinstance(value, Mapping) and "fail_count" in value):
        if isinstance(value, Mapping) and "failure_sequence" not in value:
            _BASE_FLAKY(ctx, nb, value)
        else:
            pipeline_utilities._flaky(ctx, nb, value)
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


_ITEM_FIELD = "item"


def _with_state(sdef: dict[str, Any]) -> dict[str, Any]:
    """An ``inner_subgraphs`` entry declaring no ``state`` gets one: an ``any`` field for
    each ``stores_response_in`` target of its nodes and for the fan-out item."""
    if "state" in sdef:
        return sdef
    fields: dict[str, Any] = {_ITEM_FIELD: {"type": "any", "default": None}}
    for node in (sdef.get("nodes") or {}).values():
        for call in ("calls_llm", "calls_llm_from_wrapper"):
            target = (node.get(call) or {}).get("stores_response_in")
            if target:
                fields[str(target)] = {"type": "any", "default": None}
    return {**sdef, "state": {"fields": fields}}


def _append_field(ctx: gb.BuildContext, where: str) -> str:
    """The outer state's one ``append``-reduced field (a short-form fan-out's target)."""
    fields = ((ctx.case.data.get("state") or {}).get("fields") or {}).items()
    names = [str(k) for k, v in fields if (v or {}).get("reducer") == "append"]
    if len(names) != 1:
        raise AssertionError(f"{where}: no single append field to collect into ({names})")
    return names[0]


def _fan_out(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    """``fan_out`` accepting the suite's ``inner_subgraph`` for ``subgraph``.

    The short form (``items_field`` + ``inner_subgraph`` only) spreads each item into the
    inner subgraph's ``item`` field and collects that field back into the outer state's
    one ``append``-reduced field: what is collected is not what these fixtures observe.
    """
    if isinstance(value, Mapping) and "inner_subgraph" in value:
        value = {("subgraph" if k == "inner_subgraph" else k): v for k, v in value.items()}
        if value.get("target_field") is None and "items_field" in value:
            # (another adapter's wrapper may already have set collect_field to None)
            item = str(value.get("item_field") or _ITEM_FIELD)
            collect = value.get("collect_field") or item
            value = {**value, "item_field": item, "collect_field": collect,
                     "target_field": _append_field(ctx, f"{nb.graph_name}.{nb.name}")}
    _BASE_FAN_OUT(ctx, nb, value)


_BASE_BRANCHES = gb.NODE_DIRECTIVES["parallel_branches"]


def _parallel_branches(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    """``parallel_branches`` accepting a list of branch names, each running the
    ``inner_subgraphs`` entry of its own name with no projection in or out."""
    if isinstance(value, Mapping) and isinstance(value.get("branches"), list):
        value = {**value, "branches": {str(b): {"subgraph": str(b)} for b in value["branches"]}}
    _BASE_BRANCHES(ctx, nb, value)


_LOGGER = "openarmature.conformance"


def _emits_log(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    """``emits_log: {message, level}``: the node writes one stdlib log record."""
    check_directives(value, {"message", "level"}, f"{nb.graph_name}.{nb.name}.emits_log")
    level = logging.getLevelName(str(value.get("level", "INFO")))
    message = str(value["message"])

    async def act(state: Any) -> None:
        logging.getLogger(_LOGGER).log(level, message)

    nb.actions.append(act)


def _augment_metadata(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    entries = dict(value)

    async def act(state: Any) -> None:
        try:
            set_invocation_metadata(**entries)
        except (ValueError, TypeError) as exc:
            ctx.scratch.setdefault("augment_rejections", []).append(exc)
            raise
        return None

    nb.actions.append(act)


def _augment_metadata_from_field(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    """``augment_metadata_from_field: {<key>: <state_field>}``: the node reads each field
    from its state and calls ``set_invocation_metadata(<key>=<value>)`` (§3.4)."""
    if not isinstance(value, Mapping) or not value:
        raise UnknownDirective(f"{nb.graph_name}.{nb.name}.augment_metadata_from_field: "
                               f"a mapping of metadata key -> state field, got {value!r}")
    pairs = {str(k): str(v) for k, v in value.items()}

    async def act(state: Any) -> None:
        entries = {key: getattr(state, field) for key, field in pairs.items()}
        try:
            set_invocation_metadata(**entries)
        except (ValueError, TypeError) as exc:
            ctx.scratch.setdefault("augment_rejections", []).append(exc)
            raise
        return None

    nb.actions.append(act)


_NUMBER_WORDS = {w: i for i, w in enumerate((
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve"))}
_NUMBER_WORDS.update({"twenty": 20, "hundred": 100, "thousand": 1000})
_OPERATION = re.compile(
    r"^(?P<field>[a-z_][a-z0-9_]*?)_(?P<op>times|plus|minus)_(?P<n>[a-z0-9]+)$")
_ARITHMETIC: dict[str, Callable[[Any, int], Any]] = {
    "times": lambda v, n: v * n, "plus": lambda v, n: v + n, "minus": lambda v, n: v - n}


def harness_operation(name: str, where: str) -> Callable[[Any], Any]:
    """A named harness operation of ``update_pure_from_state`` (conformance-adapter §5.1):
    ``<field>_<times|plus|minus>_<n>`` reads state field ``<field>`` and applies the
    arithmetic (``input_times_two``: ``input * 2``); ``n`` is digits or a number word.
    Any other name fails the case naming it."""
    match = _OPERATION.match(name)
    n_text = match.group("n") if match else ""
    n = int(n_text) if n_text.isdigit() else _NUMBER_WORDS.get(n_text)
    if match is None or n is None:
        raise UnknownDirective(f"{where}: unknown harness operation {name!r}")
    field, apply = match.group("field"), _ARITHMETIC[match.group("op")]
    return lambda state: apply(getattr(state, field), n)


def _update_pure_from_state(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    """``update_pure_from_state: {<output_field>: <harness_operation>}``: the node returns
    each output field set to its operation's value over the node's input state."""
    where = f"{nb.graph_name}.nodes.{nb.name}.update_pure_from_state"
    if not isinstance(value, Mapping) or not value:
        raise UnknownDirective(f"{where}: a mapping of output field -> operation, got {value!r}")
    ops = {str(out): harness_operation(str(op), where) for out, op in value.items()}

    async def act(state: Any) -> dict[str, Any]:
        return {out: op(state) for out, op in ops.items()}

    nb.actions.append(act)


def _capture_metadata(ctx: gb.BuildContext, nb: gb.NodeBuild, value: Any) -> None:
    field = str(value)

    async def act(state: Any) -> dict[str, Any]:
        snapshot = get_invocation_metadata()
        ctx.scratch.setdefault("captures", []).append(snapshot)
        return {field: dict(snapshot)}

    nb.actions.append(act)


gb.MIDDLEWARE_TYPES["retry"] = _retry
gb.NODE_DIRECTIVES.update({
    "augment_metadata": _augment_metadata,
    "augment_metadata_from_field": _augment_metadata_from_field,
    "update_pure_from_state": _update_pure_from_state,
    "capture_invocation_metadata_into": _capture_metadata,
    "flaky": _flaky,
    "fan_out": _fan_out,
    "parallel_branches": _parallel_branches,
    "emits_log": _emits_log,
    "also_emits_via_global_tracer": _also_emits_via_global_tracer,
    "calls_llm": _calls_llm,
    "calls_llm_from_wrapper": _calls_llm_from_wrapper,
    "calls_tool": _calls_tool,
})


# --- typed-event collectors -----------------------------------------------------------------------


class Collector:
    """A ``typed_event_collector``: keeps every typed event (optionally one family)."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        check_directives(spec, {"name", "kind", "filter_event_type", "retains_arrival_order",
                                "include_caller_metadata"}, "typed_observers[]")
        self.include_caller_metadata = bool(spec.get("include_caller_metadata"))
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
        self.rejected: BaseException | None = None
        self.scratch: dict[str, Any] = {}
        self.global_spans: list[ReadableSpan] = []
        self.logs: list[Any] = []
        # inside `traces` / `parent_trace` trees a non-empty `children` list names the
        # children the fixture is about (058 leaves out a later sibling node)
        self.partial_children = False


async def run_case(case: Case) -> None:
    data = case.data
    where = case.test_id
    check_directives(data, CASE_KEYS, where)
    if "direct_call" in data:
        _direct_call(data, where)
        return
    ctx = gb.BuildContext(case)
    ctx.collect_subgraphs(data, case.document)
    for name, sdef in (data.get("inner_subgraphs") or {}).items():
        ctx.subgraph_defs[str(name)] = _with_state(dict(sdef))
    declared = set((data.get("state") or {}).get("fields") or {})
    for key, value in (data.get("initial_state") or {}).items():
        if key not in declared:  # an undeclared initial field: a list, or Any
            ctx.extra_fields[str(key)] = list[Any] if isinstance(value, list) else None
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
        log_exporter = InMemoryLogRecordExporter()
        logger = logging.getLogger(_LOGGER)
        handler = RunLogHandler()
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        otel = OTelObserver(
            span_processors=[SimpleSpanProcessor(exporter)],
            enable_metrics=bool(data.get("enable_metrics")), metric_readers=[reader],
            disable_llm_spans=bool(data.get("disable_llm_spans")),
            disable_provider_payload=bool(data.get("disable_provider_payload", True)),
            disable_genai_semconv=bool(data.get("disable_genai_semconv")),
            detached_subgraphs=data.get("detached_subgraphs") or (),
            detached_fan_outs=data.get("detached_fan_outs") or (),
            log_processors=[SimpleLogRecordProcessor(log_exporter)],
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
                    metadata=data.get("caller_metadata"),
                )
            except GraphRuntimeError as exc:
                run.error = exc
            except (ValueError, TypeError) as exc:  # the invoke() API boundary
                run.rejected = exc
            run.invocations += 1
        await graph.drain()
        otel.shutdown()
        for provider in ctx.scratch.get("providers") or ():
            await provider.aclose()
        run.spans = list(exporter.get_finished_spans())
        run.logs = [item.log_record for item in log_exporter.get_finished_logs()]
        run.scratch = ctx.scratch
        global_exporter = ctx.scratch.get("global_exporter")
        if global_exporter is not None:
            run.global_spans = list(global_exporter.get_finished_spans())
        run.metrics = _observations(reader)
        _check(ctx, data, run, where)
    finally:
        gb._CTX.reset(token)
        logging.getLogger(_LOGGER).handlers[:] = [
            h for h in logging.getLogger(_LOGGER).handlers if not isinstance(h, RunLogHandler)]


DIRECT_CALL_KEYS = {"operation"}


def _direct_call(data: Mapping[str, Any], where: str) -> None:
    """A framework helper called outside any invocation (``direct_call``)."""
    spec = data["direct_call"]
    check_directives(spec, DIRECT_CALL_KEYS, f"{where}.direct_call")
    if spec["operation"] != "get_invocation_metadata":
        raise UnknownDirective(f"direct_call operation {spec['operation']!r}")
    error: BaseException | None = None
    value: Any = None
    try:
        value = get_invocation_metadata()
    except Exception as exc:
        error = exc
    want = (data.get("expected") or {}).get("direct_call_result") or {}
    check_directives(want, {"value", "type", "exception"}, f"{where}.direct_call_result")
    assert error is None if want.get("exception") is None else error is not None, where
    assert dict(value) == want.get("value"), f"{where}: {value!r}"
    if want.get("type") == "immutable_mapping":
        assert isinstance(value, Mapping) and not isinstance(value, dict), where
        try:
            value["x"] = 1  # type: ignore[index]
        except TypeError:
            pass
        else:
            raise AssertionError(f"{where}: the mapping is mutable")


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
    "invocation_count", "node_completed_event_carries_error", "invoke_rejects_at_api_boundary",
    "augment_rejects_at_call_site",
    "span_tree", "observers", "invariants", "metrics", "no_spans_emitted", "final_state",
    "no_llm_provider_span", "no_langfuse_observations_emitted", "llm_span_attributes",
    "llm_span_attributes_absent", "response_usage", "observer_event_invariants", "log_records",
    "traces", "parent_trace", "detached_trace_count",
}
TRACE_KEYS = {"trace_id", "span_tree"}
LINK_KEYS = {"target_trace_id"}


def _check(ctx: gb.BuildContext, data: Mapping[str, Any], run: Run, where: str) -> None:
    expected = dict(data.get("expected") or {})
    check_directives(expected, EXPECTED_KEYS, f"{where}.expected")
    if expected.get("invoke_rejects_at_api_boundary"):
        assert isinstance(run.rejected, ValueError | TypeError), f"{where}: {run.rejected!r}"
        assert run.error is None and not run.spans, f"{where}: work began"
    elif run.rejected is not None:
        raise AssertionError(f"{where}: invoke() rejected: {run.rejected!r}")
    if expected.get("augment_rejects_at_call_site"):
        rejections = run.scratch.get("augment_rejections") or []
        assert rejections and isinstance(rejections[0], ValueError | TypeError), where
        assert run.error is not None, f"{where}: the rejection did not surface"
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
          and "node_completed_event_carries_error" not in expected
          and not expected.get("augment_rejects_at_call_site")):
        raise AssertionError(f"{where}: unexpected {run.error!r}") from run.error
    if "final_state" in expected:
        got = msgspec.to_builtins(run.final)
        for key, want in expected["final_state"].items():
            assert got.get(key) == want, f"{where}.final_state.{key}: {got.get(key)!r}"
    if "span_tree" in expected:
        _match_forest(run, list(expected["span_tree"]), _roots(run.spans), f"{where}.span_tree")
    run.partial_children = True
    try:
        if "traces" in expected:
            _check_traces(run, list(expected["traces"] or ()), f"{where}.traces")
        if "parent_trace" in expected:
            spec = expected["parent_trace"]
            check_directives(spec, {"span_tree"}, f"{where}.parent_trace")
            _match_forest(run, list(spec["span_tree"]),
                          _roots(traces(run)[parent_trace_id(run)]),
                          f"{where}.parent_trace.span_tree")
    finally:
        run.partial_children = False
    if "detached_trace_count" in expected:
        n = len(traces(run)) - 1
        assert n == expected["detached_trace_count"], f"{where}: {n} detached traces"
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
    # no Langfuse observer exists here (observability §8 is out of scope): vacuously true
    expected.pop("no_langfuse_observations_emitted", None)
    if expected.get("no_spans_emitted"):
        assert not run.spans, f"{where}: spans were emitted"
    if expected.get("no_llm_provider_span"):
        assert not [s for s in run.spans if s.name == "openarmature.llm.complete"], where
    for name, want in (expected.get("observers") or {}).items():
        _check_collector(run, run.collectors[name], want, f"{where}.observers.{name}")
    if "log_records" in expected:
        _check_logs(run, list(expected["log_records"] or ()), f"{where}.log_records")
    if "metrics" in expected:
        _check_metrics(run, list(expected["metrics"] or ()), f"{where}.metrics")
    llm = [s for s in run.spans if s.name == "openarmature.llm.complete"]
    if "llm_span_attributes" in expected:
        assert llm, f"{where}: no LLM span"
        _match_attrs(run, dict(expected["llm_span_attributes"]), llm[0],
                     f"{where}.llm_span_attributes")
    for name in expected.get("llm_span_attributes_absent") or ():
        assert all(name not in (s.attributes or {}) for s in llm), f"{where}: {name} present"
    recorded = [e for r in ctx.observers.values() if r.behavior in ("record", "accumulate")
                for e in r.events if isinstance(e, NodeEvent)]
    for name, want in (expected.get("observer_event_invariants") or {}).items():
        check_observer_event_invariant(recorded, str(name), want,
                                       f"{where}.observer_event_invariants.{name}")
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
SPAN_KEYS = {"name", "attributes", "attributes_absent", "status", "children", "links", "link_count",
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
    """Match each of ``want`` to its own span of ``got`` (as many or more): in order,
    else in any order (concurrent siblings)."""
    saved = dict(run.bindings)
    try:
        for i, (w, g) in enumerate(zip(want, got[:len(want)], strict=True)):
            _match_span(run, w, g, f"{where}[{i}]")
        return True
    except AssertionError as exc:
        errors.append(str(exc))
        run.bindings = saved
    return _assign(run, len(want), got, lambda i, g: _match_span(run, want[i], g,
                                                                 f"{where}[{i}]"), errors)


def _assign(run: Run, n: int, candidates: Sequence[Any],
            match: Callable[[int, Any], None], errors: list[str] | None = None) -> bool:
    """Give each of ``n`` expectations its own candidate, in any order, backtracking
    (``match(i, candidate)`` raises ``AssertionError`` on a mismatch; the bindings
    it made are undone). Mismatch messages go to ``errors`` when given."""
    used: set[int] = set()

    def place(i: int) -> bool:
        if i == n:
            return True
        for j, candidate in enumerate(candidates):
            if j in used:
                continue
            before = dict(run.bindings)
            try:
                match(i, candidate)
            except AssertionError as exc:
                if errors is not None:
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
        _match_links(run, list(want["links"] or ()), span, f"{where}.links")
    if "link_count" in want:
        assert len(span.links) == want["link_count"], f"{where}: {len(span.links)} links"
    if "children" in want:
        # `children: []` asserts there are none; otherwise exactly the listed children,
        # except in a per-trace tree (`traces` / `parent_trace`), where a non-empty list
        # asserts each listed child, each matched by its own span
        kids = _children(run, span)
        wanted = list(want["children"] or ())
        enough = len(kids) >= len(wanted) if run.partial_children else len(kids) == len(wanted)
        assert enough and (wanted or not kids), (
            f"{where}: children {[k.name for k in kids]}, expected "
            f"{[w.get('name') for w in wanted]}")
        errors: list[str] = []
        if not _try_match(run, wanted, kids, f"{where}.children", errors):
            raise AssertionError(errors[0] if errors else where)


def _match_links(run: Run, want: list[Any], span: ReadableSpan, where: str) -> None:
    """The span's OTel Links, one per expected entry (any order): each entry's
    ``target_trace_id`` matches (binds) the linked span's trace id."""
    links = list(span.links)
    assert len(links) == len(want), f"{where}: {len(links)} links, expected {len(want)}"
    for i, w in enumerate(want):
        check_directives(w, LINK_KEYS, f"{where}[{i}]")
    def match(i: int, link: Any) -> None:
        if "target_trace_id" in want[i]:
            match_value(run, want[i]["target_trace_id"],
                        format_trace_id(link.context.trace_id), f"{where}[{i}]")

    assert _assign(run, len(want), links, match), (
        f"{where}: links {[format_trace_id(x.context.trace_id) for x in links]}")


# --- traces (detached trace mode, observability §4.4) -------------------------------------------


def traces(run: Run) -> dict[int, list[ReadableSpan]]:
    """The case's spans grouped by trace id (in the order each trace first appears)."""
    out: dict[int, list[ReadableSpan]] = {}
    for span in sorted(run.spans, key=lambda s: s.start_time or 0):
        out.setdefault(span.context.trace_id, []).append(span)
    return out


def parent_trace_id(run: Run) -> int:
    """The invocation's own trace: rooted in an invocation span no Link targets
    (a detached trace is always the target of its dispatch span's Link)."""
    targets = {link.context.trace_id for s in run.spans for link in s.links}
    own = [tid for tid, spans in traces(run).items() if tid not in targets
           and any(s.name == "openarmature.invocation" and s.parent is None for s in spans)]
    assert len(own) == 1, f"{len(own)} traces look like the invocation's own"
    return own[0]


def _check_traces(run: Run, want: list[Any], where: str) -> None:
    """``expected.traces``: every trace the run produced, one entry each (any order),
    its ``trace_id`` binding token matched and its ``span_tree`` matched to its roots."""
    groups = traces(run)
    ids = list(groups)
    assert len(ids) == len(want), f"{where}: {len(ids)} traces, expected {len(want)}"
    for i, w in enumerate(want):
        check_directives(w, TRACE_KEYS, f"{where}[{i}]")
    used: set[int] = set()
    errors: list[str] = []

    def place(i: int) -> bool:
        if i == len(want):
            return True
        for j, tid in enumerate(ids):
            if j in used:
                continue
            before = dict(run.bindings)
            try:
                if "trace_id" in want[i]:
                    match_value(run, want[i]["trace_id"], format_trace_id(tid), f"{where}[{i}]")
                _match_forest(run, list(want[i].get("span_tree") or ()), _roots(groups[tid]),
                              f"{where}[{i}].span_tree")
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

    if not place(0):
        raise AssertionError(errors[-1] if errors else where)


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
                  "event_count", "event_counts", "contains_events_in_order",
                  "does_not_contain_event_of_type", "relative_order_of_events_matching",
                  "contains_exactly_n_events_of_type", "captured_event_field_values_cover",
                  "every_captured_event_has"}
ORDER_KEYS = {"filter", "expected_order"}


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
    if "contains_exactly_n_events_of_type" in want:
        spec = want["contains_exactly_n_events_of_type"]
        check_directives(spec, {"event_type", "count"}, f"{where}.exactly_n")
        n = len(_of_type(col, str(spec["event_type"])))
        assert n == spec["count"], f"{where}: {n} {spec['event_type']}, expected {spec['count']}"
    if "captured_event_field_values_cover" in want:
        spec = want["captured_event_field_values_cover"]
        check_directives(spec, {"field", "values"}, f"{where}.captured_event_field_values_cover")
        got = [_field(getattr(e, str(spec["field"]), None)) for e in col.events]
        missing = [v for v in spec["values"] if v not in got]
        assert col.events and not missing, f"{where}: {spec['field']} values {got} miss {missing}"
    if "every_captured_event_has" in want:
        assert col.events, f"{where}: no events captured"
        for i, event in enumerate(col.events):
            for key, value in dict(want["every_captured_event_has"]).items():
                assert hasattr(event, key), f"{where}[{i}]: field {key} absent"
                match_value(run, value, _field(getattr(event, key)), f"{where}[{i}].{key}")
    if "does_not_contain_event_of_type" in want:
        found = _of_type(col, str(want["does_not_contain_event_of_type"]))
        assert not found, f"{where}: {found!r}"
    if "relative_order_of_events_matching" in want:
        _check_relative_order(run, col, want["relative_order_of_events_matching"],
                              f"{where}.relative_order_of_events_matching")
    if "contains_exactly_one_event_of_type" in want:
        n = len(_of_type(col, str(want["contains_exactly_one_event_of_type"])))
        assert n == 1, f"{where}: {n} events"
    counts = list(want.get("event_counts") or ())
    if "event_count" in want:
        counts.append(want["event_count"])
    for spec in counts:
        n = len(_of_type(col, str(spec["event_type"])))
        assert n == spec["count"], f"{where}: {n} {spec['event_type']}, expected {spec['count']}"


def _event_matches(run: Run, event: Any, spec: Mapping[str, Any], where: str) -> bool:
    """Whether ``event`` has the type (``event_type``) and every other field of ``spec``."""
    if "event_type" in spec and type(event).__name__ != spec["event_type"]:
        return False
    before = dict(run.bindings)
    try:
        for key, value in spec.items():
            if key == "event_type":
                continue
            if not hasattr(event, key):
                return False
            match_value(run, value, _field(getattr(event, key)), f"{where}.{key}")
    except AssertionError:
        run.bindings = before
        return False
    return True


def _check_relative_order(run: Run, col: Collector, spec: Mapping[str, Any], where: str) -> None:
    """The events passing ``filter``, taken in arrival order, hold ``expected_order`` as a
    subsequence (others may come before, between or after), each expected entry met once."""
    check_directives(spec, ORDER_KEYS, where)
    wanted = [dict(w) for w in spec["expected_order"]]
    kept = [e for e in col.events if _event_matches(run, e, dict(spec.get("filter") or {}), where)]
    at = 0
    for event in kept:
        if at < len(wanted) and _event_matches(run, event, wanted[at], f"{where}[{at}]"):
            at += 1
    kinds = [(type(e).__name__, getattr(e, "phase", None)) for e in kept]
    assert at == len(wanted), f"{where}: {wanted[at:]} not met in order among {kinds}"
    for i, w in enumerate(wanted):  # each expected entry occurs once among the kept events
        n = sum(1 for e in kept if _event_matches(run, e, w, f"{where}[{i}]"))
        assert n == 1, f"{where}[{i}]: {n} events match {w}"


def _field(value: Any) -> Any:
    if isinstance(value, msgspec.Struct):  # every field, a None one included
        return {k: _field(v) for k, v in msgspec.structs.asdict(value).items()}
    if isinstance(value, tuple):
        return [_field(v) for v in value]
    return value


# --- log records (§7) ----------------------------------------------------------------------------


def log_fields(record: Any) -> dict[str, Any]:
    """A log record's attributes plus its ``trace_id`` / ``span_id`` as hex strings."""
    return {**dict(record.attributes or {}),
            "trace_id": format_trace_id(record.trace_id),
            "span_id": format_span_id(record.span_id)}


def _check_logs(run: Run, want: list[Mapping[str, Any]], where: str) -> None:
    """Each expected record, in emission order, by ``body`` and ``attributes``."""
    got = list(run.logs)
    assert len(got) == len(want), f"{where}: {len(got)} records, expected {len(want)}"
    for i, (spec, record) in enumerate(zip(want, got, strict=True)):
        check_directives(spec, {"body", "attributes"}, f"{where}[{i}]")
        if "body" in spec:
            assert record.body == spec["body"], f"{where}[{i}]: body {record.body!r}"
        fields = log_fields(record)
        for key, value in (spec.get("attributes") or {}).items():
            assert key in fields, f"{where}[{i}]: {key} absent"
            match_value(run, value, fields[key], f"{where}[{i}].{key}")


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


from .observability_checks import (  # noqa: E402  (the predicates use this module)
    INVARIANTS,
    check_observer_event_invariant,
)

_vocab.register("observability", OBSERVABILITY_CASE_KEYS | EXPECTED_KEYS | SPAN_KEYS)
_vocab.register("observability", CALL_KEYS | COLLECTOR_KEYS | DIRECT_CALL_KEYS | ORDER_KEYS)
_vocab.register("observability", {"field", "values"})
_vocab.register("observability", {"tool_name", "tool_call_id", "arguments", "mock_tool",
                                  "stores_result_in", "returns", "raises", "instrument",
                                  "dimensions", "value", "event_type", "fields", "count",
                                  "kind", "filter_event_type", "include_caller_metadata"})
_vocab.register("observability", INVARIANTS)
_vocab.register("observability", TRACE_KEYS | LINK_KEYS)
