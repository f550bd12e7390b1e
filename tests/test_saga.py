"""Sagas: compensation of what completed, in reverse, retried, never stopping
at a failure; parallel groups; cancellation; plain steps; bad input."""

from __future__ import annotations

import copy
import pickle
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

import resilience
from resilience import Bulkhead, PoolBulkhead, ResilienceError, Retry, Timeout, backoff
from resilience.events import (
    Event,
    SagaCompensationFailed,
    SagaCompensationStarted,
    SagaStateChanged,
    SagaStepCancelled,
    SagaStepCompensated,
    SagaStepCompleted,
    SagaStepFailed,
    SagaStepStarted,
)
from resilience.saga import (
    Parallel,
    Saga,
    SagaCompensated,
    SagaCompensationError,
    SagaContext,
    SagaError,
    SagaStatistics,
    Step,
)
from resilience.testing import FakeClock

ROOT = Path(__file__).resolve().parent.parent


class Declined(Exception):
    pass


class Ledger:
    """Steps that write what they do (and undo) in one list."""

    def __init__(self) -> None:
        self.log: list[Any] = []
        self.seen: dict[str, SagaContext] = {}

    def action(self, name: str, *, fail: BaseException | None = None) -> Callable[..., Any]:
        async def action(ctx: SagaContext) -> str:
            self.seen[name] = ctx
            self.log.append(name)
            await anyio.lowlevel.checkpoint()
            if fail is not None:
                raise fail
            return f"{name}-result"

        return action

    def undo(self, name: str) -> Callable[..., Any]:
        async def undo(ctx: SagaContext, result: Any) -> None:
            assert ctx is self.seen[name]  # the context its action had
            await anyio.lowlevel.checkpoint()
            self.log.append(("undo", name, result))

        return undo

    def step(self, name: str, *, fail: BaseException | None = None, **kwargs: Any) -> Step:
        return Step(name, self.action(name, fail=fail), compensate=self.undo(name), **kwargs)


async def until(predicate: Callable[[], bool]) -> None:
    with anyio.fail_after(5):
        while not predicate():
            await anyio.lowlevel.checkpoint()


# The success path -------------------------------------------------------------


async def test_steps_run_in_order_and_the_results_come_back_by_name() -> None:
    ledger = Ledger()
    saga = Saga(
        "order",
        [
            ledger.step("reserve"),
            Parallel(ledger.step("charge"), ledger.step("label")),
            ledger.step("ship"),
        ],
    )
    results = await saga.run({"id": 7})
    assert results == {
        "reserve": "reserve-result",
        "charge": "charge-result",
        "label": "label-result",
        "ship": "ship-result",
    }
    assert ledger.log[0] == "reserve"
    assert ledger.log[-1] == "ship"
    assert set(ledger.log[1:3]) == {"charge", "label"}
    # Each step sees the input and the results before it; a group's members
    # see the steps before the group, not each other.
    seen = ledger.seen
    assert all(ctx.input == {"id": 7} and ctx.saga == "order" for ctx in seen.values())
    assert [seen[n].step for n in ("reserve", "charge", "ship")] == ["reserve", "charge", "ship"]
    assert dict(seen["reserve"].results) == {}
    assert (
        dict(seen["charge"].results) == dict(seen["label"].results) == {"reserve": "reserve-result"}
    )
    assert set(seen["ship"].results) == {"reserve", "charge", "label"}
    with pytest.raises(TypeError):
        seen["ship"].results["x"] = 1  # type: ignore[index]
    stats = saga.stats
    assert stats == SagaStatistics(
        running=0,
        completed=1,
        compensated=0,
        failed=0,
        cancelled=0,
        steps_completed=4,
        steps_failed=0,
        steps_cancelled=0,
        compensations=0,
        compensations_failed=0,
        seconds=stats.seconds,  # per outcome and per step: tests/test_saga_stats.py
        steps=stats.steps,
    )
    assert set(stats.steps) == {"reserve", "charge", "label", "ship"}


async def test_a_step_without_compensation_and_a_none_result() -> None:
    async def audit(ctx: SagaContext) -> None:
        return None

    saga = Saga("s", [Step("audit", audit)])
    assert await saga.run() == {"audit": None}
    assert await saga.run() == {"audit": None}  # a saga runs again, from scratch
    assert saga.stats.completed == 2


