"""The OpenTelemetry observer: engine events -> spans and GenAI metrics (observability §4-§6, §11).

Attach it like any observer::

    from openarmature_nodes.observability.otel import OTelObserver
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    otel = OTelObserver(span_processors=[BatchSpanProcessor(ConsoleSpanExporter())])
    graph.attach(otel)                 # or graph.invoke(state, observers=[otel])
    ...
    otel.shutdown()                    # flush at exit

**Isolation (§6).** The observer owns a *private* ``TracerProvider`` (and, with
``enable_metrics=True``, a private ``MeterProvider``); it never touches the
OpenTelemetry globals, so auto-instrumentation writing to the global provider
is not duplicated. Pass your own providers to share them deliberately.

**What it emits.** One ``openarmature.invocation`` span per invocation (from
``invoke()`` entry to return), one span per node attempt (named after the node),
a subgraph node's span wrapping its inner nodes, one instance span per fan-out
instance (named after the fan-out node, ``openarmature.node.fan_out_index``)
and one dispatch span per parallel branch (named after the branch), both
synthesized on the first inner event (an instance span closes when its instance
finishes: the observer subscribes to the ``fan_out_instance`` phase) (a subgraph span carries
``openarmature.subgraph.name``: the compiled subgraph's name, ``""`` if unnamed);
one ``openarmature.llm.complete`` span per
LLM call (from :class:`~openarmature_nodes.events.LlmCompletionEvent` /
:class:`~openarmature_nodes.events.LlmFailedEvent`, backdated by the call's
latency) -- one per *attempt*, siblings, when the call-level retry loop ran several
(the event's ``attempts``: each with ``openarmature.llm.attempt_index``,
``openarmature.llm.retry_reason`` and its own outcome) -- and one
``openarmature.tool.call`` span per tool execution. Spans are
parented by lineage: the key of a span is ``(namespace, fan_out_index_chain,
branch_name_chain)``, so same-named nodes in concurrent instances or branches
never collide; an LLM or tool span whose calling node's span is not open
(called from middleware) falls back to the innermost enclosing wrapper.
Every span carries ``openarmature.correlation_id``. Status is ``OK``, or
``ERROR`` with the error category as description and an exception event.

**Detached trace mode (§4.4).** A subgraph listed in ``detached_subgraphs``, and
each instance of a fan-out node listed in ``detached_fan_outs``, renders into a
trace of its own, rooted in its own ``openarmature.invocation`` span (the same
``openarmature.invocation_id``, the unit's entry node, open for the unit's
window) and linked from the dispatch span that stays in the enclosing trace::

    graph = GraphBuilder(Outer).add_subgraph("dispatch", long_running_workflow) ...
    OTelObserver(detached_subgraphs={"long_running_workflow"},
                 detached_fan_outs={"per_document_scoring"})

    parent trace:   openarmature.invocation -> dispatch (Link ->)
    detached trace: openarmature.invocation -> long_running_workflow -> step

``detached_subgraphs`` names **compiled subgraphs** (``GraphBuilder(State,
name="long_running_workflow")``, carried to observers in
every event's ``subgraph_name_chain``), so one subgraph is detached wherever it
runs; a name also matches the subgraph *node* that runs it, which is how an
unnamed subgraph is detached. The detached subgraph span is named after the
compiled subgraph (its node's name when it has none); ``detached_fan_outs``
names fan-out nodes. Detached units nest: a detached subgraph inside another
makes a third trace, linked from the second. On failure both the dispatch
span and the detached invocation span are ``ERROR`` with the category and an
exception event (§4.2).

**Privacy (§5.5.4).** By default no payload is recorded: no messages, no output
text, no tool arguments or results, no extras (``disable_provider_payload=True``).
Opting in records them truncated to ``payload_cap`` bytes (§5.5.5), inline images
always redacted. Credentials never reach events, so they cannot reach spans.

**Metrics (§11, ``enable_metrics=True``).** ``openarmature.gen_ai.client.token.usage``
(one observation per *reported* counter, input / output) and
``openarmature.gen_ai.client.operation.duration`` (every call, with ``error.type``
on failures), with the GenAI semantic-convention bucket boundaries; and, for
streamed calls, ``openarmature.gen_ai.client.operation.time_to_first_chunk``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from openarmature_nodes import __version__
from openarmature_nodes.events import (
    LlmAttempt,
    LlmCompletionEvent,
    LlmFailedEvent,
    LlmTokenEvent,
    LogRecordEvent,
    ToolCallEvent,
    ToolCallFailedEvent,
)
from openarmature_nodes.graph.events import FanOutInstanceEvent, InvocationEvent, NodeEvent
from openarmature_nodes.llm.genai import (
    DEFAULT_PAYLOAD_CAP,
    LLM_SPAN_NAME,
    MIN_PAYLOAD_CAP,
    TOOL_SPAN_NAME,
    GenAIConvention,
    attempt_attributes,
    convention_from_env,
    error_attributes,
    payload_attributes,
    request_attributes,
    response_attributes,
    tool_attributes,
)
from openarmature_nodes.metadata import MetadataAugmentedEvent

__all__ = [
    "DURATION_BUCKETS",
    "IMPLEMENTATION_NAME",
    "INVOCATION_SPAN_NAME",
    "SPEC_VERSION",
    "TOKEN_BUCKETS",
    "OTelObserver",
]

INVOCATION_SPAN_NAME = "openarmature.invocation"
IMPLEMENTATION_NAME = "openarmature-python"
"""``openarmature.implementation.name``: the spec's canonical value for a Python implementation."""
SPEC_VERSION = "0.109.0"
"""The openarmature-spec version this mapping implements."""

TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)

_SCOPE = "openarmature_nodes"
Key = tuple[tuple[str, ...], tuple[int | None, ...], tuple[str | None, ...]]


@dataclass
class _Wrapper:
    """A span wrapping a dispatched unit: a fan-out instance or branch dispatch span,
    or a detached subgraph's span; ``root`` is its detached trace's invocation span."""

    span: Span
    owner: Key
    order: int
    root: Span | None = None
    entry_known: bool = False
    subgraph: bool = False  # a synthesized subgraph span (subgraph nodes emit no events)
    error: Any = None  # the last failure among its direct children, for its status
    callable: bool = False  # an inline-callable branch: the branch is the event source


@dataclass
class _Trace:
    """Per-invocation rendering state."""

    correlation_id: str
    root: Span | None = None
    nodes: dict[Key, Span] = field(default_factory=dict)
    configs: dict[Key, Any] = field(default_factory=dict)
    wrappers: dict[Key, _Wrapper] = field(default_factory=dict)
    callables: dict[Key, _Wrapper] = field(default_factory=dict)  # inline-callable branches
    user: dict[str, Any] = field(default_factory=dict)  # caller metadata, as attributes
    augmented: list[tuple[Key, dict[str, Any]]] = field(default_factory=list)
    first_chunk: dict[str, float] = field(default_factory=dict)
    suspended: bool = False  # a node suspended: the invocation ends SUSPENDED (§4.2)


def _ns(event: Any) -> tuple[str, ...]:
    return tuple(event.namespace)


def _pad(chain: Sequence[Any], n: int) -> tuple[Any, ...]:
    out = tuple(chain)[:n]
    return out + (None,) * (n - len(out))


def _key(ns: tuple[str, ...], event: Any) -> Key:
    depth = len(ns) - 1
    return (ns, _pad(event.fan_out_index_chain, depth), _pad(event.branch_name_chain, depth))


