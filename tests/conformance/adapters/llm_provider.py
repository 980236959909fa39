"""Conformance adapter for ``spec/llm-provider/conformance``.

Each case runs the real :class:`OpenAIProvider` against a mock
OpenAI-compatible server, twice: once over the httpx transport (the handler
answers through ``httpx.MockTransport``; only the socket is replaced) and
once over the fast transport (a real ``FastTransport`` talking HTTP/1.1 over
loopback TCP to a server that calls the same handler; see
``tests/transports.py``). A failure names the transport. The mock serves
``mock_provider.responses`` in order to ``POST /v1/chat/completions``, serves
``mock_provider.health_endpoint`` to ``GET /v1/models``, and records every
outbound request so the wire assertions (``expected_wire_request`` and
friends) compare what was really sent.

Every mapping the adapter interprets goes through ``check_directives``: a
directive it does not know fails the case, naming it.

Harness notes (from the fixtures' header comments):

- ``expected_wire_request`` is compared literally (keys and values, key order
  irrelevant); the string ``"*"`` matches any non-empty string.
- ``expected.response.raw_check.required_keys``: those top-level keys are in
  ``raw`` with the mock body's values.
- ``mock_provider.capabilities.supports_native_response_format: false`` builds
  the provider with ``force_prompt_augmentation_fallback=True``;
  ``supports_image_input: false`` has no static counterpart in the provider,
  which takes the post-receive path (the mock's 400 maps to
  ``provider_unsupported_content_block``).
- The bound model is the ``model`` of the first mock reply (``test-model``
  when there is none).
- ``mapping: streaming_unsupported_stub``: a mapping without streaming: the
  OpenAI provider with ``supports_streaming = False`` (the class attribute a
  provider for a non-streaming wire mapping sets), which refuses
  ``stream=True`` pre-send and serves atomic calls as usual.
- Streaming (``call.stream``, ``mock_provider.responses[].stream_body``):
  the mock serves the chunks as a ``text/event-stream`` body; every call
  runs inside a token sink, so token events are recorded (and
  ``no_token_events_emitted`` is checked against them). The streaming
  invariants and the streamed ``raw_check`` live in
  ``tests/conformance/adapters/llm_provider_stream.py``.
- Cases whose call carries ``retry`` (call-level retry, §7.1) are delegated
  to ``tests/conformance/adapters/llm_provider_retry.py`` (``run_retry_call``)
  when that module exists.
"""

from __future__ import annotations

import importlib
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from openarmature_nodes.llm import (
    AssistantMessage,
    ImageBlock,
    InlineSource,
    OpenAIProvider,
    ProviderError,
    ProviderInvalidRequest,
    RedactedThinkingBlock,
    Response,
    RuntimeConfig,
    SystemMessage,
    TextBlock,
    ThinkingBlock,
    Tool,
    ToolCall,
    ToolChoiceForce,
    ToolMessage,
    UrlSource,
    UserMessage,
)
from openarmature_nodes.llm.tokens import TokenDelta, token_sink
from openarmature_nodes.llm.wire.jsonschema import json_equal
from tests.conformance import vocabulary as _vocab
from tests.conformance.adapters.llm_provider_stream import (
    STREAM_INVARIANTS,
    check_stream_raw,
    sse_reply,
    terminal_usage,
)
from tests.conformance.fixtures import Case, UnknownDirective, check_directives, unknown_predicate
from tests.conformance.matchers import value_matches
from tests.transports import KINDS, TransportFactory, loopback_transports

