"""RateLimiter as a guard: waits, refusals, keys, cancellation, composition."""

from __future__ import annotations

import math
import sys
import threading

import anyio
import anyio.lowlevel
import pytest

from resilience import (
    CircuitBreaker,
    RateLimitedError,
    RateLimiter,
    Retry,
    backoff,
)
from resilience.events import Event, RateLimitRejected, RateLimitWaited
from resilience.testing import FakeClock


async def test_a_burst_passes_at_once_then_calls_wait_exactly_their_turn() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, per=1.0, max_wait=math.inf, clock=clock)
    times: list[float] = []

    @limiter
    async def call() -> None:
        times.append(clock.now())

    for _ in range(5):
        await call()
    assert times == [0.0, 0.0, 0.5, 1.0, 1.5]
    assert clock.sleeps == [0.5, 0.5, 0.5]  # computed waits, never polled
    assert limiter.stats.waited == 3


async def test_over_the_limit_without_room_to_wait_is_refused_at_once() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, per=2.0, max_wait=1.0, clock=clock, name="api")
    events: list[Event] = []
    limiter.add_listener(events.append)

    async def ok() -> str:
        return "ok"

    assert await limiter.call(ok) == "ok"
    with pytest.raises(RateLimitedError) as first:
        await limiter.call(ok)
    with pytest.raises(RateLimitedError) as second:
        await limiter.call(ok)
    assert first.value is not second.value  # fresh each time
    assert first.value.name == "api"
    assert first.value.retry_after == pytest.approx(2.0)
    assert clock.sleeps == []  # nobody parked only to be refused
    assert events == [RateLimitRejected("api", pytest.approx(2.0))] * 2


async def test_a_wait_equal_to_max_wait_goes_through() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, max_wait=1.0, clock=clock, name="edge")
    events: list[Event] = []
    limiter.add_listener(events.append)

    async def ok() -> None:
        pass

    await limiter.call(ok)
    await limiter.call(ok)
    assert clock.sleeps == [1.0]
    assert events == [RateLimitWaited("edge", 1.0)]


class ParkingClock(FakeClock):
    """A fake clock whose sleeps park until cancelled, while ``park`` is set."""

    __slots__ = ("park", "parked")

    def __init__(self) -> None:
        super().__init__()
        self.park = False
        self.parked = anyio.Event()

    async def sleep(self, seconds: float) -> None:
        if not self.park:
            await super().sleep(seconds)
            return
        self.parked.set()
        await anyio.sleep_forever()


async def test_a_cancelled_wait_gives_its_slot_back() -> None:
    clock = ParkingClock()
    limiter = RateLimiter(1, max_wait=10.0, clock=clock)

    async def ok() -> None:
        pass

    await limiter.call(ok)  # the one slot of this second
    clock.park = True
    async with anyio.create_task_group() as tg:
        tg.start_soon(limiter.call, ok)
        await clock.parked.wait()
        tg.cancel_scope.cancel()
    clock.park = False
    # The reservation was the last one: given back, so the next caller waits
    # one interval, not two.
    await limiter.call(ok)
    assert clock.sleeps == [1.0]


async def test_keys_get_limits_of_their_own() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, per=60, key=lambda user, *_: user, max_keys=2, clock=clock)

    @limiter
    async def act(user: str, what: str) -> str:
        return f"{user}:{what}"

    assert await act("ann", "a") == "ann:a"
    assert await act("bob", "b") == "bob:b"
    with pytest.raises(RateLimitedError):
        await act("ann", "again")
    await act("cid", "c")  # a third key: the table stays at max_keys
    assert limiter.stats.keys == 2


async def test_retry_does_not_retry_a_refusal_and_a_breaker_does_not_record_it() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, per=10, clock=clock)
    breaker = CircuitBreaker("rl", minimum_calls=1, consecutive_failures=1, clock=clock)
    policy = Retry(3, backoff=backoff.immediate(), clock=clock) | breaker | limiter

    async def ok() -> str:
        return "ok"

    assert await policy.call(ok) == "ok"
    with pytest.raises(RateLimitedError):
        await policy.call(ok)
    assert limiter.stats.rejected == 1  # not retried
    assert breaker.stats.failed_total == 0
    assert breaker.state.value == "closed"