class OTelObserver:
    """Render engine events as OpenTelemetry spans (and, opt-in, metrics); see module docs.

    Keyword options:
        tracer_provider: the provider to emit through (default: a new private one).
        span_processors: processors to add to the private provider (exporters).
        meter_provider / metric_readers: the same for metrics.
        enable_metrics: record the §11 GenAI histograms (default off).
        disable_llm_spans: no ``openarmature.llm.complete`` spans.
        disable_provider_payload: no payload attributes (default ``True``).
        disable_genai_semconv: no ``gen_ai.*`` attributes on LLM spans.
        genai_convention: GenAI naming generation (default from
            ``OTEL_SEMCONV_STABILITY_OPT_IN``; see :mod:`.genai`).
        payload_cap: byte cap per payload attribute (>= 256; default 64 KiB).
        detached_subgraphs: compiled-subgraph names (or subgraph node names)
            rendered into their own traces (§4.4; see the module docs).
        detached_fan_outs: fan-out node names whose instances each get a trace.
        log_processors: OpenTelemetry log-record processors; given any, a private
            Logs provider emits each :class:`~openarmature_nodes.events.LogRecordEvent`
            (see :mod:`.logs`) under the span of the step that wrote it (§7).
    """

    observer_phases = frozenset(
        ("started", "completed", "suspended", "invocation_started", "invocation_completed",
         "fan_out_instance")
    )

    def __init__(
        self,
        *,
        tracer_provider: Any = None,
        span_processors: Iterable[SpanProcessor] = (),
        meter_provider: Any = None,
        metric_readers: Sequence[MetricReader] = (),
        enable_metrics: bool = False,
        disable_llm_spans: bool = False,
        disable_provider_payload: bool = True,
        disable_genai_semconv: bool = False,
        genai_convention: GenAIConvention | None = None,
        payload_cap: int = DEFAULT_PAYLOAD_CAP,
        detached_subgraphs: Iterable[str] = (),
        detached_fan_outs: Iterable[str] = (),
        log_processors: Iterable[LogRecordProcessor] = (),
    ) -> None:
        if isinstance(payload_cap, bool) or not isinstance(payload_cap, int):
            raise TypeError(f"payload_cap must be an int, got {payload_cap!r}")
        if payload_cap < MIN_PAYLOAD_CAP:
            raise ValueError(f"payload_cap must be at least {MIN_PAYLOAD_CAP} bytes")
        self.tracer_provider = tracer_provider if tracer_provider is not None else TracerProvider()
        for processor in span_processors:
            self.tracer_provider.add_span_processor(processor)
        self.tracer = self.tracer_provider.get_tracer(_SCOPE, __version__)
        self.enable_metrics = enable_metrics
        self.meter_provider: Any = None
        if enable_metrics:
            self.meter_provider = (meter_provider if meter_provider is not None
                                   else MeterProvider(metric_readers=list(metric_readers)))
            meter = self.meter_provider.get_meter(_SCOPE, __version__)
            self._tokens = meter.create_histogram(
                "openarmature.gen_ai.client.token.usage", unit="{token}",
                description="Tokens used per LLM call, by token type",
                explicit_bucket_boundaries_advisory=list(TOKEN_BUCKETS))
            self._duration = meter.create_histogram(
                "openarmature.gen_ai.client.operation.duration", unit="s",
                description="Duration of an LLM call",
                explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS))
            self._ttfc = meter.create_histogram(
                "openarmature.gen_ai.client.operation.time_to_first_chunk", unit="s",
                description="Time from a streamed call's start to its first chunk",
                explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS))
        self.disable_llm_spans = disable_llm_spans
        self.disable_provider_payload = disable_provider_payload
        self.semconv = not disable_genai_semconv
        self.convention: GenAIConvention = genai_convention or convention_from_env()
        self.payload_cap = payload_cap
        for option, names in (("detached_subgraphs", detached_subgraphs),
                              ("detached_fan_outs", detached_fan_outs)):
            if isinstance(names, str):
                raise TypeError(f"{option} takes a collection of names, not the string {names!r}")
        self.detached_subgraphs = frozenset(detached_subgraphs)
        self.detached_fan_outs = frozenset(detached_fan_outs)
        self._traces: dict[str, _Trace] = {}
        self.logger_provider: LoggerProvider | None = None
        processors = list(log_processors)
        if processors:
            self.logger_provider = LoggerProvider()
            for log_processor in processors:
                self.logger_provider.add_log_record_processor(log_processor)
            self._logger = self.logger_provider.get_logger(_SCOPE, __version__)

    def __repr__(self) -> str:
        return (f"OTelObserver(metrics={self.enable_metrics}, "
                f"payload={not self.disable_provider_payload})")

    def shutdown(self) -> None:
        """Flush and shut down the providers this observer owns."""
        self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()
        if self.logger_provider is not None:
            self.logger_provider.shutdown()

    # --- dispatch -------------------------------------------------------------------

    async def __call__(self, event: Any) -> None:
        self.handle(event)

    def handle(self, event: Any) -> None:
        """Render one event (synchronous; the async ``__call__`` delegates here)."""
        if isinstance(event, NodeEvent):
            if event.phase == "started":
                self._node_started(event)
            elif event.phase == "completed":
                self._node_completed(event)
            elif event.phase == "suspended":
                self._trace(event).suspended = True
                self._node_completed(event, suspension=suspension_attributes(event.descriptor))
        elif isinstance(event, FanOutInstanceEvent):
            self._instance_done(event)
        elif isinstance(event, InvocationEvent):
            if event.phase == "invocation_started":
                self._invocation_started(event)
            else:
                self._invocation_completed(event)
        elif isinstance(event, LlmTokenEvent):
            if event.chunk_index == 0:
                self._trace(event).first_chunk[event.call_id] = time.perf_counter()
        elif isinstance(event, (LlmCompletionEvent, LlmFailedEvent)):
            self._llm(event)
        elif isinstance(event, (ToolCallEvent, ToolCallFailedEvent)):
            self._tool(event)
        elif isinstance(event, MetadataAugmentedEvent):
            self._augmented(event)
        elif isinstance(event, LogRecordEvent) and self.logger_provider is not None:
            self._log(event)

    # --- invocation -----------------------------------------------------------------

    def _trace(self, event: Any) -> _Trace:
        tr = self._traces.get(event.invocation_id)
        if tr is None:
            tr = _Trace(correlation_id=event.correlation_id or event.invocation_id)
            self._traces[event.invocation_id] = tr
        return tr

    def _invocation_attrs(self, invocation_id: str, entry: str, corr: str) -> dict[str, Any]:
        return {
            "openarmature.invocation_id": invocation_id,
            "openarmature.graph.entry_node": entry,
            "openarmature.graph.spec_version": SPEC_VERSION,
            "openarmature.implementation.name": IMPLEMENTATION_NAME,
            "openarmature.implementation.version": __version__,
            "openarmature.correlation_id": corr,
        }

    def _invocation_started(self, event: InvocationEvent) -> None:
        tr = self._trace(event)
        tr.user = {f"openarmature.user.{k}": v for k, v in event.metadata.items()}
        tr.root = self.tracer.start_span(
            INVOCATION_SPAN_NAME, context=otel_context.Context(),
            attributes={**self._invocation_attrs(event.invocation_id, event.entry_node,
                                                 tr.correlation_id), **tr.user})

    def _invocation_completed(self, event: InvocationEvent) -> None:
        tr = self._traces.pop(event.invocation_id, None)
        if tr is None:
            return
        for wkey in sorted(tr.wrappers, key=lambda k: -len(k[0])):  # still open at the end
            self._close_wrapper(tr, wkey, event.error)
        for span in tr.nodes.values():
            span.end()
        if tr.root is not None:
            if tr.suspended and event.error is None:
                tr.root.set_attribute(OUTCOME, "suspended")
            _finish(tr.root, event.error)

    def _root(self, event: Any) -> Span:
        tr = self._trace(event)
        if tr.root is None:  # an observer attached only below the outermost graph
            tr.root = self.tracer.start_span(
                INVOCATION_SPAN_NAME, context=otel_context.Context(),
                attributes=self._invocation_attrs(event.invocation_id, event.namespace[0],
                                                  tr.correlation_id))
        return tr.root

    # --- parent resolution ------------------------------------------------------------

    def _parent(self, tr: _Trace, event: Any, ns: tuple[str, ...]) -> Span:
        """The innermost open wrapper enclosing a source at ``ns`` (§4.3)."""
        depth = len(ns) - 1
        return self._enclosing(tr, event, ns, _pad(event.fan_out_index_chain, depth),
                               _pad(event.branch_name_chain, depth))

    def _enclosing(self, tr: _Trace, event: Any, ns: tuple[str, ...],
                   fchain: tuple[int | None, ...], bchain: tuple[str | None, ...]) -> Span:
        depth = len(ns) - 1
        if depth == 0:
            return self._root(event)
        return self._wrapper(tr, event, ns[:depth], fchain, bchain)

    def _wrapper(self, tr: _Trace, event: Any, owner_ns: tuple[str, ...],
                 fchain: tuple[int | None, ...], bchain: tuple[str | None, ...]) -> Span:
        """The span that wraps everything run by node ``owner_ns`` at the chains' last
        position: its fan-out instance span, branch dispatch span, or its own span."""
        d = len(owner_ns) - 1
        owner: Key = (owner_ns, fchain[:d], bchain[:d])
        wkey: Key = (owner_ns, fchain, bchain)
        found = tr.wrappers.get(wkey)
        if found is not None:
            if not found.entry_known and found.root is not None:
                found.entry_known = True  # the detached unit's first node is its entry
                found.root.set_attribute("openarmature.graph.entry_node", event.namespace[d + 1])
            return found.span
        owner_span = tr.nodes.get(owner)
        index, branch = fchain[d], bchain[d]
        if owner_span is None and index is None and branch is None:
            return self._subgraph_span(tr, event, owner_ns, fchain, bchain)
        if owner_span is None:  # the dispatching node is not open: climb further out
            return self._enclosing(tr, event, owner_ns, fchain[:d], bchain[:d])
        if index is None and branch is None:
            return owner_span
        config = tr.configs.get(owner)
        attrs: dict[str, Any] = {"openarmature.correlation_id": tr.correlation_id,
                                 **self._user(tr, owner_ns, fchain, bchain)}
        if index is not None:
            name = owner_ns[-1]
            attrs["openarmature.node.fan_out_index"] = index
            attrs["openarmature.fan_out.parent_node_name"] = owner_ns[-1]
            order = index
        else:
            name = str(branch)
            attrs["openarmature.node.branch_name"] = branch
            attrs["openarmature.parallel_branches.parent_node_name"] = owner_ns[-1]
            names = list(getattr(config, "branch_names", ()) or ())
            order = names.index(branch) if branch in names else len(names)
        parent_ctx = trace.set_span_in_context(owner_span)
        root: Span | None = None
        if index is not None and owner_ns[-1] in self.detached_fan_outs:
            root = self._detached_root(event, tr, event.namespace[d + 1],
                                       self._user(tr, owner_ns, fchain, bchain))
            owner_span.add_link(root.get_span_context())
            parent_ctx = trace.set_span_in_context(root)
        span = self.tracer.start_span(name, context=parent_ctx, attributes=attrs)
        tr.wrappers[wkey] = _Wrapper(span, owner, order, root, entry_known=True)
        return span

    def _subgraph_span(self, tr: _Trace, event: Any, owner_ns: tuple[str, ...],
                       fchain: tuple[int | None, ...], bchain: tuple[str | None, ...]) -> Span:
        """Synthesize the span of a subgraph node (it emits no events of its own): open
        at its first inner event, closed when its graph moves on (see ``_close_done``)."""
        d = len(owner_ns) - 1
        wkey: Key = (owner_ns, fchain, bchain)
        parent = self._enclosing(tr, event, owner_ns, fchain[:d], bchain[:d])
        node = owner_ns[-1]
        names = getattr(event, "subgraph_name_chain", ())
        graph_name = str(names[d]) if d < len(names) else ""  # "" unnamed or unknown (§5.3)
        attrs: dict[str, Any] = {
            "openarmature.node.name": node,
            "openarmature.node.namespace": list(owner_ns),
            "openarmature.subgraph.name": graph_name,
            "openarmature.correlation_id": tr.correlation_id,
            **self._user(tr, owner_ns, fchain, bchain),
        }
        context = trace.set_span_in_context(parent)
        entry = event.namespace[d + 1]
        if graph_name in self.detached_subgraphs or node in self.detached_subgraphs:
            # §4.4: the dispatch span (named after the node) stays in the parent trace,
            # linked to a new trace whose invocation span roots the subgraph's own span
            # (named after the compiled subgraph; the node's name if it has none).
            root = self._detached_root(event, tr, entry, self._user(tr, owner_ns, fchain, bchain))
            dispatch = self.tracer.start_span(node, context=context, attributes=attrs,
                                              links=[Link(root.get_span_context())])
            inner = self.tracer.start_span(graph_name or node,
                                           context=trace.set_span_in_context(root),
                                           attributes=attrs)
            tr.wrappers[(*wkey, "dispatch")] = _Wrapper(  # type: ignore[index]
                dispatch, wkey, 0, None, True, False)
            tr.wrappers[wkey] = _Wrapper(inner, wkey, 0, root, True, True)
            return inner
        span = self.tracer.start_span(node, context=context, attributes=attrs)
        tr.wrappers[wkey] = _Wrapper(span, wkey, 0, None, True, True)
        return span

    def _close_done(self, tr: _Trace, event: Any, ns: tuple[str, ...]) -> None:
        """Close synthesized subgraph spans whose run is over: an event arrived from
        their own graph level (a sibling: the subgraph node has returned)."""
        depth = len(ns) - 1
        fchain = _pad(event.fan_out_index_chain, depth)
        bchain = _pad(event.branch_name_chain, depth)
        done = []
        for wkey, w in tr.wrappers.items():
            if not w.subgraph:
                continue
            p_ns, p_f, p_b = wkey[0], wkey[1], wkey[2]
            level = len(p_ns) - 1  # the graph level the subgraph node runs at
            same_level = (len(ns) > level and ns[:level] == p_ns[:level]
                          and fchain[:level] == p_f[:level] and bchain[:level] == p_b[:level])
            inside = (len(ns) > len(p_ns) and ns[:len(p_ns)] == p_ns
                      and fchain[:len(p_ns)] == p_f and bchain[:len(p_ns)] == p_b)
            if same_level and not inside:
                done.append(wkey)
        for wkey in sorted(done, key=lambda k: -len(k[0])):
            self._close_wrapper(tr, wkey)

    def _instance_done(self, event: FanOutInstanceEvent) -> None:
        """A fan-out instance finished: its instance span (and, detached, its trace's
        invocation span) closes now, at the end of the instance's own window (§4.1),
        after anything still open inside it. A failed instance whose failure no inner
        node reported stays open: the fan-out node's ``completed`` closes it with that
        node's error."""
        tr = self._traces.get(event.invocation_id)
        if tr is None or event.fan_out_index is None:
            return
        ns = _ns(event)
        depth = len(ns) - 1
        wkey: Key = (ns, (*_pad(event.fan_out_index_chain, depth), event.fan_out_index),
                     (*_pad(event.branch_name_chain, depth), None))
        w = tr.wrappers.get(wkey)
        if w is None or (event.outcome == "failed" and w.error is None):
            return
        n = len(ns)
        inside = [k for k in tr.wrappers if len(k[0]) > n and k[0][:n] == ns
                  and k[1][:n] == wkey[1] and k[2][:n] == wkey[2]]
        for k in sorted(inside, key=lambda k: -len(k[0])):
            self._close_wrapper(tr, k)
        if event.outcome == "ok":
            w.error = None  # the instance returned (a degraded update counts as returned)
        self._close_wrapper(tr, wkey)

    def _close_wrapper(self, tr: _Trace, wkey: Any, error: Any = None) -> None:
        w = tr.wrappers.pop(wkey, None)
        if w is None:
            return
        failure = error if error is not None else w.error
        _finish(w.span, failure, look_through=not w.callable)
        if w.root is not None:
            _finish(w.root, failure)
        dispatch = tr.wrappers.pop((*wkey, "dispatch"), None)
        if dispatch is not None:
            _finish(dispatch.span, failure)

    def _note_child(self, tr: _Trace, event: NodeEvent, ns: tuple[str, ...]) -> None:
        """Remember a direct child's outcome on the synthesized span wrapping it (a
        subgraph span, a fan-out instance span, a branch dispatch span): the unit failed
        when its last node did, even where its dispatching node carries on (a fan-out
        or parallel-branches node under ``error_policy="collect"``), so that span and
        a detached unit's invocation span report the failure (§4.2)."""
        depth = len(ns) - 1
        if depth == 0:
            return
        wkey = (ns[:depth], _pad(event.fan_out_index_chain, depth),
                _pad(event.branch_name_chain, depth))
        w = tr.wrappers.get(wkey)
        if w is not None and not w.callable:
            w.error = event.error

    # --- caller metadata (§3.4 / §5.6) ------------------------------------------------------

    def _user(self, tr: _Trace, ns: tuple[str, ...], fchain: tuple[Any, ...],
              bchain: tuple[Any, ...]) -> dict[str, Any]:
        """``openarmature.user.*`` for a span at this lineage: the caller's baseline plus
        the additions made in a context this span belongs to."""
        if not tr.augmented:
            return tr.user
        attrs = dict(tr.user)
        for (p_ns, p_f, p_b), entries in tr.augmented:
            n = len(p_ns)
            if ns[:n] == p_ns and fchain[:n] == p_f and bchain[:n] == p_b:
                attrs.update(entries)
        return attrs

    def _augmented(self, event: MetadataAugmentedEvent) -> None:
        """Record an addition for the augmenting context's later spans, and update the
        spans open on the augmenter's own path (never a shared fan-out / branches node,
        nor the invocation span when a dispatch is on the path)."""
        tr = self._trace(event)
        ns = _ns(event)
        key = _key(ns, event)
        fchain, bchain = key[1], key[2]
        depth = max((i for i in range(len(fchain)) if fchain[i] is not None
                     or bchain[i] is not None), default=-1)
        scope: Key = (ns[:depth + 1], fchain[:depth + 1], bchain[:depth + 1])
        entries = {f"openarmature.user.{k}": v for k, v in event.entries.items()}
        tr.augmented.append((scope, entries))
        own = tr.nodes.get(key)
        if own is not None:
            own.set_attributes(entries)
        for wkey, wrapper in tr.wrappers.items():
            w_ns, w_f, w_b = wkey[0], wkey[1], wkey[2]
            n = len(w_ns)
            if ns[:n] == w_ns and fchain[:n] == w_f and bchain[:n] == w_b:
                wrapper.span.set_attributes(entries)
                if wrapper.root is not None:  # a detached unit's invocation span
                    wrapper.root.set_attributes(entries)
        if depth < 0 and tr.root is not None:
            tr.root.set_attributes(entries)

    def _detached_root(self, event: Any, tr: _Trace, entry: str,
                       user: Mapping[str, Any]) -> Span:
        """A detached trace's invocation span: the §5.1 set (the run's invocation id,
        the unit's entry node) plus the caller metadata in scope (§5.6)."""
        return self.tracer.start_span(
            INVOCATION_SPAN_NAME, context=otel_context.Context(),
            attributes={**self._invocation_attrs(event.invocation_id, entry, tr.correlation_id),
                        **user})

    # --- node spans -------------------------------------------------------------------

    def _node_started(self, event: NodeEvent) -> None:
        tr = self._trace(event)
        ns = _ns(event)
        key = _key(ns, event)
        self._close_done(tr, event, ns)
        if (event.branch_name is not None and len(ns) >= 2 and ns[-1] == event.branch_name
                and key[2][-1] == event.branch_name):
            # An inline-callable branch (its synthetic events name the branch): its one
            # span is the branch's dispatch span, with no node span inside (§5.7).
            self._parent(tr, event, ns)
            wrapper = tr.wrappers.get((ns[:-1], key[1], key[2]))
            if wrapper is not None:
                # the callable's events carry the dispatching node's current attempt
                wrapper.span.set_attribute("openarmature.node.attempt_index",
                                           event.attempt_index)
                wrapper.callable = True
                tr.callables[key] = wrapper
                return
        parent = self._parent(tr, event, ns)
        attrs: dict[str, Any] = {
            "openarmature.node.name": event.node_name,
            "openarmature.node.namespace": list(ns),
            "openarmature.node.step": event.step,
            "openarmature.node.attempt_index": event.attempt_index,
            "openarmature.correlation_id": tr.correlation_id,
            **self._user(tr, ns, key[1], key[2]),
        }
        if event.fan_out_index is not None:
            attrs["openarmature.node.fan_out_index"] = event.fan_out_index
        if event.branch_name is not None:
            attrs["openarmature.node.branch_name"] = event.branch_name
        fan = event.fan_out_config
        if fan is not None:
            tr.configs[key] = fan
            attrs["openarmature.fan_out.item_count"] = fan.item_count
            attrs["openarmature.fan_out.concurrency"] = fan.concurrency or 0
            attrs["openarmature.fan_out.error_policy"] = fan.error_policy
        pb = event.parallel_branches_config
        if pb is not None:
            tr.configs[key] = pb
            attrs["openarmature.parallel_branches.branch_count"] = pb.branch_count
            attrs["openarmature.parallel_branches.error_policy"] = pb.error_policy
        context = trace.set_span_in_context(parent)
        tr.nodes[key] = self.tracer.start_span(event.node_name, context=context,
                                               attributes=attrs)

    def _node_completed(self, event: NodeEvent,
                        suspension: dict[str, Any] | None = None) -> None:
        """Close the node's span; ``suspension`` (a ``suspended`` event's §5.8 attributes)
        closes it with the logical SUSPENDED status: OK plus ``openarmature.outcome``."""
        tr = self._trace(event)
        ns = _ns(event)
        key = _key(ns, event)
        callable_branch = tr.callables.pop(key, None)
        if callable_branch is not None:
            callable_branch.error = event.error
            return
        span = tr.nodes.pop(key, None)
        self._note_child(tr, event, ns)
        if span is None:
            return
        inner = [k for k, w in tr.wrappers.items() if w.subgraph and len(k[0]) > len(ns)
                 and k[0][:len(ns)] == ns and k[1][:len(ns) - 1] == key[1]
                 and k[2][:len(ns) - 1] == key[2]]
        for k in sorted(inner, key=lambda k: -len(k[0])):
            self._close_wrapper(tr, k)
        owned = sorted((k for k, w in tr.wrappers.items() if w.owner == key),
                       key=lambda k: tr.wrappers[k].order)
        for wkey in owned:
            wrapper = tr.wrappers.pop(wkey)
            failure = wrapper.error if wrapper.error is not None else event.error
            _finish(wrapper.span, failure, look_through=not wrapper.callable)
            if wrapper.root is not None:
                _finish(wrapper.root, failure)
        tr.configs.pop(key, None)
        if suspension is not None:
            span.set_attributes(suspension)
        _finish(span, event.error)

    # --- log correlation (§7) -------------------------------------------------------------

    def _log(self, event: LogRecordEvent) -> None:
        """Emit the record under the span of the step that wrote it (its own node span,
        else the span enclosing it): that span's trace and span ids, the correlation id
        and the caller metadata."""
        tr = self._trace(event)
        span_context = self._call_parent(tr, event).get_span_context()
        attrs: dict[str, Any] = {"openarmature.correlation_id": tr.correlation_id,
                                 **self._user(tr, *_key(_ns(event), event))}
        self._logger.emit(LogRecord(
            timestamp=event.time_ns, observed_timestamp=time.time_ns(),
            trace_id=span_context.trace_id, span_id=span_context.span_id,
            trace_flags=span_context.trace_flags,
            severity_text=event.severity_text,
            severity_number=_severity(event.severity_number),
            body=event.body, attributes=attrs,
        ))

    # --- LLM and tool spans -------------------------------------------------------------

    def _call_parent(self, tr: _Trace, event: Any) -> Span:
        ns = _ns(event)
        own = tr.nodes.get(_key(ns, event))
        return own if own is not None else self._parent(tr, event, ns)

    def _llm(self, event: LlmCompletionEvent | LlmFailedEvent) -> None:
        now = time.time_ns()
        latency = event.latency_ms or 0.0
        failed = isinstance(event, LlmFailedEvent)
        attempts = event.attempts
        if self.enable_metrics:
            for earlier in attempts[:-1]:  # §11: one duration sample per attempt
                self._duration.record((earlier.end_ns - earlier.start_ns) / 1e9,
                                      {**self._dims(event), "error.type": _attempt_error(earlier)})
            final = attempts[-1] if attempts else None
            self._record_metrics(event, failed, final)
        tr = self._trace(event)
        first = tr.first_chunk.pop(event.call_id, None)
        if first is not None and self.enable_metrics:
            started = time.perf_counter() - latency / 1000.0
            self._ttfc.record(max(first - started, 0.0), self._dims(event))
        if self.disable_llm_spans:
            return
        attrs = request_attributes(event.provider, event.model, event.request_params,
                                   semconv=self.semconv, convention=self.convention)
        attrs["openarmature.correlation_id"] = tr.correlation_id
        attrs.update(self._user(tr, *_key(_ns(event), event)))
        parent = self._call_parent(tr, event)
        start, end = now - int(latency * 1_000_000), now
        if attempts:  # call-level retry: one span per attempt, siblings (§5.5 / llm-provider §7.1)
            sent = attrs if self.disable_provider_payload else {**attrs, **payload_attributes(
                input_messages=event.input_messages, request_extras=event.request_extras,
                cap=self.payload_cap)}  # what each attempt sent, when payloads are opted in
            for earlier in attempts[:-1]:
                self._failed_attempt_span(earlier, sent, parent)
            start, end = attempts[-1].start_ns, attempts[-1].end_ns
            attrs.update(attempt_attributes(attempts[-1].attempt_index,
                                            attempts[-1].retry_reason))
        else:
            attrs.update(attempt_attributes(0))
        tool_calls = event.output_tool_calls if isinstance(event, LlmCompletionEvent) else None
        attrs.update(response_attributes(
            response_model=event.response_model, response_id=event.response_id,
            finish_reason=event.finish_reason, usage=event.usage, tool_calls=tool_calls,
            semconv=self.semconv, convention=self.convention))
        if not self.disable_provider_payload:
            attrs.update(payload_attributes(
                input_messages=event.input_messages, output_content=event.output_content,
                output_tool_calls=tool_calls, request_extras=event.request_extras,
                cap=self.payload_cap))
        if failed:
            assert isinstance(event, LlmFailedEvent)
            attrs.update(error_attributes(event.error_category, event.error_type))
        span = self.tracer.start_span(
            LLM_SPAN_NAME, context=trace.set_span_in_context(parent), kind=SpanKind.CLIENT,
            attributes=attrs, start_time=start)
        if failed:
            assert isinstance(event, LlmFailedEvent)
            span.add_event("exception", {"exception.type": event.error_type or "",
                                         "exception.message": event.error_message})
            span.set_status(Status(StatusCode.ERROR, event.error_category))
        else:
            span.set_status(Status(StatusCode.OK))
        span.end(end_time=end)

    def _failed_attempt_span(self, attempt: LlmAttempt, base: dict[str, Any],
                             parent: Span) -> None:
        """The span of an attempt the call-level retry loop failed and retried: the
        call's request attributes, its own index, retry reason, category and window."""
        attrs = {**base, **attempt_attributes(attempt.attempt_index, attempt.retry_reason),
                 **error_attributes(attempt.error_category, attempt.error_type)}
        span = self.tracer.start_span(
            LLM_SPAN_NAME, context=trace.set_span_in_context(parent), kind=SpanKind.CLIENT,
            attributes=attrs, start_time=attempt.start_ns)
        span.add_event("exception", {"exception.type": attempt.error_type or "",
                                     "exception.message": attempt.error_message or ""})
        span.set_status(Status(StatusCode.ERROR, _attempt_error(attempt)))
        span.end(end_time=attempt.end_ns)

    def _dims(self, event: Any) -> dict[str, Any]:
        return {"openarmature.gen_ai.operation": "chat", "gen_ai.request.model": event.model,
                "gen_ai.system": event.provider}

    def _record_metrics(self, event: LlmCompletionEvent | LlmFailedEvent, failed: bool,
                        final: LlmAttempt | None = None) -> None:
        dims = self._dims(event)
        seconds = ((final.end_ns - final.start_ns) / 1e9 if final is not None
                   else (event.latency_ms or 0.0) / 1000.0)
        if failed:
            assert isinstance(event, LlmFailedEvent)
            self._duration.record(seconds, {**dims, "error.type": event.error_category})
        else:
            self._duration.record(seconds, dims)
        usage = event.usage
        for counter, kind in (("prompt_tokens", "input"), ("completion_tokens", "output")):
            value = getattr(usage, counter, None) if usage is not None else None
            if isinstance(usage, Mapping):
                value = usage.get(counter)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                self._tokens.record(value, {**dims, "openarmature.gen_ai.token.type": kind})

    def _tool(self, event: ToolCallEvent | ToolCallFailedEvent) -> None:
        now = time.time_ns()
        latency = event.latency_ms or 0.0
        tr = self._trace(event)
        ok = isinstance(event, ToolCallEvent)
        attrs = tool_attributes(
            event.tool_name, event.tool_call_id, arguments=event.arguments,
            result=event.result if isinstance(event, ToolCallEvent) else None,
            has_result=ok, payload=not self.disable_provider_payload, cap=self.payload_cap)
        attrs["openarmature.correlation_id"] = tr.correlation_id
        attrs.update(self._user(tr, *_key(_ns(event), event)))
        if not ok:
            attrs["error.type"] = event.error_type or "Exception"  # type: ignore[union-attr]
        parent = self._call_parent(tr, event)
        span = self.tracer.start_span(
            TOOL_SPAN_NAME, context=trace.set_span_in_context(parent), kind=SpanKind.INTERNAL,
            attributes=attrs, start_time=now - int(latency * 1_000_000))
        if ok:
            span.set_status(Status(StatusCode.OK))
        else:
            assert isinstance(event, ToolCallFailedEvent)
            span.add_event("exception", {"exception.type": event.error_type or "",
                                         "exception.message": event.error_message})
            span.set_status(Status(StatusCode.ERROR, event.error_type or "error"))
        span.end(end_time=now)


