"""The guard contract of :mod:`resilience.lowlevel`, checked on every guard.

A guard (Bulkhead, CircuitBreaker, Timeout, or one a user writes) is
``admit()`` (a ticket, a fresh rejection, or WAIT, then ``wait()`` /
``wait_sync()``), then exactly one ``settle(ticket, error, result)``. Each
guard below runs three ways (:class:`Case`): inside :class:`Spy`, a
user-written guard that delegates the protocol to it and keeps every ticket;
directly in the plan, whose bracket compiles the guard's fast path inline;
and directly under a call observer, which runs the plan's observed runner.
Whatever ended the call (a result, an error, a rejection of a guard inside,
a cancellation while waiting or running, a timeout firing) each admission is
settled once, and the guard's own books (a bulkhead's permits, a breaker's
totals and its half-open permit, a timeout's timers) are square.

Timers run on :class:`~resilience.testing.FakeClock`; nothing sleeps for real.
The tests that share one guard between threads, event loops and the httpx
transport are bounded by a number of calls, not by time.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
import trio

import resilience
from resilience import (
    Bulkhead,
    BulkheadFullError,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    CountWindow,
    Fallback,
    Pipeline,
    Policy,
    Retry,
    Timeout,
    backoff,
)
from resilience.contrib.httpx import AsyncResilientTransport, HTTPBulkheadFullError
from resilience.lowlevel import (
    WAIT,
    DeadlineGuard,
    Guard,
    Plan,
    add_observer,
    remove_observer,
    running_loop,
)
from resilience.testing import FakeClock


class Boom(Exception):
    pass


class Abort(BaseException):
    """Not an Exception: what KeyboardInterrupt is to a plain call."""


class LedgerRefused(Exception):
    """The user guard's rejection."""


# A user's guard, and a spy ----------------------------------------------------


class Ledger(Policy):
    """A guard written as a user would: numbered tickets, each to come back once.

    With ``refuse=True`` it rejects every call with a fresh LedgerRefused.
    """

    _kind = "ledger"

    def __init__(self, *, refuse: bool = False) -> None:
        super().__init__()
        self.refuse = refuse
        self.issued = 0
        self.outstanding: set[int] = set()
        self.outcomes: list[BaseException | None] = []
        self._lock = threading.Lock()

    def admit(self) -> object:
        if self.refuse:
            raise LedgerRefused(self.name)
        with self._lock:
            self.issued += 1
            ticket = self.issued
            self.outstanding.add(ticket)
        return ticket

    async def wait(self) -> object:
        raise AssertionError("Ledger.admit never asks to wait")

    def wait_sync(self) -> object:
        raise AssertionError("Ledger.admit never asks to wait")

    def settle(
        self, ticket: Any, error: BaseException | None, result: object
    ) -> BaseException | None:
        with self._lock:
            self.outstanding.remove(ticket)  # KeyError if settled twice
            self.outcomes.append(error)
        return error


def _where() -> tuple[int, object]:
    """This thread, and this task when there is one."""
    try:
        task: object = anyio.get_current_task().id
    except Exception:  # no async library running in this thread
        task = None
    return threading.get_ident(), task


class Ticket:
    __slots__ = ("inner", "returned", "settled", "where")

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.where = _where()
        self.settled: list[BaseException | None] = []
        self.returned: BaseException | None = None


class Spy(Policy):
    """A user guard that runs ``guard``'s protocol and keeps every ticket it issues."""

    _kind = "spy"

    def __init__(self, guard: Any, *, after_settle: Callable[[], None] | None = None) -> None:
        super().__init__(name=f"spy:{guard.name}")
        self.guard = guard
        # A Timeout cannot run plain calls; neither can a spy around one.
        self.sync_unsupported = getattr(guard, "sync_unsupported", None)
        self.after_settle = after_settle
        self.tickets: list[Ticket] = []
        self._lock = threading.Lock()

    def _issue(self, inner: object) -> Ticket:
        assert inner is not WAIT
        ticket = Ticket(inner)
        with self._lock:
            self.tickets.append(ticket)
        return ticket

    def admit(self) -> object:
        inner = self.guard.admit()
        return WAIT if inner is WAIT else self._issue(inner)

    async def wait(self) -> object:
        return self._issue(await self.guard.wait())

    def wait_sync(self) -> object:
        return self._issue(self.guard.wait_sync())

    def settle(
        self, ticket: Any, error: BaseException | None, result: object
    ) -> BaseException | None:
        assert isinstance(ticket, Ticket)
        assert _where() == ticket.where, "settled in another thread or task than admitted"
        ticket.settled.append(error)
        ticket.returned = self.guard.settle(ticket.inner, error, result)
        if self.after_settle is not None:
            self.after_settle()
        return ticket.returned

    def settled_once(self) -> list[BaseException | None]:
        """The error each ticket was settled with; fails unless each was settled once."""
        counts = [len(t.settled) for t in self.tickets]
        assert counts == [1] * len(counts), f"settlements per ticket: {counts}"
        return [t.settled[0] for t in self.tickets]


def test_the_helpers_are_guards() -> None:
    assert isinstance(Ledger(), Guard)
    assert isinstance(Spy(Bulkhead(1)), Guard)


# The guards under test ------------------------------------------------------


def _half_open_breaker(clock: FakeClock) -> CircuitBreaker:
    breaker = CircuitBreaker(minimum_calls=1, open_duration=10, clock=clock)

    def fails() -> None:
        raise Boom

    with pytest.raises(Boom):
        breaker.call_sync(fails)
    assert breaker.state is CircuitState.OPEN
    clock.advance(10)
    assert breaker.state is CircuitState.HALF_OPEN
    return breaker