def test_threads_never_get_more_than_the_limit() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100, per=1.0, clock=clock)
    admitted: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        with lock:
            admitted.append(1)

    def worker() -> None:
        for _ in range(200):
            try:
                limiter.call_sync(work)
            except RateLimitedError:
                pass

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 100  # the burst, no more: the clock never moved


def test_threads_never_get_more_than_each_keys_limit() -> None:
    clock = FakeClock()
    limiter = RateLimiter(50, per=1.0, key=lambda user: user, clock=clock)
    admitted: dict[int, int] = {}
    lock = threading.Lock()

    def work(user: int) -> None:
        with lock:
            admitted[user] = admitted.get(user, 0) + 1

    def worker(offset: int) -> None:
        for n in range(400):
            try:
                limiter.call_sync(work, (n + offset) % 4)
            except RateLimitedError:
                pass

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert admitted == {0: 50, 1: 50, 2: 50, 3: 50}  # each key's burst, no more


@pytest.mark.parametrize(
    ("kwargs", "error", "param"),
    [
        ({"rate": 0}, ValueError, "rate"),
        ({"rate": math.inf}, ValueError, "rate"),
        ({"rate": True}, TypeError, "rate"),
        ({"rate": 1, "per": -1}, ValueError, "per"),
        ({"rate": 1, "burst": 0}, ValueError, "burst"),
        ({"rate": 1, "max_wait": -1}, ValueError, "max_wait"),
        ({"rate": 1, "max_wait": math.nan}, ValueError, "max_wait"),
        ({"rate": 2, "cost": 3}, ValueError, "cost"),
        ({"rate": 1, "key": "ip"}, TypeError, "key"),
        ({"rate": 1, "max_keys": 0}, ValueError, "max_keys"),
    ],
)
def test_bad_settings_are_refused_naming_the_parameter(
    kwargs: dict[str, object], error: type[Exception], param: str
) -> None:
    with pytest.raises(error, match=param):
        RateLimiter(**kwargs)  # type: ignore[arg-type]


async def test_under_a_deadline_a_caller_does_not_reserve_a_slot_it_would_miss() -> None:
    # Found writing the docs: a Timeout shorter than max_wait made waiters
    # reserve slots they were cancelled before, so the slots were lost and,
    # under overload, nothing was admitted at all.
    import resilience
    from resilience import Timeout

    clock = FakeClock()
    limiter = RateLimiter(1, max_wait=5.0, clock=clock)
    policy = Timeout(0.5, clock=clock) | limiter

    async def ok() -> str:
        return "ok"

    assert await policy.call(ok) == "ok"
    for _ in range(3):  # each would need 1 s, the deadline leaves 0.5 s: refused at once
        with pytest.raises(RateLimitedError):
            await policy.call(ok)
    assert clock.sleeps == []
    clock.advance(1.0)
    assert await policy.call(ok) == "ok"  # no slot was lost
    with resilience.deadline(10.0, clock=clock):
        assert await limiter.call(ok) == "ok"  # room to wait: it does
    assert clock.sleeps == [1.0]


def test_push_back_is_refused_on_a_keyed_limiter() -> None:
    limiter = RateLimiter(1, key=lambda who: who)
    assert limiter.keyed
    with pytest.raises(TypeError, match="keyed"):
        limiter.push_back(5.0)


def test_rate_is_a_number_of_calls_and_max_wait_may_be_a_timedelta() -> None:
    import datetime

    with pytest.raises(TypeError, match="rate must be a number of calls"):
        RateLimiter(datetime.timedelta(seconds=5))  # type: ignore[arg-type]
    assert RateLimiter(1, max_wait=datetime.timedelta(seconds=2))._max_wait == 2.0