async def test_a_step_policy_retries_the_action() -> None:
    clock = FakeClock()
    calls = []

    async def flaky(ctx: SagaContext) -> str:
        calls.append(clock.now())
        if len(calls) < 3:
            raise ConnectionError("blip")
        return "ok"

    retry = Retry(3, backoff=backoff.fixed(2.0), clock=clock)
    saga = Saga("s", [Step("call", flaky, policy=retry | Timeout(30, clock=clock))])
    assert await saga.run() == {"call": "ok"}
    assert calls == [0.0, 2.0, 4.0]
    assert clock.sleeps == [2.0, 2.0]


# Failure at each position ----------------------------------------------------------


@pytest.mark.parametrize("position", [0, 1, 2, 3])
async def test_a_failure_compensates_exactly_the_steps_before_it_in_reverse(
    position: int,
) -> None:
    ledger = Ledger()
    names = ["a", "b", "c", "d"]
    error = Declined("no")
    steps = [ledger.step(n, fail=error if i == position else None) for i, n in enumerate(names)]
    saga = Saga("s", steps)
    with pytest.raises(SagaCompensated) as caught:
        await saga.run()
    before = names[:position]
    undone = [("undo", n, f"{n}-result") for n in reversed(before)]
    # The failed step ran and is not compensated; the later ones never ran.
    assert ledger.log == [*before, names[position], *undone]
    exc = caught.value
    assert exc.__cause__ is error
    assert exc.error is error
    assert exc.step == names[position]
    assert exc.name == "s"
    assert exc.failures == {names[position]: error}
    assert exc.completed == tuple(before)
    assert exc.compensated == tuple(reversed(before))
    assert exc.cancelled == ()
    assert exc.compensation_errors == {}
    assert exc.results == {n: f"{n}-result" for n in before}
    assert isinstance(exc, SagaError)
    assert isinstance(exc, ResilienceError)
    assert not isinstance(exc, ExceptionGroup)
    assert f"step {names[position]!r} failed (Declined: no)" in str(exc)
    assert saga.stats.compensated == 1
    assert saga.stats.compensations == position


async def test_steps_without_compensation_are_skipped_when_undoing() -> None:
    ledger = Ledger()
    saga = Saga(
        "s",
        [ledger.step("a"), Step("read", ledger.action("read")), ledger.step("c", fail=Declined())],
    )
    with pytest.raises(SagaCompensated) as caught:
        await saga.run()
    assert ledger.log == ["a", "read", "c", ("undo", "a", "a-result")]
    assert caught.value.completed == ("a", "read")
    assert caught.value.compensated == ("a",)


# Parallel groups ----------------------------------------------------------------


async def test_a_failing_member_cancels_its_siblings_and_the_completed_ones_are_undone() -> None:
    ledger = Ledger()
    fast_done = anyio.Event()
    slow_cancelled: list[bool] = []

    async def fast(ctx: SagaContext) -> str:
        fast_done.set()
        return "fast-result"

    async def slow(ctx: SagaContext) -> str:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            slow_cancelled.append(True)
            raise
        raise AssertionError("unreachable")

    async def bad(ctx: SagaContext) -> str:
        await fast_done.wait()
        raise Declined("card declined")

    events: list[Event] = []

    def undo(name: str) -> Callable[..., Any]:
        async def undo(ctx: SagaContext, result: Any) -> None:
            ledger.log.append(("undo", name, result))

        return undo

    saga = Saga(
        "s",
        [
            ledger.step("before"),
            Parallel(
                Step("fast", fast, compensate=undo("fast")),
                Step("slow", slow, compensate=undo("slow")),
                Step("bad", bad, compensate=undo("bad")),
            ),
            ledger.step("after"),
        ],
    )
    saga.add_listener(events.append)
    with pytest.raises(SagaCompensated) as caught:
        await saga.run()
    exc = caught.value
    assert slow_cancelled == [True]
    assert ledger.log == [
        "before",
        ("undo", "fast", "fast-result"),
        ("undo", "before", "before-result"),
    ]
    assert (exc.step, exc.completed, exc.cancelled) == ("bad", ("before", "fast"), ("slow",))
    assert exc.compensated == ("fast", "before")
    assert [type(e) for e in events if getattr(e, "step", None) == "slow"] == [
        SagaStepStarted,
        SagaStepCancelled,
    ]
    assert saga.stats.steps_cancelled == 1
    assert saga.stats.steps_failed == 1


async def test_a_groups_completed_members_are_compensated_concurrently() -> None:
    started = {"a": anyio.Event(), "b": anyio.Event()}

    def undo(name: str, other: str) -> Callable[..., Any]:
        async def compensate(ctx: SagaContext, result: Any) -> None:
            started[name].set()
            # Run one after the other, each would wait for the other in vain.
            with anyio.fail_after(2):
                await started[other].wait()

        return compensate

    async def ok(ctx: SagaContext) -> str:
        return "ok"

    async def fail(ctx: SagaContext) -> str:
        raise Declined

    saga = Saga(
        "s",
        [
            Parallel(
                Step("a", ok, compensate=undo("a", "b")), Step("b", ok, compensate=undo("b", "a"))
            ),
            Step("c", fail),
        ],
        compensate_policy=Retry(1),
    )
    with pytest.raises(SagaCompensated) as caught:
        await saga.run()
    assert sorted(caught.value.compensated) == ["a", "b"]