CASE_KEYS = frozenset(
    {
        "name",
        "description",
        "mock_provider",
        "call",
        "calls",
        "expected",
        "expected_wire_request",
        "expected_wire_request_checks",
        "expected_wire_request_absent_keys",
        "expected_wire_bytes_identical",
        "expected_wire_request_count",
        "expected_wire_headers",
        "mapping",
        "cases",
        "conformance_version",
    }
)
CALL_KEYS = frozenset(
    {
        "operation",
        "messages",
        "tools",
        "config",
        "response_schema",
        "tool_choice",
        "stream",
        "retry",
        "retry_middleware",
        "expected",
        "expected_wire_request",
        "expected_wire_request_checks",
        "expected_wire_request_absent_keys",
        "expected_wire_request_count",
        "expected_wire_headers",
        "description",
    }
)
MOCK_KEYS = frozenset({"responses", "health_endpoint", "capabilities"})
MOCK_RESPONSE_KEYS = frozenset({"status", "body", "headers", "stream_body", "connection_failure"})
HEALTH_KEYS = frozenset({"path", "status", "body", "headers", "connection_failure"})
CAPABILITY_KEYS = frozenset({"supports_image_input", "supports_native_response_format"})
EXPECTED_KEYS = frozenset(
    {
        "response",
        "raises",
        "success",
        "caller_messages_unmodified",
        "invariants",
        "no_token_events_emitted",
        "provider_call_count",
    }
)
RESPONSE_KEYS = frozenset({"message", "finish_reason", "usage", "raw_check", "parsed"})
RAISES_KEYS = frozenset({"category", "carries"})
RESPONSE_MESSAGE_KEYS = frozenset({"role", "content", "tool_calls"})
MAPPINGS = {None: "openai", "openai": "openai", "streaming_unsupported_stub": "stub"}


class NonStreamingProvider(OpenAIProvider):
    """The ``streaming_unsupported_stub`` mapping: atomic calls only."""

    __slots__ = ()
    supports_streaming = False


DEFAULT_MODEL = "test-model"


# --- the mock server ---------------------------------------------------------------------


class MockServer:
    """An OpenAI-compatible server scripted by ``mock_provider``."""

    def __init__(self, spec: dict[str, Any], where: str) -> None:
        check_directives(spec, MOCK_KEYS, f"{where}.mock_provider")
        self.responses: deque[dict[str, Any]] = deque()
        for i, r in enumerate(spec.get("responses") or []):
            check_directives(r, MOCK_RESPONSE_KEYS, f"{where}.mock_provider.responses[{i}]")
            self.responses.append(r)
        self.health = spec.get("health_endpoint")
        if self.health is not None:
            check_directives(self.health, HEALTH_KEYS, f"{where}.mock_provider.health_endpoint")
        self.capabilities = spec.get("capabilities") or {}
        check_directives(self.capabilities, CAPABILITY_KEYS, f"{where}.mock_provider.capabilities")
        self.chat_bodies: list[bytes] = []
        self.served: list[dict[str, Any]] = []
        self.requests: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if request.method == "GET":
            health = self.health or {}
            if not path.endswith(health.get("path", "/v1/models")):
                return httpx.Response(404, json={"detail": "Not Found"})
            if health.get("connection_failure"):
                raise httpx.ConnectError("connection refused (mock)", request=request)
            return _reply(health.get("status", 200), health.get("body"), health.get("headers"))
        if request.method == "POST" and path.endswith("/v1/chat/completions"):
            self.chat_bodies.append(request.content)
            if not self.responses:
                raise AssertionError(
                    "the provider sent a request but the mock has no response left"
                )
            spec = self.responses.popleft()
            self.served.append(spec)
            if spec.get("connection_failure"):
                raise httpx.ConnectError("connection refused (mock)", request=request)
            if "stream_body" in spec:
                return sse_reply(spec.get("status", 200), spec["stream_body"], spec.get("headers"))
            return _reply(spec.get("status", 200), spec.get("body"), spec.get("headers"))
        return httpx.Response(404, json={"detail": "Not Found"})


def _reply(status: int, body: Any, headers: dict[str, str] | None) -> httpx.Response:
    if isinstance(body, str):
        return httpx.Response(status, text=body, headers=headers)
    content = b"" if body is None else msgspec.json.encode(body)
    hdrs = {"content-type": "application/json", **(headers or {})}
    return httpx.Response(status, content=content, headers=hdrs)


# --- building inputs ---------------------------------------------------------------------

MESSAGE_KEYS = frozenset({"role", "content", "tool_calls", "tool_call_id"})
BLOCK_KEYS = frozenset({"type", "text", "signature", "source", "media_type", "detail", "data"})
SOURCE_KEYS = frozenset({"type", "url", "base64_data"})
TOOL_CALL_KEYS = frozenset({"id", "name", "arguments", "signature"})
TOOL_KEYS = frozenset({"name", "description", "parameters"})


