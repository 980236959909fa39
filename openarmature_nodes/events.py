"""Observer events, ground floor: the records every layer puts on the observer queue.

The graph engine delivers events to observers (graph-engine §6). Most come from
the engine itself (``NodeEvent``, in :mod:`openarmature_nodes.graph.events`),
but the LLM layer, the tool scope and the streaming path produce events too,
and they must not import the engine to do so. So the shared base,
:class:`ObserverEvent`, and the typed call events live here, importing nothing
of ours: any layer may build them, the engine just queues them.

The typed call events (graph-engine §6):

- :class:`LlmCompletionEvent`: one per LLM call that produced a response.
- :class:`LlmFailedEvent`: one per LLM call that raised an llm-provider §7
  category (never both for one call).
- :class:`LlmTokenEvent`: one per streamed delta of a ``stream=True`` call,
  in ``chunk_index`` order, all before that call's terminal event (same
  ``call_id``).
- :class:`ToolCallEvent` / :class:`ToolCallFailedEvent`: one per tool
  execution, at the moment its outcome is known.

Every event carries the identity of the node that caused it (``invocation_id``,
``namespace``, ``attempt_index`` and the fan-out / branch lineage). Payload
fields (messages, content, tool arguments and results, request extras) are
always populated; the bundled observers gate their *rendering*
(``disable_provider_payload``), and custom observers own their redaction.
Observers tell events apart with ``isinstance``; none of these has a
``phase``, so phase subscriptions do not filter them.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

__all__ = [
    "DeltaKind",
    "LlmAttempt",
    "LlmCallEvent",
    "LlmCompletionEvent",
    "LlmFailedEvent",
    "LlmTokenEvent",
    "LogRecordEvent",
    "ObserverEvent",
    "ToolCallEvent",
    "ToolCallFailedEvent",
    "ToolEvent",
    "new_call_id",
]

DeltaKind = Literal["content", "reasoning"]


_CALL_PREFIX = f"{os.getpid():x}-{os.urandom(4).hex()}-"
_CALL_COUNTER = itertools.count(1)


def new_call_id() -> str:
    """A fresh per-call disambiguator (``call_id``), unique within the process."""
    return f"{_CALL_PREFIX}{next(_CALL_COUNTER)}"


class ObserverEvent(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every event on the observer delivery queue.

    Attributes:
        invocation_id: the outermost invocation that produced the event.
        namespace: node names from the outermost graph down to the source.
        attempt_index: the innermost node-level retry's attempt counter (0
            without retry).
        fan_out_index / branch_name: the innermost fan-out instance / parallel
            branch the source runs in, if any.
        fan_out_index_chain / branch_name_chain: the full lineage, one entry per
            dispatch boundary (``len(namespace) - 1`` entries), ``None`` where a
            boundary is not a fan-out instance / branch.
        subgraph_name_chain: the name of the graph entered at each of those
            boundaries, outermost first (a nested graph's ``CompiledGraph.name``,
            ``""`` for an unnamed one), so an observer can tell which compiled
            subgraph a subgraph node, fan-out instance or branch runs.
        correlation_id: the caller-supplied correlation id, if any.
    """

    invocation_id: str
    namespace: tuple[str, ...]
    attempt_index: int = 0
    fan_out_index: int | None = None
    branch_name: str | None = None
    fan_out_index_chain: tuple[int | None, ...] = ()
    branch_name_chain: tuple[str | None, ...] = ()
    correlation_id: str | None = None
    subgraph_name_chain: tuple[str, ...] = ()


class LlmCallEvent(ObserverEvent, frozen=True, kw_only=True):
    """What every LLM call event carries: who called, which call, against what.

    Attributes:
        node_name: the node that issued the call.
        call_id: minted per ``complete()`` call; shared by that call's token
            events and its terminal completion / failure event.
        provider: the provider identifier (``gen_ai.system``, e.g. ``"vllm"``).
        model: the model the request named.
        caller_invocation_metadata: a snapshot of the caller's invocation
            metadata, only when the observer setup opted in (else ``None``).
    """

    node_name: str
    call_id: str
    provider: str
    model: str
    caller_invocation_metadata: Mapping[str, Any] | None = None


