"""The retry engine (openarmature_nodes.retrying), on asyncio and trio."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from openarmature_nodes.llm.errors import (
    ProviderAuthentication,
    ProviderInvalidResponse,
    ProviderModelNotLoaded,
    ProviderRateLimit,
    ProviderUnavailable,
    StructuredOutputInvalid,
)
from openarmature_nodes.retrying import (
    RetryConfig,
    constant_backoff,
    default_classifier,
    exponential_full_jitter,
    is_transient,
    retry_after_of,
    run_with_retry,
)

from .middleware_fakes import VirtualTime

pytestmark = pytest.mark.anyio


class Carrier(Exception):
    """Stands in for the engine's node_exception carrier."""

    category = "node_exception"


def flaky(*failures: BaseException | None, result: Any = "ok") -> tuple[list[int], Any]:
    seen: list[int] = []

    async def attempt(index: int) -> Any:
        seen.append(index)
        if index < len(failures) and failures[index] is not None:
            raise failures[index]  # type: ignore[misc]
        return result

    return seen, attempt


def config(vt: VirtualTime, **kw: Any) -> RetryConfig:
    kw.setdefault("backoff", constant_backoff(0.0))
    return RetryConfig(clock=vt.clock, sleep=vt.sleep, **kw)


# --- defaults and classification ---------------------------------------------


def test_spec_defaults() -> None:
    cfg = RetryConfig()
    assert cfg.max_attempts == 3
    assert cfg.classifier is default_classifier
    assert cfg.on_retry is None
    assert cfg.per_attempt_override == () and cfg.reask is None


def test_full_jitter_window() -> None:
    top = exponential_full_jitter(rng=lambda: 0.999999)
    assert top(0) == pytest.approx(1.0, rel=1e-5)
    assert top(3) == pytest.approx(8.0, rel=1e-5)
    assert top(10) == pytest.approx(30.0, rel=1e-5)  # capped
    assert top(10_000) == pytest.approx(30.0, rel=1e-5)  # no overflow
    assert exponential_full_jitter(rng=lambda: 0.0)(5) == 0.0
    real = exponential_full_jitter()
    assert all(0.0 <= real(2) <= 4.0 for _ in range(200))


def test_invalid_configs_rejected() -> None:
    with pytest.raises(ValueError):
        RetryConfig(max_attempts=0)
    with pytest.raises(TypeError):
        RetryConfig(max_attempts=True)
    with pytest.raises(TypeError):
        RetryConfig(per_attempt_override={"temperature": 1.0})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ProviderUnavailable("x"), True),
        (ProviderRateLimit("x"), True),
        (ProviderModelNotLoaded("x"), True),
        (ProviderAuthentication("x"), False),
        (ProviderInvalidResponse("x"), False),
        (StructuredOutputInvalid("x", output_content="", error_message="e"), False),
        (ValueError("plain"), False),
    ],
)
def test_default_classifier_by_category(exc: Exception, expected: bool) -> None:
    assert default_classifier(exc, None) is expected


def test_classifier_looks_one_cause_deep() -> None:
    def chained(outer: Exception, inner: BaseException) -> Exception:
        outer.__cause__ = inner
        return outer

    assert is_transient(chained(Carrier("wrap"), ProviderUnavailable("down")))
    assert is_transient(chained(ValueError("plain"), ProviderRateLimit("slow")))
    # two carriers deep: the inner scope's business, not ours
    assert not is_transient(chained(Carrier("a"), chained(Carrier("b"), ProviderUnavailable("x"))))
    # a surface that re-categorized wins over its transient cause
    assert not is_transient(chained(ProviderInvalidResponse("bad"), ProviderUnavailable("x")))
    assert not is_transient(chained(Carrier("wrap"), ProviderAuthentication("no")))


def test_cancellation_is_never_transient() -> None:
    assert not is_transient(KeyboardInterrupt())
    assert not RetryConfig(classifier=lambda exc: True).is_retryable(KeyboardInterrupt())


def test_retry_after_read_from_error_or_cause() -> None:
    assert retry_after_of(ProviderRateLimit("x", retry_after=2.5)) == 2.5
    wrapped = Carrier("wrap")
    wrapped.__cause__ = ProviderRateLimit("x", retry_after=3)
    assert retry_after_of(wrapped) == 3.0
    assert retry_after_of(ProviderRateLimit("x", retry_after=None)) is None
    assert retry_after_of(ValueError()) is None


# --- the loop ------------------------------------------------------------------


async def test_success_first_time_never_sleeps() -> None:
    vt = VirtualTime()
    seen, attempt = flaky()
    assert await run_with_retry(config(vt), attempt) == "ok"
    assert seen == [0] and vt.sleeps == []