GUARDS: dict[str, Callable[[FakeClock], Any]] = {
    "bulkhead-1": lambda clock: Bulkhead(1),
    "bulkhead-queue": lambda clock: Bulkhead(2, max_waiting=3, max_wait=5, clock=clock),
    "breaker-closed": lambda clock: CircuitBreaker(clock=clock),
    "breaker-half-open": _half_open_breaker,
    "timeout": lambda clock: Timeout(10, clock=clock),
    "user-guard": lambda clock: Ledger(),
}
SYNC_GUARDS = [name for name in GUARDS if name != "timeout"]

# How a breaker records each way a call can end.
SUCCESS, FAILURE, IGNORED, NOTHING = "success", "failure", "ignored", "nothing"


class Case:
    """One guard under test, run one of three ways, with what it must look like after.

    - ``spy``: inside :class:`Spy`, so every ticket is seen (the guard's own
      ``admit``/``settle`` methods run);
    - ``inlined``: directly in the plan, whose bracket compiles the guard's
      fast path inline (only the guard's books can be checked);
    - ``observed``: directly, with a call observer registered, so the plan's
      observed runner runs (one span per call reaching the guard).
    """

    def __init__(self, name: str, way: str = "spy") -> None:
        self.name = name
        self.way = way
        self.clock = FakeClock()
        self.guard = GUARDS[name](self.clock)
        self.spy = Spy(self.guard)
        self.subject: Any = self.spy if way == "spy" else self.guard
        self.spans: list[BaseException | None] = []
        self._totals = self._breaker_totals()
        if way == "observed":
            add_observer(self._observe)

    def _observe(self, policy: object, error: BaseException | None, seconds: float) -> None:
        if policy is self.guard:
            self.spans.append(error)

    def close(self) -> None:
        remove_observer(self._observe)

    def _breaker_totals(self) -> tuple[int, int, int]:
        if not isinstance(self.guard, CircuitBreaker):
            return (0, 0, 0)
        stats = self.guard.stats
        return stats.successful_total, stats.failed_total, stats.ignored_total

    def assert_settled(self, *expected: object, calls: int | None = None) -> None:
        """Spy: each ticket settled once, with these errors (an instance: that very
        object; a class: an instance of it; None: no error). Observed: one span
        per call that reached the guard (``calls``, by default one per ticket)."""
        if self.way == "spy":
            errors = self.spy.settled_once()
            assert len(errors) == len(expected), errors
            for error, want in zip(errors, expected, strict=True):
                if want is None or isinstance(want, BaseException):
                    assert error is want
                else:
                    assert isinstance(error, want), error  # type: ignore[arg-type]
        elif self.way == "observed":
            assert len(self.spans) == (len(expected) if calls is None else calls), self.spans

    def check(self, recorded: str) -> None:
        """The guard holds nothing any more, and recorded the call as ``recorded``."""
        if self.way == "spy":
            self.spy.settled_once()
        guard = self.guard
        if isinstance(guard, Bulkhead):
            stats = guard.stats
            assert (stats.in_flight, stats.waiting) == (0, 0)
            # Every permit can be taken again.
            tickets = [guard.admit() for _ in range(guard.max_concurrent)]
            assert WAIT not in tickets
            for ticket in tickets:
                guard.settle(ticket, None, None)
            assert guard.stats.in_flight == 0
        elif isinstance(guard, CircuitBreaker):
            succeeded, failed, ignored = self._totals
            expected = {
                SUCCESS: (succeeded + 1, failed, ignored),
                FAILURE: (succeeded, failed + 1, ignored),
                IGNORED: (succeeded, failed, ignored + 1),
                NOTHING: (succeeded, failed, ignored),
            }[recorded]
            assert self._breaker_totals() == expected
            if self.name == "breaker-closed" or recorded == SUCCESS:
                assert guard.state is CircuitState.CLOSED
            elif recorded == FAILURE:
                assert guard.state is CircuitState.OPEN
            else:
                # The trial's permit came back: another trial can run.
                assert guard.state is CircuitState.HALF_OPEN
                ticket = guard.admit()
                assert guard.settle(ticket, None, None) is None
                assert guard.state is CircuitState.CLOSED
        elif isinstance(guard, Ledger):
            assert guard.outstanding == set()
            assert len(guard.outcomes) == guard.issued
        assert resilience.current_deadline() is None

    async def check_timers(self) -> None:
        """No timer of the guard is left to fire into later work."""
        guard = self.guard
        if not isinstance(guard, Timeout):
            return
        timeouts = guard.stats.timeouts
        self.clock.advance(1_000)
        await anyio.lowlevel.checkpoint()
        assert await guard.call(ok, "later") == "later"
        assert guard.stats.timeouts == timeouts


WAYS = ("spy", "inlined", "observed")


def _cases(names: list[str]) -> list[Any]:
    return [pytest.param((name, way), id=f"{way}-{name}") for way in WAYS for name in names]


@pytest.fixture(params=_cases(list(GUARDS)))
def case(request: pytest.FixtureRequest) -> Iterator[Case]:
    made = Case(*request.param)
    yield made
    made.close()


@pytest.fixture(params=_cases(SYNC_GUARDS))
def sync_case(request: pytest.FixtureRequest) -> Iterator[Case]:
    made = Case(*request.param)
    yield made
    made.close()


@pytest.fixture(params=WAYS)
def queue_case(request: pytest.FixtureRequest) -> Iterator[Case]:
    """The bulkhead that makes callers wait: Bulkhead(2, max_waiting=3, max_wait=5)."""
    made = Case("bulkhead-queue", request.param)
    yield made
    made.close()


@pytest.fixture(params=WAYS)
def timeout_case(request: pytest.FixtureRequest) -> Iterator[Case]:
    made = Case("timeout", request.param)
    yield made
    made.close()


async def ok(value: object = None) -> object:
    await anyio.lowlevel.checkpoint()
    return value


async def boom() -> None:
    await anyio.lowlevel.checkpoint()
    raise Boom


class Outcome:
    """What a call started in another task ended with (cancellation excluded)."""

    def __init__(self) -> None:
        self.result: object = None
        self.error: Exception | None = None

    async def run(self, run: Callable[..., Any], *args: Any) -> None:
        try:
            self.result = await run(*args)
        except Exception as exc:
            self.error = exc


