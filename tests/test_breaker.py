"""Scenario tests of the CircuitBreaker's rules, driven by a fake clock."""

from __future__ import annotations

import math
from typing import Any

import anyio
import pytest

import resilience
from resilience import (
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    CountWindow,
    Pipeline,
    Retry,
    TimeWindow,
    backoff,
)
from resilience.events import CallRejected, Event, StateChanged
from resilience.testing import FakeClock

CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
HALF_OPEN = CircuitState.HALF_OPEN
FORCED_OPEN = CircuitState.FORCED_OPEN
DISABLED = CircuitState.DISABLED


class Boom(Exception):
    pass


class Business(Exception):
    pass


async def ok() -> str:
    return "ok"


async def fail() -> str:
    raise Boom


def make(**kwargs: Any) -> tuple[CircuitBreaker, FakeClock, list[Event]]:
    clock = FakeClock()
    kwargs.setdefault("minimum_calls", 4)
    kwargs.setdefault("open_duration", 10.0)
    breaker = CircuitBreaker("b", clock=clock, **kwargs)
    events: list[Event] = []
    breaker.add_listener(events.append)
    return breaker, clock, events


async def feed(breaker: CircuitBreaker, pattern: str) -> None:
    """One call per character: "s" succeeds, "f" fails (Boom)."""
    for ch in pattern:
        try:
            await breaker.call(fail if ch == "f" else ok)
        except Boom:
            pass


def changes(events: list[Event]) -> list[tuple[CircuitState, CircuitState]]:
    return [(e.old_state, e.new_state) for e in events if isinstance(e, StateChanged)]


async def trip(breaker: CircuitBreaker) -> None:
    await feed(breaker, "ffff")
    assert breaker.state is OPEN


# Closed: when to trip ---------------------------------------------------------------


async def test_trips_when_the_failure_rate_reaches_the_threshold() -> None:
    breaker, _clock, events = make(failure_rate=0.5)
    await feed(breaker, "ssf")
    assert breaker.state is CLOSED  # 3 calls < minimum_calls
    await feed(breaker, "f")  # 2 of 4 = 0.5 >= 0.5
    assert breaker.state is OPEN
    assert changes(events) == [(CLOSED, OPEN)]
    stats = breaker.stats
    # Right after tripping, stats still show the window that caused it.
    assert (stats.calls, stats.failures, stats.failure_rate) == (4, 2, 0.5)


async def test_just_below_the_threshold_stays_closed() -> None:
    breaker, _, _ = make(failure_rate=0.5, minimum_calls=5)
    await feed(breaker, "sssff")  # 2 of 5 = 0.4
    assert breaker.state is CLOSED
    await feed(breaker, "f")  # 3 of 6 = 0.5
    assert breaker.state is OPEN


async def test_exact_decimal_rates_compare_as_written() -> None:
    # 3/10 >= 0.3 must hold although 0.3 * 10 > 3 in binary floating point.
    breaker, _, _ = make(failure_rate=0.3, minimum_calls=10)
    await feed(breaker, "sssssssfff")
    assert breaker.state is OPEN


async def test_no_decision_before_minimum_calls() -> None:
    breaker, _, _ = make(minimum_calls=6)
    await feed(breaker, "fffff")
    assert breaker.state is CLOSED
    await feed(breaker, "s")  # a success that completes the minimum still trips (5/6)
    assert breaker.state is OPEN


async def test_minimum_calls_is_capped_to_a_count_window() -> None:
    breaker, _, _ = make(window=CountWindow(3), minimum_calls=50)
    await feed(breaker, "sff")
    assert breaker.state is OPEN


async def test_old_failures_roll_out_of_a_count_window() -> None:
    breaker, _, _ = make(window=CountWindow(4), minimum_calls=4, failure_rate=0.75)
    await feed(breaker, "ffssss")
    assert breaker.stats.failures == 0
    await feed(breaker, "ff")
    assert breaker.state is CLOSED  # 2 of 4
    await feed(breaker, "f")
    assert breaker.state is OPEN  # 3 of 4


async def test_consecutive_failures_trip_before_the_minimum() -> None:
    breaker, _, _ = make(consecutive_failures=3, minimum_calls=100, failure_rate=1.0)
    await feed(breaker, "ffsff")
    assert breaker.state is CLOSED  # the success broke the streak
    await feed(breaker, "f")
    assert breaker.state is OPEN