async def test_transient_then_success_with_on_retry_before_each_sleep() -> None:
    vt = VirtualTime()
    log: list[tuple[str, int, int]] = []

    async def on_retry(exc: Exception, index: int) -> None:
        log.append((type(exc).__name__, index, len(vt.sleeps)))

    seen, attempt = flaky(ProviderUnavailable("a"), ProviderRateLimit("b"))
    cfg = config(vt, backoff=constant_backoff(0.25), on_retry=on_retry)
    assert await run_with_retry(cfg, attempt) == "ok"
    assert seen == [0, 1, 2]
    assert vt.sleeps == [0.25, 0.25]
    # on_retry fires before the sleep of the same round, with the failed attempt's index
    assert log == [("ProviderUnavailable", 0, 0), ("ProviderRateLimit", 1, 1)]


async def test_non_transient_raises_at_once() -> None:
    vt = VirtualTime()
    err = ProviderAuthentication("bad key")
    seen, attempt = flaky(err)
    with pytest.raises(ProviderAuthentication) as info:
        await run_with_retry(config(vt, max_attempts=5), attempt)
    assert info.value is err and seen == [0] and vt.sleeps == []


async def test_exhaustion_raises_the_last_error() -> None:
    vt = VirtualTime()
    errors = [ProviderUnavailable(f"down {i}") for i in range(3)]
    seen, attempt = flaky(*errors)
    with pytest.raises(ProviderUnavailable) as info:
        await run_with_retry(config(vt), attempt)
    assert info.value is errors[2] and seen == [0, 1, 2] and len(vt.sleeps) == 2


async def test_max_attempts_one_disables_retry() -> None:
    vt = VirtualTime()
    seen, attempt = flaky(ProviderUnavailable("x"))
    with pytest.raises(ProviderUnavailable):
        await run_with_retry(config(vt, max_attempts=1), attempt)
    assert seen == [0]


async def test_classifier_gets_state_or_not() -> None:
    vt = VirtualTime()
    states: list[Any] = []

    def two(exc: Exception, state: Any) -> bool:
        states.append(state)
        return isinstance(exc, ValueError)

    seen, attempt = flaky(ValueError("x"))
    assert await run_with_retry(config(vt, classifier=two), attempt, state={"k": 1}) == "ok"
    assert states == [{"k": 1}]

    seen, attempt = flaky(KeyError("x"))
    cfg = config(vt, classifier=lambda exc: isinstance(exc, KeyError))
    assert await run_with_retry(cfg, attempt) == "ok" and seen == [0, 1]


async def test_also_retry_widens_for_one_run() -> None:
    vt = VirtualTime()
    bad = StructuredOutputInvalid("x", output_content="{}", error_message="e")
    seen, attempt = flaky(bad)
    assert await run_with_retry(config(vt), attempt, also_retry=lambda e: e is bad) == "ok"
    assert seen == [0, 1]
    _seen, attempt = flaky(bad)
    with pytest.raises(StructuredOutputInvalid):
        await run_with_retry(config(vt), attempt)


async def test_error_shaped_result_is_not_retried() -> None:
    vt = VirtualTime()
    seen, attempt = flaky(result={"error": "boom"})
    assert await run_with_retry(config(vt), attempt) == {"error": "boom"}
    assert seen == [0]


async def test_cancellation_propagates_without_retry() -> None:
    vt = VirtualTime()
    calls: list[int] = []
    classified: list[BaseException] = []

    def classifier(exc: Exception, state: Any) -> bool:
        classified.append(exc)
        return True

    async def attempt(index: int) -> None:
        calls.append(index)
        await anyio.sleep_forever()

    with anyio.CancelScope() as scope:
        scope.cancel()
        await run_with_retry(config(vt, classifier=classifier, max_attempts=5), attempt)
    assert scope.cancelled_caught
    assert calls == [0] and classified == [] and vt.sleeps == []


async def test_cancellation_during_backoff_sleep_propagates() -> None:
    calls: list[int] = []

    async def attempt(index: int) -> None:
        calls.append(index)
        raise ProviderUnavailable("down")

    with anyio.CancelScope() as scope:
        cfg = RetryConfig(backoff=constant_backoff(3600.0), max_delay=None)

        async def cancel_soon() -> None:
            scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_soon)
            await run_with_retry(cfg, attempt)
    assert scope.cancelled_caught and calls == [0]


# --- retry_after, max_delay, deadline ------------------------------------------