def build_messages(items: list[dict[str, Any]], where: str) -> list[Any]:
    return [build_message(m, f"{where}[{i}]") for i, m in enumerate(items)]


def build_message(m: dict[str, Any], where: str) -> Any:
    check_directives(m, MESSAGE_KEYS, where)
    role = m.get("role")
    content = m.get("content")
    if isinstance(content, list):
        content = [build_block(b, f"{where}.content[{j}]") for j, b in enumerate(content)]
    if role == "system":
        return SystemMessage(content=content)
    if role == "user":
        return UserMessage(content=content)
    if role == "assistant":
        calls = m.get("tool_calls")
        if calls is not None:
            calls = [build_tool_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(calls)]
        return AssistantMessage(content=content, tool_calls=calls)
    if role == "tool":
        return ToolMessage(content=content, tool_call_id=m.get("tool_call_id"))
    raise UnknownDirective(f"unknown message role {role!r} in {where}")


def build_block(b: dict[str, Any], where: str) -> Any:
    check_directives(b, BLOCK_KEYS, where)
    kind = b.get("type")
    if kind == "text":
        return TextBlock(text=b.get("text"), signature=b.get("signature"))
    if kind == "image":
        src = b.get("source")
        source: Any = None
        if isinstance(src, dict):
            check_directives(src, SOURCE_KEYS, f"{where}.source")
            if src.get("type") == "url":
                source = UrlSource(url=src.get("url"))
            elif src.get("type") == "inline":
                source = InlineSource(base64_data=src.get("base64_data"))
            else:
                raise UnknownDirective(f"unknown image source type {src.get('type')!r} in {where}")
        return ImageBlock(source=source, media_type=b.get("media_type"), detail=b.get("detail"))
    if kind == "thinking":
        return ThinkingBlock(text=b.get("text"), signature=b.get("signature"))
    if kind == "redacted_thinking":
        return RedactedThinkingBlock(data=b.get("data"))
    raise UnknownDirective(f"unknown content block type {kind!r} in {where}")


def build_tool_call(c: dict[str, Any], where: str) -> ToolCall:
    check_directives(c, TOOL_CALL_KEYS, where)
    return ToolCall(
        id=c.get("id"),
        name=c.get("name"),
        arguments=c.get("arguments"),
        signature=c.get("signature"),
    )


def build_tools(items: list[dict[str, Any]] | None, where: str) -> list[Tool] | None:
    if items is None:
        return None
    out = []
    for i, t in enumerate(items):
        check_directives(t, TOOL_KEYS, f"{where}[{i}]")
        out.append(
            Tool(
                name=t.get("name"),
                description=t.get("description", ""),
                parameters=t.get("parameters"),
            )
        )
    return out


def build_tool_choice(choice: Any, where: str) -> Any:
    if isinstance(choice, dict):
        check_directives(choice, {"type", "name"}, where)
        if choice.get("type") != "tool":
            raise UnknownDirective(f"unknown tool_choice type {choice.get('type')!r} in {where}")
        return ToolChoiceForce(name=choice.get("name"))
    return choice


CONFIG_KEYS = frozenset(
    {
        "temperature",
        "max_tokens",
        "top_p",
        "seed",
        "frequency_penalty",
        "presence_penalty",
        "stop_sequences",
        "extras",
    }
)


def build_config(cfg: dict[str, Any] | None, where: str) -> RuntimeConfig | None:
    if cfg is None:
        return None
    check_directives(cfg, CONFIG_KEYS, where)
    return RuntimeConfig.from_mapping(cfg)


# --- running -----------------------------------------------------------------------------


@dataclass
class Outcome:
    spec: dict[str, Any]
    where: str
    response: Response | None = None
    error: BaseException | None = None
    wire: list[bytes] = field(default_factory=list)
    served: list[dict[str, Any]] = field(default_factory=list)
    messages_unmodified: bool | None = None
    tokens: list[TokenDelta] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)  # outbound POSTs' headers