def full_bulkhead() -> tuple[Bulkhead, object]:
    """A Bulkhead(1) whose only permit the test holds, and that permit."""
    bulkhead = Bulkhead(1)
    held = bulkhead.admit()
    assert held is not WAIT
    return bulkhead, held


def cancelled() -> type[BaseException]:
    return anyio.get_cancelled_exc_class()


# 1. Every admission is settled exactly once ------------------------------------


async def test_a_success_is_settled_once_with_no_error(case: Case) -> None:
    run = Plan([case.subject]).runner()
    assert await run(ok, 42) == 42
    case.assert_settled(None)
    case.check(SUCCESS)
    await case.check_timers()


async def test_a_failure_is_settled_once_with_its_error(case: Case) -> None:
    run = Plan([case.subject]).runner()
    with pytest.raises(Boom) as info:
        await run(boom)
    case.assert_settled(info.value)
    case.check(FAILURE)
    await case.check_timers()


async def test_a_rejection_by_an_inner_guard_is_settled_as_that_error(case: Case) -> None:
    inner, held = full_bulkhead()
    run = Plan([case.subject, inner]).runner()
    with pytest.raises(BulkheadFullError) as info:
        await run(ok)
    case.assert_settled(info.value)
    inner.settle(held, None, None)
    case.check(IGNORED)
    await case.check_timers()


async def test_cancelled_while_an_inner_guard_waits_for_a_permit(case: Case) -> None:
    inner = Bulkhead(1, max_waiting=1)
    held = inner.admit()
    run = Plan([case.subject, inner]).runner()
    async with anyio.create_task_group() as tg:
        tg.start_soon(run, ok)
        await anyio.wait_all_tasks_blocked()
        assert (inner.stats.in_flight, inner.stats.waiting) == (1, 1)
        tg.cancel_scope.cancel()
    case.assert_settled(cancelled())
    assert (inner.stats.in_flight, inner.stats.waiting) == (1, 0)
    inner.settle(held, None, None)
    assert inner.stats.in_flight == 0
    case.check(NOTHING)
    await case.check_timers()


async def test_cancelled_while_the_call_runs(case: Case) -> None:
    run = Plan([case.subject]).runner()
    async with anyio.create_task_group() as tg:
        tg.start_soon(run, anyio.sleep_forever)
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    case.assert_settled(cancelled())
    case.check(NOTHING)
    await case.check_timers()


async def test_an_inner_timeout_firing_is_settled_as_a_timeout_error(case: Case) -> None:
    inner = Timeout(1, clock=case.clock)
    run = Plan([case.subject, inner]).runner()
    outcome = Outcome()
    async with anyio.create_task_group() as tg:
        tg.start_soon(outcome.run, run, anyio.sleep_forever)
        await anyio.wait_all_tasks_blocked()
        case.clock.advance(2)
    assert isinstance(outcome.error, resilience.TimeoutError)
    case.assert_settled(outcome.error)
    assert inner.stats.timeouts == 1
    case.check(FAILURE)
    await case.check_timers()


async def test_an_outer_timeout_firing_settles_the_guard_with_its_cancellation(
    case: Case,
) -> None:
    outer = Timeout(1, clock=case.clock)
    run = Plan([outer, case.subject]).runner()
    outcome = Outcome()
    async with anyio.create_task_group() as tg:
        tg.start_soon(outcome.run, run, anyio.sleep_forever)
        await anyio.wait_all_tasks_blocked()
        case.clock.advance(2)
    assert isinstance(outcome.error, resilience.TimeoutError)
    case.assert_settled(cancelled())
    case.check(NOTHING)
    await case.check_timers()


async def test_an_outer_timeout_firing_while_an_inner_guard_waits(case: Case) -> None:
    outer = Timeout(1, clock=case.clock)
    inner = Bulkhead(1, max_waiting=1)
    held = inner.admit()
    run = Plan([outer, case.subject, inner]).runner()
    outcome = Outcome()
    async with anyio.create_task_group() as tg:
        tg.start_soon(outcome.run, run, ok)
        await anyio.wait_all_tasks_blocked()
        assert inner.stats.waiting == 1
        case.clock.advance(2)
    assert isinstance(outcome.error, resilience.TimeoutError)
    case.assert_settled(cancelled())
    assert (inner.stats.in_flight, inner.stats.waiting) == (1, 0)
    inner.settle(held, None, None)
    case.check(NOTHING)
    await case.check_timers()


async def test_every_attempt_of_a_retry_is_settled_once(case: Case) -> None:
    retry = Retry(3, backoff=backoff.immediate(), clock=case.clock)
    run = Plan([retry, case.subject]).runner()
    if case.name == "breaker-half-open":
        # The trial fails and reopens the breaker; the second attempt is
        # rejected (no ticket), and a rejection is never retried.
        with pytest.raises(CircuitOpenError):
            await run(boom)
        case.assert_settled(Boom, calls=2)
        case.check(FAILURE)
        return
    with pytest.raises(Boom):
        await run(boom)
    case.assert_settled(Boom, Boom, Boom)
    if isinstance(case.guard, CircuitBreaker):
        assert case.guard.stats.failed_total == 3
    else:
        case.check(FAILURE)
    await case.check_timers()


# The guard's own waiting and timing.


async def test_cancelled_while_waiting_in_the_bulkheads_own_queue(queue_case: Case) -> None:
    case = queue_case
    bulkhead = case.guard
    held = [bulkhead.admit(), bulkhead.admit()]
    run = Plan([case.subject]).runner()
    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(run, ok)
        await anyio.wait_all_tasks_blocked()
        assert (bulkhead.stats.in_flight, bulkhead.stats.waiting) == (2, 3)
        tg.cancel_scope.cancel()
    case.assert_settled(calls=3)  # nobody got a ticket: nothing to settle
    assert (bulkhead.stats.in_flight, bulkhead.stats.waiting) == (2, 0)
    for ticket in held:
        bulkhead.settle(ticket, None, None)
    case.check(NOTHING)


