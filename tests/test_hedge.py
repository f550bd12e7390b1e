"""Hedge: a slow attempt gets a second one, the first good answer wins, nothing outlives it."""

from __future__ import annotations

import math
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from resilience import Hedge, LatencyTracker, Pipeline, Retry, RetryBudget, Timeout, backoff
from resilience.events import Event, HedgeCancelled, HedgeStarted, HedgeWon
from resilience.testing import FakeClock


class Upstream:
    """Attempts that answer when the test says: each one waits for its own gate."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.started: list[float] = []
        self.gates: list[anyio.Event] = []
        self.answers: list[Any] = []
        self.cancelled: list[int] = []
        self.finished: list[int] = []

    async def __call__(self) -> Any:
        index = len(self.started)
        self.started.append(self.clock.now())
        gate = anyio.Event()
        self.gates.append(gate)
        try:
            await gate.wait()
        except anyio.get_cancelled_exc_class():
            self.cancelled.append(index)
            raise
        self.finished.append(index)
        answer = self.answers[index] if index < len(self.answers) else f"answer {index}"
        if isinstance(answer, BaseException):
            raise answer
        return answer


async def until(predicate: Any) -> None:
    with anyio.fail_after(5):
        while not predicate():
            await anyio.lowlevel.checkpoint()


async def test_a_fast_first_attempt_answers_alone() -> None:
    clock = FakeClock()
    hedge = Hedge(2, delay=1.0, clock=clock)

    async def fast() -> str:
        return "fast"

    assert await hedge.call(fast) == "fast"
    assert hedge.stats.calls == 1
    assert hedge.stats.hedges == 0
    assert hedge.tracker.count == 1


async def test_a_slow_attempt_gets_a_hedge_and_the_first_answer_wins() -> None:
    clock = FakeClock()
    upstream = Upstream(clock)
    events: list[Event] = []
    hedge = Hedge(2, delay=0.5, name="h", clock=clock)
    hedge.add_listener(events.append)
    result: list[Any] = []

    async def caller() -> None:
        result.append(await hedge.call(upstream))

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await until(lambda: len(upstream.started) == 1)
        clock.advance(0.5)  # the delay passes: a hedge
        await until(lambda: len(upstream.started) == 2)
        upstream.gates[1].set()  # the hedge answers first
    assert result == ["answer 1"]
    assert upstream.started == [0.0, 0.5]
    assert upstream.cancelled == [0]  # the first attempt was cancelled, and awaited
    assert events == [HedgeStarted("h", 2, 0.5), HedgeCancelled("h", 1), HedgeWon("h", 2)]
    assert hedge.stats.won == 1
    assert hedge.stats.cancelled == 1
    assert hedge.tracker.count == 2  # the cancelled attempt's time recorded too


async def test_a_failure_starts_the_next_attempt_at_once() -> None:
    clock = FakeClock()
    upstream = Upstream(clock)
    upstream.answers = [ConnectionError("reset"), "second"]
    hedge = Hedge(3, delay=10.0, clock=clock)
    result: list[Any] = []

    async def caller() -> None:
        result.append(await hedge.call(upstream))

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await until(lambda: len(upstream.started) == 1)
        upstream.gates[0].set()  # fails before the delay
        await until(lambda: len(upstream.started) == 2)
        assert upstream.started == [0.0, 0.0]  # at once, not after 10 s
        upstream.gates[1].set()
    assert result == ["second"]


async def test_when_every_attempt_fails_the_first_attempts_error_propagates() -> None:
    clock = FakeClock()
    upstream = Upstream(clock)
    first = ConnectionError("first")
    upstream.answers = [first, TimeoutError("second")]
    hedge = Hedge(2, delay=0.5, clock=clock)

    async def caller() -> None:
        with pytest.raises(ConnectionError) as raised:
            await hedge.call(upstream)
        assert raised.value is first

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await until(lambda: len(upstream.started) == 1)
        clock.advance(0.5)
        await until(lambda: len(upstream.started) == 2)
        upstream.gates[1].set()
        await until(lambda: upstream.finished == [1])
        upstream.gates[0].set()
    assert hedge.stats.won == 0


async def test_an_unacceptable_result_counts_as_a_failure() -> None:
    clock = FakeClock()
    upstream = Upstream(clock)
    upstream.answers = [503, 200]
    hedge = Hedge(2, delay=10.0, on_result=lambda status: status >= 500, clock=clock)
    result: list[Any] = []

    async def caller() -> None:
        result.append(await hedge.call(upstream))

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await until(lambda: len(upstream.started) == 1)
        upstream.gates[0].set()
        await until(lambda: len(upstream.started) == 2)
        upstream.gates[1].set()
    assert result == [200]


async def test_when_no_result_is_acceptable_the_first_attempts_result_is_returned() -> None:
    clock = FakeClock()
    calls: list[int] = []

    async def busy() -> int:
        calls.append(1)
        return 503

    hedge = Hedge(3, delay=10.0, on_result=lambda status: status >= 500, clock=clock)
    assert await hedge.call(busy) == 503
    assert len(calls) == 3  # each failure started the next at once


async def test_the_budget_caps_the_extra_load() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.0, min_per_second=0.0)  # no hedge ever allowed
    hedge = Hedge(2, delay=0.0, budget=budget, clock=clock)
    runs: list[int] = []

    async def slow() -> str:
        runs.append(1)
        return "only"

    assert await hedge.call(slow) == "only"
    assert runs == [1]
    assert hedge.stats.refused == 1
    assert hedge.stats.hedges == 0


async def test_delay_zero_starts_every_attempt_at_once() -> None:
    clock = FakeClock()
    upstream = Upstream(clock)
    hedge = Hedge(3, delay=0.0, clock=clock)
    result: list[Any] = []

    async def caller() -> None:
        result.append(await hedge.call(upstream))

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await until(lambda: len(upstream.started) == 3)
        upstream.gates[2].set()
    assert result == ["answer 2"]
    assert sorted(upstream.cancelled) == [0, 1]


async def test_cancelling_the_call_cancels_and_awaits_every_attempt() -> None:
    clock = FakeClock()
    upstream = Upstream(clock)
    hedge = Hedge(2, delay=0.5, clock=clock)

    async with anyio.create_task_group() as tg:
        tg.start_soon(hedge.call, upstream)
        await until(lambda: len(upstream.started) == 1)
        clock.advance(0.5)
        await until(lambda: len(upstream.started) == 2)
        tg.cancel_scope.cancel()
    assert sorted(upstream.cancelled) == [0, 1]  # both cancelled before the call returned
    assert hedge.stats.cancelled == 0  # cancelled from outside, not by a winner


async def test_the_delay_follows_the_trackers_quantile_with_a_floor_and_a_default() -> None:
    clock = FakeClock()
    tracker = LatencyTracker(clock=clock)
    hedge = Hedge(
        2, delay="p90", tracker=tracker, min_samples=10, default_delay=2.0, min_delay=0.05
    )
    assert hedge.delay == 2.0  # too few samples yet
    for ms in range(1, 101):
        tracker.record(ms / 1000)
    assert hedge.delay == pytest.approx(0.09, rel=0.05)
    fast = LatencyTracker(clock=clock)
    for _ in range(100):
        fast.record(0.0001)
    assert Hedge(2, delay="p99", tracker=fast, min_samples=10).delay == 0.001  # the floor


async def test_in_a_pipeline_each_retry_attempt_is_hedged_under_the_timeout() -> None:
    clock = FakeClock()
    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")
        return "ok"

    pipeline = Pipeline(
        Timeout(10, clock=clock),
        Retry(2, backoff=backoff.immediate(), clock=clock),
        Hedge(2, delay=0.0, clock=clock),
    )
    assert await pipeline.call(flaky) == "ok"
    # Two attempts at once, twice: the second retry attempt's first answer won.
    assert len(calls) == 4


def test_a_plain_function_cannot_be_hedged() -> None:
    with pytest.raises(TypeError, match="thread cannot be cancelled"):
        Hedge()(lambda: None)


@pytest.mark.parametrize(
    ("kwargs", "error", "parameter"),
    [
        ({"attempts": 0}, ValueError, "attempts"),
        ({"attempts": 2.0}, TypeError, "attempts"),
        ({"delay": -1}, ValueError, "delay"),
        ({"delay": math.inf}, ValueError, "delay"),
        ({"delay": "p100"}, ValueError, "delay"),
        ({"delay": "fast"}, ValueError, "delay"),
        ({"delay": "p0"}, ValueError, "delay"),
        ({"tracker": object()}, TypeError, "tracker"),
        ({"budget": 0.1}, TypeError, "budget"),
        ({"on_result": 5}, TypeError, "on_result"),
        ({"min_delay": math.nan}, ValueError, "min_delay"),
        ({"min_samples": 0}, ValueError, "min_samples"),
    ],
)
def test_bad_settings_are_refused_naming_the_parameter(
    kwargs: dict[str, Any], error: type[Exception], parameter: str
) -> None:
    with pytest.raises(error, match=parameter):
        Hedge(**kwargs)


async def test_the_first_attempt_can_still_win_after_a_hedge_started() -> None:
    clock = FakeClock()
    upstream = Upstream(clock)
    events: list[Event] = []
    hedge = Hedge(2, delay=0.5, name="late", clock=clock)
    hedge.add_listener(events.append)
    result: list[Any] = []

    async def caller() -> None:
        result.append(await hedge.call(upstream))

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await until(lambda: len(upstream.started) == 1)
        clock.advance(0.5)
        await until(lambda: len(upstream.started) == 2)
        upstream.gates[0].set()  # the first answers after all
    assert result == ["answer 0"]
    assert upstream.cancelled == [1]
    assert events == [HedgeStarted("late", 2, 0.5), HedgeCancelled("late", 2)]
    assert hedge.stats.won == 0


async def test_a_first_attempt_failing_after_the_hedge_started_leaves_it_the_answer() -> None:
    clock = FakeClock()
    upstream = Upstream(clock)
    upstream.answers = [ConnectionError("reset"), "hedged"]
    hedge = Hedge(3, delay=0.5, clock=clock)
    result: list[Any] = []

    async def caller() -> None:
        result.append(await hedge.call(upstream))

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await until(lambda: len(upstream.started) == 1)
        clock.advance(0.5)
        await until(lambda: len(upstream.started) == 2)
        upstream.gates[0].set()  # fails: the third attempt starts at once
        await until(lambda: len(upstream.started) == 3)
        upstream.gates[1].set()
    assert result == ["hedged"]
    assert upstream.cancelled == [2]
    assert upstream.started == [0.0, 0.5, 0.5]


async def test_many_concurrent_hedged_calls_each_get_their_own_answer() -> None:
    hedge = Hedge(3, delay=0.001)
    answers: list[int] = []

    async def work(n: int) -> int:
        await anyio.sleep(0.002 if n % 3 else 0)
        return n

    async def one(n: int) -> None:
        answers.append(await hedge.call(work, n))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for n in range(200):
                tg.start_soon(one, n)
    assert sorted(answers) == list(range(200))