async def run_case(case: Case) -> None:
    """Run ``case`` once per transport kind, each time against a fresh mock."""
    for kind in KINDS:
        try:
            async with loopback_transports(kind) as transports:
                await _run_case_on(case, transports)
        except Exception as exc:
            exc.add_note(f"{case.test_id}: failed on the {kind} transport")
            raise


async def _run_case_on(case: Case, transports: TransportFactory) -> None:
    data = case.data
    doc = case.document
    where = case.test_id
    check_directives(data, CASE_KEYS, where)
    if data is not doc:
        check_directives(
            {k: v for k, v in doc.items() if k != "cases"}, CASE_KEYS, f"{where} (document)"
        )
    mapping = data.get("mapping", doc.get("mapping"))
    if mapping not in MAPPINGS:
        raise UnknownDirective(f"harness_primitive_missing: mapping {mapping!r} in {where}")
    mock_spec = data.get("mock_provider", doc.get("mock_provider")) or {}
    server = MockServer(mock_spec, where)
    calls = _calls(data, where)
    model = DEFAULT_MODEL
    for r in server.responses:
        body = r.get("body")
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            model = body["model"]
            break
    provider_class = NonStreamingProvider if MAPPINGS[mapping] == "stub" else OpenAIProvider
    provider = provider_class(
        "http://mock-llm.test",
        model,
        genai_system="openai",
        force_prompt_augmentation_fallback=server.capabilities.get(
            "supports_native_response_format"
        )
        is False,
        transport=transports.transport(server.handler),
    )
    outcomes: list[Outcome] = []
    async with provider:
        for i, call in enumerate(calls):
            cwhere = f"{where}.calls[{i}]"
            check_directives(call, CALL_KEYS, cwhere)
            outcome = await _run_call(provider, server, call, cwhere)
            outcomes.append(outcome)
            _assert_call(outcome, model)
    identical = data.get("expected_wire_bytes_identical", doc.get("expected_wire_bytes_identical"))
    if identical is not None:
        check_directives(identical, {"calls"}, f"{where}.expected_wire_bytes_identical")
        bodies = [outcomes[i].wire[-1] for i in identical["calls"]]
        assert all(b == bodies[0] for b in bodies), f"wire bytes differ: {bodies}"


def _calls(data: dict[str, Any], where: str) -> list[dict[str, Any]]:
    if "calls" in data:
        return list(data["calls"])
    if "call" in data:
        call = dict(data["call"])
        for key in (
            "expected",
            "expected_wire_request",
            "expected_wire_request_checks",
            "expected_wire_request_absent_keys",
            "expected_wire_request_count",
            "expected_wire_headers",
        ):
            if key in data:
                call[key] = data[key]
        return [call]
    raise UnknownDirective(f"fixture_schema_invalid: {where} has neither 'call' nor 'calls'")


async def _run_call(
    provider: OpenAIProvider, server: MockServer, call: dict[str, Any], where: str
) -> Outcome:
    outcome = Outcome(call, where)
    start_wire, start_served = len(server.chat_bodies), len(server.served)
    start_requests = len(server.requests)
    op = call.get("operation")
    try:
        if op == "ready":
            await provider.ready()
        elif op == "complete":
            with token_sink(outcome.tokens.append):
                outcome.response = await _complete(provider, call, where, outcome)
        else:
            raise UnknownDirective(f"unknown operation {op!r} in {where}")
    except (UnknownDirective, AssertionError):
        raise
    except Exception as exc:
        outcome.error = exc
    outcome.wire = server.chat_bodies[start_wire:]
    outcome.served = server.served[start_served:]
    outcome.headers = [dict(r.headers) for r in server.requests[start_requests:]
                       if r.method == "POST"]
    return outcome