async def test_max_wait_running_out_rejects_the_waiter_and_takes_nothing(
    queue_case: Case,
) -> None:
    case = queue_case
    bulkhead = case.guard
    held = [bulkhead.admit(), bulkhead.admit()]
    outer = Spy(Ledger())
    run = Plan([outer, case.subject]).runner()
    outcome = Outcome()
    async with anyio.create_task_group() as tg:
        tg.start_soon(outcome.run, run, ok)
        await anyio.wait_all_tasks_blocked()
        case.clock.advance(5)
    assert isinstance(outcome.error, BulkheadFullError)
    case.assert_settled(calls=1)
    assert outer.settled_once() == [outcome.error]  # the outer guard settles the rejection
    assert bulkhead.stats.rejected == 1
    for ticket in held:
        bulkhead.settle(ticket, None, None)
    case.check(NOTHING)


async def test_cancelled_right_after_the_permit_was_handed_over(queue_case: Case) -> None:
    case = queue_case
    bulkhead = case.guard
    held = [bulkhead.admit(), bulkhead.admit()]
    run = Plan([case.subject]).runner()
    async with anyio.create_task_group() as tg:
        tg.start_soon(run, ok)
        await anyio.wait_all_tasks_blocked()
        assert bulkhead.stats.waiting == 1
        bulkhead.settle(held.pop(), None, None)  # hands the permit to the waiter...
        tg.cancel_scope.cancel()  # ...which is cancelled before it resumes
    # asyncio gives the permit back from wait(); trio resumes the waiter with
    # it, and the cancellation lands inside the call: either way, settled once.
    if case.way == "spy":
        for error in case.spy.settled_once():
            assert isinstance(error, cancelled())
    elif case.way == "observed":
        [error] = case.spans
        assert isinstance(error, cancelled())
    assert (bulkhead.stats.in_flight, bulkhead.stats.waiting) == (1, 0)
    bulkhead.settle(held.pop(), None, None)
    case.check(NOTHING)


async def test_a_timeout_firing_settles_its_own_ticket_as_a_timeout_error(
    timeout_case: Case,
) -> None:
    case = timeout_case
    run = Plan([case.subject]).runner()
    outcome = Outcome()
    async with anyio.create_task_group() as tg:
        tg.start_soon(outcome.run, run, anyio.sleep_forever)
        await anyio.wait_all_tasks_blocked()
        case.clock.advance(10)
    assert isinstance(outcome.error, resilience.TimeoutError)
    case.assert_settled(cancelled())  # what the work raised
    if case.way == "spy":
        assert case.spy.tickets[0].returned is outcome.error  # what the guard made of it
    if case.way == "observed":
        assert case.spans == [outcome.error]
    assert case.guard.stats.timeouts == 1
    case.check(FAILURE)
    await case.check_timers()


# The same in threads.


def ok_sync(value: object = None) -> object:
    return value


def test_a_plain_success_is_settled_once(sync_case: Case) -> None:
    run = Plan([sync_case.subject]).runner(sync=True)
    assert run(ok_sync, 7) == 7
    sync_case.assert_settled(None)
    sync_case.check(SUCCESS)


def test_a_plain_failure_is_settled_once(sync_case: Case) -> None:
    def fails() -> None:
        raise Boom

    run = Plan([sync_case.subject]).runner(sync=True)
    with pytest.raises(Boom) as info:
        run(fails)
    sync_case.assert_settled(info.value)
    sync_case.check(FAILURE)


def test_a_plain_base_exception_is_settled_once(sync_case: Case) -> None:
    def interrupted() -> None:
        raise Abort

    run = Plan([sync_case.subject]).runner(sync=True)
    with pytest.raises(Abort) as info:
        run(interrupted)
    sync_case.assert_settled(info.value)
    sync_case.check(NOTHING)


def test_a_plain_rejection_by_an_inner_guard_is_settled_as_that_error(sync_case: Case) -> None:
    inner, held = full_bulkhead()
    run = Plan([sync_case.subject, inner]).runner(sync=True)
    with pytest.raises(BulkheadFullError) as info:
        run(ok_sync)
    sync_case.assert_settled(info.value)
    inner.settle(held, None, None)
    sync_case.check(IGNORED)


def _until(condition: Callable[[], bool]) -> None:
    """Wait for another thread to reach a state (not for a timer)."""
    for _ in range(20_000):
        if condition():
            return
        time.sleep(0.0005)
    raise AssertionError("the other thread never got there")


def test_a_thread_waiting_in_an_inner_guard_until_max_wait_runs_out(sync_case: Case) -> None:
    inner = Bulkhead(1, max_waiting=1, max_wait=5, clock=sync_case.clock)
    held = inner.admit()
    run = Plan([sync_case.subject, inner]).runner(sync=True)
    errors: list[BaseException] = []

    def caller() -> None:
        try:
            run(ok_sync)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    _until(lambda: inner.stats.waiting == 1)
    sync_case.clock.advance(5)
    thread.join(30)
    assert not thread.is_alive()
    [error] = errors
    assert isinstance(error, BulkheadFullError)
    sync_case.assert_settled(error)
    inner.settle(held, None, None)
    assert inner.stats.in_flight == 0
    sync_case.check(IGNORED)


def test_a_thread_waiting_in_the_bulkheads_own_queue_until_max_wait_runs_out(
    queue_case: Case,
) -> None:
    case = queue_case
    bulkhead = case.guard
    held = [bulkhead.admit(), bulkhead.admit()]
    run = Plan([case.subject]).runner(sync=True)
    errors: list[BaseException] = []

    def caller() -> None:
        try:
            run(ok_sync)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(3)]
    for thread in threads:
        thread.start()
    _until(lambda: bulkhead.stats.waiting == 3)
    case.clock.advance(5)
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    assert len(errors) == 3
    assert all(isinstance(e, BulkheadFullError) for e in errors)
    case.assert_settled(calls=3)
    for ticket in held:
        bulkhead.settle(ticket, None, None)
    case.check(NOTHING)