class LlmAttempt(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt of an LLM call run under call-level retry (llm-provider §7.1).

    Attributes:
        attempt_index: 0, 1, 2 ... within the call (``openarmature.llm.attempt_index``).
        retry_reason: why this attempt was scheduled: ``"transient"`` or ``"reask"``
            (``None`` for attempt 0).
        start_ns / end_ns: the attempt's wall-clock window (ns since the epoch).
        error_category / error_type / error_message: the attempt's failure (all
            ``None`` for the attempt that produced the response).
    """

    attempt_index: int
    retry_reason: str | None = None
    start_ns: int
    end_ns: int
    error_category: str | None = None
    error_type: str | None = None
    error_message: str | None = None


class _LlmRequestSide(LlmCallEvent, frozen=True, kw_only=True):
    """Request-side fields shared by the completion and failure events.

    Attributes:
        input_messages: the messages the call was made with, as plain records
            ``{role, content, tool_calls?, tool_call_id?}`` (inline image bytes
            already replaced by a placeholder). Empty list for no history.
        request_params: the GenAI request parameters the caller supplied
            (``temperature``, ``max_tokens``, ``top_p``, ``seed``,
            ``frequency_penalty``, ``presence_penalty``, ``stop_sequences``);
            a missing key means "not supplied".
        request_extras: the vendor-specific extras the caller passed through.
        latency_ms: wall-clock from ``complete()`` entry to the outcome.
        attempts: every attempt, in order, when the call-level retry loop ran more
            than one (the last is the one this event reports); empty otherwise.
            The OpenTelemetry observer renders one span per attempt from it.
        active_prompt / active_prompt_group / token_budget: prompt identity
            (prompt management is not part of this toolkit: always ``None``).
    """

    input_messages: tuple[Mapping[str, Any], ...] = ()
    request_params: Mapping[str, Any] = msgspec.field(default_factory=dict)
    request_extras: Mapping[str, Any] = msgspec.field(default_factory=dict)
    latency_ms: float | None = None
    attempts: tuple[LlmAttempt, ...] = ()
    active_prompt: Mapping[str, Any] | None = None
    active_prompt_group: Mapping[str, Any] | None = None
    token_budget: Mapping[str, Any] | None = None


class LlmCompletionEvent(_LlmRequestSide, frozen=True, kw_only=True):
    """An LLM call completed with a response (graph-engine §6).

    Attributes:
        response_model: the model the server reported (may be more specific).
        response_id: the server's response id, if any.
        usage: the response's usage record (llm-provider §6 ``Usage``); a
            counter the server did not report is ``None`` inside it.
        finish_reason: the normalized finish reason.
        output_content: the assistant text (``None`` for a tool-call-only reply).
        output_tool_calls: ``[{id, name, arguments}]`` requested by the model,
            or ``None`` when the reply had no tool calls.
    """

    response_model: str | None = None
    response_id: str | None = None
    usage: Any = None
    finish_reason: str | None = None
    output_content: str | None = None
    output_tool_calls: tuple[Mapping[str, Any], ...] | None = None


class LlmFailedEvent(_LlmRequestSide, frozen=True, kw_only=True):
    """An LLM call raised an llm-provider §7 error category (graph-engine §6).

    The exception still propagates to the caller; this event travels beside it.
    The response-side fields (``output_content``, ``finish_reason``, ``usage``,
    ``response_id``, ``response_model``) are set only for
    ``structured_output_invalid`` (a response arrived but failed validation).

    Attributes:
        error_category: the §7 category (``provider_unavailable`` ...).
        error_type: the vendor / implementation error type, if known.
        error_message: the exception's message (``""`` when it had none).
    """

    error_category: str
    error_type: str | None = None
    error_message: str = ""
    output_content: str | None = None
    finish_reason: str | None = None
    usage: Any = None
    response_id: str | None = None
    response_model: str | None = None


class LlmTokenEvent(LlmCallEvent, frozen=True, kw_only=True):
    """One streamed delta of a ``stream=True`` call (graph-engine §6).

    Attributes:
        chunk_index: 0, 1, 2 ... per call, across its wire attempts.
        delta_kind: ``"content"`` (answer text) or ``"reasoning"``.
        delta: the text (never empty).
    """

    chunk_index: int
    delta_kind: DeltaKind
    delta: str


class ToolEvent(ObserverEvent, frozen=True, kw_only=True):
    """What both tool-call events carry (graph-engine §6 tool-call scope).

    Attributes:
        node_name: the node that executed the tool.
        call_id: minted per execution (distinct from ``tool_call_id``).
        tool_name: the tool's name.
        tool_call_id: the model's ``ToolCall.id`` this execution satisfies, or
            ``None`` for a tool not requested by a model.
        arguments: the arguments the tool was run with (``None`` for none).
        latency_ms: wall-clock of the execution.
        caller_invocation_metadata: opt-in metadata snapshot (else ``None``).
    """

    node_name: str
    call_id: str
    tool_name: str
    tool_call_id: str | None = None
    arguments: Mapping[str, Any] | None = None
    latency_ms: float | None = None
    caller_invocation_metadata: Mapping[str, Any] | None = None


class ToolCallEvent(ToolEvent, frozen=True, kw_only=True):
    """A tool execution returned ``result`` (as the tool produced it)."""

    result: Any = None


class ToolCallFailedEvent(ToolEvent, frozen=True, kw_only=True):
    """A tool execution raised; the exception still propagates.

    Attributes:
        error_type: the exception's class name.
        error_message: its message (``""`` when it had none).
    """

    error_type: str | None = None
    error_message: str = ""


class LogRecordEvent(ObserverEvent, frozen=True, kw_only=True):
    """A log record written inside a node step (observability §7), queued in order with
    the node events so a tracing observer can attribute it to the step's span.

    Built by :class:`openarmature_nodes.observability.logs.RunLogHandler` from a
    stdlib :mod:`logging` record; it carries the rendered message, never the
    record's arguments.

    Attributes:
        body: the formatted message.
        severity_text / severity_number: the level name and number (``logging.INFO`` ...).
        logger_name: the emitting logger.
        time_ns: when the record was created (ns since the epoch).
    """

    body: str
    severity_text: str
    severity_number: int
    logger_name: str
    time_ns: int
