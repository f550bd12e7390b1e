from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest

import resilience
from resilience import Bulkhead, BulkheadFullError, BulkheadStatistics, Timeout
from resilience.events import BulkheadRejected, Event
from resilience.testing import FakeClock


class Gate:
    """Work that holds its permit until released, counting who is inside."""

    def __init__(self) -> None:
        self.inside = 0
        self.peak = 0
        self.entered: list[object] = []
        self.event = anyio.Event()

    async def work(self, tag: object = None) -> object:
        self.inside += 1
        self.peak = max(self.peak, self.inside)
        self.entered.append(tag)
        try:
            await self.event.wait()
        finally:
            self.inside -= 1
        return tag


def snapshot(bulkhead: Bulkhead) -> tuple[int, int, int]:
    stats = bulkhead.stats
    return stats.in_flight, stats.waiting, stats.rejected


# Admission -------------------------------------------------------------------


async def test_free_permit_returns_the_result_and_gives_the_permit_back() -> None:
    bulkhead = Bulkhead(2)

    async def add(a: int, *, b: int) -> int:
        assert bulkhead.stats.in_flight == 1
        return a + b

    assert await bulkhead.call(add, 1, b=2) == 3
    assert snapshot(bulkhead) == (0, 0, 0)


async def test_never_more_than_max_concurrent_inside_at_once() -> None:
    bulkhead = Bulkhead(3, max_waiting=100)
    gate = Gate()
    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(bulkhead.call, gate.work, i)
        await anyio.wait_all_tasks_blocked()
        assert (gate.inside, gate.peak) == (3, 3)
        assert snapshot(bulkhead) == (3, 17, 0)
        gate.event.set()
    assert gate.peak == 3
    assert sorted(gate.entered) == list(range(20))  # type: ignore[type-var]
    assert snapshot(bulkhead) == (0, 0, 0)


async def test_waiters_enter_in_fifo_order() -> None:
    bulkhead = Bulkhead(1, max_waiting=50)
    gate = Gate()
    order: list[int] = []

    async def record(i: int) -> None:
        order.append(i)

    async with anyio.create_task_group() as tg:
        tg.start_soon(bulkhead.call, gate.work)
        await anyio.wait_all_tasks_blocked()
        for i in range(30):
            tg.start_soon(bulkhead.call, record, i)
            # Each waiter is parked before the next one arrives.
            await anyio.wait_all_tasks_blocked()
        assert bulkhead.stats.waiting == 30
        gate.event.set()
    assert order == list(range(30))


async def test_rejection_at_the_exact_boundary_with_a_fresh_error_each_time() -> None:
    bulkhead = Bulkhead(2, max_waiting=3, name="db")
    events: list[Event] = []
    bulkhead.add_listener(events.append)
    gate = Gate()
    async with anyio.create_task_group() as tg:
        for _ in range(5):  # 2 run, 3 wait: exactly full
            tg.start_soon(bulkhead.call, gate.work)
        await anyio.wait_all_tasks_blocked()
        assert snapshot(bulkhead) == (2, 3, 0)
        errors = []
        for _ in range(2):
            with pytest.raises(BulkheadFullError) as info:
                await bulkhead.call(gate.work)
            errors.append(info.value)
        gate.event.set()
    assert errors[0] is not errors[1]
    assert (errors[0].name, errors[0].capacity) == ("db", 2)
    assert "'db'" in str(errors[0])
    assert isinstance(errors[0], resilience.ResilienceError)
    assert events == [BulkheadRejected("db", 2, False)] * 2
    assert snapshot(bulkhead) == (0, 0, 2)
    assert gate.entered == [None] * 5


async def test_default_is_reject_at_once_without_waiting() -> None:
    bulkhead = Bulkhead(1)
    gate = Gate()
    async with anyio.create_task_group() as tg:
        tg.start_soon(bulkhead.call, gate.work)
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(BulkheadFullError):
            await bulkhead.call(gate.work)
        gate.event.set()
    assert snapshot(bulkhead) == (0, 0, 1)


async def test_no_event_is_built_when_nobody_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object) -> None:
        raise AssertionError("event built without a listener")

    monkeypatch.setattr("resilience.bulkhead.BulkheadRejected", forbidden)
    bulkhead = Bulkhead(1)
    gate = Gate()
    async with anyio.create_task_group() as tg:
        tg.start_soon(bulkhead.call, gate.work)
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(BulkheadFullError):
            await bulkhead.call(gate.work)
        gate.event.set()