# 2. Nothing is released twice ----------------------------------------------------


class Occupancy:
    """How many calls are inside at once, and the most there ever were."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inside = 0
        self.peak = 0
        self.entered = 0

    def enter(self) -> None:
        with self.lock:
            self.inside += 1
            self.entered += 1
            self.peak = max(self.peak, self.inside)

    def leave(self) -> None:
        with self.lock:
            self.inside -= 1


ROUNDS = 150
KINDS = ("ok", "boom", "hang", "hang")


async def quiesce() -> None:
    """``anyio.wait_all_tasks_blocked()``, without its 0.1 s naps on asyncio.

    On asyncio anyio sleeps 0.1 s (for real) whenever another task is
    runnable; the mixed-outcome rounds below hand permits from task to task
    in chains, which would cost seconds of naps. Here the same test (every
    other task waits on a pending future) is polled with bare yields.
    """
    if running_loop() is None:  # trio: exact, and it does not nap
        await anyio.wait_all_tasks_blocked()
        return
    this = asyncio.current_task()
    for _ in range(10_000):
        await asyncio.sleep(0)
        if all(
            task is this or (task._fut_waiter is not None and not task._fut_waiter.done())  # type: ignore[attr-defined]
            for task in asyncio.all_tasks()
        ):
            return
    raise AssertionError("the other tasks never blocked")


class Watch(Ledger):
    """A user guard that looks at something each time it settles."""

    def __init__(self, look: Callable[[], None]) -> None:
        super().__init__()
        self.look = look

    def settle(
        self, ticket: Any, error: BaseException | None, result: object
    ) -> BaseException | None:
        error = super().settle(ticket, error, result)
        self.look()
        return error


@pytest.mark.parametrize("way", ["spy", "inlined"])
async def test_many_mixed_outcomes_never_release_a_permit_twice(way: str) -> None:
    clock = FakeClock()
    bulkhead = Bulkhead(1, max_waiting=3, max_wait=3, clock=clock)
    lowest = [0]

    def look() -> None:
        lowest[0] = min(lowest[0], bulkhead.stats.in_flight)

    spy = Spy(bulkhead, after_settle=look)
    subject: Any = spy if way == "spy" else bulkhead
    watch = Watch(look)  # settles right after the bulkhead, in the same bracket
    runs = [
        Plan([subject]).runner(),
        Plan([watch, subject]).runner(),
        Plan([Timeout(2, clock=clock), watch, subject]).runner(),  # fires waiting or running
        Plan([watch, subject, Timeout(1, clock=clock)]).runner(),  # fires while running
        Plan([CircuitBreaker(clock=clock), watch, subject, Ledger()]).runner(),
    ]
    occupancy = Occupancy()
    in_flight_seen: set[int] = set()
    rng = random.Random(20261201)

    for _ in range(ROUNDS):
        release = anyio.Event()

        async def body(kind: str, release: anyio.Event = release) -> None:
            occupancy.enter()
            in_flight_seen.add(bulkhead.stats.in_flight)
            try:
                if kind == "ok":
                    await anyio.lowlevel.checkpoint()
                elif kind == "boom":
                    raise Boom
                else:
                    await release.wait()
            finally:
                occupancy.leave()

        async def attempt(scope: anyio.CancelScope, run: Callable[..., Any], kind: str) -> None:
            with scope:
                try:
                    await run(body, kind)
                except (Boom, BulkheadFullError, CircuitOpenError, resilience.TimeoutError):
                    pass

        held: object = None
        async with anyio.create_task_group() as tg:
            scopes: list[anyio.CancelScope] = []
            for _ in range(rng.randint(1, 6)):
                scope = anyio.CancelScope()
                scopes.append(scope)
                tg.start_soon(attempt, scope, rng.choice(runs), rng.choice(KINDS))
                if rng.random() < 0.5:
                    await quiesce()
            for _ in range(rng.randint(1, 5)):
                await quiesce()
                action = rng.randrange(5)
                if action == 0:
                    clock.advance(rng.choice([0.5, 1.5, 2.5, 3.5]))
                elif action == 1:
                    rng.choice(scopes).cancel()
                elif action == 2:
                    release.set()
                elif action == 3 and held is None and bulkhead.stats.in_flight == 0:
                    held = bulkhead.admit()  # the test takes the permit itself
                    assert held is not WAIT
                elif action == 4 and held is not None:
                    # Hand the permit to the first waiter, then cancel someone
                    # (perhaps that waiter) before anyone resumes.
                    bulkhead.settle(held, None, None)
                    held = None
                    rng.choice(scopes).cancel()
            await quiesce()
            if held is not None:
                bulkhead.settle(held, None, None)
            release.set()
        assert (bulkhead.stats.in_flight, bulkhead.stats.waiting) == (0, 0)

    assert lowest[0] == 0  # never negative
    assert occupancy.peak == 1  # a Bulkhead(1) never ran two calls at once
    assert occupancy.inside == 0
    assert in_flight_seen == {1}
    assert watch.outstanding == set()
    if way == "spy":
        spy.settled_once()
        assert len(spy.tickets) == occupancy.entered  # each ticket ran its call


# 3. One guard shared by threads, event loops and the httpx transport at once ----

CALLS = 2_000  # per world
THREADS = 4
TASKS = 8


@pytest.fixture
def racy() -> Iterator[None]:
    """Switch threads as often as the interpreter allows."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


class Spans:
    """Counts the spans the plans report for one policy, from every thread."""

    def __init__(self, policy: object) -> None:
        self.policy = policy
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, policy: object, error: BaseException | None, seconds: float) -> None:
        if policy is self.policy:
            with self.lock:
                self.count += 1


