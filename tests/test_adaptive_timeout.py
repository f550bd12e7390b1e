"""Timeout.adaptive: a limit that follows the latency of the calls it times."""

from __future__ import annotations

import math
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from resilience import LatencyTracker, Timeout, TimeoutError
from resilience.testing import FakeClock


def tracker_with(clock: FakeClock, seconds: float, count: int) -> LatencyTracker:
    tracker = LatencyTracker(clock=clock)
    for _ in range(count):
        tracker.record(seconds)
    return tracker


async def call_taking(policy: Timeout, clock: FakeClock, seconds: float) -> Any:
    async def work() -> str:
        await clock.sleep(seconds)
        return "done"

    return await policy.call(work)


async def test_the_default_holds_until_the_tracker_has_enough_samples() -> None:
    clock = FakeClock()
    tracker = LatencyTracker(clock=clock)
    timeout = Timeout.adaptive(tracker, min=0.01, max=5.0, default=2.0, min_samples=10, clock=clock)
    assert timeout.seconds == 2.0
    for _ in range(9):
        assert await call_taking(timeout, clock, 0.1) == "done"
    assert timeout.seconds == 2.0  # 9 samples: not yet
    clock.advance(1.0)
    assert await call_taking(timeout, clock, 0.1) == "done"
    # The 10th: p99 of 0.1 s times 1.5.
    assert timeout.seconds == pytest.approx(0.15, rel=0.05)
    assert timeout.stats.seconds == timeout.seconds


async def test_the_limit_is_clamped_between_min_and_max() -> None:
    clock = FakeClock()
    fast = tracker_with(clock, 0.001, 200)
    low = Timeout.adaptive(fast, min=0.05, max=1.0, min_samples=10, clock=clock)
    await call_taking(low, clock, 0.001)
    assert low.seconds == 0.05
    slow = tracker_with(clock, 30.0, 200)
    high = Timeout.adaptive(slow, min=0.05, max=1.0, min_samples=10, clock=clock)
    with pytest.raises(TimeoutError):
        await call_taking(high, clock, 5.0)  # the default (max) times it out
    assert high.seconds == 1.0


async def test_a_timeout_is_recorded_as_at_least_its_limit_so_the_limit_cannot_collapse() -> None:
    clock = FakeClock()
    tracker = tracker_with(clock, 0.2, 200)
    timeout = Timeout.adaptive(
        tracker, multiplier=1.5, min=0.01, max=10.0, min_samples=10, clock=clock
    )
    await call_taking(timeout, clock, 0.2)
    limit = timeout.seconds
    assert limit == pytest.approx(0.3, rel=0.05)
    for _ in range(300):  # the dependency slows down: every call times out
        clock.advance(0.01)
        with pytest.raises(TimeoutError) as raised:
            await call_taking(timeout, clock, 100.0)
        assert raised.value.seconds == timeout.seconds or raised.value.seconds >= limit
        clock.advance(1.0)
    # Recorded at least at the limit, the estimate climbs instead of falling.
    assert timeout.seconds >= limit
    assert timeout.stats.timeouts == 300


async def test_the_limit_follows_a_regime_shift() -> None:
    clock = FakeClock()
    tracker = LatencyTracker(clock=clock)
    timeout = Timeout.adaptive(
        tracker, multiplier=2.0, min=0.001, max=10.0, min_samples=50, clock=clock
    )
    for _ in range(200):
        await call_taking(timeout, clock, 0.01)
    clock.advance(1.0)
    await call_taking(timeout, clock, 0.01)
    assert timeout.seconds == pytest.approx(0.02, rel=0.1)
    # Much slower now: the first calls time out, and are recorded as taking
    # at least the limit; after a window of the new traffic, the limit has
    # followed it (and they pass).
    timed_out = 0
    for _ in range(3000):
        try:
            await call_taking(timeout, clock, 0.05)
        except TimeoutError:
            timed_out += 1
    clock.advance(1.0)
    assert await call_taking(timeout, clock, 0.05) == "done"
    assert timeout.seconds == pytest.approx(0.1, rel=0.1)
    assert 0 < timed_out < 3000


async def test_concurrent_calls_keep_their_own_deadlines_when_the_limit_shrinks() -> None:
    clock = FakeClock()
    tracker = LatencyTracker(clock=clock)
    timeout = Timeout.adaptive(tracker, min=0.01, max=10.0, min_samples=20, clock=clock)
    outcomes: dict[str, Any] = {}

    async def long_call() -> None:
        try:
            outcomes["long"] = await timeout.call(anyio.sleep_forever)
        except TimeoutError as exc:
            outcomes["long"] = exc.seconds

    async with anyio.create_task_group() as tg:
        tg.start_soon(long_call)  # admitted under the 10 s default
        await anyio.lowlevel.checkpoint()
        for _ in range(50):
            await call_taking(timeout, clock, 0.01)  # fast calls: the limit shrinks
        clock.advance(1.0)
        await call_taking(timeout, clock, 0.01)
        assert timeout.seconds < 0.1
        clock.advance(1.0)
        assert "long" not in outcomes  # its own 10 s still stand
        clock.advance(10.0)
    assert outcomes["long"] == 10.0


def test_bad_settings_are_refused_naming_the_parameter() -> None:
    tracker = LatencyTracker()
    for kwargs, error, parameter in [
        ({"quantile": 1.0}, ValueError, "quantile"),
        ({"quantile": 0}, ValueError, "quantile"),
        ({"multiplier": 0}, ValueError, "multiplier"),
        ({"multiplier": math.inf}, ValueError, "multiplier"),
        ({"min": 2.0, "max": 1.0}, ValueError, "min must be <= max"),
        ({"min": -1}, ValueError, "min"),
        ({"default": 0}, ValueError, "default"),
        ({"min_samples": 0}, ValueError, "min_samples"),
    ]:
        with pytest.raises(error, match=parameter):
            Timeout.adaptive(tracker, **kwargs)
    with pytest.raises(TypeError, match="tracker"):
        Timeout.adaptive(0.5)  # type: ignore[arg-type]


def test_a_timed_out_call_measured_short_of_its_limit_is_recorded_at_the_limit() -> None:
    # A cut call measured short of its limit (a loop's timer may fire within
    # its clock's resolution of the deadline; a tighter deadline may cut it)
    # is recorded as lasting at least the limit, so the estimate cannot fall.
    from resilience._timer import Expiry

    clock = FakeClock(100.0)
    tracker = LatencyTracker(clock=clock)
    timeout = Timeout.adaptive(tracker, min=0.01, max=1.0, clock=clock)
    ticket = Expiry.__new__(Expiry)
    ticket.at, ticket.limit = 100.5, 0.5

    class Queue:
        now = staticmethod(lambda: 100.2)  # 0.2 s after the start, as measured

    ticket.queue = Queue()  # type: ignore[assignment]
    timeout._record_call(ticket, timeout.timed_out())  # type: ignore[attr-defined]
    timeout._record_call(ticket, None)  # type: ignore[attr-defined]  # a success: as measured
    assert tracker.count == 2
    assert tracker.quantile(0.99) == pytest.approx(0.5, rel=0.03)
    assert tracker.quantile(0.01) == pytest.approx(0.2, rel=0.03)
