"""Regression tests for what outside tests and a new user found (issue 14)."""

from __future__ import annotations

import copy
import pickle

import httpx
import pytest

from resilience import (
    Bulkhead,
    BulkheadFullError,
    CircuitBreaker,
    CircuitOpenError,
    ResilienceError,
    Retry,
    TimeoutError,
    backoff,
)
from resilience.contrib.httpx import (
    HTTPBulkheadFullError,
    HTTPCircuitOpenError,
    HTTPTimeoutError,
    ResilientTransport,
)
from resilience.testing import FakeClock

# Wrong numbers ------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", [backoff.fixed(2.0, jitter="decorrelated")])
def test_decorrelated_jitter_of_a_fixed_delay_never_goes_below_it(schedule: object) -> None:
    previous = 0.0
    for attempt in range(1, 50):
        previous = schedule.delay(attempt, previous)  # type: ignore[attr-defined]
        assert previous == 2.0


def test_decorrelated_jitter_from_zero_uses_the_first_nonzero_delay_as_its_floor() -> None:
    schedule = backoff.linear(0, 0.5, cap=10, jitter="decorrelated")
    previous = 0.0
    for attempt in range(1, 50):
        previous = schedule.delay(attempt, previous)
        assert 0.5 <= previous <= 10


@pytest.mark.parametrize(
    ("build", "param"),
    [
        (lambda: backoff.exponential(0, cap=5, jitter="decorrelated"), "initial"),
        (lambda: backoff.fixed(0, jitter="decorrelated"), "delay"),
        (lambda: backoff.linear(0, 0, jitter="decorrelated"), "step"),
    ],
)
def test_decorrelated_jitter_that_could_never_wait_is_refused(build: object, param: str) -> None:
    with pytest.raises(ValueError, match=rf"{param} must be > 0 with jitter='decorrelated'"):
        build()  # type: ignore[operator]


def test_an_exponential_schedule_from_zero_stays_at_zero() -> None:
    schedule = backoff.exponential(0, cap=5)
    assert [schedule.delay(n, 0.0) for n in (1, 1024, 1025, 5000)] == [0.0, 0.0, 0.0, 0.0]


def test_retry_after_zero_leaves_the_schedules_delay() -> None:
    clock = FakeClock()
    responses = iter([httpx.Response(503, headers={"Retry-After": "0"}), httpx.Response(200)])
    transport = ResilientTransport(
        httpx.MockTransport(lambda request: next(responses)),
        retry=Retry(2, backoff=backoff.fixed(1.5), clock=clock),
    )
    with httpx.Client(transport=transport) as client:
        assert client.get("https://api.test/").status_code == 200
    assert clock.sleeps == [1.5]


# Misuse that passes silently ------------------------------------------------------------


def test_generator_functions_are_refused_at_decoration() -> None:
    def numbers() -> object:
        yield 1

    async def stream() -> object:
        yield 1

    for policy in (Retry(2), CircuitBreaker("gen"), Bulkhead(1), Retry(2) | Bulkhead(1)):
        for fn in (numbers, stream):
            with pytest.raises(TypeError, match="generator function"):
                policy(fn)  # type: ignore[operator]


# Errors cross process boundaries ---------------------------------------------------------


def _errors() -> list[ResilienceError]:
    request = httpx.Request("GET", "https://api.test/")
    open_error = CircuitOpenError(name="cb", retry_after=1.5)
    full = BulkheadFullError(name="bh", capacity=3)
    timed_out = TimeoutError(name="t", seconds=2.0)
    return [
        open_error,
        full,
        timed_out,
        HTTPCircuitOpenError(open_error, request),
        HTTPBulkheadFullError(full, request),
        HTTPTimeoutError(timed_out, request),
    ]