async def _complete(
    provider: OpenAIProvider, call: dict[str, Any], where: str, outcome: Outcome
) -> Response:
    messages = build_messages(call.get("messages") or [], f"{where}.messages")
    snapshot = msgspec.to_builtins(messages)
    tools = build_tools(call.get("tools"), f"{where}.tools")
    config = build_config(call.get("config"), f"{where}.config")
    choice = build_tool_choice(call.get("tool_choice"), f"{where}.tool_choice")
    schema = call.get("response_schema")
    try:
        if call.get("retry") is not None:
            try:
                hook = importlib.import_module("tests.conformance.adapters.llm_provider_retry")
            except ModuleNotFoundError as exc:
                raise UnknownDirective(
                    f"harness_primitive_missing: call-level retry in {where}"
                ) from exc
            result: Response = await hook.run_retry_call(
                provider, call, messages, tools, config, choice, outcome
            )
            return result
        if call.get("retry_middleware") is not None:
            return await _with_retry_middleware(
                provider, call, messages, tools, config, schema, choice, where
            )
        return await provider.complete(
            messages,
            tools=tools,
            config=config,
            response_schema=schema,
            tool_choice=choice,
            stream=bool(call.get("stream", False)),
        )
    finally:
        outcome.messages_unmodified = msgspec.to_builtins(messages) == snapshot


async def _with_retry_middleware(
    provider: OpenAIProvider,
    call: dict[str, Any],
    messages: list[Any],
    tools: Any,
    config: Any,
    schema: Any,
    choice: Any,
    where: str,
) -> Response:
    spec = call["retry_middleware"]
    check_directives(spec, {"max_attempts", "classifier"}, f"{where}.retry_middleware")
    if spec.get("classifier", "default") != "default":
        raise UnknownDirective(f"retry_middleware.classifier {spec['classifier']!r} in {where}")
    from openarmature_nodes.llm import CompletionRequest
    from openarmature_nodes.middleware.retry import RetryMiddleware
    from openarmature_nodes.onion import compose
    from openarmature_nodes.retrying import constant_backoff

    retry = RetryMiddleware(
        max_attempts=int(spec.get("max_attempts", 3)), backoff=constant_backoff(0.0)
    )
    handler = compose([retry], provider.call)
    result: Response = await handler(CompletionRequest(messages, tools, config, schema, choice))
    return result


# --- assertions --------------------------------------------------------------------------


def _assert_call(o: Outcome, model: str) -> None:
    spec, where = o.spec, o.where
    if o.wire and "expected_wire_request" in spec:
        match(spec["expected_wire_request"], msgspec.json.decode(o.wire[-1]), f"{where}.wire")
    elif "expected_wire_request" in spec:
        raise AssertionError(
            f"{where}: expected a wire request, none was sent (error: {o.error!r})"
        )
    wire = msgspec.json.decode(o.wire[-1]) if o.wire else None
    for key, want in (spec.get("expected_wire_request_checks") or {}).items():
        _wire_check(key, want, wire, spec, f"{where}.expected_wire_request_checks.{key}")
    for key in spec.get("expected_wire_request_absent_keys") or []:
        assert wire is not None and key not in wire, f"{where}: wire key {key!r} must be absent"
    if "expected_wire_request_count" in spec:
        want_count = spec["expected_wire_request_count"]
        assert len(o.wire) == want_count, f"{where}: {len(o.wire)} wire requests, not {want_count}"
    if "expected_wire_headers" in spec:
        assert o.headers, f"{where}.expected_wire_headers: no request was sent"
        got_headers = {k.lower(): v for k, v in o.headers[-1].items()}
        for name, value in spec["expected_wire_headers"].items():
            got_value = got_headers.get(str(name).lower())
            assert got_value == value, f"{where}: header {name}: {got_value!r} != {value!r}"
    expected = spec.get("expected") or {}
    check_directives(expected, EXPECTED_KEYS, f"{where}.expected")
    if "raises" in expected:
        _assert_raises(o, expected["raises"], f"{where}.expected.raises")
    elif ("response" in expected or expected.get("success")) and o.error is not None:
        raise AssertionError(f"{where}: expected success, got {o.error!r}") from o.error
    if "response" in expected:
        assert o.response is not None
        _assert_response(o, expected["response"], f"{where}.expected.response")
    if expected.get("caller_messages_unmodified"):
        assert o.messages_unmodified, f"{where}: the caller's messages were modified"
    if "provider_call_count" in expected:
        assert len(o.wire) == expected["provider_call_count"], (
            f"{where}: {len(o.wire)} provider calls, expected {expected['provider_call_count']}"
        )
    if expected.get("no_token_events_emitted"):
        assert not o.tokens, f"{where}: token events were emitted: {o.tokens!r}"
    for name, want in (expected.get("invariants") or {}).items():
        check = _invariant(name, f"{where}.expected.invariants")
        if check is not None and want:
            check(o, model)