async def test_slow_calls_trip_on_their_own_rate() -> None:
    breaker, clock, events = make(slow_call_duration=2.0, slow_call_rate=0.5)

    async def takes(seconds: float) -> str:
        clock.advance(seconds)
        return "ok"

    for seconds in (0.1, 1.99, 0.5):
        assert await breaker.call(takes, seconds) == "ok"
    assert breaker.stats.slow_calls == 0
    await breaker.call(takes, 2.0)  # exactly the duration: slow (>=)
    assert breaker.state is CLOSED  # 1 of 4
    await breaker.call(takes, 3.0)
    assert breaker.state is CLOSED  # 2 of 5
    await breaker.call(takes, 2.5)
    assert breaker.state is OPEN  # 3 of 6 >= 0.5
    assert changes(events) == [(CLOSED, OPEN)]
    stats = breaker.stats
    assert (stats.slow_calls, stats.slow_call_rate, stats.failures) == (3, 0.5, 0)


async def test_time_window_forgets_old_calls() -> None:
    breaker, clock, _ = make(window=TimeWindow(10), minimum_calls=4)
    await feed(breaker, "fff")
    clock.advance(10.0)
    await feed(breaker, "s")
    stats = breaker.stats
    assert (stats.calls, stats.failures) == (1, 0)
    await feed(breaker, "sss")
    assert breaker.state is CLOSED
    clock.advance(5.0)
    assert breaker.stats.calls == 4
    clock.advance(5.0)
    assert breaker.stats.calls == 0
    assert breaker.stats.failure_rate == 0.0


async def test_outcomes_classification() -> None:
    breaker, _, _ = make(
        record=(Boom,),
        ignore=(Business,),
        failure_result=lambda r: r == 503,
        minimum_calls=100,
    )

    async def raises(exc: Exception) -> None:
        raise exc

    async def returns(value: int) -> int:
        return value

    with pytest.raises(Boom):
        await breaker.call(raises, Boom())
    with pytest.raises(Business):
        await breaker.call(raises, Business())
    with pytest.raises(KeyError):
        await breaker.call(raises, KeyError("neither"))
    assert await breaker.call(returns, 503) == 503  # a failure, still returned
    assert await breaker.call(returns, 200) == 200
    stats = breaker.stats
    assert (stats.calls, stats.failures) == (4, 2)
    assert (stats.successful_total, stats.failed_total, stats.ignored_total) == (2, 2, 1)


async def test_record_predicate() -> None:
    breaker, _, _ = make(record=lambda exc: "fatal" in str(exc), minimum_calls=100)

    async def raises(message: str) -> None:
        raise Boom(message)

    for message in ("fatal", "meh"):
        with pytest.raises(Boom):
            await breaker.call(raises, message)
    assert breaker.stats.failures == 1


# Open -------------------------------------------------------------------------------------


async def test_open_rejects_with_a_fresh_error_and_retry_after() -> None:
    breaker, clock, events = make()
    await trip(breaker)
    calls = 0

    async def counted() -> None:
        nonlocal calls
        calls += 1

    clock.advance(4.0)
    with pytest.raises(CircuitOpenError) as first:
        await breaker.call(counted)
    with pytest.raises(CircuitOpenError) as second:
        await breaker.call(counted)
    assert calls == 0
    assert first.value is not second.value
    assert first.value.name == "b"
    assert first.value.retry_after == pytest.approx(6.0)
    assert str(first.value) == "circuit breaker 'b' is open; next trial in 6.000s"
    rejected = [e for e in events if isinstance(e, CallRejected)]
    assert [(e.state, e.retry_after) for e in rejected] == [(OPEN, 6.0), (OPEN, 6.0)]
    assert breaker.stats.rejected == 2


async def test_half_open_exactly_at_opened_at_plus_duration() -> None:
    breaker, clock, events = make(open_duration=10.0)
    await trip(breaker)
    clock.advance(9.999)
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)
    clock.advance(0.001)
    assert await breaker.call(ok) == "ok"
    assert breaker.state is CLOSED
    assert changes(events) == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    # Entering CLOSED starts with an empty window.
    assert breaker.stats.calls == 0


async def test_reading_state_applies_the_lazy_transition() -> None:
    breaker, clock, events = make()
    await trip(breaker)
    clock.advance(10.0)
    assert breaker.state is HALF_OPEN
    assert changes(events)[-1] == (OPEN, HALF_OPEN)