async def test_errors_from_the_call_propagate_and_free_the_permit() -> None:
    bulkhead = Bulkhead(1)

    async def boom() -> None:
        raise KeyError("x")

    for _ in range(3):
        with pytest.raises(KeyError):
            await bulkhead.call(boom)
    with pytest.raises(TypeError):
        await bulkhead.call(lambda: 1)  # type: ignore[arg-type,return-value]
    assert snapshot(bulkhead) == (0, 0, 0)


async def test_decorator_keeps_metadata_and_limits_calls() -> None:
    bulkhead = Bulkhead(1, max_waiting=5)
    gate = Gate()

    @bulkhead
    async def guarded(tag: int) -> object:
        """Doc."""
        return await gate.work(tag)

    assert guarded.__name__ == "guarded"
    assert guarded.__doc__ == "Doc."
    async with anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(guarded, i)
            await anyio.wait_all_tasks_blocked()
        assert snapshot(bulkhead) == (1, 3, 0)
        gate.event.set()
    assert gate.entered == [0, 1, 2, 3]
    assert gate.peak == 1


async def test_bulkhead_composes_in_a_pipeline() -> None:
    clock = FakeClock()
    bulkhead = Bulkhead(1, max_waiting=1)
    policy = Timeout(1.0, clock=clock) | bulkhead
    gate = Gate()
    errors: list[BaseException] = []

    async def timed() -> None:
        try:
            await policy.call(gate.work)
        except resilience.TimeoutError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(bulkhead.call, gate.work)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(timed)
        await anyio.wait_all_tasks_blocked()
        assert bulkhead.stats.waiting == 1
        clock.advance(1.0)
        await anyio.wait_all_tasks_blocked()
        assert len(errors) == 1
        assert snapshot(bulkhead) == (1, 0, 0)
        gate.event.set()
    assert snapshot(bulkhead) == (0, 0, 0)


# max_wait ----------------------------------------------------------------------


async def test_max_wait_expiry_on_the_fake_clock() -> None:
    clock = FakeClock()
    bulkhead = Bulkhead(1, max_waiting=2, max_wait=2.0, clock=clock, name="api")
    events: list[Event] = []
    bulkhead.add_listener(events.append)
    gate = Gate()
    outcome: list[object] = []

    async def waiter() -> None:
        try:
            await bulkhead.call(gate.work, "late")
        except BulkheadFullError as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(bulkhead.call, gate.work, "first")
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        clock.advance(1.999)
        await anyio.wait_all_tasks_blocked()
        assert outcome == []
        assert snapshot(bulkhead) == (1, 1, 0)
        clock.advance(0.001)
        await anyio.wait_all_tasks_blocked()
        assert len(outcome) == 1
        assert isinstance(outcome[0], BulkheadFullError)
        assert snapshot(bulkhead) == (1, 0, 1)
        gate.event.set()
    # The permit went back to the pool, not to the caller that gave up.
    assert gate.entered == ["first"]
    assert snapshot(bulkhead) == (0, 0, 1)
    assert events == [BulkheadRejected("api", 1, True)]


async def test_a_waiter_admitted_in_time_cancels_its_expiry_timer() -> None:
    clock = FakeClock()
    bulkhead = Bulkhead(1, max_waiting=1, max_wait=5.0, clock=clock)
    gate = Gate()
    async with anyio.create_task_group() as tg:
        tg.start_soon(bulkhead.call, gate.work, "a")
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(bulkhead.call, gate.work, "b")
        await anyio.wait_all_tasks_blocked()
        gate.event.set()
    clock.advance(10)  # a leftover timer would count a rejection here
    assert snapshot(bulkhead) == (0, 0, 0)
    assert gate.entered == ["a", "b"]


async def test_max_wait_on_the_real_clock_expires() -> None:
    # The only real wait in this module: 1 ms, to cover the loop-timer path.
    bulkhead = Bulkhead(1, max_waiting=1, max_wait=0.001)
    gate = Gate()
    async with anyio.create_task_group() as tg:
        tg.start_soon(bulkhead.call, gate.work)
        await anyio.wait_all_tasks_blocked()
        with anyio.fail_after(5), pytest.raises(BulkheadFullError):
            await bulkhead.call(gate.work)
        gate.event.set()
    assert snapshot(bulkhead) == (0, 0, 1)


