"""Rate limiter: our RateLimiter against aiolimiter, limits and pyrate-limiter.

Every limiter allows 10^9 calls per second with a burst of 10^9, so no call
ever waits or is refused: the rows time the admission a limiter adds to every
call while under its limit, not waiting. Each peer runs on its documented
asyncio path, so its rows are asyncio only; ours also runs on trio.

- aiolimiter: ``async with AsyncLimiter(rate, 1):`` (a leaky bucket; it has
  no keys: keyed, one limiter per key in a dict);
- limits: the asyncio API, ``await limits.aio.strategies.<Strategy>(
  limits.aio.storage.MemoryStorage()).hit(item, *identifiers)``, for the
  moving window (a log of every hit in the window: its cost grows with the
  hits held, here every call of the last second, up to one batch) and the
  sliding window counter;
- pyrate-limiter 4: ``await Limiter(bucket).try_acquire_async(name,
  blocking=False)`` over the in-memory sliding log (``InMemoryBucket``) and
  over its GCRA (``StateBucket``, in-memory state); keyed, a
  ``BucketFactory`` that makes one bucket per name, as its docs show.

A peer's answer is checked on every call (a refusal raises), and each setup
drives the target once per key to completion without suspending: a limiter
that would wait or refuse fails the case instead of being timed. The keyed
rows take the key from the call's argument, 100 keys in turn, all seen in
setup; their baseline is the bare ``await h(key)`` with the same keys.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from .cases import ASYNCIO_ONLY, Case
from .cases_baseline import f

__all__ = ["cases", "h"]

ADMITTED = "rate limiter, admitted call"
KEYED = "rate limiter, keyed (100 keys in turn), admitted call"
KEYED_BASELINE = "await h(key), 100 keys in turn"

RATE = 10**9
"""Calls per second, and the burst: far above what a loop can call."""
KEYS = tuple(f"user-{index}" for index in range(100))

Target = Callable[[], Any]


class Refused(Exception):
    """A peer answered no: the row would time refusals, not admissions."""


async def h(key: str) -> int:
    """The keyed rows' work: :func:`benchmarks.cases_baseline.f` with the key as argument."""
    return 1


def _next_key() -> Callable[[], str]:
    return itertools.cycle(KEYS).__next__


def _run_now(awaitable: Awaitable[Any]) -> Any:
    """The awaitable's result, run without a loop: it must not suspend."""

    async def run() -> Any:
        return await awaitable

    coroutine: Coroutine[Any, Any, Any] = run()
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise Refused("the limiter suspended the call: it would have waited")


def _checked(target: Target, calls: int) -> Target:
    """``target``, after ``calls`` calls that each completed at once and admitted."""
    for _ in range(calls):
        _run_now(target())
    return target


# Ours ------------------------------------------------------------------------


def _ours(**options: Any) -> Any:
    from resilience import RateLimiter

    return RateLimiter(RATE, burst=RATE, **options)


def _admitted_all(limiter: Any, calls: int) -> None:
    stats = limiter.stats
    if stats.admitted != calls or stats.waited or stats.rejected:
        raise Refused(f"{limiter!r} in setup: {stats}")


def ours_decorator() -> Target:
    limiter = _ours()
    target = _checked(limiter(f), 1)
    _admitted_all(limiter, 1)
    return target


def ours_call() -> Target:
    limiter = _ours()
    call = limiter.call

    async def target() -> Any:
        return await call(f)

    _checked(target, 1)
    _admitted_all(limiter, 1)
    return target


def ours_keyed() -> Target:
    limiter = _ours(key=lambda user, *rest: user)
    wrapped = limiter(h)
    key = _next_key()

    async def target() -> Any:
        return await wrapped(key())

    _checked(target, len(KEYS))
    _admitted_all(limiter, len(KEYS))
    if limiter.stats.keys != len(KEYS):
        raise Refused(f"{limiter.stats.keys} keys held, not {len(KEYS)}")
    return target