async def test_a_plain_member_in_a_thread_finishes_and_is_compensated() -> None:
    started = threading.Event()
    release = threading.Event()
    undone = []

    def blocking(ctx: SagaContext) -> str:
        started.set()
        assert release.wait(5)
        return "blocked-result"

    def refund(ctx: SagaContext, result: Any) -> None:
        undone.append(result)

    async def bad(ctx: SagaContext) -> str:
        await anyio.to_thread.run_sync(started.wait, 5)
        # The sibling is in its thread; it finishes after we fail.
        threading.Timer(0.05, release.set).start()
        raise Declined

    saga = Saga(
        "s",
        [Parallel(Step("blocking", blocking, compensate=refund), Step("bad", bad))],
    )
    with pytest.raises(SagaCompensated) as caught:
        await saga.run()
    assert undone == ["blocked-result"]
    assert caught.value.completed == ("blocking",)
    assert caught.value.cancelled == ()


async def test_members_failing_together_are_all_reported() -> None:
    both = anyio.Event()
    arrived: list[str] = []

    def member(name: str) -> Callable[..., Any]:
        async def action(ctx: SagaContext) -> str:
            arrived.append(name)
            if len(arrived) == 2:
                both.set()
            with anyio.CancelScope(shield=True):
                await both.wait()
            raise Declined(name)

        return action

    saga = Saga("s", [Parallel(Step("x", member("x")), Step("y", member("y")))])
    with pytest.raises(SagaCompensated) as caught:
        await saga.run()
    assert set(caught.value.failures) == {"x", "y"}
    assert caught.value.step == next(iter(caught.value.failures))


# Compensations: retried, and a failing one stops nothing ---------------------------


async def test_a_compensation_is_retried_by_default_until_it_succeeds() -> None:
    clock = FakeClock()
    ledger = Ledger()
    attempts = []

    async def release(ctx: SagaContext, result: Any) -> None:
        attempts.append(clock.now())
        if len(attempts) < 3:
            raise ConnectionError("inventory service down")

    saga = Saga(
        "order",
        [
            Step("reserve", ledger.action("reserve"), compensate=release),
            ledger.step("pay", fail=Declined()),
        ],
        clock=clock,
    )
    with pytest.raises(SagaCompensated) as caught:
        await saga.run()
    assert caught.value.compensated == ("reserve",)
    assert len(attempts) == 3
    # The default: exponential from 0.5 s, doubling, full jitter (no real waiting).
    assert len(clock.sleeps) == 2
    assert 0 <= clock.sleeps[0] <= 0.5
    assert 0 <= clock.sleeps[1] <= 1.0
    assert saga.compensate_policy.name == "order.compensate"
    assert isinstance(saga.compensate_policy, Retry)
    assert saga.compensate_policy.attempts == 5
    assert saga.compensate_policy.stats.success_with_retry == 1


async def test_a_compensation_that_keeps_failing_does_not_stop_the_others() -> None:
    clock = FakeClock()
    ledger = Ledger()
    original = Declined("card declined")
    broken = ConnectionError("label service gone")
    tries = []

    async def void_label(ctx: SagaContext, result: Any) -> None:
        tries.append(result)
        raise broken

    events: list[Event] = []
    saga = Saga(
        "order",
        [
            ledger.step("reserve"),
            Step("label", ledger.action("label"), compensate=void_label),
            ledger.step("notify"),
            ledger.step("charge", fail=original),
        ],
        clock=clock,
    )
    saga.add_listener(events.append)
    with pytest.raises(SagaCompensationError) as caught:
        await saga.run({"id": 1})
    exc = caught.value
    # Every compensation ran, in reverse, the failing one retried 5 times.
    assert ledger.log == [
        "reserve",
        "label",
        "notify",
        "charge",
        ("undo", "notify", "notify-result"),
        ("undo", "reserve", "reserve-result"),
    ]
    assert tries == ["label-result"] * 5
    assert isinstance(exc, ExceptionGroup)
    assert isinstance(exc, ResilienceError)
    assert isinstance(exc, SagaError)
    assert exc.exceptions == (original, broken)
    assert exc.step == "charge"
    assert exc.error is original
    assert exc.compensation_errors == {"label": broken}
    assert exc.completed == ("reserve", "label", "notify")
    assert exc.compensated == ("notify", "reserve")
    assert exc.results["label"] == "label-result"  # what a human needs to undo it
    assert "needs manual repair" in str(exc)
    assert "'label'" in str(exc)
    assert any("could not compensate step 'label'" in note for note in broken.__notes__)
    # The original error can be picked out as from any group (or with except*):
    declined, rest = exc.split(Declined)
    assert declined is not None
    assert declined.exceptions == (original,)
    assert rest is not None
    assert rest.exceptions == (broken,)
    assert saga.stats.failed == 1
    assert saga.stats.compensations_failed == 1
    states = [(e.old_state, e.new_state) for e in events if isinstance(e, SagaStateChanged)]
    assert states == [(None, "running"), ("running", "compensating"), ("compensating", "failed")]
    failed = [e for e in events if isinstance(e, SagaCompensationFailed)]
    assert [(e.step, e.exception) for e in failed] == [("label", broken)]