def test_max_wait_on_trio_virtual_time() -> None:
    """trio's own clock, autojumping: move_on_after expiry without waiting."""
    import trio
    import trio.testing

    async def main() -> None:
        bulkhead = Bulkhead(1, max_waiting=1, max_wait=30.0)
        release = trio.Event()

        async def hold() -> None:
            await release.wait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(bulkhead.call, hold)
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            with pytest.raises(BulkheadFullError):
                await bulkhead.call(hold)
            assert trio.current_time() - start == pytest.approx(30.0)
            release.set()
        assert snapshot(bulkhead) == (0, 0, 1)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# Cancellation ----------------------------------------------------------------


async def test_cancelled_waiter_leaves_the_queue_and_gets_no_permit() -> None:
    bulkhead = Bulkhead(1, max_waiting=5)
    gate = Gate()
    async with anyio.create_task_group() as tg:
        tg.start_soon(bulkhead.call, gate.work, "holder")
        await anyio.wait_all_tasks_blocked()
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as inner:
                inner.start_soon(bulkhead.call, gate.work, "gone")
                await anyio.wait_all_tasks_blocked()
                assert bulkhead.stats.waiting == 1
                scope.cancel()
        assert snapshot(bulkhead) == (1, 0, 0)
        tg.start_soon(bulkhead.call, gate.work, "next")
        await anyio.wait_all_tasks_blocked()
        gate.event.set()
    assert gate.entered == ["holder", "next"]
    assert snapshot(bulkhead) == (0, 0, 0)


async def test_cancelled_running_call_gives_its_permit_back() -> None:
    bulkhead = Bulkhead(1)
    gate = Gate()
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(bulkhead.call, gate.work)
            await anyio.wait_all_tasks_blocked()
            assert bulkhead.stats.in_flight == 1
            scope.cancel()
    assert snapshot(bulkhead) == (0, 0, 0)


async def test_waiter_cancelled_in_the_same_tick_its_permit_arrives() -> None:
    """The holder cancels the waiter, then releases: the permit must not be
    lost with the waiter nor go to it."""
    bulkhead = Bulkhead(1, max_waiting=2)
    scope = anyio.CancelScope()
    entered: list[str] = []

    go = anyio.Event()

    async def holder() -> None:
        await go.wait()
        scope.cancel()  # the waiter is cancelled, then our release follows at once

    async def second() -> None:
        entered.append("second")

    async def waiter() -> None:
        with scope:
            await bulkhead.call(second)

    async with anyio.create_task_group() as tg:
        tg.start_soon(bulkhead.call, holder)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert bulkhead.stats.waiting == 1
        go.set()
    assert entered == []
    assert snapshot(bulkhead) == (0, 0, 0)
    await bulkhead.call(anyio.sleep, 0)


async def test_timeout_around_a_waiting_and_a_running_call() -> None:
    clock = FakeClock()
    bulkhead = Bulkhead(1, max_waiting=1)
    gate = Gate()
    timeout = Timeout(1.0, clock=clock)
    results: list[str] = []

    async def timed(tag: str) -> None:
        try:
            await timeout.call(bulkhead.call, gate.work, tag)
        except resilience.TimeoutError:
            results.append(tag)

    async with anyio.create_task_group() as tg:
        tg.start_soon(timed, "running")
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(timed, "waiting")
        await anyio.wait_all_tasks_blocked()
        assert snapshot(bulkhead) == (1, 1, 0)
        clock.advance(1.0)
    assert sorted(results) == ["running", "waiting"]
    assert gate.entered == ["running"]
    assert snapshot(bulkhead) == (0, 0, 0)