# Half-open ----------------------------------------------------------------------------------


async def test_failed_trial_reopens() -> None:
    breaker, clock, _events = make()
    await trip(breaker)
    clock.advance(10.0)
    await feed(breaker, "f")
    assert breaker.state is OPEN
    with pytest.raises(CircuitOpenError) as info:
        await breaker.call(ok)
    assert info.value.retry_after == 10.0


async def test_half_open_decides_on_all_trials() -> None:
    breaker, clock, _ = make(half_open_calls=3, failure_rate=0.5)
    await trip(breaker)
    clock.advance(10.0)
    await feed(breaker, "fs")
    assert breaker.state is HALF_OPEN  # 2 of 3 trials done
    await feed(breaker, "s")  # 1 of 3 failed < 0.5
    assert breaker.state is CLOSED


async def test_half_open_reopens_when_the_trials_fail_too_often() -> None:
    breaker, clock, _ = make(half_open_calls=2, failure_rate=0.5, minimum_calls=10)
    breaker.open()
    clock.advance(10.0)
    # minimum_calls does not apply in HALF_OPEN: 2 trials decide.
    await feed(breaker, "sf")
    assert breaker.state is OPEN


async def test_half_open_permits_under_concurrency() -> None:
    breaker, clock, events = make(half_open_calls=2)
    await trip(breaker)
    clock.advance(10.0)
    release = anyio.Event()
    started: list[int] = []
    outcomes: list[str] = []

    async def trial(i: int) -> str:
        started.append(i)
        await release.wait()
        return "ok"

    async def caller(i: int) -> None:
        try:
            outcomes.append(await breaker.call(trial, i))
        except CircuitOpenError as exc:
            # retry_after is unknown: it depends on the trials in flight.
            outcomes.append("rejected" if exc.retry_after is None else "rejected with a delay")

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(caller, i)
        await anyio.wait_all_tasks_blocked()
        assert len(started) == 2
        assert outcomes == ["rejected"] * 3
        assert breaker.state is HALF_OPEN
        release.set()
    assert sorted(outcomes) == ["ok", "ok", "rejected", "rejected", "rejected"]
    assert breaker.state is CLOSED
    rejected = [e for e in events if isinstance(e, CallRejected)]
    assert [e.state for e in rejected] == [HALF_OPEN] * 3


async def test_a_cancelled_trial_returns_its_permit() -> None:
    breaker, clock, _ = make()
    await trip(breaker)
    clock.advance(10.0)

    async def hangs() -> None:
        await anyio.sleep_forever()

    with anyio.CancelScope() as scope:
        scope.cancel()
        await breaker.call(hangs)
    assert breaker.state is HALF_OPEN
    stats = breaker.stats
    assert (stats.successful_total, stats.failed_total) == (0, 4)
    # The permit came back: the next caller is the trial.
    assert await breaker.call(ok) == "ok"
    assert breaker.state is CLOSED


async def test_cancellation_in_closed_records_nothing() -> None:
    breaker, _, _ = make()

    async def hangs() -> None:
        await anyio.sleep_forever()

    with anyio.move_on_after(0):
        await breaker.call(hangs)
    stats = breaker.stats
    assert stats.calls == 0
    assert stats.successful_total + stats.failed_total + stats.ignored_total == 0


async def test_an_ignored_trial_returns_its_permit() -> None:
    breaker, clock, _ = make(ignore=(Business,))
    await trip(breaker)
    clock.advance(10.0)

    async def business() -> None:
        raise Business

    with pytest.raises(Business):
        await breaker.call(business)
    assert breaker.state is HALF_OPEN
    await feed(breaker, "s")
    assert breaker.state is CLOSED


async def test_half_open_max_wait_reopens_and_late_trials_do_not_close() -> None:
    breaker, clock, events = make(half_open_calls=1, half_open_max_wait=5.0)
    await trip(breaker)
    clock.advance(10.0)

    async def slow_ok() -> str:
        clock.advance(6.0)  # outlives half_open_max_wait
        return "ok"

    assert await breaker.call(slow_ok) == "ok"
    # The round ended (as a failure) at 15.0; the late success decides nothing.
    assert breaker.state is OPEN
    assert changes(events)[-1] == (HALF_OPEN, OPEN)
    with pytest.raises(CircuitOpenError) as info:
        await breaker.call(ok)
    assert info.value.retry_after == pytest.approx(9.0)  # opened at 15.0, now 16.0


