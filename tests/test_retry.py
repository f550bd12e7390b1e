from __future__ import annotations

import inspect
from typing import Any

import anyio
import pytest

from resilience import (
    BulkheadFullError,
    CircuitOpenError,
    Retry,
    RetryBudget,
    backoff,
)
from resilience.events import Event, RetryExhausted, RetryScheduled
from resilience.testing import FakeClock


class Flaky:
    """Fails ``failures`` times with ``exc``, then returns ``value``."""

    def __init__(self, failures: int, exc: BaseException | None = None, value: Any = "ok") -> None:
        self.failures = failures
        self.exc = exc if exc is not None else ConnectionError("boom")
        self.value = value
        self.calls = 0

    def sync(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        self.args = (args, kwargs)
        if self.calls <= self.failures:
            raise self.exc
        return self.value

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        await anyio.lowlevel.checkpoint()
        return self.sync(*args, **kwargs)


def make(attempts: int = 3, **kwargs: Any) -> tuple[Retry, FakeClock]:
    clock = FakeClock()
    kwargs.setdefault("backoff", backoff.fixed(1.0))
    return Retry(attempts, clock=clock, **kwargs), clock


async def test_first_attempt_success_makes_one_call_and_no_wait() -> None:
    retry, clock = make()
    flaky = Flaky(0)
    assert await retry.call(flaky, 1, key="v") == "ok"
    assert flaky.calls == 1
    assert flaky.args == ((1,), {"key": "v"})
    assert clock.sleeps == []
    assert retry.stats.success_without_retry == 1


async def test_retries_until_success_waiting_on_the_schedule() -> None:
    retry, clock = make(4, backoff=backoff.exponential(1, 2, cap=60))
    flaky = Flaky(3)
    assert await retry.call(flaky) == "ok"
    assert flaky.calls == 4
    assert clock.sleeps == [1, 2, 4]
    stats = retry.stats
    assert (stats.success_with_retry, stats.retries) == (1, 3)


async def test_gives_up_with_the_last_attempts_own_exception_and_a_note() -> None:
    retry, clock = make(3)
    errors = [OSError(f"attempt {n}") for n in range(3)]
    calls = 0

    async def fails() -> None:
        nonlocal calls
        calls += 1
        raise errors[calls - 1]

    with pytest.raises(OSError, match="attempt 2") as info:
        await retry.call(fails)
    assert info.value is errors[2]
    assert any("3 attempts" in note for note in info.value.__notes__)
    assert calls == 3
    assert clock.sleeps == [1.0, 1.0]
    assert retry.stats.failed_with_retry == 1


def test_sync_path_behaves_the_same() -> None:
    retry, clock = make(3)
    flaky = Flaky(2)
    assert retry.call_sync(flaky.sync) == "ok"
    assert flaky.calls == 3
    assert clock.sleeps == [1.0, 1.0]
    always = Flaky(10)
    with pytest.raises(ConnectionError):
        retry.call_sync(always.sync)
    assert always.calls == 3


async def test_on_types_limit_what_is_retried() -> None:
    retry, _ = make(3, on=(ConnectionError, TimeoutError))
    flaky = Flaky(5, ValueError("bad input"))
    with pytest.raises(ValueError, match="bad input"):
        await retry.call(flaky)
    assert flaky.calls == 1
    assert retry.stats.failed_without_retry == 1


async def test_on_predicate_decides_per_exception() -> None:
    retry, _ = make(5, on=lambda exc: "transient" in str(exc))
    flaky = Flaky(2, RuntimeError("transient glitch"))
    assert await retry.call(flaky) == "ok"
    permanent = Flaky(2, RuntimeError("permanent"))
    with pytest.raises(RuntimeError):
        await retry.call(permanent)
    assert permanent.calls == 1


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(CircuitOpenError(name="b", retry_after=1.0), id="circuit-open"),
        pytest.param(BulkheadFullError(name="b", capacity=1), id="bulkhead-full"),
    ],
)
async def test_rejections_by_other_policies_are_never_retried(exc: Exception) -> None:
    retry, _ = make(5)
    flaky = Flaky(5, exc)
    with pytest.raises(type(exc)):
        await retry.call(flaky)
    assert flaky.calls == 1