def test_the_errors_pickle_and_copy_with_their_fields() -> None:
    error = Declined("no")
    compensated = SagaCompensated(
        name="s",
        step="b",
        error=error,
        completed=("a",),
        compensated=("a",),
        results={"a": 1},
    )
    group = SagaCompensationError(
        name="s",
        step="b",
        error=error,
        compensation_errors={"a": ValueError("x")},
        completed=("a",),
        results={"a": 1},
    )
    for exc in (compensated, group):
        for clone in (pickle.loads(pickle.dumps(exc)), copy.copy(exc)):
            assert type(clone) is type(exc)
            assert str(clone) == str(exc)
            assert (clone.name, clone.step, clone.completed, clone.results) == (
                "s",
                "b",
                ("a",),
                {"a": 1},
            )
            assert repr(clone.error) == repr(error)
    assert len(pickle.loads(pickle.dumps(group)).exceptions) == 2
    with pytest.raises(ValueError, match="compensation_errors"):
        SagaCompensationError(name="s", step="b", error=error, compensation_errors={})


# Cancellation and timeouts -----------------------------------------------------------


async def test_cancelling_a_run_compensates_what_completed_then_propagates() -> None:
    ledger = Ledger()
    waiting = anyio.Event()
    undo_checkpoints = []

    async def hang(ctx: SagaContext) -> str:
        waiting.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def release(ctx: SagaContext, result: Any) -> None:
        # Checkpoints a cancelled, unshielded task could not pass.
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
            undo_checkpoints.append(result)

    saga = Saga(
        "s",
        [
            Step("reserve", ledger.action("reserve"), compensate=release),
            Step("hang", hang, compensate=ledger.undo("hang")),
        ],
    )
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(saga.run)
            await waiting.wait()
            scope.cancel()
    assert scope.cancelled_caught
    assert undo_checkpoints == ["reserve-result"] * 3
    assert ledger.log == ["reserve"]  # hang was cancelled, not compensated
    assert saga.stats.cancelled == 1
    assert saga.stats.compensated == 1
    assert saga.stats.steps_cancelled == 1
    assert saga.stats.running == 0


async def test_a_total_timeout_compensates_outside_its_own_deadline() -> None:
    clock = FakeClock()
    attempts = []

    async def reserve(ctx: SagaContext) -> str:
        return "r"

    async def release(ctx: SagaContext, result: Any) -> None:
        attempts.append(clock.now())
        if len(attempts) == 1:
            raise ConnectionError  # retried, though the run's deadline has passed

    async def slow(ctx: SagaContext) -> str:
        await clock.sleep(60)  # the fake time passes the timeout's deadline
        return "never"

    saga = Saga(
        "s",
        [Step("reserve", reserve, compensate=release), Step("slow", slow)],
        clock=clock,
    )
    with pytest.raises(resilience.TimeoutError):
        await Timeout(10, clock=clock).call(saga.run)
    assert len(attempts) == 2
    assert saga.stats.cancelled == 1
    assert saga.stats.compensated == 1


async def test_a_timeout_firing_while_compensating_waits_for_the_compensation() -> None:
    clock = FakeClock()
    done = []

    async def reserve(ctx: SagaContext) -> str:
        return "r"

    async def release(ctx: SagaContext, result: Any) -> None:
        await clock.sleep(60)  # the outer timeout fires meanwhile
        await anyio.lowlevel.checkpoint()
        done.append(result)

    async def fail(ctx: SagaContext) -> str:
        raise Declined

    saga = Saga("s", [Step("reserve", reserve, compensate=release), Step("pay", fail)])
    with pytest.raises(resilience.TimeoutError):
        await Timeout(10, clock=clock).call(saga.run)
    assert done == ["r"]
    assert saga.stats.compensated == 1