def _attempt_error(attempt: LlmAttempt) -> str:
    """A failed attempt's ``error.type``: its §7 category, else its error's type."""
    return attempt.error_category or attempt.error_type or "error"


def _severity(level: int) -> SeverityNumber:
    """The OTel severity of a stdlib logging level (DEBUG 5, INFO 9, WARNING 13, ...)."""
    for floor, number in ((50, SeverityNumber.FATAL), (40, SeverityNumber.ERROR),
                          (30, SeverityNumber.WARN), (20, SeverityNumber.INFO),
                          (10, SeverityNumber.DEBUG)):
        if level >= floor:
            return number
    return SeverityNumber.TRACE


OUTCOME = "openarmature.outcome"
_SUSPENSION = "openarmature.suspension"


def suspension_attributes(descriptor: Any) -> dict[str, Any]:
    """The §5.8 attributes of a suspending node's span (and the SUSPENDED outcome).

    ``openarmature.suspension.signal_id``, plus each descriptor metadata field as
    ``openarmature.suspension.metadata.<key>``: a nested mapping flattens into dotted
    keys; a scalar or a list of scalars of one type is kept; anything else (a list of
    mixed or nested values, an object) is stored as its JSON text.
    """
    attrs: dict[str, Any] = {OUTCOME: "suspended"}
    if descriptor is None:
        return attrs
    attrs[f"{_SUSPENSION}.signal_id"] = str(getattr(descriptor, "signal_id", descriptor))
    metadata = getattr(descriptor, "metadata", None)
    if metadata is not None:
        try:
            data: Any = msgspec.to_builtins(metadata)
        except (TypeError, ValueError):  # an object msgspec cannot convert: its text
            data = str(metadata)
        _flatten(f"{_SUSPENSION}.metadata", data, attrs)
    return attrs


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}", inner, out)
    elif isinstance(value, (str, bool, int, float)):
        out[prefix] = value
    elif (isinstance(value, list) and value and all(isinstance(v, (str, bool, int, float))
                                                    for v in value)
          and len({type(v) for v in value}) == 1):
        out[prefix] = list(value)
    elif value is not None:
        out[prefix] = msgspec.json.encode(value).decode()


