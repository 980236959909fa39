"""Node-level layers composed directly (no engine): retry's attempt index,
timing (§6.2), failure isolation (§6.3) and the cause-chain primitive (§6.4)."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import anyio
import msgspec
import pytest

from openarmature_nodes.context import attempt_index
from openarmature_nodes.graph import END, GraphBuilder, NodeEvent, State, append
from openarmature_nodes.llm.errors import (
    ProviderAuthentication,
    ProviderInvalidResponse,
    ProviderRateLimit,
    ProviderUnavailable,
)
from openarmature_nodes.middleware import (
    FailureIsolationEvent,
    FailureIsolationMiddleware,
    Lineage,
    RetryMiddleware,
    TimingMiddleware,
    TimingRecord,
    classify_causes,
    compose,
    derived_category,
)
from openarmature_nodes.retrying import RetryConfig, constant_backoff

pytestmark = pytest.mark.anyio

Node = Callable[[Any], Awaitable[Any]]


class Carrier(Exception):
    category = "node_exception"
    carrier = True


def chained(*excs: BaseException) -> BaseException:
    for outer, inner in itertools.pairwise(excs):
        outer.__cause__ = inner
    return excs[0]


def failing_node(*failures: BaseException | None, update: Any = None) -> tuple[list[int], Node]:
    """A node failing per ``failures``; records ``attempt_index`` as it saw it."""
    seen: list[int] = []

    async def node(state: Any) -> Any:
        seen.append(attempt_index.get())
        i = len(seen) - 1
        if i < len(failures) and failures[i] is not None:
            raise failures[i]  # type: ignore[misc]
        return update if update is not None else {"ok": True}

    return seen, node


def quick_retry(**kw: Any) -> RetryMiddleware:
    return RetryMiddleware(RetryConfig(backoff=constant_backoff(0.0), **kw))


# --- retry at node level ----------------------------------------------------------------


async def test_retry_sets_attempt_index_per_attempt_and_restores_it() -> None:
    seen, node = failing_node(ProviderRateLimit("a"), ProviderUnavailable("b"))
    chain = compose([quick_retry()], node)
    assert await chain({"v": 0}) == {"ok": True}
    assert seen == [0, 1, 2]
    assert attempt_index.get() == 0


async def test_nested_retry_innermost_wins_and_outer_is_restored() -> None:
    seen, node = failing_node(ProviderUnavailable("a"), ProviderUnavailable("b"),
                              ProviderUnavailable("c"))
    outer_seen: list[int] = []

    async def spy(state: Any, nxt: Node) -> Any:
        outer_seen.append(attempt_index.get())
        try:
            return await nxt(state)
        finally:
            outer_seen.append(attempt_index.get())

    chain = compose([quick_retry(max_attempts=2), spy, quick_retry(max_attempts=2)], node)
    assert await chain({}) == {"ok": True}
    assert seen == [0, 1, 0, 1]  # inner counter, restarted for the outer's second attempt
    assert outer_seen == [0, 0, 1, 1]  # the inner retry restored the outer's index


async def test_retry_passes_the_same_state_and_never_mutates_it() -> None:
    states: list[Any] = []

    async def node(state: Any) -> Any:
        states.append(state)
        if len(states) < 2:
            raise ProviderUnavailable("x")
        return {"n": 1}

    state = {"v": 1}
    await compose([quick_retry()], node)(state)
    assert states == [state, state] and states[0] is state and state == {"v": 1}


async def test_retry_state_aware_classifier_gets_the_input_state() -> None:
    def only_when_budget(exc: Exception, state: Any) -> bool:
        return bool(state["budget"])

    for budget, calls in ((3, 2), (0, 1)):
        seen, node = failing_node(ProviderAuthentication("nope"))
        chain = compose([quick_retry(classifier=only_when_budget)], node)
        if calls == 2:
            await chain({"budget": budget})
        else:
            with pytest.raises(ProviderAuthentication):
                await chain({"budget": budget})
        assert len(seen) == calls


# --- timing --------------------------------------------------------------------------------


class TickClock:
    def __init__(self, step: float) -> None:
        self.t = 0.0
        self.step = step

    def __call__(self) -> float:
        now = self.t
        self.t += self.step
        return now


async def test_timing_success_and_failure_records() -> None:
    records: list[TimingRecord] = []

    async def on_complete(r: TimingRecord) -> None:
        records.append(r)

    timing = TimingMiddleware("fetch", on_complete, clock=TickClock(0.005))
    _seen, node = failing_node(ProviderRateLimit("slow"))
    chain = compose([timing], node)
    with pytest.raises(ProviderRateLimit):
        await chain({})
    await chain({})
    assert records == [
        TimingRecord("fetch", pytest.approx(5.0), "exception", "provider_rate_limit"),  # type: ignore[arg-type]
        TimingRecord("fetch", pytest.approx(5.0), "success", None),  # type: ignore[arg-type]
    ]


async def test_timing_outside_retry_vs_inside() -> None:
    outside: list[TimingRecord] = []
    inside: list[TimingRecord] = []

    async def rec(into: list[TimingRecord]) -> Callable[[TimingRecord], Awaitable[None]]:
        async def on_complete(r: TimingRecord) -> None:
            into.append(r)

        return on_complete

    failures = (ProviderUnavailable("1"), ProviderUnavailable("2"))
    _, node = failing_node(*failures)
    await compose([TimingMiddleware("n", await rec(outside)), quick_retry()], node)({})
    _, node = failing_node(*failures)
    await compose([quick_retry(), TimingMiddleware("n", await rec(inside))], node)({})
    assert [r.outcome for r in outside] == ["success"]
    assert [r.outcome for r in inside] == ["exception", "exception", "success"]


async def test_timing_factory_binds_node_names() -> None:
    records: list[TimingRecord] = []

    async def on_complete(r: TimingRecord) -> None:
        records.append(r)

    factory = TimingMiddleware.for_graph(on_complete)
    _, node = failing_node()
    await compose([factory.bind_node("alpha")], node)({})
    await compose([factory.bind_node("beta")], node)({})
    assert [r.node_name for r in records] == ["alpha", "beta"]
    assert all(r.duration_ms >= 0 for r in records)


async def test_timing_callback_errors_propagate() -> None:
    async def broken(r: TimingRecord) -> None:
        raise RuntimeError("callback failed")

    _, node = failing_node()
    with pytest.raises(RuntimeError, match="callback failed"):
        await compose([TimingMiddleware("n", broken)], node)({})


# --- cause chain ----------------------------------------------------------------------------


def test_cause_chain_through_carriers() -> None:
    exc = chained(
        Carrier("wrapped"), ProviderInvalidResponse("surface"), ProviderUnavailable("orig")
    )
    chain = classify_causes(exc)
    assert [(link.category, link.carrier) for link in chain.links] == [
        ("node_exception", True),
        ("provider_invalid_response", False),
        ("provider_unavailable", False),
    ]
    assert chain.links[1].message == "surface"
    assert (chain.category, chain.message) == ("provider_invalid_response", "surface")


def test_cause_chain_uncategorized_and_bare() -> None:
    chain = classify_causes(chained(Carrier("w"), ValueError("boom")))
    assert (chain.category, chain.message) == (None, "boom")
    bare = classify_causes(ValueError("bad input"))
    assert bare.links[0].carrier is False and (bare.category, bare.message) == (None, "bad input")
    assert derived_category(chained(ValueError("x"), ProviderRateLimit("slow"))) == (
        "provider_rate_limit"
    )


def test_cause_chain_survives_a_cycle() -> None:
    a, b = ValueError("a"), ValueError("b")
    a.__cause__ = b
    b.__cause__ = a
    assert [link.message for link in classify_causes(a).links] == ["a", "b"]


# --- failure isolation ------------------------------------------------------------------


def isolation(**kw: Any) -> tuple[list[FailureIsolationEvent], FailureIsolationMiddleware]:
    events: list[FailureIsolationEvent] = []
    kw.setdefault("degraded_update", {"result": "degraded"})
    kw.setdefault("event_name", "site")
    mw = FailureIsolationMiddleware(
        emit=events.append,
        lineage=lambda: Lineage(namespace=("n",), attempt_index=attempt_index.get()),
        **kw,
    )
    return events, mw


async def test_isolation_degrades_and_reports() -> None:
    events, mw = isolation()
    _, node = failing_node(ProviderUnavailable("down"))
    assert await compose([mw], node)({"in": 1}) == {"result": "degraded"}
    (event,) = events
    assert event.event_name == "site" and event.pre_state == {"in": 1}
    assert event.post_state == {"result": "degraded"}
    assert event.lineage == Lineage(namespace=("n",), attempt_index=0)
    assert (event.caught_exception.category, event.caught_exception.message) == (
        "provider_unavailable", "down",
    )


async def test_isolation_callable_degraded_update_sees_the_input_state() -> None:
    events, mw = isolation(degraded_update=lambda s: {"result": f"after {s['n']}"})
    _, node = failing_node(ValueError("x"))
    assert await compose([mw], node)({"n": 2}) == {"result": "after 2"}
    assert events[0].post_state == {"result": "after 2"}


async def test_isolation_catch_uses_the_derived_category() -> None:
    events, mw = isolation(catch={"provider_unavailable"})
    _, node = failing_node(chained(Carrier("wrap"), ProviderUnavailable("down")))
    assert await compose([mw], node)({}) == {"result": "degraded"}
    _, node = failing_node(chained(Carrier("wrap"), ValueError("bare")))
    with pytest.raises(Carrier):
        await compose([mw], node)({})
    _, node = failing_node(ProviderAuthentication("no"))
    with pytest.raises(ProviderAuthentication):
        await compose([mw], node)({})
    assert len(events) == 1


async def test_isolation_predicate_and_catch_are_a_conjunction() -> None:
    events, mw = isolation(
        catch={"provider_unavailable"}, predicate=lambda e: "retryable" in str(e)
    )
    _, node = failing_node(ProviderUnavailable("retryable outage"))
    assert await compose([mw], node)({}) == {"result": "degraded"}
    _, node = failing_node(ProviderUnavailable("other"))
    with pytest.raises(ProviderUnavailable):
        await compose([mw], node)({})
    assert len(events) == 1


async def test_isolation_on_caught_gets_the_original_exception_once() -> None:
    caught: list[Exception] = []

    async def on_caught(exc: Exception) -> None:
        caught.append(exc)

    events, mw = isolation(on_caught=on_caught)
    err = ProviderUnavailable("service down")
    _, node = failing_node(err)
    await compose([mw], node)({})
    assert caught == [err] and len(events) == 1


async def test_isolation_outside_retry_sees_only_what_retry_gives_up() -> None:
    events, mw = isolation()
    seen, node = failing_node(ProviderUnavailable("1"), ProviderUnavailable("2"))
    assert await compose([mw, quick_retry()], node)({}) == {"ok": True}
    assert events == [] and seen == [0, 1, 2]
    seen, node = failing_node(*(ProviderUnavailable(str(i)) for i in range(3)))
    assert await compose([mw, quick_retry()], node)({}) == {"result": "degraded"}
    assert events[0].caught_exception.message == "2"


async def test_isolation_lets_cancellation_through() -> None:
    events, mw = isolation()

    async def node(state: Any) -> Any:
        await anyio.sleep_forever()

    with anyio.CancelScope() as scope:
        scope.cancel()
        await compose([mw], node)({})
    assert scope.cancelled_caught and events == []


async def test_isolation_without_an_engine_still_degrades() -> None:
    mw = FailureIsolationMiddleware(degraded_update={"r": 0}, event_name="quiet")
    _, node = failing_node(ValueError("x"))
    assert await compose([mw], node)({}) == {"r": 0}


def test_isolation_requires_an_event_name() -> None:
    with pytest.raises(ValueError):
        FailureIsolationMiddleware(degraded_update={}, event_name="")
    with pytest.raises(TypeError):
        FailureIsolationMiddleware(degraded_update={}, event_name="x", catch="provider_unavailable")


# --- inside a real graph --------------------------------------------------------------------


class IsolatedState(State):
    result: str = ""
    log: Annotated[list[str], append] = msgspec.field(default_factory=list)


class Counter(State):
    n: int = 0


async def test_in_a_graph_isolation_event_reaches_observers_and_retry_pairs_events() -> None:
    S = IsolatedState
    calls: list[int] = []

    async def flaky(state: S) -> dict[str, Any]:
        calls.append(attempt_index.get())
        raise ProviderUnavailable("provider down")

    async def after(state: S) -> dict[str, Any]:
        return {"log": ["after"]}

    isolate = FailureIsolationMiddleware(degraded_update={"result": "degraded"},
                                         event_name="flaky_isolated")
    graph = (
        GraphBuilder(S)
        .add_node("flaky", flaky, middleware=[isolate, quick_retry(max_attempts=2)])
        .add_node("after", after)
        .add_edge("flaky", "after")
        .add_edge("after", END)
        .set_entry("flaky")
        .compile()
    )
    seen: list[Any] = []

    async def observer(event: Any) -> None:
        seen.append(event)

    graph.attach(observer)
    final = await graph.invoke(S())
    await graph.drain()
    assert final.result == "degraded" and final.log == ["after"] and calls == [0, 1]
    (event,) = [e for e in seen if isinstance(e, FailureIsolationEvent)]
    assert event.event_name == "flaky_isolated"
    assert event.lineage.namespace == ("flaky",) and event.lineage.invocation_id
    assert event.caught_exception.category == "provider_unavailable"
    assert event.post_state == {"result": "degraded"}
    pairs = [(e.phase, e.attempt_index) for e in seen
             if isinstance(e, NodeEvent) and e.node_name == "flaky"]
    assert pairs == [("started", 0), ("completed", 0), ("started", 1), ("completed", 1)]


async def test_in_a_graph_per_graph_timing_is_bound_to_each_node() -> None:
    S = Counter
    records: list[TimingRecord] = []

    async def on_complete(r: TimingRecord) -> None:
        records.append(r)

    async def step(state: S) -> dict[str, Any]:
        return {"n": state.n + 1}

    graph = (
        GraphBuilder(S)
        .use(TimingMiddleware.for_graph(on_complete))
        .add_node("first", step)
        .add_node("second", step)
        .add_edge("first", "second")
        .add_edge("second", END)
        .set_entry("first")
        .compile()
    )
    assert (await graph.invoke(S())).n == 2
    assert [r.node_name for r in records] == ["first", "second"]
    assert all(r.outcome == "success" for r in records)
