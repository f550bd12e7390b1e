from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilience import CountWindow, TimeWindow


def test_count_window_keeps_the_last_n_outcomes() -> None:
    window = CountWindow(3)
    assert window.totals() == (0, 0, 0)
    window.record(None, True, False)
    window.record(None, False, True)
    assert window.totals() == (2, 1, 1)
    window.record(None, True, True)
    assert window.totals() == (3, 2, 2)
    # The first outcome (a failure) leaves: totals follow.
    window.record(None, False, False)
    assert window.totals() == (3, 1, 2)
    window.record(None, False, False)
    window.record(None, False, False)
    assert window.totals() == (3, 0, 0)


def test_count_window_clear_and_copy() -> None:
    window = CountWindow(2)
    window.record(None, True, True)
    copy = window._empty_copy()
    assert copy.size == 2
    assert copy.totals() == (0, 0, 0)
    window.clear()
    assert window.totals() == (0, 0, 0)
    window.record(None, True, False)
    assert window.totals() == (1, 1, 0)
    assert repr(window) == "CountWindow(2)"


@pytest.mark.parametrize("bad", [0, -1])
def test_count_window_rejects_a_size_below_one(bad: int) -> None:
    with pytest.raises(ValueError, match=rf"size must be >= 1, got {bad}"):
        CountWindow(bad)


@pytest.mark.parametrize("bad", [1.5, "10", True, None])
def test_count_window_rejects_a_non_int_size(bad: object) -> None:
    with pytest.raises(TypeError, match="size must be an int"):
        CountWindow(bad)  # type: ignore[arg-type]


def test_time_window_drops_seconds_that_leave_it() -> None:
    window = TimeWindow(10)
    window.record(0.5, True, False)
    window.record(5.2, False, True)
    window.record(9.99, False, False)
    assert window.totals(9.99) == (3, 1, 1)
    # At 10.0 the window holds seconds 1..10: second 0 has left.
    assert window.totals(10.0) == (2, 0, 1)
    assert window.totals(14.99) == (2, 0, 1)
    assert window.totals(15.0) == (1, 0, 0)
    assert window.totals(19.5) == (0, 0, 0)


def test_time_window_after_a_gap_longer_than_itself_starts_empty() -> None:
    window = TimeWindow(3)
    for t in (0.0, 1.0, 2.0):
        window.record(t, True, True)
    window.record(1000.0, False, False)
    assert window.totals(1000.0) == (1, 0, 0)
    # Old buckets are never subtracted twice as time moves on.
    for t in range(1001, 1010):
        window.record(float(t), False, False)
        assert window.totals(float(t)) == (min(t - 999, 3), 0, 0)


def test_time_window_counts_a_late_reading_in_the_newest_second() -> None:
    window = TimeWindow(5)
    window.record(10.0, False, False)
    window.record(8.0, True, False)  # older than the newest second: kept, not lost
    assert window.totals(10.0) == (2, 1, 0)
    assert window.totals(15.0) == (0, 0, 0)


def test_one_second_window() -> None:
    window = TimeWindow(1)
    window.record(3.1, True, False)
    window.record(3.9, False, False)
    assert window.totals(3.95) == (2, 1, 0)
    assert window.totals(4.0) == (0, 0, 0)


def test_time_window_clear_copy_and_repr() -> None:
    window = TimeWindow(seconds=60.0)  # a whole float is accepted
    assert window.seconds == 60
    window.record(1.0, True, False)
    assert window._empty_copy().totals(1.0) == (0, 0, 0)
    window.clear()
    assert window.totals(1.0) == (0, 0, 0)
    assert repr(window) == "TimeWindow(seconds=60)"


@pytest.mark.parametrize("bad", [0, -5, 0.5, 2.5, math.inf, math.nan])
def test_time_window_rejects_bad_seconds(bad: float) -> None:
    with pytest.raises(ValueError, match="seconds must be a whole number >= 1"):
        TimeWindow(bad)  # type: ignore[arg-type]


def test_time_window_rejects_a_non_number() -> None:
    with pytest.raises(TypeError, match="seconds must be a whole number"):
        TimeWindow("60")  # type: ignore[arg-type]


outcomes = st.lists(
    st.tuples(st.floats(0, 5, allow_nan=False), st.booleans(), st.booleans()), max_size=200
)


@settings(max_examples=300)
@given(size=st.integers(1, 12), calls=outcomes)
def test_count_window_matches_a_list_of_the_last_n(
    size: int, calls: list[tuple[float, bool, bool]]
) -> None:
    window = CountWindow(size)
    seen: list[tuple[bool, bool]] = []
    for _, failed, slow in calls:
        window.record(None, failed, slow)
        seen.append((failed, slow))
        last = seen[-size:]
        assert window.totals() == (
            len(last),
            sum(f for f, _ in last),
            sum(s for _, s in last),
        )


@settings(max_examples=300)
@given(seconds=st.integers(1, 8), steps=outcomes)
def test_time_window_matches_a_filtered_list(
    seconds: int, steps: list[tuple[float, bool, bool]]
) -> None:
    """Each step moves time forward by 0 to 5 s and records one call."""
    window = TimeWindow(seconds)
    now = 0.0
    seen: list[tuple[int, bool, bool]] = []
    for delta, failed, slow in steps:
        now += delta
        window.record(now, failed, slow)
        seen.append((math.floor(now), failed, slow))
        current = math.floor(now)
        inside = [(f, s) for sec, f, s in seen if current - seconds < sec <= current]
        assert window.totals(now) == (
            len(inside),
            sum(f for f, _ in inside),
            sum(s for _, s in inside),
        )