async def test_half_open_max_wait_is_checked_when_state_is_read() -> None:
    breaker, clock, _events = make(half_open_max_wait=5.0)
    await trip(breaker)
    clock.advance(10.0)
    assert breaker.state is HALF_OPEN
    clock.advance(5.0)
    assert breaker.state is OPEN
    clock.advance(10.0)
    assert breaker.state is HALF_OPEN


async def test_open_duration_doubles_on_each_failed_round_up_to_the_max() -> None:
    breaker, clock, _ = make(open_duration=10.0, open_duration_max=35.0)
    await trip(breaker)
    waits = []
    for _ in range(4):
        with pytest.raises(CircuitOpenError) as info:
            await breaker.call(ok)
        assert info.value.retry_after is not None
        waits.append(info.value.retry_after)
        clock.advance(info.value.retry_after)
        await feed(breaker, "f")  # the trial fails
    assert waits == [10.0, 20.0, 35.0, 35.0]
    clock.advance(35.0)
    await feed(breaker, "s")
    assert breaker.state is CLOSED
    # Closing resets the growth.
    await trip(breaker)
    with pytest.raises(CircuitOpenError) as info:
        await breaker.call(ok)
    assert info.value.retry_after == 10.0


# Manual control --------------------------------------------------------------------------------


async def test_manual_open_then_half_open_as_usual_without_growth() -> None:
    breaker, clock, _events = make(open_duration=10.0, open_duration_max=100.0)
    breaker.open()
    assert breaker.state is OPEN
    clock.advance(10.0)
    await feed(breaker, "f")
    assert breaker.state is OPEN  # a failed round: this one grows
    with pytest.raises(CircuitOpenError) as info:
        await breaker.call(ok)
    assert info.value.retry_after == 20.0
    breaker.open()  # manual: not a trip, the duration stays
    with pytest.raises(CircuitOpenError) as info:
        await breaker.call(ok)
    assert info.value.retry_after == 20.0


async def test_force_open_rejects_until_closed() -> None:
    breaker, clock, events = make()
    breaker.force_open()
    clock.advance(1e6)
    with pytest.raises(CircuitOpenError) as info:
        await breaker.call(ok)
    assert info.value.retry_after is None
    assert str(info.value) == "circuit breaker 'b' is open"
    assert [e.state for e in events if isinstance(e, CallRejected)] == [FORCED_OPEN]
    breaker.close()
    assert breaker.state is CLOSED
    assert changes(events) == [(CLOSED, FORCED_OPEN), (FORCED_OPEN, CLOSED)]


async def test_disable_lets_everything_through_and_records_nothing() -> None:
    breaker, _, _ = make()
    breaker.disable()
    await feed(breaker, "ffffffff")
    assert breaker.state is DISABLED
    stats = breaker.stats
    assert (stats.calls, stats.failed_total) == (0, 0)
    breaker.reset()
    assert breaker.state is CLOSED


async def test_reset_empties_the_window_and_keeps_the_totals() -> None:
    breaker, _, events = make(minimum_calls=10)
    await feed(breaker, "fff")
    breaker.reset()
    stats = breaker.stats
    assert (stats.calls, stats.failed_total) == (0, 3)
    assert changes(events) == []  # already CLOSED: no event


async def test_a_transition_to_the_same_state_emits_nothing() -> None:
    breaker, _, events = make()
    breaker.close()
    breaker.force_open()
    breaker.force_open()
    breaker.disable()
    breaker.disable()
    assert changes(events) == [(CLOSED, FORCED_OPEN), (FORCED_OPEN, DISABLED)]
    transitions = breaker.stats.transitions
    assert transitions == {(CLOSED, FORCED_OPEN): 1, (FORCED_OPEN, DISABLED): 1}


async def test_a_call_admitted_before_a_trip_does_not_count_after_it() -> None:
    breaker, _, _ = make(minimum_calls=1, failure_rate=1.0)
    release = anyio.Event()

    async def waits() -> str:
        await release.wait()
        return "ok"

    async with anyio.create_task_group() as tg:
        tg.start_soon(breaker.call, waits)
        await anyio.wait_all_tasks_blocked()
        await feed(breaker, "f")
        assert breaker.state is OPEN
        release.set()
    stats = breaker.stats
    assert breaker.state is OPEN
    assert (stats.calls, stats.failures) == (1, 1)  # the late success is not in the window
    assert stats.successful_total == 1  # but it counts in the totals


