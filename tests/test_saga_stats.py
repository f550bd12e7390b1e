"""What a saga counts: runs, steps and compensations by outcome, and the
seconds each took, on the saga's clock."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from resilience import Retry, backoff
from resilience.lowlevel import live_sagas
from resilience.saga import (
    Parallel,
    Saga,
    SagaCompensated,
    SagaCompensationError,
    SagaContext,
    SagaStepStatistics,
    Step,
)
from resilience.testing import FakeClock


class Declined(Exception):
    pass


def timed(clock: FakeClock, seconds: float, *, fail: bool = False) -> Any:
    """An action that takes ``seconds`` of fake time, then returns or fails."""

    async def action(ctx: SagaContext) -> str:
        await clock.sleep(seconds)
        if fail:
            raise Declined(ctx.step)
        return ctx.step

    return action


def undo_in(clock: FakeClock, seconds: float, *, fail: bool = False) -> Any:
    async def undo(ctx: SagaContext, result: Any) -> None:
        await clock.sleep(seconds)
        if fail:
            raise Declined(f"undo {ctx.step}")

    return undo


async def test_a_completed_run_counts_each_step_and_its_seconds() -> None:
    clock = FakeClock()
    saga = Saga(
        "stats-ok",
        [
            Step("reserve", timed(clock, 2), compensate=undo_in(clock, 1)),
            Parallel(Step("charge", timed(clock, 3)), Step("label", timed(clock, 3))),
        ],
        clock=clock,
    )
    await saga.run()
    await saga.run()
    stats = saga.stats
    assert (stats.completed, stats.compensated, stats.failed, stats.running) == (2, 0, 0, 0)
    assert stats.steps_completed == 6
    # Each run: 2 s, then the group's 3 s side by side (the fake sleeps add up: 2 + 3 + 3).
    assert stats.seconds == {"completed": 16.0, "compensated": 0.0, "failed": 0.0}
    assert stats.steps["reserve"] == SagaStepStatistics(
        completed=2,
        failed=0,
        cancelled=0,
        compensated=0,
        compensations_failed=0,
        seconds=stats.steps["reserve"].seconds,
    )
    assert stats.steps["reserve"].seconds["completed"] == 4.0
    assert stats.steps["charge"].completed == stats.steps["label"].completed == 2


async def test_a_compensated_run_counts_the_failure_and_the_compensations() -> None:
    clock = FakeClock()
    saga = Saga(
        "stats-undone",
        [
            Step("reserve", timed(clock, 1), compensate=undo_in(clock, 0.5)),
            Step("charge", timed(clock, 2, fail=True), compensate=undo_in(clock, 9)),
        ],
        clock=clock,
    )
    with pytest.raises(SagaCompensated):
        await saga.run()
    stats = saga.stats
    assert (stats.completed, stats.compensated, stats.failed) == (0, 1, 0)
    assert stats.seconds["compensated"] == 3.5  # 1 + 2, then the undo's 0.5
    reserve, charge = stats.steps["reserve"], stats.steps["charge"]
    assert (reserve.completed, reserve.compensated) == (1, 1)
    assert reserve.seconds["compensated"] == 0.5
    assert (charge.failed, charge.compensated) == (1, 0)  # a failed step is not undone
    assert charge.seconds["failed"] == 2.0
    assert (stats.steps_failed, stats.compensations) == (1, 1)


async def test_a_compensation_that_gives_up_is_counted_with_its_retries_time() -> None:
    clock = FakeClock()
    saga = Saga(
        "stats-failed",
        [
            Step(
                "reserve",
                timed(clock, 1),
                compensate=undo_in(clock, 1, fail=True),
                compensate_policy=Retry(3, backoff=backoff.immediate(), clock=clock),
            ),
            Step("charge", timed(clock, 1, fail=True)),
        ],
        clock=clock,
    )
    with pytest.raises(SagaCompensationError):
        await saga.run()
    reserve = saga.stats.steps["reserve"]
    assert (reserve.compensated, reserve.compensations_failed) == (0, 1)
    assert reserve.seconds["compensation_failed"] == 3.0  # three attempts of 1 s
    assert saga.stats.failed == 1
    assert saga.stats.seconds["failed"] == 5.0


async def test_a_cancelled_step_is_counted_as_cancelled() -> None:
    clock = FakeClock()
    started = anyio.Event()

    async def hangs(ctx: SagaContext) -> None:
        started.set()
        await anyio.sleep_forever()

    saga = Saga(
        "stats-cancelled",
        [Step("reserve", timed(clock, 1), compensate=undo_in(clock, 0)), Step("wait", hangs)],
        clock=clock,
    )
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(saga.run)
        await started.wait()
        tasks.cancel_scope.cancel()
    stats = saga.stats
    assert stats.steps["wait"].cancelled == 1
    assert (stats.cancelled, stats.compensated, stats.running) == (1, 1, 0)


def test_run_sync_counts_the_same() -> None:
    clock = FakeClock()

    def reserve(ctx: SagaContext) -> str:
        clock.sleep_sync(2)
        return "r"

    def fails(ctx: SagaContext) -> None:
        raise Declined

    saga = Saga(
        "stats-sync",
        [Step("reserve", reserve, compensate=lambda ctx, r: None), Step("charge", fails)],
        clock=clock,
    )
    with pytest.raises(SagaCompensated):
        saga.run_sync()
    stats = saga.stats
    assert stats.steps["reserve"].seconds["completed"] == 2.0
    assert (stats.steps["charge"].failed, stats.steps["reserve"].compensated) == (1, 1)


def test_the_statistics_are_a_frozen_snapshot() -> None:
    saga = Saga("stats-frozen", [Step("only", lambda ctx: 1)])
    before = saga.stats
    saga.run_sync()
    assert before.steps["only"].completed == 0
    assert saga.stats.steps["only"].completed == 1
    with pytest.raises(TypeError):
        before.steps["x"] = before.steps["only"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        before.completed = 3  # type: ignore[misc]


def test_live_sagas_holds_sagas_weakly() -> None:
    saga = Saga("stats-live", [Step("only", lambda ctx: 1)])
    assert saga in list(live_sagas())
    name = saga.name
    del saga
    import gc

    gc.collect()
    assert name not in {s.name for s in live_sagas()}
