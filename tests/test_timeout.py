from __future__ import annotations

import asyncio
import time
from typing import Any

import anyio
import pytest

import resilience
from resilience import Retry, Timeout, backoff
from resilience.events import Event, TimedOut
from resilience.testing import FakeClock


async def test_slow_work_is_cancelled_and_raises_our_timeout_error() -> None:
    clock = FakeClock()
    timeout = Timeout(1.0, name="db", clock=clock)
    finished = False

    async def slow() -> None:
        nonlocal finished
        await clock.sleep(5)
        finished = True

    with pytest.raises(resilience.TimeoutError) as info:
        await timeout.call(slow)
    assert not finished
    assert isinstance(info.value, TimeoutError)  # the builtin too
    assert (info.value.name, info.value.seconds) == ("db", 1.0)
    assert timeout.stats.timeouts == 1


async def test_fast_work_returns_its_value_and_leaves_no_timer_behind() -> None:
    clock = FakeClock()
    timeout = Timeout(1.0, clock=clock)

    async def fast(x: int) -> int:
        await clock.sleep(0.5)
        return x + 1

    assert await timeout.call(fast, 1) == 2
    clock.advance(10)  # the cancelled timer must not fire into a later await
    await anyio.lowlevel.checkpoint()
    assert timeout.stats.timeouts == 0


async def test_real_clock_timeout_fires_on_each_backend() -> None:
    timeout = Timeout(0.05)
    with anyio.fail_after(5):
        with pytest.raises(resilience.TimeoutError):
            await timeout.call(anyio.sleep, 30)
    assert await timeout.call(anyio.sleep, 0) is None


async def test_outer_cancellation_is_not_mistaken_for_a_timeout() -> None:
    timeout = Timeout(60)
    events: list[Event] = []
    timeout.add_listener(events.append)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(timeout.call, anyio.sleep_forever)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
    assert scope.cancelled_caught
    assert timeout.stats.timeouts == 0
    assert events == []


async def test_inner_timeout_firing_inside_an_outer_one() -> None:
    clock = FakeClock()
    inner = Timeout(1, name="inner", clock=clock)
    outer = Timeout(10, name="outer", clock=clock)
    with pytest.raises(resilience.TimeoutError) as info:
        await outer.call(inner.call, clock.sleep, 5)
    assert info.value.name == "inner"
    assert outer.stats.timeouts == 0


async def test_timeout_inside_retry_limits_each_attempt() -> None:
    clock = FakeClock()
    attempts: list[int] = []

    async def slow_then_fast() -> str:
        attempts.append(len(attempts))
        if len(attempts) < 3:
            await clock.sleep(5)
        return "done"

    policy = Retry(3, backoff=backoff.immediate(), clock=clock) | Timeout(1, clock=clock)
    assert await policy.call(slow_then_fast) == "done"
    assert len(attempts) == 3


async def test_timeout_outside_retry_limits_the_whole_call() -> None:
    clock = FakeClock()
    calls = 0

    async def fails() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError

    policy = Timeout(2.5, clock=clock) | Retry(10, backoff=backoff.fixed(1), clock=clock)
    with pytest.raises(ConnectionError) as info:
        await policy.call(fails)
    # attempts at t=0, 1, 2; a wait to t=3 would pass the 2.5 s deadline, so
    # the retry answers with the last error at once instead of being cut off.
    assert calls == 3
    assert clock.now() == 2
    assert "(deadline)" in info.value.__notes__[-1]


async def test_total_timeout_cuts_a_slow_attempt_inside_a_retry() -> None:
    clock = FakeClock()

    async def slow() -> None:
        await clock.sleep(10)

    policy = Timeout(2.5, name="total", clock=clock) | Retry(3, clock=clock)
    with pytest.raises(resilience.TimeoutError) as info:
        await policy.call(slow)
    assert info.value.name == "total"
    assert clock.now() == 10  # the fake sleep advanced time; the work was cancelled at 2.5


async def test_inner_timeout_never_outlives_the_outer_deadline() -> None:
    clock = FakeClock()
    outer = Timeout(1, name="outer", clock=clock)
    inner = Timeout(60, name="inner", clock=clock)
    seen: list[float] = []

    async def work() -> None:
        limit = resilience.current_deadline()
        assert limit is not None
        seen.append(limit.remaining())
        await clock.sleep(5)

    with pytest.raises(resilience.TimeoutError):
        await outer.call(inner.call, work)
    assert seen == [1.0]


async def test_deadline_context_bounds_timeouts_and_retries() -> None:
    calls = 0

    async def fails() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError

    clock = FakeClock()
    with resilience.deadline(1.5, clock=clock) as limit:
        with pytest.raises(ConnectionError):
            await Retry(5, backoff=backoff.fixed(1), clock=clock).call(fails)
        assert calls == 2
        with resilience.deadline(10, clock=clock) as wider:
            assert wider is limit  # never extended
        with pytest.raises(resilience.TimeoutError):
            await Timeout(30, clock=clock).call(clock.sleep, 5)
    assert resilience.current_deadline() is None


async def test_timed_out_event_is_emitted() -> None:
    clock = FakeClock()
    timeout = Timeout(2, name="slowpoke", clock=clock)
    events: list[Event] = []
    timeout.add_listener(events.append)
    with pytest.raises(TimeoutError):
        await timeout.call(clock.sleep, 3)
    assert events == [TimedOut("slowpoke", 2.0)]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_task_cancel_count_is_restored() -> None:
    task = asyncio.current_task()
    assert task is not None
    with pytest.raises(resilience.TimeoutError):
        await Timeout(0.01).call(asyncio.sleep, 10)
    assert task.cancelling() == 0

    async def swallows() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "swallowed"
        return "slept"

    assert await Timeout(0.01).call(swallows) == "swallowed"
    assert task.cancelling() == 0
    await asyncio.sleep(0)  # no stray cancellation is pending


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_outer_cancel_racing_the_timer_stays_a_cancellation() -> None:
    async def victim() -> None:
        await Timeout(0.01).call(asyncio.sleep, 10)

    task = asyncio.ensure_future(victim())
    await asyncio.sleep(0.05)  # the timer has fired and been handled by now
    assert task.done()
    with pytest.raises(resilience.TimeoutError):
        task.result()

    started = asyncio.Event()

    async def waits() -> None:
        started.set()
        await asyncio.sleep(10)

    task = asyncio.ensure_future(Timeout(0.01).call(waits))
    await started.wait()
    # Block the loop past the deadline, then cancel from outside: the timer
    # and the outer cancel land before the task runs again.
    time.sleep(0.03)  # noqa: ASYNC251
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_sync_functions_are_refused_at_decoration_with_advice() -> None:
    with pytest.raises(TypeError, match="cannot interrupt a running thread"):

        @Timeout(1)
        def blocking() -> None: ...

    with pytest.raises(TypeError, match="cannot"):
        Timeout(1).call_sync(print)


@pytest.mark.parametrize(
    ("seconds", "error"),
    [(0, ValueError), (-1, ValueError), (float("inf"), ValueError), ("1", TypeError)],
)
def test_bad_seconds_are_refused(seconds: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="seconds"):
        Timeout(seconds)


def test_a_clock_without_timers_cannot_drive_a_timeout() -> None:
    class Bare:
        def now(self) -> float:
            return 0.0

        async def sleep(self, seconds: float) -> None: ...

        def sleep_sync(self, seconds: float) -> None: ...

    with pytest.raises(TypeError, match="call_at"):
        Timeout(1, clock=Bare())