# Shells -------------------------------------------------------------------------------------------


async def test_decorator_wraps_async_functions() -> None:
    breaker, clock, _ = make()

    @breaker
    async def handler(x: int, *, y: int) -> int:
        if x < 0:
            raise Boom
        return x + y

    assert handler.__name__ == "handler"
    assert await handler(1, y=2) == 3
    for _ in range(3):  # 3 of 4 failed
        with pytest.raises(Boom):
            await handler(-1, y=0)
    with pytest.raises(CircuitOpenError):
        await handler(1, y=2)
    clock.advance(10.0)
    assert await handler(1, y=2) == 3
    assert breaker.state is CLOSED


async def test_decorator_with_slow_call_detection_and_time_window() -> None:
    breaker, clock, _ = make(window=TimeWindow(60), slow_call_duration=1.0, minimum_calls=2)

    @breaker
    async def slow() -> str:
        clock.advance(1.0)
        return "ok"

    assert await slow() == "ok"
    assert await slow() == "ok"
    assert breaker.state is OPEN
    assert breaker.stats.slow_total == 2


def test_sync_path() -> None:
    breaker, clock, events = make()

    @breaker
    def double(x: int) -> int:
        if x < 0:
            raise Boom
        return 2 * x

    assert double(2) == 4
    for _ in range(3):
        with pytest.raises(Boom):
            double(-1)
    assert breaker.state is OPEN
    with pytest.raises(CircuitOpenError):
        double(1)
    clock.advance(10.0)
    assert breaker.call_sync(lambda x: 2 * x, 3) == 6
    assert breaker.state is CLOSED
    assert changes(events) == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_sync_keyboard_interrupt_records_nothing_and_returns_the_permit() -> None:
    breaker, clock, _ = make()
    breaker.open()
    clock.advance(10.0)

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        breaker.call_sync(interrupted)
    assert breaker.state is HALF_OPEN
    assert breaker.stats.failed_total == 0
    assert breaker.call_sync(lambda: 1) == 1
    assert breaker.state is CLOSED


async def test_async_after_sync_use_takes_the_locked_path() -> None:
    breaker, clock, _ = make()
    breaker.call_sync(lambda: None)
    await feed(breaker, "fff")
    assert breaker.state is OPEN
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)
    clock.advance(10.0)
    assert await breaker.call(ok) == "ok"
    assert breaker.stats.successful_total == 2


async def test_in_a_pipeline_retry_stops_at_an_open_breaker() -> None:
    breaker, clock, _ = make(minimum_calls=2)
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        raise Boom

    retry = Retry(5, backoff=backoff.immediate(), clock=clock)
    with pytest.raises(CircuitOpenError):
        await (retry | breaker).call(flaky)
    assert calls == 2  # the third attempt met the open breaker
    assert isinstance(Pipeline(retry, breaker), resilience.Policy)


def test_rejection_error_matches_the_public_constructor() -> None:
    breaker = CircuitBreaker("payments")
    sweep = [i / 7919 for i in range(0, 40_000, 13)]  # many values per millisecond
    for retry_after in [None, 0.0, 1.23456, 29.9995, 29.9994, 1e6, *sweep, *reversed(sweep)]:
        fast = breaker._open_error(retry_after)
        slow = CircuitOpenError(name="payments", retry_after=retry_after)
        assert type(fast) is CircuitOpenError
        assert (str(fast), repr(fast), fast.args) == (str(slow), repr(slow), slow.args)
        assert (fast.name, fast.retry_after) == (slow.name, slow.retry_after)
        assert vars(fast) == vars(slow)


def test_unnamed_breakers_get_generated_names() -> None:
    first, second = CircuitBreaker(), CircuitBreaker()
    assert first.name.startswith("circuit_breaker-")
    assert first.name != second.name


def test_derive_copies_configuration_and_listeners_not_state() -> None:
    clock = FakeClock()
    template = CircuitBreaker("api", minimum_calls=2, open_duration=7.0, clock=clock)
    events: list[Event] = []
    template.add_listener(events.append)
    template.force_open()
    derived = template.derive(name="api:host")
    assert derived.name == "api:host"
    assert derived.state is CLOSED
    for _ in range(2):
        with pytest.raises(Boom):
            derived.call_sync(_raise_boom)
    assert derived.state is OPEN
    assert events[-1] == StateChanged("api:host", CLOSED, OPEN)
    with pytest.raises(CircuitOpenError) as info:
        derived.call_sync(lambda: None)
    assert info.value.retry_after == 7.0


