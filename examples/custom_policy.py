"""Writing your own policy: a guard that limits concurrency, composed with
Retry and CircuitBreaker, run in a pipeline, in an httpx transport and in the
ASGI middleware, and seen by a call observer.

Run: python -m examples.custom_policy
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from resilience import BulkheadFullError, CircuitBreaker, Policy, Retry, Timeout, backoff
from resilience.contrib.asgi import ResilienceMiddleware
from resilience.contrib.httpx import AsyncResilientTransport, HTTPBulkheadFullError
from resilience.lowlevel import add_observer, remove_observer


class LimitReached(BulkheadFullError):
    """The guard's rejection. As a BulkheadFullError, Retry does not retry it,
    a breaker outside it counts it as ignored, the httpx transport raises it
    as an HTTPBulkheadFullError and the ASGI middleware answers 503."""


class ConcurrencyLimit(Policy):
    """A guard: at most ``limit`` calls at once; the others are rejected at once."""

    def __init__(self, limit: int, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.limit = limit
        self.in_flight = 0
        self.peak = 0
        self.rejected = 0
        self.errors: list[BaseException | None] = []  # what each settle() was given

    def admit(self) -> object:
        # The check and the take, with no await between them: no other task
        # can run in between.
        if self.in_flight >= self.limit:
            self.rejected += 1
            raise LimitReached(name=self.name, capacity=self.limit)  # a fresh one each time
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        return None  # the ticket; settle() gets it back

    async def wait(self) -> object:
        raise AssertionError("admit() never returns WAIT")

    def wait_sync(self) -> object:
        raise AssertionError("admit() never returns WAIT")

    def settle(
        self, ticket: object, error: BaseException | None, result: Any
    ) -> BaseException | None:
        self.in_flight -= 1
        self.errors.append(error)
        return error  # let the outcome stand


def outcome(error: BaseException | None) -> str:
    return "ok" if error is None else type(error).__name__


spans: list[str] = []


def observe(policy: Policy, error: BaseException | None, seconds: float) -> None:
    """A call observer: told each policy's span of each call."""
    spans.append(f"{policy.name}:{outcome(error)}")


def show_spans() -> None:
    print("  spans:", " ".join(spans))
    spans.clear()


async def in_a_pipeline(limit: ConcurrencyLimit) -> None:
    retry = Retry(3, backoff=backoff.immediate(), name="stock-retry")
    breaker = CircuitBreaker("stock", minimum_calls=5)
    policy = retry | breaker | limit  # one compiled frame: retry around breaker around limit

    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("connection reset")
        return "in stock"

    answer = await policy.call(flaky)
    assert (answer, calls) == ("in stock", 3), (answer, calls)
    # The guard bracketed each attempt: admitted and settled three times.
    assert [outcome(e) for e in limit.errors] == ["ConnectionError", "ConnectionError", "ok"]
    # Observers see the innermost span first, per attempt, then the retry and the pipeline.
    assert spans == [
        "limit:ConnectionError",
        "stock:ConnectionError",
        "limit:ConnectionError",
        "stock:ConnectionError",
        "limit:ok",
        "stock:ok",
        "stock-retry:ok",
        f"{policy.name}:ok",
    ], spans
    print(f"pipeline: {answer!r} after {calls} attempts")
    show_spans()

    async def slow() -> str:
        await asyncio.sleep(0.05)
        return "in stock"

    results = await asyncio.gather(policy.call(slow), policy.call(slow), return_exceptions=True)
    assert results[0] == "in stock", results
    assert isinstance(results[1], LimitReached), results
    # Not retried, and not a failure of the dependency for the breaker.
    assert retry.stats.failed_without_retry == 1, retry.stats
    stats = breaker.stats
    assert (stats.ignored_total, stats.failed_total) == (1, 2), stats
    print(f"pipeline: 2 calls at once -> {results[0]!r}, {type(results[1]).__name__}")
    show_spans()
    assert (limit.in_flight, limit.peak) == (0, 1)


async def in_a_transport(limit: ConcurrencyLimit) -> None:
    attempts = 0

    async def upstream(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise httpx.ConnectError("connection refused", request=request)
        await asyncio.sleep(0.05)
        return httpx.Response(200, json={"items": []})

    transport = AsyncResilientTransport(
        httpx.MockTransport(upstream),
        retry=Retry(3, backoff=backoff.immediate(), name="api-retry"),
        breaker=CircuitBreaker("api"),
        timeout=Timeout(2.0, name="api-timeout"),
        policies=[limit],  # inside the retry, outside the per-host breaker
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        limit.errors.clear()
        response = await client.get("/items")
        assert (response.status_code, attempts) == (200, 2), (response, attempts)
        assert [outcome(e) for e in limit.errors] == ["ConnectError", "ok"], limit.errors
        # Per attempt: the timeout, the host's breaker, then the guard; the
        # transport drives the retry itself, outside the compiled chain.
        assert spans == [
            "api-timeout:ConnectError",
            "api:http://api.test:80:ConnectError",
            "limit:ConnectError",
            "api-timeout:ok",
            "api:http://api.test:80:ok",
            "limit:ok",
        ], spans
        print(f"transport: GET /items -> {response.status_code} after {attempts} attempts")
        show_spans()

        results = await asyncio.gather(
            client.get("/items"), client.get("/items"), return_exceptions=True
        )
        first, second = results
        assert isinstance(first, httpx.Response), first
        assert first.status_code == 200, first
        assert isinstance(second, HTTPBulkheadFullError), second
        assert isinstance(second, httpx.TransportError)
        assert isinstance(second.__cause__, LimitReached)
        assert attempts == 3  # the rejected request never reached the upstream, nor retried
        print(f"transport: 2 requests at once -> 200, {type(second).__name__}")
        show_spans()
    assert limit.in_flight == 0


async def in_the_middleware(limit: ConcurrencyLimit) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(0.05)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hello"})

    web = ResilienceMiddleware(
        app,
        max_concurrent=10,
        timeout=5.0,
        breaker=CircuitBreaker("web"),
        policies=[limit],  # outside the middleware's bulkhead and breaker
        retry_after=2,
        name="web",
    )
    asgi = httpx.ASGITransport(web)
    async with httpx.AsyncClient(transport=asgi, base_url="http://web.test") as client:
        response = await client.get("/")
        assert (response.status_code, response.text) == (200, "hello"), response
        # The guard, the middleware's bulkhead (named "web") and the breaker
        # (also "web"), innermost first. The request timeout is the
        # middleware's own timer, not a span.
        assert spans == ["web:ok", "web:ok", "limit:ok"], spans
        print(f"middleware: GET / -> {response.status_code}")
        show_spans()

        first, second = await asyncio.gather(client.get("/"), client.get("/"))
        assert first.status_code == 200, first
        assert (second.status_code, second.headers["retry-after"]) == (503, "2"), second
        print(
            f"middleware: 2 requests at once -> {first.status_code}, {second.status_code} "
            f"(Retry-After: {second.headers['retry-after']})"
        )
        show_spans()
    assert limit.in_flight == 0


async def main() -> None:
    limit = ConcurrencyLimit(1, name="limit")
    # Registered after the guard was built: nothing is patched, so it is seen all the same.
    add_observer(observe)
    try:
        await in_a_pipeline(limit)
        await in_a_transport(limit)
        await in_the_middleware(limit)
    finally:
        remove_observer(observe)
    assert limit.rejected == 3, limit.rejected
    print(f"limit: peak {limit.peak} in flight, {limit.rejected} rejected")
    print("custom policy: every check passed")


if __name__ == "__main__":
    asyncio.run(main())