def test_keyboard_interrupt_is_never_retried() -> None:
    retry, _ = make(5, on=BaseException)
    flaky = Flaky(5, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        retry.call_sync(flaky.sync)
    assert flaky.calls == 1


async def test_cancellation_is_never_retried_and_is_not_counted() -> None:
    retry, _ = make(5, on=BaseException)
    calls = 0

    async def blocks() -> None:
        nonlocal calls
        calls += 1
        await anyio.sleep_forever()

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(retry.call, blocks)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
    assert calls == 1
    stats = retry.stats
    assert stats.failed_without_retry == stats.failed_with_retry == 0


async def test_cancellation_during_the_backoff_wait_stops_at_once() -> None:
    # The system clock: the wait is 1000 s, and cancelling it must end it now.
    retry = Retry(3, backoff=backoff.fixed(1000))
    failed = anyio.Event()

    async def fails() -> None:
        failed.set()
        raise ConnectionError

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(retry.call, fails)
            await failed.wait()
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
    assert retry.stats.retries == 1


async def test_retryable_result_is_retried_and_the_last_one_returned() -> None:
    retry, clock = make(3, on_result=lambda status: status >= 500)
    statuses = iter([503, 502, 504])

    async def get() -> int:
        return next(statuses)

    assert await retry.call(get) == 504
    assert clock.sleeps == [1.0, 1.0]
    assert retry.stats.failed_with_retry == 1
    good = iter([503, 200])

    async def recovers() -> int:
        return next(good)

    assert await retry.call(recovers) == 200


async def test_max_elapsed_stops_before_a_wait_that_would_pass_it() -> None:
    retry, clock = make(10, backoff=backoff.fixed(3), max_elapsed=7)
    flaky = Flaky(10)
    with pytest.raises(ConnectionError) as info:
        await retry.call(flaky)
    # attempts at t=0, 3, 6; the next wait would end at 9 > 7
    assert flaky.calls == 3
    assert clock.sleeps == [3, 3]
    assert "max_elapsed" in info.value.__notes__[0]


async def test_max_elapsed_counts_time_spent_in_the_attempts() -> None:
    clock = FakeClock()
    retry = Retry(10, backoff=backoff.fixed(1), max_elapsed=5, clock=clock)
    calls = 0

    async def slow_failure() -> None:
        nonlocal calls
        calls += 1
        clock.advance(2)
        raise ConnectionError

    with pytest.raises(ConnectionError):
        await retry.call(slow_failure)
    # t=2 fail, wait to 3, t=5 fail: 5 + 1 > 5, stop
    assert calls == 2


def test_budget_shared_between_policies_caps_retries() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.5, min_per_second=0, window=10)
    first = Retry(3, backoff=backoff.immediate(), budget=budget, clock=clock)
    second = Retry(5, backoff=backoff.immediate(), budget=budget, clock=clock)
    events: list[Event] = []
    first.add_listener(events.append)
    ok = Flaky(0)
    for _ in range(4):  # 4 calls deposit 2 retries' worth
        first.call_sync(ok.sync)
    flaky = Flaky(100)
    with pytest.raises(ConnectionError) as info:
        second.call_sync(flaky.sync)
    # 5 calls in the window -> 2.5 retries allowed: two made, the third refused
    assert flaky.calls == 3
    assert "budget" in info.value.__notes__[-1]
    other = Flaky(100)
    with pytest.raises(ConnectionError):
        first.call_sync(other.sync)
    # 6 calls -> 3 retries allowed, 2 already spent: one more, then refused
    assert other.calls == 2
    assert isinstance(events[-1], RetryExhausted)
    assert events[-1].reason == "budget"
    clock.advance(11)  # the window forgets
    again = Flaky(1)
    for _ in range(2):
        first.call_sync(ok.sync)
    assert first.call_sync(again.sync) == "ok"