async def test_wait_is_at_least_retry_after_even_when_jitter_is_shorter() -> None:
    vt = VirtualTime()
    _seen, attempt = flaky(ProviderRateLimit("slow down", retry_after=2.0))
    cfg = config(vt, backoff=exponential_full_jitter(rng=lambda: 0.1))  # jitter says 0.1 s
    assert await run_with_retry(cfg, attempt) == "ok"
    assert vt.sleeps == [2.0]


async def test_longer_backoff_beats_shorter_retry_after() -> None:
    vt = VirtualTime()
    _seen, attempt = flaky(ProviderRateLimit("slow", retry_after=0.5))
    await run_with_retry(config(vt, backoff=constant_backoff(4.0)), attempt)
    assert vt.sleeps == [4.0]


async def test_retry_after_can_be_ignored_and_is_bounded_by_max_delay() -> None:
    vt = VirtualTime()
    _, attempt = flaky(ProviderRateLimit("slow", retry_after=2.0))
    await run_with_retry(config(vt, honor_retry_after=False), attempt)
    assert vt.sleeps == [0.0]
    vt = VirtualTime()
    _seen, attempt = flaky(ProviderRateLimit("slow", retry_after=3600.0))
    await run_with_retry(config(vt, max_delay=10.0), attempt)
    assert vt.sleeps == [10.0]


async def test_deadline_raises_instead_of_sleeping_past_it() -> None:
    vt = VirtualTime()
    errors = [ProviderUnavailable(f"down {i}") for i in range(5)]
    seen, attempt = flaky(*errors)
    cfg = config(vt, max_attempts=5, backoff=constant_backoff(5.0), deadline=7.0)
    with pytest.raises(ProviderUnavailable) as info:
        await run_with_retry(cfg, attempt)
    # attempt 0 at t=0, sleep 5 (ends at 5 <= 7), attempt 1 at t=5; the next sleep would end at 10
    assert seen == [0, 1] and vt.sleeps == [5.0] and info.value is errors[1]
    assert vt.now == 5.0


async def test_deadline_against_a_long_retry_after() -> None:
    vt = VirtualTime()
    seen, attempt = flaky(ProviderRateLimit("slow", retry_after=30.0))
    with pytest.raises(ProviderRateLimit):
        await run_with_retry(config(vt, deadline=10.0), attempt)
    assert vt.sleeps == [] and seen == [0]


# --- tenacity, used as designed ------------------------------------------------


async def test_default_sleep_is_anyio_sleep_on_both_loops() -> None:
    # No injected sleep: tenacity awaits anyio.sleep, which must work on this backend.
    seen, attempt = flaky(ProviderUnavailable("down"), ProviderUnavailable("down"))
    cfg = RetryConfig(backoff=constant_backoff(0.0))
    assert cfg.sleep is anyio.sleep
    assert await run_with_retry(cfg, attempt) == "ok"
    assert seen == [0, 1, 2]


async def test_the_configured_sleep_is_the_one_that_waits() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    seen, attempt = flaky(ProviderUnavailable("a"), ProviderUnavailable("b"))
    cfg = RetryConfig(backoff=constant_backoff(0.5), sleep=sleep, max_delay=None)
    assert await run_with_retry(cfg, attempt) == "ok"
    assert waits == [0.5, 0.5] and seen == [0, 1, 2]


def test_the_engine_uses_only_tenacitys_public_names() -> None:
    import ast
    import inspect

    import tenacity

    from openarmature_nodes import retrying

    tree = ast.parse(inspect.getsource(retrying))
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tenacity"):
            assert node.module == "tenacity", f"imports from {node.module}"
            used |= {alias.name for alias in node.names}
        if isinstance(node, ast.Import):
            assert not [a for a in node.names if a.name.startswith("tenacity")]
    assert used and used <= set(tenacity.__all__)
    source = inspect.getsource(retrying)
    for private in ("begin(", ".iter(", "DoAttempt", "DoSleep", "set_exception", "type: ignore"):
        assert private not in source, private


def test_transient_is_decided_in_one_place() -> None:
    """The error classes' ``transient`` flags, the LLM layer's exported set and
    the retry engine's classifier all read the one list."""
    from openarmature_nodes import retrying
    from openarmature_nodes.llm import errors

    assert errors.TRANSIENT_CATEGORIES is retrying.TRANSIENT_CATEGORIES

    def subclasses(cls: type) -> list[type]:
        return [cls, *(s for sub in cls.__subclasses__() for s in subclasses(sub))]

    classes = subclasses(errors.ProviderError)
    assert len(classes) >= 10
    for cls in classes:
        instance = cls.__new__(cls)
        in_list = cls.category in errors.TRANSIENT_CATEGORIES
        assert cls.transient is in_list, cls
        assert is_transient(instance) is in_list, cls
    assert {c.category for c in classes if c.transient} == errors.TRANSIENT_CATEGORIES
