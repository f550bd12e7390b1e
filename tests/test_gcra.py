"""The GCRA core: exact bounds on adversarial arrivals, on exact (fake) times."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from resilience._core.gcra import RateTable


def table(
    rate: float, per: float, burst: int, max_keys: int = 100, origin: float = 0.0
) -> RateTable:
    return RateTable(rate=rate, per=per, burst=burst, max_keys=max_keys, origin=origin)


def admitted_in_any_window_within_the_bound(
    events: list[tuple[float, int]], rate: float, per: float, burst: int
) -> None:
    """In every closed window [a, b] (the worst ones start and end at admissions)."""
    for i, (start, _) in enumerate(events):
        slots = 0
        for end, cost in events[i:]:
            slots += cost
            # Readings are floats: a permit may come a few ulps of the
            # reading early, never a whole slot.
            bound = burst + rate * (end - start + 1e-6) / per
            assert slots <= bound, (start, end, slots, bound)


@settings(max_examples=300, deadline=None)
@given(
    rate=st.sampled_from([1, 3, 7, 10, 100]),
    per=st.sampled_from([0.5, 1.0, 60.0]),
    burst=st.integers(1, 6),
    start=st.sampled_from([0.0, 1e6, 1e9]),
    steps=st.lists(
        st.tuples(st.floats(0, 3), st.integers(1, 6), st.booleans()), min_size=1, max_size=60
    ),
)
def test_no_window_ever_admits_more_than_burst_plus_rate_times_its_length(
    rate: float, per: float, burst: int, start: float, steps: list[tuple[float, int, bool]]
) -> None:
    cells = table(rate, per, burst, origin=start)
    cell = cells.cell
    interval = per / rate
    now = start
    events: list[tuple[float, int]] = []
    for gap, cost, greedy in steps:
        cost = min(cost, burst)
        decision = cells.decide(cell, now, cost, 0.0)
        if decision == 0.0:
            events.append((now, cost))
            now += gap * interval
        elif greedy:
            # The adversary comes back exactly when it was told it would pass.
            assert decision < 0
            now += -decision
            assert cells.decide(cell, now, cost, 0.0) == 0.0  # due at t, granted at t
            events.append((now, cost))
        else:
            now += gap * interval
    admitted_in_any_window_within_the_bound(events, rate, per, burst)


def test_an_idle_limit_admits_exactly_its_burst_at_once_far_from_the_origin() -> None:
    cells = table(3, 1.0, 3)
    cell = cells.cell
    cells.decide(cell, 0.0, 1, 0.0)
    now = 1e9 / 3  # a long idle spell, at a time whose float has little room left
    assert [cells.decide(cell, now, 1, 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    refused = cells.decide(cell, now, 1, 0.0)
    assert abs(-refused - 1 / 3) < 1e-6  # the next slot, to the reading's precision
    # Each later permit at exactly its due time, many times over.
    for _ in range(10_000):
        now += 1 / 3
        assert cells.decide(cell, now, 1, 0.0) == 0.0


def test_a_wait_exactly_equal_to_max_wait_is_within_it() -> None:
    cells = table(1, 1.0, 1)
    cell = cells.cell
    assert cells.decide(cell, 10.0, 1, 0.0) == 0.0
    assert cells.decide(cell, 10.0, 1, 1.0) == 1.0  # reserved: waits exactly 1 s
    assert cells.decide(cell, 10.0, 1, 1.5) == -2.0  # would wait 2 s: refused at once


def test_a_cost_above_the_burst_is_refused_without_a_retry_time() -> None:
    cells = table(10, 1.0, 5)
    assert cells.decide(cells.cell, 0.0, 6, math.inf) == -math.inf


def test_an_unused_reservation_is_given_back_only_when_it_is_the_last() -> None:
    cells = table(1, 1.0, 1)
    cell = cells.cell
    assert cells.decide(cell, 0.0, 1, 0.0) == 0.0
    wait = cells.decide(cell, 0.0, 1, 5.0)
    assert wait == 1.0
    cells.give_back(cell, 0.0, 1, wait)  # the caller left: nobody reserved after it
    assert cells.decide(cell, 0.0, 1, 5.0) == 1.0  # the same slot, again
    later = cells.decide(cell, 0.0, 1, 5.0)
    assert later == 2.0
    cells.give_back(cell, 0.0, 1, 1.0)  # not the last: lost, never shared
    assert cells.decide(cell, 0.0, 1, 5.0) == 3.0


def test_the_key_table_stays_bounded_and_drops_recovered_keys_first() -> None:
    cells = table(1, 1.0, 1, max_keys=4)
    for n in range(100):
        cells.decide(cells.cell_for(f"k{n}", float(n)), float(n), 1, 0.0)
    assert len(cells) == 4
    # "busy" keeps a reservation far ahead; the others recover: they go first.
    busy = cells.cell_for("busy", 200.0)
    for _ in range(50):
        cells.decide(busy, 200.0, 1, 100.0)  # reserved up to t=250
    for n in range(10):
        cells.cell_for(f"fresh{n}", 201.0 + n)
    assert cells.cell_for("busy", 212.0) is busy