@pytest.mark.parametrize("error", _errors(), ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("how", ["pickle", "copy"])
def test_every_public_error_round_trips_with_its_type_and_fields(
    error: ResilienceError, how: str
) -> None:
    twin = pickle.loads(pickle.dumps(error)) if how == "pickle" else copy.copy(error)
    assert type(twin) is type(error)
    assert str(twin) == str(error)
    for field in ("name", "retry_after", "capacity", "seconds"):
        assert getattr(twin, field, None) == getattr(error, field, None)
    if hasattr(error, "request"):
        assert twin.request.url == error.request.url  # type: ignore[attr-defined]


# Lost or doubled permits -------------------------------------------------------------


def test_a_permit_granted_to_a_waiter_on_a_closed_loop_is_returned_once() -> None:
    import asyncio

    from resilience._parking import AsyncioWaiter

    bulkhead = Bulkhead(1, max_waiting=1)
    assert bulkhead.admit() is True  # the one permit, held
    loop = asyncio.new_event_loop()
    waiter = AsyncioWaiter(loop)
    assert bulkhead._enqueue(waiter) is False  # parked
    waiter.fut.add_done_callback(lambda _: None)  # as the awaiting task does
    loop.close()  # the waiter's loop goes away while it waits
    # The holder releases: the permit is handed to the waiter, whose wake
    # fails (closed loop), so the waker takes it back...
    bulkhead.settle(True, None, None)
    # ...and the waiter, abandoning as its loop dies, must not give it back again.
    bulkhead._abandon(waiter)
    assert bulkhead.stats.in_flight == 0
    assert bulkhead.admit() is True  # one permit again, not two
    with pytest.raises(BulkheadFullError):
        bulkhead._acquire_nowait()


# Memory bounded by a small constant --------------------------------------------------


def _size_of(build: object) -> int:
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = build()  # type: ignore[operator]
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del kept
    return after - before


def test_a_long_time_window_and_retry_budget_take_little_memory() -> None:
    from resilience import RetryBudget, TimeWindow

    assert _size_of(lambda: RetryBudget(window=86400 * 30)) < 20_000
    assert _size_of(lambda: RetryBudget(window=10**30)) < 20_000
    assert _size_of(lambda: TimeWindow(3600)) < 8_000
    assert _size_of(lambda: TimeWindow(10**30)) < 8_000


def test_a_coarse_time_window_still_counts_and_forgets() -> None:
    from resilience import TimeWindow

    window = TimeWindow(3600)  # buckets of 30 s
    window.record(10.0, True, False)
    window.record(1000.0, False, False)
    assert window.totals(1000.0) == (2, 1, 0)
    assert window.totals(3650.0) == (1, 0, 0)  # the call at 10 s has left
    assert window.totals(10_000.0) == (0, 0, 0)


def test_a_huge_count_window_is_refused_naming_its_size() -> None:
    from resilience import CountWindow

    with pytest.raises(ValueError, match="size must be <= 1,000,000"):
        CountWindow(10**30)


# Validation, one rule everywhere -------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "error", "param"),
    [
        (lambda: Retry(max_elapsed=True), TypeError, "max_elapsed"),
        (lambda: Retry(max_elapsed="5"), TypeError, "max_elapsed"),
        (lambda: __import__("resilience").RetryBudget(window=True), TypeError, "window"),
        (lambda: FakeClock(True), TypeError, "start"),
        (lambda: __import__("resilience").Deadline(float("nan"), FakeClock()), ValueError, "at"),
        (lambda: Bulkhead("5"), TypeError, "max_concurrent"),
        (lambda: Bulkhead(None), TypeError, "max_concurrent"),
    ],
)
def test_bad_arguments_raise_the_right_error_naming_the_parameter(
    build: object, error: type[Exception], param: str
) -> None:
    with pytest.raises(error, match=param):
        build()  # type: ignore[operator]


@pytest.mark.parametrize("seconds", [-1, 0, float("inf"), float("nan")])
def test_a_deadline_takes_the_same_seconds_as_a_timeout(seconds: float) -> None:
    import resilience

    with pytest.raises(ValueError, match="seconds"):
        resilience.Timeout(seconds)
    with pytest.raises(ValueError, match="seconds"), resilience.deadline(seconds):
        pass


