"""Rate limiting: a burst, computed waits, a refusal with retry_after, per-user
limits, and an httpx client that keeps to an API's quota.

Every limiter runs on a fake clock (resilience.testing.FakeClock): nothing
waits for real, and the times printed are the fake clock's seconds.

Run: python -m examples.ratelimit
"""

from __future__ import annotations

import asyncio

import httpx

from resilience import RateLimitedError, RateLimiter, RateLimiterStatistics
from resilience.contrib.httpx import AsyncResilientTransport, HTTPRateLimitedError
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


async def api_quota() -> None:
    clock = FakeClock()
    # The API allows 2 requests a second; our client keeps to it, waiting up
    # to 1 s for a slot rather than being refused by the server.
    sent_at: list[float] = []
    busy = {"left": 1}  # the server will once say "429, come back in 20 s"

    def api(request: httpx.Request) -> httpx.Response:
        sent_at.append(clock.now())
        if len(sent_at) == 4 and busy["left"]:
            busy["left"] -= 1
            return httpx.Response(429, headers={"Retry-After": "20"})
        return httpx.Response(200, json={"item": request.url.path})

    quota = RateLimiter(2, per=1.0, max_wait=1.0, name="api", clock=clock)
    transport = AsyncResilientTransport(httpx.MockTransport(api), rate_limit=quota)
    async with httpx.AsyncClient(transport=transport, base_url="https://api.example") as client:
        for n in range(4):
            assert (await client.get(f"/items/{n}")).status_code in (200, 429)
        print(f"httpx: 4 requests sent at {sent_at} (fake seconds), paced by the quota")
        assert sent_at == [0.0, 0.0, 0.5, 1.0]
        # The 4th was answered 429 with Retry-After: 20, which pushed the
        # host's limit back: the client now refuses at once, sending nothing.
        retry_after = None
        try:
            await client.get("/items/4")
        except HTTPRateLimitedError as exc:
            retry_after = exc.retry_after
        assert retry_after is not None, "the 429's Retry-After did not push the limit back"
        assert abs(retry_after - 20.0) < 0.01
        print(f"httpx: after the 429, refused locally (retry in {retry_after:g}s)")
        clock.advance(20.0)
        assert (await client.get("/items/5")).status_code == 200
    print(f"httpx: sent again at t={sent_at[-1]:g}; {len(sent_at)} requests reached the API")
    assert len(sent_at) == 5


async def main() -> None:
    await burst_then_waits()
    await refusal()
    await per_user()
    await api_quota()
    print("ratelimit: every check passed")


if __name__ == "__main__":
    asyncio.run(main())