def keyed_baseline() -> Target:
    key = _next_key()

    async def target() -> Any:
        return await h(key())

    return target


# aiolimiter ------------------------------------------------------------------


def aiolimiter_async_with() -> Target:
    from aiolimiter import AsyncLimiter

    limiter = AsyncLimiter(RATE, 1.0)

    async def target() -> Any:
        async with limiter:
            return await f()

    # It waits rather than refuses: a wait would suspend, and fail here.
    return _checked(target, 1)


def aiolimiter_per_key() -> Target:
    from aiolimiter import AsyncLimiter

    # aiolimiter has no keys: a limiter per key in a dict is how one gets them.
    limiters = {name: AsyncLimiter(RATE, 1.0) for name in KEYS}
    key = _next_key()

    async def target() -> Any:
        name = key()
        async with limiters[name]:
            return await h(name)

    return _checked(target, len(KEYS))


# limits ----------------------------------------------------------------------


def _limits_hit(strategy: str) -> Callable[..., Awaitable[bool]]:
    from limits import RateLimitItemPerSecond
    from limits.aio import strategies
    from limits.aio.storage import MemoryStorage

    item = RateLimitItemPerSecond(RATE)
    hit = getattr(strategies, strategy)(MemoryStorage()).hit

    def bound(*identifiers: str) -> Awaitable[bool]:
        return hit(item, *identifiers)  # type: ignore[no-any-return]

    return bound


def _limits(strategy: str, keyed: bool) -> Callable[[], Target]:
    def setup() -> Target:
        # The item is bound once in setup, as an application would hold it.
        hit = _limits_hit(strategy)
        if not keyed:

            async def target() -> Any:
                if not await hit():
                    raise Refused(strategy)
                return await f()

            return _checked(target, 1)
        key = _next_key()

        async def keyed_target() -> Any:
            name = key()
            if not await hit(name):
                raise Refused(strategy)
            return await h(name)

        return _checked(keyed_target, len(KEYS))

    return setup


# pyrate-limiter --------------------------------------------------------------

_PYRATE_OPEN: list[Any] = []
"""The last setup's limiter: closed by the next setup (it runs a leak thread)."""


def _pyrate_bucket(kind: str) -> Any:
    from pyrate_limiter import Duration, InMemoryBucket, Rate, StateBucket

    rates = [Rate(RATE, Duration.SECOND)]
    return InMemoryBucket(rates) if kind == "log" else StateBucket(rates)


def _pyrate_limiter(kind: str, keyed: bool) -> Any:
    from pyrate_limiter import BucketFactory, Limiter, MonotonicClock, RateItem

    class PerName(BucketFactory):  # type: ignore[misc]
        """One bucket per name, made on first use (pyrate-limiter's documented routing)."""

        def __init__(self) -> None:
            self.clock = MonotonicClock()
            self.by_name: dict[str, Any] = {}

        def wrap_item(self, name: str, weight: int = 1) -> Any:
            return RateItem(name, self.clock.now(), weight=weight)

        def get(self, item: Any) -> Any:
            bucket = self.by_name.get(item.name)
            if bucket is None:
                bucket = self.by_name[item.name] = _pyrate_bucket(kind)
                self.schedule_leak(bucket)  # what BucketFactory.create does
            return bucket

    while _PYRATE_OPEN:
        _PYRATE_OPEN.pop().close()
    limiter = Limiter(PerName() if keyed else _pyrate_bucket(kind))
    _PYRATE_OPEN.append(limiter)
    return limiter


def _pyrate(kind: str, keyed: bool) -> Callable[[], Target]:
    def setup() -> Target:
        acquire = _pyrate_limiter(kind, keyed).try_acquire_async
        if not keyed:

            async def target() -> Any:
                if not await acquire("bench", blocking=False):
                    raise Refused(f"pyrate-limiter {kind}")
                return await f()

            return _checked(target, 1)
        key = _next_key()

        async def keyed_target() -> Any:
            name = key()
            if not await acquire(name, blocking=False):
                raise Refused(f"pyrate-limiter {kind}")
            return await h(name)

        return _checked(keyed_target, len(KEYS))

    return setup