@contextlib.contextmanager
def observing(policy: object, way: str) -> Iterator[Spans]:
    """``way="observed"``: count ``policy``'s spans (every plan then runs observed)."""
    spans = Spans(policy)
    if way != "observed":
        yield spans
        return
    add_observer(spans)
    try:
        yield spans
    finally:
        remove_observer(spans)


class Tally:
    """Calls made, run and rejected, across the worlds."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.made = 0
        self.rejected = 0
        self.failed = 0

    def add(self, made: int, rejected: int = 0, failed: int = 0) -> None:
        with self.lock:
            self.made += made
            self.rejected += rejected
            self.failed += failed


def run_worlds(*worlds: Callable[[], None]) -> None:
    """Start every world in a thread of its own, all at once, and wait for them."""
    barrier = threading.Barrier(len(worlds), timeout=60)
    errors: list[BaseException] = []

    def start(world: Callable[[], None]) -> None:
        try:
            barrier.wait()
            world()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(world,), daemon=True) for world in worlds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)  # a bound against a deadlock, not a timing assumption
    assert not any(thread.is_alive() for thread in threads), "a world never finished"
    if errors:
        raise errors[0]


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


@pytest.mark.parametrize(
    ("max_waiting", "way"),
    [
        pytest.param(0, "inlined", id="rejects-when-full"),
        pytest.param(8, "inlined", id="short-queue"),
        pytest.param(64, "inlined", id="queues-everyone"),
        pytest.param(8, "observed", id="short-queue-observed"),
    ],
)
def test_one_bulkhead_shared_by_threads_loops_and_the_httpx_transport(
    racy: None, max_waiting: int, way: str
) -> None:
    bulkhead = Bulkhead(2, max_waiting=max_waiting)
    occupancy = Occupancy()
    tally = Tally()

    def body_sync() -> None:
        occupancy.enter()
        time.sleep(0)  # let another thread run while we hold the permit
        occupancy.leave()

    async def body_asyncio() -> None:
        occupancy.enter()
        await asyncio.sleep(0)
        occupancy.leave()

    async def body_trio() -> None:
        occupancy.enter()
        await trio.lowlevel.checkpoint()
        occupancy.leave()

    def thread_world() -> None:
        rejected = 0
        for _ in range(CALLS):
            try:
                bulkhead.call_sync(body_sync)
            except BulkheadFullError:
                rejected += 1
        tally.add(CALLS, rejected)

    def asyncio_world() -> None:
        async def task(calls: int) -> None:
            rejected = 0
            for _ in range(calls):
                try:
                    await bulkhead.call(body_asyncio)
                except BulkheadFullError:
                    rejected += 1
            tally.add(calls, rejected)

        async def main() -> None:
            await asyncio.gather(*(task(n) for n in _split(CALLS, TASKS)))

        asyncio.run(main())

    def trio_world() -> None:
        async def task(calls: int) -> None:
            rejected = 0
            for _ in range(calls):
                try:
                    await bulkhead.call(body_trio)
                except BulkheadFullError:
                    rejected += 1
            tally.add(calls, rejected)

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                for n in _split(CALLS, TASKS):
                    nursery.start_soon(task, n)

        trio.run(main)

    def httpx_world() -> None:
        async def handler(request: httpx.Request) -> httpx.Response:
            occupancy.enter()
            await asyncio.sleep(0)
            occupancy.leave()
            return httpx.Response(200)

        async def task(client: httpx.AsyncClient, calls: int) -> None:
            rejected = 0
            for _ in range(calls):
                try:
                    response = await client.get("http://upstream.test/")
                    assert response.status_code == 200
                except HTTPBulkheadFullError:
                    rejected += 1
            tally.add(calls, rejected)

        async def main() -> None:
            transport = AsyncResilientTransport(
                httpx.MockTransport(handler), timeout=Timeout(5), bulkhead=bulkhead
            )
            async with httpx.AsyncClient(transport=transport) as client:
                await asyncio.gather(*(task(client, n) for n in _split(CALLS, TASKS)))

        asyncio.run(main())

    with observing(bulkhead, way) as spans:
        run_worlds(*[thread_world] * THREADS, asyncio_world, trio_world, httpx_world)

    if way == "observed":
        assert spans.count == tally.made  # one span per call, rejected or run
    assert occupancy.peak <= 2
    assert occupancy.inside == 0
    stats = bulkhead.stats
    assert (stats.in_flight, stats.waiting) == (0, 0)
    assert tally.made == (THREADS + 3) * CALLS
    assert stats.rejected == tally.rejected
    assert occupancy.entered + tally.rejected == tally.made
    if max_waiting == 0:
        return
    if max_waiting >= THREADS + 3 * TASKS:  # room for every caller to wait
        assert tally.rejected == 0
    # Nobody waits for ever: every permit can still be taken.
    tickets = [bulkhead.admit(), bulkhead.admit()]
    assert WAIT not in tickets
    for ticket in tickets:
        bulkhead.settle(ticket, None, None)
    assert bulkhead.stats.in_flight == 0


@pytest.mark.parametrize("way", ["inlined", "observed"])
def test_one_breaker_shared_by_threads_and_loops_counts_every_call(racy: None, way: str) -> None:
    # Never trips (a third of the calls fail; it would take all of them), so every call runs.
    breaker = CircuitBreaker(window=CountWindow(10_000), failure_rate=1.0, minimum_calls=10_000)
    tally = Tally()

    def fails(i: int) -> bool:
        return i % 3 == 0

    def body_sync(i: int) -> None:
        if fails(i):
            raise Boom

    async def body_async(i: int) -> None:
        await anyio.lowlevel.checkpoint()
        if fails(i):
            raise Boom

    def thread_world() -> None:
        failed = 0
        for i in range(CALLS):
            try:
                breaker.call_sync(body_sync, i)
            except Boom:
                failed += 1
        tally.add(CALLS, failed=failed)

    async def task(calls: int) -> None:
        failed = 0
        for i in range(calls):
            try:
                await breaker.call(body_async, i)
            except Boom:
                failed += 1
        tally.add(calls, failed=failed)

    def asyncio_world() -> None:
        async def main() -> None:
            await asyncio.gather(*(task(n) for n in _split(CALLS, TASKS)))

        asyncio.run(main())

    def trio_world() -> None:
        async def main() -> None:
            async with trio.open_nursery() as nursery:
                for n in _split(CALLS, TASKS):
                    nursery.start_soon(task, n)

        trio.run(main)

    with observing(breaker, way) as spans:
        run_worlds(*[thread_world] * THREADS, asyncio_world, trio_world)

    if way == "observed":
        assert spans.count == tally.made
    stats = breaker.stats
    assert tally.made == (THREADS + 2) * CALLS
    assert stats.successful_total + stats.failed_total == tally.made
    assert stats.failed_total == tally.failed
    assert (stats.ignored_total, stats.rejected) == (0, 0)
    assert stats.state is CircuitState.CLOSED


def test_one_timeout_shared_by_loops_in_several_threads(racy: None) -> None:
    # Each thread's loop keeps its own deadline queue; none may cancel another's
    # task or strand a deadline. (Real time, but 60 s for calls that never wait.)
    timeout = Timeout(60)
    bulkhead = Bulkhead(2, max_waiting=64)
    occupancy = Occupancy()
    tally = Tally()
    plan = Plan([timeout, bulkhead])

    async def body(i: int) -> int:
        occupancy.enter()
        try:
            assert resilience.current_deadline() is not None
            await anyio.lowlevel.checkpoint()
            return i
        finally:
            occupancy.leave()

    async def task(calls: int) -> None:
        run = plan.runner()
        for i in range(calls):
            assert await run(body, i) == i
            assert resilience.current_deadline() is None
        tally.add(calls)

    def asyncio_world() -> None:
        async def main() -> None:
            await asyncio.gather(*(task(n) for n in _split(CALLS, TASKS)))

        asyncio.run(main())

    def trio_world() -> None:
        async def main() -> None:
            async with trio.open_nursery() as nursery:
                for n in _split(CALLS, TASKS):
                    nursery.start_soon(task, n)

        trio.run(main)

    def httpx_world() -> None:
        async def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, text=str(await body(0)))

        async def main() -> None:
            transport = AsyncResilientTransport(
                httpx.MockTransport(handler), timeout=timeout, bulkhead=bulkhead
            )
            async with httpx.AsyncClient(transport=transport) as client:
                for _ in range(CALLS // 4):
                    assert (await client.get("http://upstream.test/")).text == "0"
            tally.add(CALLS // 4)

        asyncio.run(main())

    run_worlds(asyncio_world, asyncio_world, trio_world, httpx_world)

    assert tally.made == 3 * CALLS + CALLS // 4
    assert occupancy.entered == tally.made
    assert occupancy.peak <= 2
    assert timeout.stats.timeouts == 0
    assert (bulkhead.stats.in_flight, bulkhead.stats.waiting, bulkhead.stats.rejected) == (0, 0, 0)


# 4. Rejections are fresh, and outer guards settle them as errors ------------------


def _depth(error: BaseException) -> int:
    depth, tb = 0, error.__traceback__
    while tb is not None:
        depth, tb = depth + 1, tb.tb_next
    return depth


def _open_breaker(clock: FakeClock) -> CircuitBreaker:
    breaker = CircuitBreaker(open_duration=10, clock=clock)
    breaker.open()
    return breaker


def _busy_half_open_breaker(clock: FakeClock) -> CircuitBreaker:
    breaker = _half_open_breaker(clock)
    breaker.admit()  # the only trial is running
    return breaker


def _full_bulkhead_1(clock: FakeClock) -> Bulkhead:
    return full_bulkhead()[0]


REJECTING: dict[str, tuple[Callable[[FakeClock], Any], type[Exception]]] = {
    "bulkhead-1-full": (_full_bulkhead_1, BulkheadFullError),
    "breaker-open": (_open_breaker, CircuitOpenError),
    "breaker-half-open-trial-running": (_busy_half_open_breaker, CircuitOpenError),
    "user-guard-refusing": (lambda clock: Ledger(refuse=True), LedgerRefused),
}


@pytest.mark.parametrize("name", list(REJECTING))
async def test_each_rejection_is_a_fresh_exception(name: str) -> None:
    make, kind = REJECTING[name]
    guard = make(FakeClock())
    direct = []
    for _ in range(2):
        with pytest.raises(kind) as info:
            guard.admit()
        direct.append(info.value)
    plan = Plan([guard])
    through_plan = []
    for _ in range(3):
        with pytest.raises(kind) as info:
            await plan.runner()(ok)
        through_plan.append(info.value)
    plain = []
    for _ in range(3):
        with pytest.raises(kind) as info:
            plan.runner(sync=True)(ok_sync)
        plain.append(info.value)
    observed = []
    with observing(guard, "observed") as spans:
        for _ in range(2):
            with pytest.raises(kind) as info:
                await plan.runner()(ok)
            observed.append(info.value)
    assert spans.count == 2
    errors = direct + through_plan + plain + observed
    assert len({id(e) for e in errors}) == len(errors)
    # A shared exception would grow its traceback on every raise.
    assert len({_depth(e) for e in through_plan}) == 1
    assert len({_depth(e) for e in plain}) == 1


async def test_each_rejection_of_a_full_queue_is_a_fresh_exception() -> None:
    clock = FakeClock()
    bulkhead = Bulkhead(2, max_waiting=3, max_wait=5, clock=clock)
    held = [bulkhead.admit(), bulkhead.admit()]
    run = Plan([bulkhead]).runner()
    waiters = [Outcome() for _ in range(3)]
    async with anyio.create_task_group() as tg:
        for waiter in waiters:
            tg.start_soon(waiter.run, run, ok)
        await anyio.wait_all_tasks_blocked()
        assert bulkhead.stats.waiting == 3
        full = []
        for _ in range(2):  # the queue is full: rejected at once
            with pytest.raises(BulkheadFullError) as info:
                await run(ok)
            full.append(info.value)
        clock.advance(5)  # and the three waiters run out of max_wait
    expired = [w.error for w in waiters]
    assert all(isinstance(e, BulkheadFullError) for e in expired)
    errors = full + expired
    assert len({id(e) for e in errors}) == 5
    assert bulkhead.stats.rejected == 5
    for ticket in held:
        bulkhead.settle(ticket, None, None)
    assert bulkhead.stats.in_flight == 0


@pytest.mark.parametrize("name", list(REJECTING))
async def test_a_rejection_inside_is_settled_by_the_outer_guard_as_an_error(
    case: Case, name: str
) -> None:
    make, kind = REJECTING[name]
    inner = make(case.clock)
    run = Plan([case.subject, inner]).runner()
    with pytest.raises(kind) as first:
        await run(ok)
    if case.name == "breaker-half-open" and kind is LedgerRefused:
        # Not one of ours: the failed trial reopened the breaker.
        case.assert_settled(first.value)
        assert case.guard.state is CircuitState.OPEN
        return
    with pytest.raises(kind) as second:
        await run(ok)
    assert first.value is not second.value
    case.assert_settled(first.value, second.value)


@pytest.mark.parametrize("name", list(REJECTING))
async def test_a_breaker_outside_counts_our_rejections_as_ignored(name: str) -> None:
    make, kind = REJECTING[name]
    clock = FakeClock()
    breaker = CircuitBreaker(minimum_calls=1, failure_rate=0.01, clock=clock)
    run = Plan([breaker, make(clock)]).runner()
    if kind is LedgerRefused:
        # Not one of ours: a user guard's rejection is an ordinary failure.
        with pytest.raises(LedgerRefused):
            await run(ok)
        stats = breaker.stats
        assert (stats.failed_total, stats.ignored_total) == (1, 0)
        assert stats.state is CircuitState.OPEN
    else:
        for _ in range(20):
            with pytest.raises(kind):
                await run(ok)
        stats = breaker.stats
        assert (stats.ignored_total, stats.failed_total, stats.successful_total) == (20, 0, 0)
        assert stats.state is CircuitState.CLOSED


async def test_a_breaker_outside_records_our_rejections_when_record_names_them() -> None:
    breaker = CircuitBreaker(minimum_calls=5, record=(BulkheadFullError,))
    inner, held = full_bulkhead()
    run = Plan([breaker, inner]).runner()
    for _ in range(5):
        with pytest.raises(BulkheadFullError):
            await run(ok)
    assert breaker.stats.failed_total == 5
    assert breaker.state is CircuitState.OPEN
    inner.settle(held, None, None)


def test_a_plain_rejection_inside_is_settled_by_the_outer_guard(sync_case: Case) -> None:
    raised = []
    for make, kind in REJECTING.values():
        inner = make(sync_case.clock)
        run = Plan([sync_case.subject, inner]).runner(sync=True)
        with pytest.raises(kind) as info:
            run(ok_sync)
        raised.append(info.value)
    sync_case.assert_settled(*raised)
    guard = sync_case.guard
    if isinstance(guard, CircuitBreaker):
        # Ours are ignored (a half-open trial gets its permit back each time);
        # the user guard's LedgerRefused, last, is an ordinary failure.
        succeeded, failed, ignored = sync_case._totals
        stats = guard.stats
        assert (stats.successful_total, stats.failed_total, stats.ignored_total) == (
            succeeded,
            failed + 1,
            ignored + len(REJECTING) - 1,
        )
        expected = CircuitState.CLOSED if sync_case.name == "breaker-closed" else CircuitState.OPEN
        assert guard.state is expected
    else:
        sync_case.check(NOTHING)


# 5. A sync plan refuses a Timeout when it is compiled ------------------------------


CHAINS_WITH_A_TIMEOUT: dict[str, Callable[[Ledger], list[Any]]] = {
    "timeout": lambda ledger: [ledger, Timeout(1)],
    "breaker-timeout-bulkhead": lambda ledger: [
        ledger,
        CircuitBreaker(),
        Timeout(1),
        Bulkhead(1),
    ],
    "retry-timeout": lambda ledger: [ledger, Retry(3), Timeout(1)],
    "fallback-timeout": lambda ledger: [Fallback(0), ledger, Timeout(1)],
    "deadline-guard": lambda ledger: [ledger, DeadlineGuard()],
    "nested-pipeline": lambda ledger: [Fallback(0), ledger, Pipeline(Bulkhead(1), Timeout(1))],
}


@pytest.mark.parametrize("chain", list(CHAINS_WITH_A_TIMEOUT))
def test_a_sync_plan_refuses_a_timeout_when_it_is_compiled(chain: str) -> None:
    ledger = Ledger()
    plan = Plan(CHAINS_WITH_A_TIMEOUT[chain](ledger))
    for _ in range(2):  # not compiled, not cached: refused every time
        with pytest.raises(TypeError, match="cannot"):
            plan.runner(sync=True)
    assert ledger.issued == 0  # refused before anything ran


@pytest.mark.parametrize("chain", list(CHAINS_WITH_A_TIMEOUT))
async def test_the_same_chain_runs_async(chain: str) -> None:
    ledger = Ledger()
    plan = Plan(CHAINS_WITH_A_TIMEOUT[chain](ledger))
    assert await plan.runner()(ok, "fine") == "fine"
    assert (ledger.issued, ledger.outstanding) == (1, set())


def test_an_observer_added_as_a_bound_method_is_removed_by_an_equal_one() -> None:
    from resilience import _observe

    class Watcher:
        def seen(self, policy: object, error: BaseException | None, seconds: float) -> None:
            pass

    watcher = Watcher()
    before = _observe._observers
    add_observer(watcher.seen)
    remove_observer(watcher.seen)  # a new bound method object, equal to the first
    assert _observe._observers == before