def _raise_boom() -> None:
    raise Boom


def test_repr_and_stats_of_a_fresh_breaker() -> None:
    breaker = CircuitBreaker("r", window=TimeWindow(30))
    assert repr(breaker) == "<CircuitBreaker 'r' closed window=TimeWindow(seconds=30)>"
    stats = breaker.stats
    assert (stats.calls, stats.failure_rate, stats.slow_call_rate, stats.rejected) == (0, 0, 0, 0)


def test_the_default_window_is_never_shared() -> None:
    a, b = CircuitBreaker(minimum_calls=1), CircuitBreaker(minimum_calls=1)
    with pytest.raises(Boom):
        a.call_sync(_raise_boom)
    assert a.state is OPEN
    assert b.stats.calls == 0


# Bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"failure_rate": 0}, "failure_rate must be in (0, 1], got 0"),
        ({"failure_rate": 1.5}, "failure_rate must be in (0, 1], got 1.5"),
        ({"slow_call_rate": -0.1}, "slow_call_rate must be in (0, 1], got -0.1"),
        ({"minimum_calls": 0}, "minimum_calls must be >= 1, got 0"),
        ({"half_open_calls": 0}, "half_open_calls must be >= 1, got 0"),
        ({"consecutive_failures": 0}, "consecutive_failures must be >= 1, got 0"),
        ({"open_duration": 0}, "open_duration must be a finite number > 0, got 0"),
        ({"open_duration": math.inf}, "open_duration must be a finite number > 0, got inf"),
        ({"slow_call_duration": -1}, "slow_call_duration must be a finite number > 0"),
        ({"half_open_max_wait": 0.0}, "half_open_max_wait must be a finite number > 0"),
        ({"open_duration_max": 5.0}, "open_duration_max must be >= open_duration"),
        ({"record": (Boom,), "ignore": (Boom, Business)}, "got Boom in both"),
    ],
)
def test_bad_configuration_raises_value_error_naming_the_parameter(
    kwargs: dict[str, Any], message: str
) -> None:
    kwargs.setdefault("open_duration", 10.0)
    with pytest.raises(ValueError) as info:
        CircuitBreaker(**kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"window": 100}, "window"),
        ({"minimum_calls": 2.0}, "minimum_calls"),
        ({"failure_rate": "half"}, "failure_rate"),
        ({"record": "Boom"}, "record"),
        ({"failure_result": 503}, "failure_result"),
    ],
)
def test_wrong_types_raise_type_error_naming_the_parameter(
    kwargs: dict[str, Any], param: str
) -> None:
    with pytest.raises(TypeError, match=param):
        CircuitBreaker(**kwargs)


# A user callback that raises still settles the call -----------------------------------


class PredicateBroke(Exception):
    pass


def broken_predicate(value: object) -> bool:
    raise PredicateBroke


@pytest.mark.parametrize("where", ["failure_result", "record", "ignore"])
async def test_a_raising_callback_settles_a_half_open_trial_as_a_failure(where: str) -> None:
    clock = FakeClock()
    kwargs: dict[str, Any] = {where: broken_predicate}
    breaker = CircuitBreaker(
        "cb", consecutive_failures=1, open_duration=1.0, clock=clock, minimum_calls=1, **kwargs
    )
    breaker.open()
    clock.advance(1.0)
    assert breaker.state is CircuitState.HALF_OPEN

    async def trial() -> str:
        if where == "failure_result":
            return "looks fine"
        raise ValueError("the call failed")

    # The callback's own exception propagates, once the trial has settled...
    with pytest.raises(PredicateBroke):
        await breaker.call(trial)
    # ...as a failure: the breaker reopened instead of staying HALF_OPEN forever.
    assert breaker.state is CircuitState.OPEN
    assert breaker.stats.failed_total == 1


def test_a_raising_callback_settles_a_sync_half_open_trial_as_a_failure() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("cb", open_duration=1.0, clock=clock, failure_result=broken_predicate)
    breaker.open()
    clock.advance(1.0)
    with pytest.raises(PredicateBroke):
        breaker.call_sync(lambda: "looks fine")
    assert breaker.state is CircuitState.OPEN
