"""Spec MUSTs no conformance fixture at hand checks (issue 11, item 5), each pinned here.

- pipeline-utilities §9.1: ``fan_out_empty`` is not transient; retry MUST NOT retry it.
- pipeline-utilities §6.1: the default classifier reads one carrier level deep: a
  ``node_exception`` whose direct cause is transient is transient; a transient two
  carriers down is the inner scope's to retry.
- pipeline-utilities §11.9 / §11.6: ``parallel_branches_branch_failed`` inherits the
  transient classification of the branch failure it wraps, so a retry around the
  parallel-branches node re-runs it (all branches) for a transient branch failure.
- graph-engine §6: ``drain_events_for`` an invocation whose events were all delivered
  returns at once with an empty summary; the states an event carries are immutable.
- llm-provider §5 ``ready()``: MUST NOT be called automatically by ``complete()``.
- llm-provider §7 *Malformed usage counter*: a counter that is valid JSON but out of
  any float's range (``1e400``) MUST NOT make the call raise; it is not reported and
  its value stays on ``raw`` (atomic and streamed replies).

Every async test runs on asyncio and trio (the provider test over both transports).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

import httpx
import msgspec
import pytest

from openarmature_nodes.graph import (
    END,
    Branch,
    GraphBuilder,
    NodeException,
    ParallelBranchFailed,
    State,
    append,
)
from openarmature_nodes.llm import OpenAIProvider, ProviderUnavailable, UserMessage
from openarmature_nodes.middleware import RetryMiddleware
from openarmature_nodes.retrying import constant_backoff, default_classifier
from tests.transports import (  # noqa: F401  (fixtures used by name)
    loopback_transport,
    transport_kind,
    transports,
)

pytestmark = pytest.mark.anyio


class Item(State):
    x: int = 0
    y: int = 0


class Parent(State):
    items: list[int] = msgspec.field(default_factory=list)
    ys: Annotated[list[int], append] = msgspec.field(default_factory=list)


async def test_retry_never_retries_an_empty_fan_out() -> None:
    runs = {"fan": 0}

    async def count_runs(state: Any, nxt: Any) -> Any:
        runs["fan"] += 1
        return await nxt(state)

    async def body(s: Item) -> dict[str, Any]:
        return {"y": s.x}

    leaf = GraphBuilder(Item).add_node("w", body).add_edge("w", END).set_entry("w").compile()
    retry = RetryMiddleware(max_attempts=4, backoff=constant_backoff(0))
    graph = (GraphBuilder(Parent)
             .add_fan_out_node("fan", leaf, middleware=[retry, count_runs], items_field="items",
                               item_field="x", collect_field="y", target_field="ys")
             .add_edge("fan", END).set_entry("fan").compile())
    with pytest.raises(NodeException) as info:
        await graph.invoke(Parent(items=[]))
    assert runs["fan"] == 1, "fan_out_empty was retried"
    cause: BaseException | None = info.value
    categories = []
    while cause is not None:
        categories.append(getattr(cause, "category", None))
        cause = cause.__cause__
    assert "fan_out_empty" in categories, categories


def carrier(cause: BaseException) -> NodeException:
    exc = NodeException.__new__(NodeException)
    Exception.__init__(exc, "carrier")
    exc.__cause__ = cause
    return exc


def test_default_classifier_reads_one_carrier_level() -> None:
    transient = ProviderUnavailable("down")
    assert default_classifier(transient) is True
    assert default_classifier(carrier(transient)) is True
    assert default_classifier(carrier(carrier(transient))) is False


async def test_delivered_invocation_drains_at_once_and_event_states_are_immutable() -> None:
    from openarmature_nodes.graph import DrainSummary, NodeEvent

    events: list[Any] = []

    async def watch(event: Any) -> None:
        events.append(event)

    async def body(s: Item) -> dict[str, Any]:
        return {"y": 1}

    graph = GraphBuilder(Item).add_node("n", body).add_edge("n", END).set_entry("n").compile()
    async with graph:
        await graph.invoke(Item(), observers=[watch], invocation_id="inv-1")
        await graph.drain()
        assert await graph.drain_events_for("inv-1") == DrainSummary(0, False)
        assert await graph.drain_events_for("inv-1", timeout=0) == DrainSummary(0, False)
    done = [e for e in events if isinstance(e, NodeEvent) and e.phase == "completed"]
    assert done and done[0].post_state is not None
    with pytest.raises(AttributeError):
        done[0].post_state.y = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        done[0].pre_state.y = 5  # type: ignore[misc]
    assert isinstance(done[0].parent_states, tuple) and isinstance(done[0].namespace, tuple)


class Pair(State):
    a: int = 0
    b: int = 0


@pytest.mark.parametrize("shape", ["call", "subgraph"])
async def test_retry_around_parallel_branches_reruns_on_a_transient_branch_failure(
    shape: str,
) -> None:
    runs = {"a": 0, "b": 0}

    async def branch_a(state: Any) -> dict[str, Any]:
        runs["a"] += 1
        if runs["a"] == 1:
            raise ProviderUnavailable("branch a: first try")
        return {"a": 1}

    async def branch_b(state: Any) -> dict[str, Any]:
        runs["b"] += 1
        return {"b": 2}

    def branch(fn: Any, field: str) -> Branch:
        if shape == "call":
            return Branch(call=fn)
        sub = GraphBuilder(Pair).add_node("n", fn).add_edge("n", END).set_entry("n").compile()
        return Branch(subgraph=sub, outputs={field: field})

    retry = RetryMiddleware(max_attempts=2, backoff=constant_backoff(0))
    graph = (GraphBuilder(Pair)
             .add_parallel_branches_node("pb", {"a": branch(branch_a, "a"),
                                                "b": branch(branch_b, "b")}, middleware=[retry])
             .add_edge("pb", END).set_entry("pb").compile())
    final = await graph.invoke(Pair())
    assert (final.a, final.b) == (1, 2)
    assert runs["a"] == 2 and runs["b"] >= 1  # the whole node ran again (§11.6)


def test_branch_failure_classification_follows_the_wrapped_failure() -> None:
    def failed(cause: BaseException) -> ParallelBranchFailed:
        err = ParallelBranchFailed("branch failed", branch_name="a", node_name="pb",
                                   recoverable_state=None)
        err.__cause__ = cause
        return err

    assert default_classifier(failed(carrier(ProviderUnavailable("x")))) is True
    assert default_classifier(failed(ProviderUnavailable("x"))) is True
    assert default_classifier(failed(carrier(ValueError("x")))) is False
    assert default_classifier(failed(carrier(carrier(ProviderUnavailable("x"))))) is False


@pytest.mark.usefixtures("transports")
async def test_complete_never_calls_ready() -> None:
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.method != "POST":
            return httpx.Response(500, json={"error": {"message": "ready() must not run"}})
        return httpx.Response(200, json={
            "id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                         "finish_reason": "stop"}],
        })

    async with OpenAIProvider("http://llm.test", "m",
                              transport=loopback_transport(handler)) as provider:
        reply = await provider.complete([UserMessage("hi")])
        await provider.complete([UserMessage("again")])
    assert reply.message.content == "ok"
    assert seen == ["POST /v1/chat/completions"] * 2, seen


OUT_OF_RANGE = b"1e400"
ATOMIC = (b'{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
          b'"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],'
          b'"usage":{"prompt_tokens":' + OUT_OF_RANGE + b',"completion_tokens":5,'
          b'"total_tokens":99999999999999999999999}}')
STREAMED = (b'data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,'
            b'"delta":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}\n\n'
            b'data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":[],'
            b'"usage":{"prompt_tokens":' + OUT_OF_RANGE + b',"completion_tokens":5,'
            b'"total_tokens":99999999999999999999999}}\n\ndata: [DONE]\n\n')


@pytest.mark.usefixtures("transports")
@pytest.mark.parametrize("stream", [False, True])
async def test_an_out_of_range_usage_counter_is_not_reported(stream: bool) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if stream:
            return httpx.Response(200, content=STREAMED,
                                  headers={"content-type": "text/event-stream"})
        return httpx.Response(200, content=ATOMIC, headers={"content-type": "application/json"})

    async with OpenAIProvider("http://llm.test", "m",
                              transport=loopback_transport(handler)) as provider:
        reply = await provider.complete([UserMessage("hi")], stream=stream)
    assert reply.message.content == "ok" and reply.finish_reason == "stop"
    usage = reply.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (None, 5)
    assert usage.total_tokens == 99999999999999999999999  # a sound, if huge, integer stands
    assert reply.raw["usage"]["prompt_tokens"] == Decimal("1e400")  # kept, not repaired


def test_decode_json_still_refuses_what_is_not_json() -> None:
    from openarmature_nodes.llm.wire.decode import decode_json

    assert decode_json(b'{"a": 1.5, "b": 1e400}') == {"a": 1.5, "b": Decimal("1e400")}
    for bad in (b'{"a": 1e400', b'{"a": nope}', b"1e400 1"):
        with pytest.raises(msgspec.DecodeError):
            decode_json(bad)