def _is_matcher(expected: Any) -> bool:
    if isinstance(expected, str):
        return len(expected) > 2 and expected[0] == "<" and expected[-1] == ">"
    return isinstance(expected, dict) and len(expected) == 1 and (
        "non_empty_string" in expected or "harness_parameterized" in expected)


def match(expected: Any, actual: Any, path: str) -> None:
    """Literal comparison: dict keys must be equal sets, lists equal length,
    scalars JSON-equal; the string ``"*"`` matches any non-empty string; the §5.10
    value matchers (``<uuid>``, ``{non_empty_string: true}``, ...) match by rule."""
    if _is_matcher(expected):
        value_matches(expected, actual, path)
    elif expected == "*":
        assert isinstance(actual, str) and actual, (
            f"{path}: expected a non-empty string, got {actual!r}"
        )
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r}"
        assert set(expected) == set(actual), (
            f"{path}: keys differ: expected {sorted(expected)}, got {sorted(actual)}"
        )
        for k in expected:
            match(expected[k], actual[k], f"{path}.{k}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), (
            f"{path}: expected {expected!r}, got {actual!r}"
        )
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            match(e, a, f"{path}[{i}]")
    else:
        assert json_equal(expected, actual), f"{path}: expected {expected!r}, got {actual!r}"


def _wire_check(key: str, want: Any, wire: Any, spec: dict[str, Any], where: str) -> None:
    assert wire is not None, f"{where}: no wire request was sent"
    if key == "system_message_content_references_schema":
        system = [m for m in wire["messages"] if m.get("role") == "system"]
        assert system, f"{where}: no system message on the wire"
        text = system[0]["content"]
        schema = spec.get("response_schema") or {}
        names = list((schema.get("properties") or {}).keys())
        ok = isinstance(text, str) and all(f'"{n}"' in text for n in names) and '"type"' in text
        assert ok == bool(want), f"{where}: system message does not carry the schema: {text!r}"
    elif key.endswith("_absent"):
        field_name = key.removesuffix("_absent")
        assert (field_name not in wire) == bool(want), (
            f"{where}: wire key {field_name!r} presence is wrong"
        )
    else:
        raise UnknownDirective(f"unknown wire check {key!r} in {where}")


def _assert_raises(o: Outcome, spec: dict[str, Any], where: str) -> None:
    check_directives(spec, RAISES_KEYS, where)
    err = o.error
    assert err is not None, f"{where}: expected {spec.get('category')}, the call succeeded"
    assert isinstance(err, ProviderError), f"{where}: expected a categorized error, got {err!r}"
    assert err.category == spec["category"], f"{where}: expected {spec['category']}, got {err!r}"
    if err.category in ("provider_unavailable",) and err.status is None:
        assert err.__cause__ is not None, (
            f"{where}: the underlying exception was not kept as __cause__"
        )
    for key, want in (spec.get("carries") or {}).items():
        _carries(err, key, want, f"{where}.carries.{key}")


_FIELD_ALIASES = {"response_schema": "schema"}


def _carries(err: BaseException, key: str, want: Any, where: str) -> None:
    """The §5.13 ``carries`` convention: bare field (exact; subset for a
    mapping), ``_present`` (presence), ``_mentions`` (substring)."""
    flavor = "exact"
    stem = key
    for suffix in ("_present", "_mentions"):
        if key.endswith(suffix):
            stem, flavor = key.removesuffix(suffix), suffix[1:]
    attr = _FIELD_ALIASES.get(stem, stem)
    if not hasattr(err, attr):
        raise UnknownDirective(
            f"carries key {key!r}: the error exposes no field {stem!r} ({where})"
        )
    value = getattr(err, attr)
    if flavor == "present":
        assert (value is not None) == bool(want), (
            f"{where}: presence of {stem} is {value is not None}"
        )
    elif flavor == "mentions":
        assert isinstance(value, str) and str(want) in value, f"{where}: {value!r} lacks {want!r}"
    elif isinstance(want, dict):
        actual = msgspec.to_builtins(value) if isinstance(value, msgspec.Struct) else value
        assert isinstance(actual, dict), f"{where}: expected a mapping, got {value!r}"
        for k, v in want.items():
            assert k in actual and json_equal(v, actual[k]), (
                f"{where}.{k}: expected {v!r}, got {actual.get(k)!r}"
            )
    else:
        assert json_equal(want, value), f"{where}: expected {want!r}, got {value!r}"