async def test_cancelling_a_parallel_group_undoes_its_completed_members() -> None:
    ledger = Ledger()
    fast_done = anyio.Event()

    async def hang(ctx: SagaContext) -> str:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    saga = Saga(
        "s",
        [
            ledger.step("a"),
            Parallel(ledger.step("fast"), Step("hang", hang, compensate=ledger.undo("hang"))),
        ],
    )
    saga.add_listener(
        lambda e: isinstance(e, SagaStepCompleted) and e.step == "fast" and fast_done.set()
    )  # type: ignore[func-returns-value]
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(saga.run)
            await fast_done.wait()
            scope.cancel()
    assert scope.cancelled_caught
    assert ledger.log == ["a", "fast", ("undo", "fast", "fast-result"), ("undo", "a", "a-result")]


async def test_a_step_timing_out_under_its_own_policy_is_a_failure_not_a_cancellation() -> None:
    clock = FakeClock()
    ledger = Ledger()

    async def slow(ctx: SagaContext) -> str:
        await clock.sleep(5)
        return "late"

    saga = Saga(
        "s",
        [ledger.step("a"), Step("slow", slow, policy=Timeout(1, clock=clock)), ledger.step("c")],
    )
    with pytest.raises(SagaCompensated) as caught:
        await saga.run()
    assert isinstance(caught.value.error, resilience.TimeoutError)
    assert caught.value.step == "slow"
    assert caught.value.cancelled == ()
    assert ledger.log == ["a", ("undo", "a", "a-result")]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_timeout_around_a_run_waits_for_the_compensation() -> None:
    import asyncio

    undone = []

    async def reserve(ctx: SagaContext) -> str:
        return "r"

    async def release(ctx: SagaContext, result: Any) -> None:
        await asyncio.sleep(0.02)  # past the timeout's deadline
        undone.append(result)

    async def hang(ctx: SagaContext) -> str:
        await asyncio.sleep(10)
        return "never"

    saga = Saga("s", [Step("reserve", reserve, compensate=release), Step("hang", hang)])
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await saga.run()
    assert undone == ["r"]
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_cancelled_plain_step_finishes_in_its_thread_and_is_compensated() -> None:
    started = threading.Event()
    release = threading.Event()
    undone = []

    def blocking(ctx: SagaContext) -> str:
        started.set()
        assert release.wait(5)
        return "done"

    def undo(ctx: SagaContext, result: Any) -> None:
        undone.append(result)

    after = []

    async def next_step(ctx: SagaContext) -> None:
        after.append(1)

    saga = Saga("s", [Step("blocking", blocking, compensate=undo), Step("next", next_step)])
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(saga.run)
            await anyio.to_thread.run_sync(started.wait, 5)
            scope.cancel()
            threading.Timer(0.05, release.set).start()
    assert scope.cancelled_caught
    assert undone == ["done"]  # it returned: it completed, so it is undone
    assert after == []  # and nothing started after the cancellation
    assert saga.stats.steps_completed == 1
    assert saga.stats.steps_cancelled == 0


async def test_a_compensation_failing_in_a_cancelled_run_is_logged_and_noted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    waiting = anyio.Event()
    notes: list[str] = []
    events: list[Event] = []

    async def reserve(ctx: SagaContext) -> str:
        return "r"

    async def release(ctx: SagaContext, result: Any) -> None:
        raise ConnectionError("warehouse gone")

    async def hang(ctx: SagaContext) -> str:
        waiting.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    saga = Saga(
        "order",
        [Step("reserve", reserve, compensate=release), Step("hang", hang)],
        compensate_policy=Retry(1),
    )
    saga.add_listener(events.append)

    async def run() -> None:
        try:
            await saga.run()
        except anyio.get_cancelled_exc_class() as exc:
            notes.extend(getattr(exc, "__notes__", []))
            raise

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await waiting.wait()
            scope.cancel()
    assert scope.cancelled_caught
    assert len(notes) == 1
    assert "compensation failed for 'reserve'" in notes[0]
    assert "needs manual repair" in notes[0]
    assert any("compensation failed for 'reserve'" in r.getMessage() for r in caplog.records)
    states = [e.new_state for e in events if isinstance(e, SagaStateChanged)]
    assert states == ["running", "compensating", "failed"]
    assert saga.stats.failed == 1
    assert saga.stats.cancelled == 1