def _category(error: Any, *, look_through: bool = True) -> str:
    """The most specific category along the failure's cause chain (a provider error's
    ``provider_rate_limit`` inside the engine's ``node_exception``), else the node's.

    A node kind's own ``node_exception`` subtype (``raised_for_node``: a parallel-branches
    node failed because a branch did) is the node's §4 ``node_exception`` and is not
    looked through: the branch's own failure is on the branch's span. An inline-callable
    branch's span (``look_through=False``) carries its failure's own §4 category: the
    branch failed as a unit of its parallel-branches node.
    """
    if getattr(error.exception, "raised_for_node", False) is True:
        return "node_exception"
    category = str(error.category)
    if not look_through:
        return category
    exc: BaseException | None = getattr(error.exception, "__cause__", None)
    depth = 0
    while exc is not None and depth < 8:
        found = getattr(exc, "category", None)
        if isinstance(found, str) and found:
            category = found
        exc = exc.__cause__
        depth += 1
    return category


def _finish(span: Span, error: Any, *, look_through: bool = True) -> None:
    if error is None:
        span.set_status(Status(StatusCode.OK))
    else:
        category = _category(error, look_through=look_through)
        span.set_attribute("openarmature.error.category", category)
        span.record_exception(error.exception)
        span.set_status(Status(StatusCode.ERROR, category))
    span.end()