def _assert_response(o: Outcome, spec: dict[str, Any], where: str) -> None:
    check_directives(spec, RESPONSE_KEYS, where)
    r = o.response
    assert r is not None
    if "message" in spec:
        msg = spec["message"]
        check_directives(msg, RESPONSE_MESSAGE_KEYS, f"{where}.message")
        assert msg.get("role", "assistant") == "assistant"
        if "content" in msg:
            want = msg["content"]
            got = r.message.content
            if isinstance(want, list):  # content blocks: compare as wire-shaped data
                got = msgspec.to_builtins(got) if got is not None else None
            assert got == want, f"{where}.message.content: got {r.message.content!r}"
        if "tool_calls" in msg:
            _match_tool_calls(
                msg["tool_calls"], r.message.tool_calls, f"{where}.message.tool_calls"
            )
    if "finish_reason" in spec:
        assert r.finish_reason == spec["finish_reason"], (
            f"{where}.finish_reason: got {r.finish_reason!r}"
        )
    if "usage" in spec:
        usage = msgspec.to_builtins(r.usage)
        for k, v in spec["usage"].items():
            assert usage.get(k) == v and type(usage.get(k)) is type(v), (
                f"{where}.usage.{k}: got {usage.get(k)!r}"
            )
    if "parsed" in spec:
        parsed = msgspec.to_builtins(r.parsed) if r.parsed is not None else None
        match(spec["parsed"], parsed, f"{where}.parsed")
    if "raw_check" in spec:
        check_directives(spec["raw_check"], {"required_keys"}, f"{where}.raw_check")
        if o.served and "stream_body" in o.served[-1]:
            check_stream_raw(o, spec["raw_check"].get("required_keys", []), f"{where}.raw_check")
            return
        body = o.served[-1].get("body") or {}
        for k in spec["raw_check"].get("required_keys", []):
            assert k in r.raw and r.raw[k] == body.get(k), (
                f"{where}.raw.{k} is not the server's value"
            )


def _match_tool_calls(expected: Any, actual: Any, where: str) -> None:
    if expected is None:
        assert not actual, f"{where}: expected no tool calls, got {actual!r}"
        return
    assert actual is not None and len(actual) == len(expected), f"{where}: got {actual!r}"
    for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
        check_directives(e, TOOL_CALL_KEYS, f"{where}[{i}]")
        for k, v in e.items():
            got = getattr(a, k)
            if k == "arguments" and v is not None:
                match(v, got, f"{where}[{i}].arguments")
            else:
                assert got == v, f"{where}[{i}].{k}: expected {v!r}, got {got!r}"


# --- named invariants --------------------------------------------------------------------


def _rejected_pre_send(o: Outcome, model: str) -> None:
    assert isinstance(o.error, ProviderInvalidRequest), (
        f"{o.where}: expected a pre-send rejection, got {o.error!r}"
    )
    assert not o.wire, f"{o.where}: a request was issued"


def _no_request(o: Outcome, model: str) -> None:
    assert not o.wire, f"{o.where}: a request was issued"


def _invalid_request(o: Outcome, model: str) -> None:
    assert isinstance(o.error, ProviderInvalidRequest), f"{o.where}: got {o.error!r}"


def _succeeded(o: Outcome, model: str) -> None:
    assert o.error is None and o.response is not None, f"{o.where}: got {o.error!r}"