def cases() -> list[Case]:
    return [
        Case(
            ADMITTED,
            "resilience @RateLimiter(1e9, burst=1e9)",
            ours_decorator,
            ours=True,
            key="ratelimit.ours",
        ),
        Case(
            ADMITTED,
            "resilience await RateLimiter(1e9, burst=1e9).call(f)",
            ours_call,
            ours=True,
            key="ratelimit.ours.call",
        ),
        Case(
            ADMITTED,
            "aiolimiter async with AsyncLimiter(1e9, 1)",
            aiolimiter_async_with,
            key="ratelimit.aiolimiter",
            backends=ASYNCIO_ONLY,
        ),
        Case(
            ADMITTED,
            "limits.aio MovingWindowRateLimiter(MemoryStorage()).hit(item)",
            _limits("MovingWindowRateLimiter", False),
            key="ratelimit.limits.moving",
            backends=ASYNCIO_ONLY,
        ),
        Case(
            ADMITTED,
            "limits.aio SlidingWindowCounterRateLimiter(MemoryStorage()).hit(item)",
            _limits("SlidingWindowCounterRateLimiter", False),
            key="ratelimit.limits.sliding",
            backends=ASYNCIO_ONLY,
        ),
        Case(
            ADMITTED,
            "pyrate-limiter try_acquire_async over InMemoryBucket (log)",
            _pyrate("log", False),
            key="ratelimit.pyrate.log",
            backends=ASYNCIO_ONLY,
        ),
        Case(
            ADMITTED,
            "pyrate-limiter try_acquire_async over StateBucket (GCRA)",
            _pyrate("gcra", False),
            key="ratelimit.pyrate.gcra",
            backends=ASYNCIO_ONLY,
        ),
        # Keyed: the key is the call's argument.
        Case(KEYED, KEYED_BASELINE, keyed_baseline, key="ratelimit.baseline.keyed"),
        Case(
            KEYED,
            "resilience @RateLimiter(1e9, burst=1e9, key=lambda user, *rest: user)",
            ours_keyed,
            baseline=KEYED_BASELINE,
            ours=True,
            key="ratelimit.ours.keyed",
        ),
        Case(
            KEYED,
            "aiolimiter async with limiters[key]: an AsyncLimiter per key in a dict",
            aiolimiter_per_key,
            backends=ASYNCIO_ONLY,
            baseline=KEYED_BASELINE,
            key="ratelimit.aiolimiter.keyed",
        ),
        Case(
            KEYED,
            "limits.aio MovingWindowRateLimiter: hit(item, key)",
            _limits("MovingWindowRateLimiter", True),
            key="ratelimit.limits.moving.keyed",
            backends=ASYNCIO_ONLY,
            baseline=KEYED_BASELINE,
        ),
        Case(
            KEYED,
            "limits.aio SlidingWindowCounterRateLimiter: hit(item, key)",
            _limits("SlidingWindowCounterRateLimiter", True),
            key="ratelimit.limits.sliding.keyed",
            backends=ASYNCIO_ONLY,
            baseline=KEYED_BASELINE,
        ),
        Case(
            KEYED,
            "pyrate-limiter try_acquire_async(key): an InMemoryBucket per key",
            _pyrate("log", True),
            key="ratelimit.pyrate.log.keyed",
            backends=ASYNCIO_ONLY,
            baseline=KEYED_BASELINE,
        ),
        Case(
            KEYED,
            "pyrate-limiter try_acquire_async(key): a StateBucket (GCRA) per key",
            _pyrate("gcra", True),
            key="ratelimit.pyrate.gcra.keyed",
            backends=ASYNCIO_ONLY,
            baseline=KEYED_BASELINE,
        ),
    ]
