from __future__ import annotations

import anyio
import pytest

from resilience.testing import FakeClock


def test_time_moves_only_when_told() -> None:
    clock = FakeClock(start=100)
    assert clock.now() == 100
    clock.advance(2.5)
    assert clock.now() == 102.5
    with pytest.raises(ValueError, match="seconds"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="start"):
        FakeClock(start=float("nan"))


async def test_sleeps_return_at_once_and_are_recorded() -> None:
    clock = FakeClock()
    with anyio.fail_after(1):  # a real wait of 1000 s would trip this
        await clock.sleep(1000)
    clock.sleep_sync(0.5)
    assert clock.sleeps == [1000, 0.5]
    assert clock.now() == 1000.5


def test_timers_fire_in_deadline_order_and_can_be_cancelled() -> None:
    clock = FakeClock()
    fired: list[str] = []
    clock.call_at(3, lambda: fired.append("c"))
    clock.call_at(1, lambda: fired.append("a"))
    cancelled = clock.call_at(2, lambda: fired.append("b"))
    cancelled.cancel()
    clock.advance(2.5)
    assert fired == ["a"]
    clock.advance(1)
    assert fired == ["a", "c"]
    clock.call_at(0, lambda: fired.append("due now"))
    assert fired[-1] == "due now"


async def test_async_sleep_is_a_cancellation_point() -> None:
    clock = FakeClock()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await clock.sleep(1)
    assert scope.cancelled_caught