def _extras_on_wire(o: Outcome, model: str) -> None:
    _succeeded(o, model)
    wire = msgspec.json.decode(o.wire[-1])
    extras = (o.spec.get("config") or {}).get("extras") or {}
    assert extras, f"{o.where}: the call has no extras to check"
    for k, v in extras.items():
        assert k in wire and json_equal(wire[k], v), (
            f"{o.where}: extras {k!r} not forwarded untouched"
        )


def _no_stream_key(o: Outcome, model: str) -> None:
    _succeeded(o, model)
    assert "stream" not in msgspec.json.decode(o.wire[-1]), f"{o.where}: wire carries 'stream'"


def _raw_usage_verbatim(o: Outcome, model: str) -> None:
    """``raw.usage`` holds the server's usage block value for value (a malformed
    counter is kept as sent, §6 / §7): the body's, or a stream's terminal one."""
    _succeeded(o, model)
    if "stream_body" in o.served[-1]:
        sent = terminal_usage(o)
    else:
        sent = (o.served[-1].get("body") or {}).get("usage")
    got = o.response.raw.get("usage") if o.response else None
    assert isinstance(sent, dict) and isinstance(got, dict)
    for k, v in sent.items():
        assert k in got and got[k] == v and type(got[k]) is type(v), (
            f"{o.where}: raw.usage.{k} changed"
        )


_INVARIANTS: dict[str, Callable[[Outcome, str], None]] = {
    **STREAM_INVARIANTS,
    "no_request_issued": _no_request,
    "no_silent_atomic_fallback": _no_request,
    "no_token_events_on_rejected_stream": _rejected_pre_send,
    "rejection_category_is_provider_invalid_request": _invalid_request,
    "bound_model_not_silently_overridden": _rejected_pre_send,
    "stream_always_managed_on_unary_side": _rejected_pre_send,
    "atomic_call_unaffected_by_streaming_rejection": _succeeded,
    "extras_response_format_on_wire_when_unmanaged": _extras_on_wire,
    "matching_extras_stream_no_op": _no_stream_key,
    "wire_carries_no_stream_key": _no_stream_key,
}
_INVARIANT_FAMILIES: list[tuple[re.Pattern[str], Callable[[Outcome, str], None]]] = [
    (re.compile(r".*_rejects?_pre_send$|.*_rejected_pre_send$"), _rejected_pre_send),
    (re.compile(r".*_neither_dropped_nor_forwarded$"), _rejected_pre_send),
    (re.compile(r".*_unmanaged_rides_untouched$"), _extras_on_wire),
    (re.compile(r"^raw_usage_.*_verbatim_malformed$"), _raw_usage_verbatim),
]


def _invariant(name: str, where: str) -> Callable[[Outcome, str], None] | None:
    check = _INVARIANTS.get(name)
    if check is not None:
        return check
    for pattern, fn in _INVARIANT_FAMILIES:
        if pattern.match(name):
            return fn
    unknown_predicate(name, where)  # raises unless in spec-drift mode
    return None


# --- vocabulary (tests/conformance/vocabulary.py) ---------------------------------------------

_vocab.register("llm-provider", CASE_KEYS | CALL_KEYS | MOCK_KEYS | MOCK_RESPONSE_KEYS)
_vocab.register("llm-provider", HEALTH_KEYS | CAPABILITY_KEYS | EXPECTED_KEYS | RESPONSE_KEYS)
_vocab.register("llm-provider", RAISES_KEYS | RESPONSE_MESSAGE_KEYS | MESSAGE_KEYS | BLOCK_KEYS)
_vocab.register("llm-provider", SOURCE_KEYS | TOOL_CALL_KEYS | TOOL_KEYS | CONFIG_KEYS)
_vocab.register("llm-provider", {"required_keys", "calls"})
_vocab.register("llm-provider", {"prompt_tokens", "completion_tokens", "total_tokens",
                                 "cached_tokens", "cache_creation_tokens"})  # response.usage
_vocab.register("carries", {"_present", "_mentions", "response_schema_present", "output_content",
                            "error_message_present", "error_message_mentions", "finish_reason",
                            "usage"})
_vocab.register("llm-provider", _INVARIANTS)
_vocab.register_resolver("llm-provider",
                         lambda name: any(p.match(name) for p, _ in _INVARIANT_FAMILIES))