async def test_random_cancellation_storm_returns_every_permit() -> None:
    """10^4 random operations: calls that run, wait, are rejected, expire,
    are cancelled while waiting or running, time out, and resizes."""
    rng = random.Random(20240605)
    clock = FakeClock()
    bulkhead = Bulkhead(4, max_waiting=6, max_wait=3.0, clock=clock)
    timeout = Timeout(2.0, clock=clock)
    max_cap = 4
    inside = 0
    live: dict[int, tuple[anyio.CancelScope, anyio.Event]] = {}
    outcomes = {"done": 0, "full": 0, "timeout": 0, "cancelled": 0}

    async def work(release: anyio.Event) -> None:
        nonlocal inside
        inside += 1
        assert inside <= max_cap
        try:
            await release.wait()
        finally:
            inside -= 1

    async def caller(key: int, timed: bool) -> None:
        scope, release = live[key]
        try:
            with scope:
                if timed:
                    await timeout.call(bulkhead.call, work, release)
                else:
                    await bulkhead.call(work, release)
                outcomes["done"] += 1
            if scope.cancelled_caught:
                outcomes["cancelled"] += 1
        except BulkheadFullError:
            outcomes["full"] += 1
        except resilience.TimeoutError:
            outcomes["timeout"] += 1
        finally:
            del live[key]

    operations = 12_000
    async with anyio.create_task_group() as tg:
        for n in range(operations):
            op = rng.random()
            if op < 0.35:
                live[n] = (anyio.CancelScope(), anyio.Event())
                tg.start_soon(caller, n, rng.random() < 0.3)
            elif op < 0.6 and live:
                live[rng.choice(list(live))][1].set()
            elif op < 0.8 and live:
                live[rng.choice(list(live))][0].cancel()
            elif op < 0.9:
                clock.advance(rng.choice((0.5, 1.0, 2.5)))
            elif op < 0.93:
                size = rng.randint(1, 6)
                max_cap = max(max_cap, size)
                bulkhead.resize(size)
            if rng.random() < 0.5:
                await anyio.lowlevel.checkpoint()
            if n % 200 == 0:
                await anyio.wait_all_tasks_blocked()
                # Quiescent: every live caller runs or waits, and the
                # permits held are exactly the calls inside.
                stats = bulkhead.stats
                assert stats.in_flight == inside
                assert stats.waiting == len(live) - inside
        for scope, _ in list(live.values()):
            scope.cancel()
    assert snapshot(bulkhead)[:2] == (0, 0)
    assert inside == 0
    assert not live
    assert sum(outcomes.values()) > 3_000
    assert all(count > 50 for count in outcomes.values()), outcomes
    assert bulkhead.stats.rejected == outcomes["full"]


# Resize ----------------------------------------------------------------------


async def test_resize_grow_admits_waiters_in_order() -> None:
    bulkhead = Bulkhead(1, max_waiting=10)
    gate = Gate()
    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(bulkhead.call, gate.work, i)
            await anyio.wait_all_tasks_blocked()
        assert snapshot(bulkhead) == (1, 4, 0)
        bulkhead.resize(3)
        await anyio.wait_all_tasks_blocked()
        # The two first waiters, not the later ones (trio resumes tasks woken
        # in the same tick in random order, so compare as sets).
        assert sorted(gate.entered) == [0, 1, 2]  # type: ignore[type-var]
        assert snapshot(bulkhead) == (3, 2, 0)
        assert bulkhead.stats.capacity == bulkhead.max_concurrent == 3
        gate.event.set()
    # Both remaining waiters are admitted in the same tick; trio resumes
    # tasks woken together in random order, so only the set is certain.
    assert sorted(gate.entered[3:]) == [3, 4]  # type: ignore[type-var]


async def test_resize_shrink_lets_running_calls_finish_and_admits_below_the_new_limit() -> None:
    bulkhead = Bulkhead(3, max_waiting=10)
    gates = [Gate() for _ in range(3)]
    late = Gate()
    async with anyio.create_task_group() as tg:
        for gate in gates:
            tg.start_soon(bulkhead.call, gate.work)
        await anyio.wait_all_tasks_blocked()
        bulkhead.resize(1)
        tg.start_soon(bulkhead.call, late.work)
        await anyio.wait_all_tasks_blocked()
        assert snapshot(bulkhead) == (3, 1, 0)
        gates[0].event.set()
        await anyio.wait_all_tasks_blocked()
        assert snapshot(bulkhead) == (2, 1, 0)  # 2 running > 1: still no entry
        gates[1].event.set()
        await anyio.wait_all_tasks_blocked()
        assert snapshot(bulkhead) == (1, 1, 0)
        gates[2].event.set()
        await anyio.wait_all_tasks_blocked()
        assert late.entered == [None]
        assert snapshot(bulkhead) == (1, 0, 0)
        late.event.set()
    assert snapshot(bulkhead) == (0, 0, 0)


# Threads -----------------------------------------------------------------------


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


class ThreadGate:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inside = 0
        self.peak = 0
        self.entered: list[object] = []
        self.event = threading.Event()
        self.started = threading.Event()

    def work(self, tag: object = None) -> object:
        self.started.set()
        with self.lock:
            self.inside += 1
            self.peak = max(self.peak, self.inside)
            self.entered.append(tag)
        try:
            assert self.event.wait(5)
        finally:
            with self.lock:
                self.inside -= 1
        return tag