def test_run_sync_interrupted_compensates_then_re_raises() -> None:
    undone = []

    def reserve(ctx: SagaContext) -> str:
        return "r"

    def release(ctx: SagaContext, result: Any) -> None:
        undone.append(result)

    def interrupted(ctx: SagaContext) -> str:
        raise KeyboardInterrupt

    saga = Saga("s", [Step("reserve", reserve, compensate=release), Step("x", interrupted)])
    with pytest.raises(KeyboardInterrupt):
        saga.run_sync()
    assert undone == ["r"]
    assert saga.stats.cancelled == 1
    assert saga.stats.steps_cancelled == 1


class CancelAfterReturn(resilience.Policy):
    """A policy still busy after the action returned, when a cancellation comes."""

    def __init__(self, scope: anyio.CancelScope) -> None:
        super().__init__(name="busy")
        self.scope = scope

    async def call(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        result = await fn(*args, **kwargs)
        self.scope.cancel()
        await anyio.lowlevel.checkpoint()  # the cancellation arrives here
        return result

    def call_sync(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)


async def test_an_action_that_returned_before_the_cancellation_is_compensated() -> None:
    ledger = Ledger()
    with anyio.CancelScope() as scope:
        saga = Saga(
            "s",
            [ledger.step("a"), ledger.step("b", policy=CancelAfterReturn(scope)), ledger.step("c")],
        )
        await saga.run()
    assert scope.cancelled_caught
    assert ledger.log == ["a", "b", ("undo", "b", "b-result"), ("undo", "a", "a-result")]


# Plain steps ------------------------------------------------------------------


async def test_plain_steps_run_in_a_worker_thread_when_the_saga_runs_async() -> None:
    loop_thread = threading.get_ident()
    threads: dict[str, int] = {}

    def reserve(ctx: SagaContext) -> str:
        threads["reserve"] = threading.get_ident()
        time.sleep(0.01)  # blocks its thread, not the event loop
        return "r"

    def release(ctx: SagaContext, result: Any) -> None:
        threads["release"] = threading.get_ident()

    clock = FakeClock()
    calls = []

    def flaky(ctx: SagaContext) -> str:
        calls.append(ctx.results["reserve"])
        if len(calls) < 2:
            raise ConnectionError
        raise Declined

    saga = Saga(
        "s",
        [
            Step("reserve", reserve, compensate=release),
            Step(
                "pay",
                flaky,
                policy=Retry(3, on=ConnectionError, backoff=backoff.fixed(1), clock=clock),
            ),
        ],
    )
    with pytest.raises(SagaCompensated) as caught:
        await saga.run()
    assert isinstance(caught.value.error, Declined)
    assert calls == ["r", "r"]
    assert clock.sleeps == [1.0]
    assert loop_thread not in threads.values()


async def test_a_plain_step_under_a_pool_bulkhead_runs_on_the_pool() -> None:
    with PoolBulkhead(1, name="pool") as pool:

        def work(ctx: SagaContext) -> str:
            return threading.current_thread().name

        saga = Saga("s", [Step("work", work, policy=Timeout(5) | pool)])
        results = await saga.run()
        assert results["work"] != threading.current_thread().name
        with pytest.raises(TypeError, match="cannot run_sync"):
            saga.run_sync()


async def test_a_plain_step_that_returns_a_coroutine_fails_clearly() -> None:
    async def real(ctx: SagaContext) -> str:
        return "x"

    saga = Saga("s", [Step("lambda", lambda ctx: real(ctx))])
    with pytest.raises(SagaCompensated) as caught:
        await saga.run()
    assert isinstance(caught.value.error, TypeError)
    assert "make it an async def" in str(caught.value.error)


def test_run_sync_runs_plain_steps_in_the_calling_thread() -> None:
    clock = FakeClock()
    log: list[Any] = []
    here = threading.get_ident()

    def step(name: str, fail: bool = False) -> Step:
        def action(ctx: SagaContext) -> str:
            assert threading.get_ident() == here
            log.append((name, dict(ctx.results)))
            if fail:
                raise Declined(name)
            return name.upper()

        def undo(ctx: SagaContext, result: Any) -> None:
            log.append(("undo", name, result))
            if name == "b" and log.count(("undo", "b", "B")) < 2:
                raise ConnectionError

        return Step(name, action, compensate=undo)

    ok = Saga("s", [step("a"), Parallel(step("b"), step("c")), step("d")], clock=clock)
    assert ok.run_sync(1) == {"a": "A", "b": "B", "c": "C", "d": "D"}
    # Members one after the other, each seeing only the steps before the group.
    assert log == [
        ("a", {}),
        ("b", {"a": "A"}),
        ("c", {"a": "A"}),
        ("d", {"a": "A", "b": "B", "c": "C"}),
    ]
    log.clear()
    failing = Saga(
        "s",
        [step("a"), Parallel(step("b"), step("c", fail=True), step("x")), step("d")],
        clock=clock,
    )
    with pytest.raises(SagaCompensated) as caught:
        failing.run_sync()
    assert log == [
        ("a", {}),
        ("b", {"a": "A"}),
        ("c", {"a": "A"}),  # fails: x never starts
        ("undo", "b", "B"),  # failed once, retried on the fake clock
        ("undo", "b", "B"),
        ("undo", "a", "A"),
    ]
    assert caught.value.compensated == ("b", "a")
    assert caught.value.step == "c"
    assert len(clock.sleeps) == 1


def test_run_sync_refuses_async_steps_before_running_anything() -> None:
    ran = []

    def plain(ctx: SagaContext) -> None:
        ran.append(1)

    async def coro(ctx: SagaContext) -> None: ...

    async def undo(ctx: SagaContext, result: Any) -> None: ...

    for saga, what in (
        (Saga("s", [Step("p", plain), Step("a", coro)]), "the action of step 'a' is async"),
        (Saga("s", [Step("p", plain, compensate=undo)]), "the compensation of step 'p' is async"),
    ):
        with pytest.raises(TypeError, match=re.escape(what)):
            saga.run_sync()
    assert ran == []
    # The saga's compensate_policy serves only the compensations without one.
    own = Step("p", plain, compensate=lambda ctx, result: None, compensate_policy=Retry(2))
    assert Saga("s", [own], compensate_policy=Timeout(1)).run_sync() == {"p": None}
    assert ran == [1]


# Events --------------------------------------------------------------------


async def test_events_tell_each_step_and_each_state_of_a_run() -> None:
    clock = FakeClock()
    ledger = Ledger()
    events: list[Event] = []
    everything: list[Event] = []
    saga = Saga("order", [ledger.step("a"), ledger.step("b", fail=Declined())], clock=clock)
    saga.add_listener(events.append)
    resilience.events.add_listener(everything.append)
    try:
        with pytest.raises(SagaCompensated):
            await saga.run()
    finally:
        resilience.events.remove_listener(everything.append)
    error = next(e.exception for e in events if isinstance(e, SagaStepFailed))
    assert events == [
        SagaStateChanged("order", 1, None, "running", 0.0),
        SagaStepStarted("order", 1, "a"),
        SagaStepCompleted("order", 1, "a", 0.0),
        SagaStepStarted("order", 1, "b"),
        SagaStepFailed("order", 1, "b", 0.0, error),
        SagaStateChanged("order", 1, "running", "compensating", 0.0),
        SagaCompensationStarted("order", 1, "a"),
        SagaStepCompensated("order", 1, "a", 0.0),
        SagaStateChanged("order", 1, "compensating", "compensated", 0.0),
    ]
    assert [e for e in everything if e.name == "order"] == events
    saga.remove_listener(events.append)
    await Saga("order", [ledger.step("z")]).run()
    assert len(events) == 9


async def test_concurrent_runs_of_one_saga_are_told_apart() -> None:
    gate = anyio.Event()

    async def wait(ctx: SagaContext) -> Any:
        await gate.wait()
        return ctx.input

    events: list[Event] = []
    saga = Saga("s", [Step("w", wait)])
    saga.add_listener(events.append)
    results: list[Any] = []

    async def one(n: int) -> None:
        results.append(await saga.run(n))

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, 1)
        tg.start_soon(one, 2)
        await until(lambda: saga.stats.running == 2)
        gate.set()
    assert sorted(r["w"] for r in results) == [1, 2]
    assert {e.run for e in events if isinstance(e, SagaStepCompleted)} == {1, 2}