def test_seconds_may_be_a_timedelta() -> None:
    import datetime

    import resilience

    two = datetime.timedelta(seconds=2)
    assert resilience.Timeout(two).seconds == 2.0
    assert Retry(max_elapsed=two) is not None
    with resilience.deadline(two) as limit:
        assert 0 < limit.remaining() <= 2.0


def test_instrument_refuses_buckets_that_are_not_numbers() -> None:
    from prometheus_client import CollectorRegistry

    from resilience.contrib.prometheus import instrument

    with pytest.raises(TypeError, match="buckets"):
        instrument(CollectorRegistry(), durations=True, buckets="5")  # type: ignore[arg-type]


def test_call_sync_refuses_an_async_function_at_once_without_retrying() -> None:
    from resilience import Fallback

    calls = 0

    async def fetch() -> int:
        nonlocal calls
        calls += 1
        return 1

    for policy in (Retry(3), Retry(3) | CircuitBreaker("misuse"), Fallback(0) | Retry(3)):
        with pytest.raises(TypeError, match=r"is async; use await \.call"):
            policy.call_sync(fetch)
    assert calls == 0


async def test_call_refuses_a_callable_that_returns_no_awaitable_at_once() -> None:
    from resilience import Fallback

    calls = 0

    def plain() -> int:
        nonlocal calls
        calls += 1
        return 1

    for policy in (Retry(3), Fallback(0), Fallback(0) | Retry(3), Retry(3) | Bulkhead(1)):
        with pytest.raises(TypeError, match=r"returned 1; use \.call_sync"):
            await policy.call(plain)
    assert calls == 4  # once each: no retry, and no fallback hid it


async def test_call_still_takes_a_lambda_that_returns_a_coroutine() -> None:
    attempts = 0

    async def flaky(n: int) -> int:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError
        return n

    retry = Retry(3, backoff=backoff.immediate())
    assert await retry.call(lambda n: flaky(n), 7) == 7
    assert attempts == 3
    breaker = CircuitBreaker("closed-coro")
    breaker.force_open()
    with pytest.raises(CircuitOpenError):  # its first coroutine is closed, never awaited
        await breaker.call(lambda: flaky(1))


def test_every_duration_parameter_takes_a_timedelta() -> None:
    import datetime

    from resilience import TimeWindow
    from resilience.contrib.httpx import AsyncResilientTransport

    minute = datetime.timedelta(minutes=1)
    assert backoff.fixed(minute).delay(1, 0.0) == 60.0
    assert backoff.exponential(minute, cap=minute * 2).delay(2, 0.0) == 120.0
    assert TimeWindow(minute).seconds == 60
    breaker = CircuitBreaker("td", open_duration=minute, window=TimeWindow(minute))
    assert breaker is not None
    assert Bulkhead(1, max_waiting=1, max_wait=minute).max_wait == 60.0
    AsyncResilientTransport(max_retry_after=minute)


def test_per_host_must_be_a_bool() -> None:
    from resilience.contrib.httpx import AsyncResilientTransport

    with pytest.raises(TypeError, match="per_host"):
        AsyncResilientTransport(per_host="5")  # type: ignore[arg-type]


# Our own rejections are not the dependency's failures ------------------------------------


async def test_the_flagship_pipeline_does_not_open_its_breaker_on_load_shedding() -> None:
    import anyio

    breaker = CircuitBreaker("flagship", minimum_calls=2, failure_rate=0.5)
    bulkhead = Bulkhead(1)
    release = anyio.Event()

    async def slow() -> None:
        await release.wait()

    policy = Retry(1) | breaker | bulkhead
    async with anyio.create_task_group() as tg:
        tg.start_soon(policy.call, slow)
        await anyio.wait_all_tasks_blocked()
        for _ in range(5):
            with pytest.raises(BulkheadFullError):
                await policy.call(slow)
        release.set()
    assert breaker.state.value == "closed"
    assert (breaker.stats.failed_total, breaker.stats.ignored_total) == (0, 5)