def run_threads(target: Callable[..., Any], args: list[tuple[Any, ...]]) -> list[threading.Thread]:
    threads = [threading.Thread(target=target, args=a) for a in args]
    for thread in threads:
        thread.start()
    return threads


def test_threads_never_exceed_max_concurrent() -> None:
    bulkhead = Bulkhead(3, max_waiting=20)
    gate = ThreadGate()
    results: list[object] = []
    guarded = bulkhead(gate.work)

    def worker(i: int) -> None:
        results.append(guarded(i))

    threads = run_threads(worker, [(i,) for i in range(10)])
    wait_until(lambda: bulkhead.stats.waiting == 7)
    assert gate.inside == 3
    assert bulkhead.stats.in_flight == 3
    gate.event.set()
    for thread in threads:
        thread.join(5)
    assert gate.peak == 3
    assert sorted(results) == list(range(10))  # type: ignore[type-var]
    assert snapshot(bulkhead) == (0, 0, 0)


def test_threads_wait_in_fifo_order() -> None:
    bulkhead = Bulkhead(1, max_waiting=10)
    gate = ThreadGate()
    order: list[int] = []
    holder = run_threads(bulkhead.call_sync, [(gate.work,)])
    wait_until(lambda: gate.inside == 1)
    threads = []
    for i in range(6):
        threads += run_threads(bulkhead.call_sync, [(order.append, i)])
        wait_until(lambda i=i: bulkhead.stats.waiting == i + 1)  # type: ignore[misc]
    gate.event.set()
    for thread in holder + threads:
        thread.join(5)
    assert order == list(range(6))


def test_threads_rejected_when_full_and_expire_on_the_fake_clock() -> None:
    clock = FakeClock()
    bulkhead = Bulkhead(1, max_waiting=1, max_wait=1.0, clock=clock)
    gate = ThreadGate()
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            bulkhead.call_sync(gate.work)
        except BulkheadFullError as exc:
            errors.append(exc)

    holder = run_threads(bulkhead.call_sync, [(gate.work,)])
    wait_until(lambda: gate.inside == 1)
    threads = run_threads(waiter, [()])
    wait_until(lambda: bulkhead.stats.waiting == 1)
    with pytest.raises(BulkheadFullError):  # queue full: at once
        bulkhead.call_sync(gate.work)
    clock.advance(1.0)
    threads[0].join(5)
    assert len(errors) == 1
    gate.event.set()
    holder[0].join(5)
    assert snapshot(bulkhead) == (0, 0, 2)


def test_threads_max_wait_on_the_real_clock() -> None:
    bulkhead = Bulkhead(1, max_waiting=1, max_wait=0.005)
    gate = ThreadGate()
    holder = run_threads(bulkhead.call_sync, [(gate.work,)])
    wait_until(lambda: gate.inside == 1)
    with pytest.raises(BulkheadFullError):
        bulkhead.call_sync(gate.work)
    gate.event.set()
    holder[0].join(5)
    assert snapshot(bulkhead) == (0, 0, 1)


async def test_a_thread_releasing_wakes_an_async_waiter() -> None:
    bulkhead = Bulkhead(1, max_waiting=1)
    gate = ThreadGate()
    holder = run_threads(bulkhead.call_sync, [(gate.work,)])
    try:
        assert await anyio.to_thread.run_sync(gate.started.wait, 5)

        async def async_work() -> str:
            return "async"

        async def release_soon() -> None:
            await anyio.wait_all_tasks_blocked()
            assert bulkhead.stats.waiting == 1
            gate.event.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(release_soon)
            with anyio.fail_after(5):
                assert await bulkhead.call(async_work) == "async"
    finally:
        gate.event.set()
        holder[0].join(5)
    assert snapshot(bulkhead) == (0, 0, 0)


def test_many_threads_and_loops_share_one_bulkhead() -> None:
    bulkhead = Bulkhead(2, max_waiting=200)
    lock = threading.Lock()
    inside = 0
    peak = 0

    def enter() -> None:
        nonlocal inside, peak
        with lock:
            inside += 1
            peak = max(peak, inside)

    def leave() -> None:
        nonlocal inside
        with lock:
            inside -= 1

    def sync_work() -> None:
        enter()
        time.sleep(0.0002)
        leave()

    async def async_work() -> None:
        enter()
        await asyncio.sleep(0.0002)
        leave()

    def sync_thread() -> None:
        for _ in range(40):
            bulkhead.call_sync(sync_work)

    def loop_thread() -> None:
        async def main() -> None:
            await asyncio.gather(*(bulkhead.call(async_work) for _ in range(40)))

        asyncio.run(main())

    threads = run_threads(sync_thread, [()] * 3) + run_threads(loop_thread, [()] * 2)
    for thread in threads:
        thread.join(10)
    assert 1 <= peak <= 2  # the safety property; whether threads overlapped is luck
    assert snapshot(bulkhead) == (0, 0, 0)