# Bad input ---------------------------------------------------------------------


async def _act(ctx: SagaContext) -> None: ...


async def _undo(ctx: SagaContext, result: Any) -> None: ...


def _plain(ctx: SagaContext) -> None: ...


def _plain_undo(ctx: SagaContext, result: Any) -> None: ...


async def _agen(ctx: SagaContext) -> Any:
    yield


BAD: list[tuple[Callable[[], object], type[Exception], str]] = [
    (lambda: Step(3, _act), TypeError, "name must be a string, got 3"),  # type: ignore[arg-type]
    (lambda: Step(" ", _act), ValueError, "name must be a non-empty string"),
    (lambda: Step("a", "act"), TypeError, "action of step 'a' must be callable, got 'act'"),  # type: ignore[arg-type]
    (lambda: Step("a", _agen), TypeError, "must be a function (async def or def)"),
    (
        lambda: Step("a", _act, compensate=5),
        TypeError,
        "compensate of step 'a' must be callable, got 5",
    ),  # type: ignore[arg-type]
    (lambda: Step("a", _act, policy=Retry), TypeError, "policy of step 'a' must be a Policy"),  # type: ignore[arg-type]
    (
        lambda: Step("a", _plain, policy=Retry(2) | Timeout(30)),
        TypeError,
        "policy of step 'a' cannot run it",
    ),
    (
        lambda: Step("a", _act, policy=PoolBulkhead(1)),
        TypeError,
        "policy of step 'a' cannot run it",
    ),
    (
        lambda: Step("a", _act, compensate_policy=Retry(2)),
        ValueError,
        "compensate_policy of step 'a' has no compensation",
    ),
    (
        lambda: Step("a", _act, compensate=_plain_undo, compensate_policy=Timeout(1)),
        TypeError,
        "compensate_policy of step 'a' cannot run it",
    ),
    (lambda: Parallel(), ValueError, "Parallel needs at least one step"),
    (lambda: Parallel([Step("a", _act)]), TypeError, "not a list"),  # type: ignore[arg-type]
    (
        lambda: Parallel(Step("a", _act), Parallel(Step("b", _act))),
        TypeError,
        "Parallel runs Steps",
    ),  # type: ignore[arg-type]
    (lambda: Parallel(Step("a", _act), Step("a", _act)), ValueError, "got 'a' twice"),
    (lambda: Saga("s", []), ValueError, "steps of saga 's' must hold at least one step, got none"),
    (lambda: Saga("s", Step("a", _act)), TypeError, "steps must be a list"),  # type: ignore[arg-type]
    (lambda: Saga("s", [_act]), TypeError, "steps must be Step or Parallel entries"),  # type: ignore[list-item]
    (lambda: Saga("", [Step("a", _act)]), ValueError, "name must be a non-empty string"),
    (lambda: Saga("s", [Step("a", _act), Step("a", _act)]), ValueError, "got 'a' twice"),
    (
        lambda: Saga("s", [Step("a", _act), Parallel(Step("b", _act), Step("a", _act))]),
        ValueError,
        "got 'a' twice",
    ),
    (lambda: Saga("s", [Step("a", _act)], clock=3), TypeError, "clock must provide now()"),  # type: ignore[arg-type]
    (
        lambda: Saga("s", [Step("a", _act)], compensate_policy="retry"),
        TypeError,
        "must be a Policy",
    ),  # type: ignore[arg-type]
    (
        lambda: Saga("s", [Step("a", _act, compensate=_plain_undo)], compensate_policy=Timeout(1)),
        TypeError,
        "compensate_policy of saga 's' (for step 'a') cannot run it",
    ),
]


