"""The fault suite: every fault against three layers, on two loops, over two transports.

Each fault is injected by the embedded server (its fault knobs, and
``raw_fault`` for what only a hostile server writes), then met by

* ``provider``: ``provider.complete()`` alone, no retry;
* ``onion``: the default call-level onion (span, retry, cooldown, warm-up,
  structured output, degraded replies), with short waits and a 1 s warm-up
  budget;
* ``fanout``: a graph fan-out of 200 :class:`LLMNode` instances sharing that
  onion, 20 of whose requests meet the fault (``error_policy="collect"``),

asserting the error category, the number of attempts (requests that reached
the provider), that ``Retry-After`` and deadlines were respected, that no
connection is left checked out and no task left running, and that every
instance that succeeded has its own result. The results are gathered in
:data:`RESULTS`; ``tests/conftest.py`` prints the summary line
(``faults x layers x loops x transports``) at the end of the run.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio
import msgspec
import pytest

from openarmature_nodes.graph import END, GraphBuilder, State, append
from openarmature_nodes.llm import CompletionRequest, OpenAIProvider, Response, UserMessage
from openarmature_nodes.middleware import Cooldown, CooldownMiddleware, WarmupGate
from openarmature_nodes.nodes import LLMNode, default_onion
from openarmature_nodes.onion import compose
from openarmature_nodes.retrying import RetryConfig, constant_backoff
from openarmature_nodes.testing import EmbeddedServer, RawBytes, completion_body
from tests.fault_results import RESULTS, CaseResult
from tests.reliability import (  # noqa: F401  (kind_fixture: the fixture `kind`)
    MODEL,
    Kind,
    kind_fixture,
    leak_check,
    make_provider,
)

pytestmark = pytest.mark.anyio

KEY = "sk-fault-suite-0123456789SECRET"
FANOUT = 200
FAULTY = 20
HANG_GUARD = 60


def http(status: int, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (
        b"HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        % (status, content_type, len(body))
        + body
    )


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
CHUNK = b'data: {"choices":[{"index":0,"delta":{"content":"par"}}]}\n\n'


@dataclass(frozen=True)
class Fault:
    """One fault and what each layer must make of it.

    ``provider`` / ``onion``: ``(category, attempts)``; category ``"ok"`` for
    a success (``"ok:error"``: a degraded ``Response`` returned as it is).
    ``fanout_failures``: the category of the faulty instances that still fail
    (``None``: the onion recovers every one).
    """

    name: str
    inject: Callable[[EmbeddedServer, int], None]
    provider: tuple[str, int]
    onion: tuple[str, int]
    fanout_failures: str | None
    options: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    min_wait: float = 0.0  # the smallest retry wait the onion must have made (Retry-After)
    dead_server: bool = False


def _raw(data: bytes, **kw: Any) -> Callable[[EmbeddedServer, int], None]:
    return lambda srv, n: srv.raw_fault(RawBytes((data,), **kw), n)


FAULTS: tuple[Fault, ...] = (
    Fault("rate_limit_retry_after_0.2s",
          lambda srv, n: srv.rate_limit(n, retry_after=0.2),
          ("provider_rate_limit", 1), ("ok", 2), None, min_wait=0.2),
    Fault("rate_limit_retry_after_1day",
          lambda srv, n: srv.rate_limit(n, retry_after=86400),
          ("provider_rate_limit", 1), ("provider_rate_limit", 1), "provider_rate_limit"),
    Fault("http_500_json", lambda srv, n: srv.fail_5xx(n),
          ("provider_unavailable", 1), ("ok", 2), None),
    Fault("http_503_text", lambda srv, n: srv.fail_5xx(n, status=503, style="text"),
          ("provider_unavailable", 1), ("ok", 2), None),
    Fault("body_not_json", lambda srv, n: srv.malformed(n, "not_json"),
          ("provider_invalid_response", 1), ("provider_invalid_response", 1),
          "provider_invalid_response"),
    Fault("body_truncated", lambda srv, n: srv.malformed(n, "truncated"),
          ("provider_invalid_response", 1), ("provider_invalid_response", 1),
          "provider_invalid_response"),
    Fault("body_missing_choices", lambda srv, n: srv.malformed(n, "missing_choices"),
          ("provider_invalid_response", 1), ("provider_invalid_response", 1),
          "provider_invalid_response"),
    Fault("body_empty", lambda srv, n: srv.malformed(n, "empty_body"),
          ("provider_invalid_response", 1), ("provider_invalid_response", 1),
          "provider_invalid_response"),
    Fault("connection_dropped", lambda srv, n: srv.drop(n, path="/v1/chat/completions"),
          ("provider_unavailable", 1), ("ok", 2), None),
    Fault("drip_one_byte_per_50ms",
          lambda srv, n: srv.raw_fault(RawBytes(
              (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
               b"Content-Length: 100000\r\n\r\n",), interval=0.05, repeat=b" "), n),
          ("provider_unavailable", 1), ("ok", 2), None, options={"deadline": 1.5}),
    Fault("sse_only_ping_comments",
          lambda srv, n: srv.raw_fault(RawBytes((SSE_HEAD,), interval=0.05,
                                                repeat=b": ping\n\n"), n),
          ("provider_unavailable", 1), ("ok", 2), None,
          options={"stream_idle_timeout": 0.3}, stream=True),
    Fault("sse_error_event_mid_stream",
          _raw(SSE_HEAD + CHUNK + b'data: {"error":{"message":"engine died"}}\n\n'),
          ("ok:error", 1), ("ok", 2), None, stream=True),
    Fault("body_over_size_cap",
          _raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
               b"Content-Length: 1000000\r\n\r\n" + b" " * 70000, then="hang"),
          ("provider_invalid_response", 1), ("provider_invalid_response", 1),
          "provider_invalid_response", options={"max_response_bytes": 65536}),
    Fault("head_150KB",
          _raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n"
               + b"".join(b"X-F-%05d: %s\r\n" % (i, b"v" * 80) for i in range(1600))
               + b"\r\n{}"),
          ("provider_unavailable", 1), ("ok", 2), None),
    Fault("unknown_finish_reason",
          _raw(http(200, msgspec.json.encode(completion_body("half", finish_reason="odd")))),
          ("ok:error", 1), ("ok", 2), None),
    Fault("401_echoing_the_key",
          _raw(http(401, msgspec.json.encode(
              {"error": {"message": f"Incorrect API key provided: {KEY}"}}))),
          ("provider_authentication", 1), ("provider_authentication", 1),
          "provider_authentication", options={"api_key": KEY}),
    Fault("connection_refused", lambda srv, n: None,
          ("provider_unavailable", 1), ("provider_unavailable", 0), "provider_unavailable",
          dead_server=True),
)

LAYERS = ("provider", "onion", "fanout")


def leaf_category(exc: BaseException) -> str:
    """The provider category at the root of a (possibly wrapped) failure."""
    current: BaseException | None = exc
    found = str(getattr(exc, "category", type(exc).__name__))
    while current is not None:
        category = getattr(current, "category", None)
        if isinstance(category, str) and category.startswith(("provider_", "structured_")):
            found = category
        current = current.__cause__
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Counted:
    """``provider.call`` with a count of the attempts that reached it."""

    def __init__(self, provider: OpenAIProvider) -> None:
        self.provider = provider
        self.attempts = 0

    async def __call__(self, request: CompletionRequest) -> Response:
        self.attempts += 1
        return await self.provider.call(request)


class Harness:
    """One provider, its onion (sharing a fresh cooldown and warm-up gate), and
    the waits the retry layer made."""

    def __init__(self, provider: OpenAIProvider) -> None:
        self.provider = provider
        self.counted = Counted(provider)
        self.waits: list[float] = []
        self.gate = WarmupGate(provider, budget=1.0, backoff=constant_backoff(0.05))

        async def sleep(seconds: float) -> None:
            self.waits.append(seconds)
            await anyio.sleep(seconds)

        retry = RetryConfig(max_attempts=3, backoff=constant_backoff(0.01), sleep=sleep)
        self.onion = default_onion(
            provider, retry=retry, cooldown=CooldownMiddleware(Cooldown()), warmup=self.gate
        )
        self.call = compose(self.onion, self.counted)


class One(State):
    text: str = ""
    reply: str = ""


class Batch(State):
    texts: list[str] = msgspec.field(default_factory=list)
    replies: Annotated[list[str], append] = msgspec.field(default_factory=list)
    errors: Annotated[list[dict[str, str]], append] = msgspec.field(default_factory=list)


def fan_out_graph(harness: Harness, stream: bool) -> Any:
    node = LLMNode(
        harness.provider,
        prompt=lambda s: CompletionRequest([UserMessage(s.text)], stream=stream),
        update=lambda r: {"reply": r.message.content or ""},
        middleware=harness.onion,
    )
    node._handler = harness.call  # the same onion, over the counted provider call
    one = GraphBuilder(One).add_node("llm", node).add_edge("llm", END).set_entry("llm").compile()
    return (
        GraphBuilder(Batch)
        .add_fan_out_node(
            "fan", one, items_field="texts", item_field="text", collect_field="reply",
            target_field="replies", error_policy="collect", errors_field="errors",
            error_record=lambda i, exc: {"fan_out_index": str(i), "category": leaf_category(exc)},
        )
        .add_edge("fan", END)
        .set_entry("fan")
        .compile()
    )


def outcome_of(response: Response) -> str:
    return "ok:error" if response.finish_reason == "error" else "ok"


async def run_case(fault: Fault, layer: str, kind: Kind) -> tuple[str, int]:
    """Run ``fault`` against ``layer``; returns (category or ok, attempts)."""
    async with EmbeddedServer(model=MODEL, api_key=fault.options.get("api_key")) as server:
        base_url = f"http://127.0.0.1:{free_port()}" if fault.dead_server else server.base_url
        provider = make_provider(kind, base_url, **fault.options)
        harness = Harness(provider)
        try:
            async with leak_check(server, provider):
                with anyio.fail_after(HANG_GUARD):
                    return await _run_layer(fault, layer, server, harness)
        finally:
            with anyio.CancelScope(shield=True):
                await provider.aclose()


async def _run_layer(
    fault: Fault, layer: str, server: EmbeddedServer, harness: Harness
) -> tuple[str, int]:
    request = CompletionRequest([UserMessage(content="hi")], stream=fault.stream)
    if layer == "provider":
        fault.inject(server, 1)
        try:
            response = await harness.counted(request)
        except Exception as exc:
            _assert_no_key(exc)
            return leaf_category(exc), harness.counted.attempts
        return outcome_of(response), harness.counted.attempts
    if not fault.dead_server:
        await harness.gate.open()  # warm up first, so that the fault meets real calls
    if layer == "onion":
        fault.inject(server, 1)
        try:
            response = await harness.call(request)
        except Exception as exc:
            _assert_no_key(exc)
            return leaf_category(exc), harness.counted.attempts
        if fault.min_wait:
            assert harness.waits and min(harness.waits) >= fault.min_wait, harness.waits
        return outcome_of(response), harness.counted.attempts
    # the fan-out: the first request of FAULTY chosen instances meets the fault
    # (deterministic: a retry never meets a fault meant for another instance)
    chosen = {f"t{i}" for i in range(0, FANOUT, FANOUT // FAULTY)}
    faulted: set[str] = set()

    def first_try_of_a_chosen_one(req: Any) -> bool:
        text = (req.json or {}).get("messages", [{}])[-1].get("content")
        if text in chosen and text not in faulted:
            faulted.add(text)
            return True
        return False

    server.fault_filter = first_try_of_a_chosen_one
    fault.inject(server, FAULTY)
    texts = [f"t{i}" for i in range(FANOUT)]
    final = await fan_out_graph(harness, fault.stream).invoke(Batch(texts=texts))
    failed = {int(e["fan_out_index"]) for e in final.errors}
    categories = {e["category"] for e in final.errors}
    expected_replies = sorted(f"echo: t{i}" for i in range(FANOUT) if i not in failed)
    assert sorted(final.replies) == expected_replies  # every success has its own result
    if fault.fanout_failures is None:
        assert not failed, final.errors[:3]
        return "ok", harness.counted.attempts
    assert categories == {fault.fanout_failures}, categories
    if not fault.dead_server:
        assert len(failed) == FAULTY
    return fault.fanout_failures, harness.counted.attempts


def _assert_no_key(exc: BaseException) -> None:
    current: BaseException | None = exc
    while current is not None:
        assert KEY not in str(current) and KEY not in repr(current.args)
        current = current.__cause__


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
async def test_fault(fault: Fault, layer: str, kind: Kind, anyio_backend: str) -> None:
    result = CaseResult(fault.name, layer, anyio_backend, kind)
    RESULTS.append(result)
    outcome, attempts = await run_case(fault, layer, kind)
    result.category, result.attempts = outcome, attempts
    if layer == "provider":
        assert (outcome, attempts) == fault.provider
    elif layer == "onion":
        assert (outcome, attempts) == fault.onion
    else:
        assert outcome == (fault.fanout_failures or "ok")
        recovered = fault.fanout_failures is None and not fault.dead_server
        if recovered and "deadline" not in fault.options:
            assert attempts == FANOUT + FAULTY  # each faulty request cost one more attempt
        elif recovered:
            # With a short deadline on a loaded machine, a healthy call may also
            # run out of time and be retried: that is the deadline working.
            assert FANOUT + FAULTY <= attempts <= 3 * FANOUT
    result.passed = True