# Configuration ---------------------------------------------------------------


def test_stats_is_a_frozen_snapshot() -> None:
    stats = Bulkhead(5, max_waiting=2).stats
    assert stats == BulkheadStatistics(
        in_flight=0, waiting=0, rejected=0, capacity=5, max_waiting=2
    )
    with pytest.raises(AttributeError):
        stats.in_flight = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"max_concurrent": 0}, ValueError, "max_concurrent must be >= 1, got 0"),
        ({"max_concurrent": -3}, ValueError, "max_concurrent"),
        ({"max_concurrent": 2.5}, TypeError, "max_concurrent must be an int"),
        ({"max_concurrent": True}, TypeError, "max_concurrent"),
        ({"max_concurrent": 1, "max_waiting": -1}, ValueError, "max_waiting must be >= 0, got -1"),
        (
            {"max_concurrent": 1, "max_waiting": 1, "max_wait": 0},
            ValueError,
            "max_wait must be a finite number > 0 or None, got 0",
        ),
        ({"max_concurrent": 1, "max_waiting": 1, "max_wait": -1.0}, ValueError, "max_wait"),
        ({"max_concurrent": 1, "max_waiting": 1, "max_wait": float("inf")}, ValueError, "inf"),
        ({"max_concurrent": 1, "max_waiting": 1, "max_wait": "1"}, TypeError, "max_wait"),
        ({"max_concurrent": 1, "max_wait": 1.0}, ValueError, "max_waiting >= 1"),
        ({"max_concurrent": 1, "name": ""}, ValueError, "name"),
    ],
)
def test_bad_configuration_is_refused_naming_the_parameter(
    kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words.replace("(", r"\(").replace("+", r"\+")):
        Bulkhead(**kwargs)


def test_resize_validates_like_the_constructor() -> None:
    bulkhead = Bulkhead(2)
    with pytest.raises(ValueError, match="max_concurrent must be >= 1, got 0"):
        bulkhead.resize(0)
    with pytest.raises(TypeError, match="max_concurrent"):
        bulkhead.resize(1.5)  # type: ignore[arg-type]
    assert bulkhead.max_concurrent == 2


def test_a_clock_without_timers_cannot_drive_max_wait() -> None:
    class NoTimers:
        def now(self) -> float:
            return 0.0

        async def sleep(self, seconds: float) -> None: ...

        def sleep_sync(self, seconds: float) -> None: ...

    with pytest.raises(TypeError, match="call_at"):
        Bulkhead(1, max_waiting=1, max_wait=1.0, clock=NoTimers())
    Bulkhead(1, clock=NoTimers())  # no max_wait: the clock is never read


def test_names_and_repr() -> None:
    bulkhead = Bulkhead(3, max_waiting=1, name="search")
    assert bulkhead.name == "search"
    assert (bulkhead.max_waiting, bulkhead.max_wait) == (1, None)
    assert "search" in repr(bulkhead)
    assert Bulkhead(1).name.startswith("bulkhead-")


async def test_a_permit_handed_over_from_a_thread_racing_a_cancellation_comes_back() -> None:
    """The hand-over from a thread is queued to the loop; the waiter is
    cancelled before it lands (trio's abort then fails: the permit is kept
    and given back by the call's own `finally`)."""
    bulkhead = Bulkhead(1, max_waiting=1)
    gate = ThreadGate()
    holder = run_threads(bulkhead.call_sync, [(gate.work,)])
    assert await anyio.to_thread.run_sync(gate.started.wait, 5)
    scope = anyio.CancelScope()

    async def waiter() -> None:
        with scope:
            await bulkhead.call(anyio.sleep, 0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert bulkhead.stats.waiting == 1
        # Block the loop while the thread releases, so the wake-up waits.
        gate.event.set()
        holder[0].join(5)
        assert snapshot(bulkhead) == (1, 0, 0)  # in transit to the waiter
        scope.cancel()
    assert snapshot(bulkhead) == (0, 0, 0)


def test_decorating_a_non_callable_is_refused() -> None:
    with pytest.raises(TypeError, match="decorates a callable"):
        Bulkhead(1)(42)  # type: ignore[call-overload]