@pytest.mark.parametrize(("build", "error", "message"), BAD)
def test_bad_definitions_are_refused_when_built(
    build: Callable[[], object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        build()


def test_what_a_definition_holds() -> None:
    retry = Retry(2)
    step = Step("a", _act, compensate=_undo, policy=retry, compensate_policy=Bulkhead(1))
    assert (step.name, step.action, step.compensate, step.policy) == ("a", _act, _undo, retry)
    assert isinstance(step.compensate_policy, Bulkhead)
    assert step.is_async
    assert not Step("p", _plain).is_async
    group = Parallel(Step("b", _act), Step("c", _act))
    saga = Saga("s", [step, group])
    assert saga.steps == (step, group)
    assert saga.name == "s"
    assert repr(saga) == "<Saga 's': 'a', ['b', 'c']>"
    assert repr(step) == "<Step 'a', compensated>"
    assert repr(group) == "<Parallel 'b', 'c'>"
    ctx = SagaContext({"id": 1}, {"a": 2}, saga="s", step="b")
    assert (ctx.input, dict(ctx.results), ctx.saga, ctx.step) == ({"id": 1}, {"a": 2}, "s", "b")
    with pytest.raises(TypeError):
        saga.add_listener(3)  # type: ignore[arg-type]


async def test_an_async_callable_object_is_awaited() -> None:
    class Charge:
        async def __call__(self, ctx: SagaContext) -> str:
            return "charged"

    step = Step("charge", Charge())
    assert step.is_async
    assert await Saga("s", [step]).run() == {"charge": "charged"}


# The docs page ------------------------------------------------------------------


def _blocks() -> list[str]:
    text = (ROOT / "docs" / "saga.md").read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, re.M | re.S)


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_every_python_block_of_the_docs_page_runs(index: int) -> None:
    exec(compile(_blocks()[index], f"docs/saga.md block {index}", "exec"), {})
