"""Rate limiting: a burst, computed waits, a refusal with retry_after, per-user limits.

Every limiter runs on a fake clock (resilience.testing.FakeClock): nothing
waits for real, and the times printed are the fake clock's seconds.

Run: python -m examples.ratelimit
"""

from __future__ import annotations

import asyncio

from resilience import RateLimitedError, RateLimiter, RateLimiterStatistics
from resilience.events import Event, RateLimitRejected, RateLimitWaited
from resilience.testing import FakeClock


async def burst_then_waits() -> None:
    clock = FakeClock()
    # 2 calls a second, 3 at once after a rest; a call may wait up to 0.5 s.
    limiter = RateLimiter(2, per=1.0, burst=3, max_wait=0.5, name="search", clock=clock)
    events: list[Event] = []
    limiter.add_listener(events.append)
    ran_at: list[float] = []

    @limiter
    async def search(query: str) -> str:
        ran_at.append(clock.now())
        return f"results for {query!r}"

    for query in ("a", "b", "c", "d", "e", "f"):
        assert await search(query) == f"results for {query!r}"
    print(f"decorator: calls ran at {ran_at} (fake seconds)")
    print(f"decorator: {limiter.stats}")
    assert ran_at == [0.0, 0.0, 0.0, 0.5, 1.0, 1.5]  # the burst, then one every 0.5 s
    assert clock.sleeps == [0.5, 0.5, 0.5]  # computed waits, never polled
    assert events == [RateLimitWaited("search", 0.5)] * 3
    assert limiter.stats == RateLimiterStatistics(
        admitted=6, waited=3, rejected=0, wait_seconds=1.5, keys=0
    )


async def refusal() -> None:
    clock = FakeClock()
    # One call every 10 s and max_wait=0 (the default): over the limit, refuse.
    limiter = RateLimiter(1, per=10.0, name="export", clock=clock)
    events: list[Event] = []
    limiter.add_listener(events.append)

    async def export() -> str:
        return "exported"

    assert await limiter.call(export) == "exported"
    clock.advance(4.0)
    retry_after = None
    try:
        await limiter.call(export)
    except RateLimitedError as exc:
        retry_after = exc.retry_after
        print(f"refusal: {type(exc).__name__} at t={clock.now():g}, retry_after={retry_after:g}s")
    assert retry_after == 6.0
    assert clock.sleeps == []  # refused at once: nobody waited only to be refused
    assert events == [RateLimitRejected("export", 6.0)]
    clock.advance(retry_after)
    assert await limiter.call(export) == "exported"  # due at t, granted at t
    print(f"refusal: came back after retry_after and passed at t={clock.now():g}")
    assert clock.now() == 10.0


async def per_user() -> None:
    clock = FakeClock()
    # 2 posts a minute per user: each user gets a limit of their own.
    limiter = RateLimiter(
        2, per=60.0, key=lambda user, *_: user, max_keys=1000, name="posts", clock=clock
    )

    @limiter
    async def post(user: str, text: str) -> str:
        return f"{user}: {text}"

    outcomes: list[str] = []
    for user, text in [("ann", "hi"), ("ann", "again"), ("ann", "spam"), ("bob", "hello")]:
        try:
            await post(user, text)
        except RateLimitedError as exc:
            outcomes.append(f"{user} refused (retry in {exc.retry_after:g}s)")
        else:
            outcomes.append(f"{user} ok")
    print(f"per user: {', '.join(outcomes)}")
    assert outcomes == ["ann ok", "ann ok", "ann refused (retry in 30s)", "bob ok"]
    clock.advance(30.0)  # one of ann's slots is back
    assert await post("ann", "later") == "ann: later"
    print(f"per user: ann posted again at t={clock.now():g}; {limiter.stats.keys} keys held")
    assert limiter.stats.keys == 2
    assert limiter.stats.admitted == 4
    assert limiter.stats.rejected == 1


async def main() -> None:
    await burst_then_waits()
    await refusal()
    await per_user()
    print("ratelimit: every check passed")


if __name__ == "__main__":
    asyncio.run(main())