async def test_events_before_each_wait_and_when_giving_up() -> None:
    retry, _ = make(3, backoff=backoff.exponential(1, cap=10))
    events: list[Event] = []
    retry.add_listener(events.append)
    flaky = Flaky(10)
    with pytest.raises(ConnectionError):
        await retry.call(flaky)
    scheduled = [e for e in events if isinstance(e, RetryScheduled)]
    assert [(e.attempt, e.delay) for e in scheduled] == [(1, 1.0), (2, 2.0)]
    assert all(e.exception is flaky.exc and e.name == retry.name for e in scheduled)
    exhausted = events[-1]
    assert isinstance(exhausted, RetryExhausted)
    assert (exhausted.attempts, exhausted.reason) == (3, "attempts")


async def test_decorator_keeps_the_signature_and_metadata() -> None:
    retry, _ = make(2)
    flaky = Flaky(1)

    @retry
    async def fetch(url: str, *, limit: float = 1.0) -> str:
        """Fetch it."""
        return str(await flaky(url, limit=limit))

    assert fetch.__name__ == "fetch"
    assert fetch.__doc__ == "Fetch it."
    assert inspect.signature(fetch) == inspect.signature(fetch.__wrapped__)  # type: ignore[attr-defined]
    assert inspect.iscoroutinefunction(fetch)
    assert await fetch("u") == "ok"

    @retry
    def compute(x: int) -> int:
        return x * 2

    assert not inspect.iscoroutinefunction(compute)
    assert compute(21) == 42


async def test_call_accepts_methods_callable_objects_and_lambdas() -> None:
    retry, _ = make(2)

    class Client:
        async def get(self, path: str) -> str:
            return path.upper()

    assert await retry.call(Client().get, "x") == "X"
    assert await retry.call(Flaky(1)) == "ok"
    assert await retry.call(lambda: Client().get("y")) == "Y"


async def test_zero_delay_retries_do_not_sleep() -> None:
    retry, clock = make(3, backoff=backoff.immediate())
    flaky = Flaky(2)
    assert await retry.call(flaky) == "ok"
    assert clock.sleeps == []


async def test_default_backoff_is_jittered_exponential_under_its_cap() -> None:
    clock = FakeClock()
    retry = Retry(6, clock=clock)
    with pytest.raises(ConnectionError):
        await retry.call(Flaky(10))
    assert len(clock.sleeps) == 5
    assert all(0 <= d <= 5.0 for d in clock.sleeps)


@pytest.mark.parametrize(
    ("kwargs", "error", "param"),
    [
        ({"attempts": 0}, ValueError, "attempts"),
        ({"attempts": -3}, ValueError, "attempts"),
        ({"attempts": 2.5}, TypeError, "attempts"),
        ({"attempts": True}, TypeError, "attempts"),
        ({"max_elapsed": 0}, ValueError, "max_elapsed"),
        ({"max_elapsed": -1}, ValueError, "max_elapsed"),
        ({"backoff": 3}, TypeError, "backoff"),
        ({"on": "ValueError"}, TypeError, "on"),
        ({"on": (ValueError, 3)}, TypeError, "on"),
        ({"on_result": 5}, TypeError, "on_result"),
        ({"budget": 0.2}, TypeError, "budget"),
        ({"name": ""}, ValueError, "name"),
    ],
)
def test_bad_input_is_refused_at_construction(
    kwargs: dict[str, Any], error: type[Exception], param: str
) -> None:
    with pytest.raises(error, match=param):
        Retry(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"ratio": 1.5}, "ratio"),
        ({"ratio": -0.1}, "ratio"),
        ({"min_per_second": -1}, "min_per_second"),
        ({"window": 0}, "window"),
    ],
)
def test_bad_budget_input_names_the_parameter(kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(ValueError, match=param):
        RetryBudget(**kwargs)


def test_budget_floor_allows_retries_for_a_quiet_service() -> None:
    budget = RetryBudget(ratio=0.0, min_per_second=1, window=2)
    assert budget.available(0.0) == 2
    assert budget.try_retry(0.0)
    assert budget.try_retry(0.5)
    assert not budget.try_retry(0.9)
    assert budget.try_retry(2.5)  # the retries of second 0 expired


def test_unnamed_policies_get_distinct_generated_names() -> None:
    a, b = Retry(), Retry()
    assert a.name.startswith("retry-")
    assert a.name != b.name
    assert Retry(name="payments").name == "payments"
