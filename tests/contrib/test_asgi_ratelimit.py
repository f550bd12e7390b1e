"""The middleware's rate limit: per-client keys, 429 with Retry-After and the
RateLimit fields of draft-ietf-httpapi-ratelimit-headers-11."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
import pytest

from resilience import CircuitBreaker, RateLimiter
from resilience.contrib.asgi import ResilienceMiddleware
from resilience.contrib.asgi._limit import _sf_string, _window, whole_seconds
from resilience.testing import FakeClock
from tests.servers import serve

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class App:
    """Answers 200 "ok" and counts the requests that reached it."""

    def __init__(self) -> None:
        self.calls = 0
        # A shared constant, as some apps have: the middleware must not change it.
        self.headers = [(b"content-length", b"2")]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        await send({"type": "http.response.body", "body": b"ok"})


def client(app: Any, ip: str = "10.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app, client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def fields(response: httpx.Response) -> tuple[str | None, str | None, str | None]:
    headers = response.headers
    return headers.get("ratelimit-policy"), headers.get("ratelimit"), headers.get("retry-after")


async def test_each_client_address_has_its_limit_and_the_responses_say_where_it_stands() -> None:
    clock = FakeClock()
    app = App()
    limiter = RateLimiter(2, per=10, name="api", clock=clock)
    middleware = ResilienceMiddleware(app, rate_limit=limiter)
    async with client(middleware) as one, client(middleware, "10.0.0.2") as other:
        first, second, third = [await one.get("/") for _ in range(3)]
        assert (first.status_code, second.status_code, third.status_code) == (200, 200, 429)
        # One slot every 5 s, two at once: after one request, one is left.
        assert fields(first) == ('"api";q=2;w=10', '"api";r=1;t=5', None)
        assert fields(second) == ('"api";q=2;w=10', '"api";r=0;t=5', None)
        assert fields(third) == ('"api";q=2;w=10', '"api";r=0;t=5', "5")
        assert third.text == "Too Many Requests"
        assert app.calls == 2  # the refused request never reached the app
        # Another address (the port is not part of the key) has its own limit.
        assert (await other.get("/")).status_code == 200
        clock.advance(5)
        assert (await one.get("/")).status_code == 200
    assert app.headers == [(b"content-length", b"2")]
    assert (limiter.stats.admitted, limiter.stats.rejected, limiter.stats.keys) == (4, 1, 2)


async def test_excluded_paths_and_methods_pass_without_using_the_limit() -> None:
    clock = FakeClock()
    app = App()
    limiter = RateLimiter(1, per=60, clock=clock)
    middleware = ResilienceMiddleware(
        app, rate_limit=limiter, exclude_paths=("/health",), exclude_methods=("OPTIONS",)
    )
    async with client(middleware) as c:
        for _ in range(5):
            assert (await c.get("/health")).status_code == 200
            assert (await c.options("/")).status_code == 200
        assert (await c.get("/")).status_code == 200
        assert (await c.get("/")).status_code == 429
    assert limiter.stats.admitted == 1


async def test_a_key_can_be_a_header_and_a_failing_key_is_a_500_without_its_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    app = App()

    def api_key(scope: Scope) -> bytes:
        key = dict(scope["headers"]).get(b"x-api-key")
        if key == b"broken":
            raise RuntimeError("secret in the message")
        return key or b"anonymous"

    limiter = RateLimiter(1, per=60, key=api_key, name="keys", clock=clock)
    middleware = ResilienceMiddleware(app, rate_limit=limiter, json_errors=True)
    async with client(middleware) as c:
        assert (await c.get("/", headers={"x-api-key": "a"})).status_code == 200
        assert (await c.get("/", headers={"x-api-key": "b"})).status_code == 200
        refused = await c.get("/", headers={"x-api-key": "a"})
        assert (refused.status_code, refused.json()) == (429, {"detail": "Too Many Requests"})
        with caplog.at_level(logging.ERROR, logger="resilience"):
            failed = await c.get("/", headers={"x-api-key": "broken"})
        assert failed.status_code == 500
        assert failed.json() == {"detail": "Internal Server Error"}
        assert "secret" not in failed.text
        # The limiter goes on: the next request with a good key is admitted.
        assert (await c.get("/", headers={"x-api-key": "c"})).status_code == 200
    assert app.calls == 3
    assert "key function of RateLimiter 'keys'" in caplog.text
    assert "secret in the message" in caplog.text  # logged, with its traceback


async def test_a_request_over_the_limit_may_wait_its_turn_on_the_clock() -> None:
    clock = FakeClock()
    app = App()
    limiter = RateLimiter(1, per=2, max_wait=2.0, clock=clock)
    async with client(ResilienceMiddleware(app, rate_limit=limiter)) as c:
        assert (await c.get("/")).status_code == 200
        waited = await c.get("/")  # its slot frees in 2 s: within max_wait
        assert waited.status_code == 200
        assert clock.sleeps == [2.0]
        assert waited.headers["ratelimit"].endswith(";r=0;t=2")
    assert (limiter.stats.waited, limiter.stats.wait_seconds) == (1, 2.0)


async def test_without_fields_on_admitted_responses_a_refusal_still_has_them() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, per=60, name="quiet", clock=clock)
    middleware = ResilienceMiddleware(App(), rate_limit=limiter, rate_limit_headers=False)
    async with client(middleware) as c:
        admitted = await c.get("/")
        refused = await c.get("/")
    assert fields(admitted) == (None, None, None)
    assert fields(refused) == ('"quiet";q=1;w=60', '"quiet";r=0;t=60', "60")


async def test_the_limit_comes_first_a_refusal_takes_no_permit_and_no_breaker_hears_of_it() -> None:
    clock = FakeClock()
    gate = anyio.Event()
    entered = anyio.Event()

    async def blocking(scope: Scope, receive: Receive, send: Send) -> None:
        entered.set()
        await gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    breaker = CircuitBreaker("svc", minimum_calls=1, clock=clock)
    limiter = RateLimiter(1, per=60, clock=clock)
    middleware = ResilienceMiddleware(
        blocking, rate_limit=limiter, max_concurrent=1, breaker=breaker, clock=clock
    )
    statuses: dict[str, int] = {}
    async with client(middleware) as a, client(middleware, "10.0.0.2") as b:

        async def held() -> None:
            statuses["held"] = (await a.get("/")).status_code

        async with anyio.create_task_group() as tg:
            tg.start_soon(held)
            await entered.wait()  # client a holds the only permit
            statuses["a again"] = (await a.get("/")).status_code  # over a's limit
            statuses["b"] = (await b.get("/")).status_code  # within b's: shed
            gate.set()
    assert statuses == {"held": 200, "a again": 429, "b": 503}
    assert middleware.bulkhead is not None
    assert middleware.bulkhead.stats.rejected == 1
    assert (breaker.stats.successful_total, breaker.stats.failed_total) == (1, 0)
    assert middleware.rate_limit is limiter


async def test_a_limiter_among_the_policies_answers_429_with_retry_after_only() -> None:
    clock = FakeClock()
    inner = RateLimiter(1, per=30, key=lambda *call: "all", clock=clock)
    async with client(ResilienceMiddleware(App(), policies=[inner])) as c:
        assert (await c.get("/")).status_code == 200
        refused = await c.get("/")
    assert (refused.status_code, fields(refused)) == (429, (None, None, "30"))


def test_bad_settings_are_refused_naming_the_parameter() -> None:
    with pytest.raises(TypeError, match="rate_limit must be a RateLimiter"):
        ResilienceMiddleware(App(), rate_limit=10)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="rate_limit_headers must be a bool"):
        ResilienceMiddleware(App(), rate_limit=RateLimiter(1), rate_limit_headers=1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rate", "per", "cost", "expected"),
    [
        (100, 60.0, 1, (100, 60)),
        (10, 1.0, 1, (10, 1)),
        (2.5, 1.0, 1, (5, 2)),  # the first whole window with a whole quota
        (1, 0.5, 1, (2, 1)),  # no sub-second windows
        (10, 1.0, 2, (5, 1)),  # in requests, each of two slots
        (1, 7.0, 1, (1, 7)),
        (0.3, 1.0, 1, (3, 10)),
    ],
)
def test_the_policy_field_in_whole_requests_per_whole_seconds(
    rate: float, per: float, cost: int, expected: tuple[int, int]
) -> None:
    assert _window(rate, per, cost) == expected


def test_names_are_structured_field_strings_and_seconds_round_up() -> None:
    assert _sf_string('a "b" \\ c\n') == b'"a \\"b\\" \\\\ c?"'
    assert [whole_seconds(s) for s in (0.0, 0.2, 1.0, 1.0000000000001, 1.5)] == [0, 1, 1, 1, 2]


async def test_under_uvicorn_the_fields_and_the_429_reach_a_real_client() -> None:
    limiter = RateLimiter(2, per=60, name="e2e")
    app = ResilienceMiddleware(App(), rate_limit=limiter, exclude_paths=("/health",))
    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=5) as c:
            with anyio.fail_after(5):
                responses = [await c.get("/") for _ in range(3)]
                assert (await c.get("/health")).status_code == 200
    assert [r.status_code for r in responses] == [200, 200, 429]
    policy, first, _ = fields(responses[0])
    assert policy == '"e2e";q=2;w=60'
    assert first == '"e2e";r=1;t=30'
    _, state, retry_after = fields(responses[2])
    # The first slot comes back 30 s after the first request, less the
    # moments the requests took: 30 s once rounded up.
    assert (state, retry_after) == ('"e2e";r=0;t=30', "30")
    assert responses[2].headers["content-type"].startswith("text/plain")


async def test_a_real_429_pushes_the_clients_limit_back_so_it_stops_sending() -> None:
    from resilience.contrib.httpx import AsyncResilientTransport, HTTPRateLimitedError

    # The server: one request per 30 s per client, answered by uvicorn.
    app = App()
    limited = ResilienceMiddleware(app, rate_limit=RateLimiter(1, per=30, name="upstream"))
    arrived: list[str] = []

    async def server(scope: Scope, receive: Receive, send: Send) -> None:
        arrived.append(scope["path"])
        await limited(scope, receive, send)

    clock = FakeClock()
    client_limit = RateLimiter(100, name="quota", clock=clock)
    with serve(server) as url:
        transport = AsyncResilientTransport(rate_limit=client_limit, per_host=False)
        async with httpx.AsyncClient(transport=transport, base_url=url, timeout=5) as c:
            with anyio.fail_after(5):
                assert (await c.get("/")).status_code == 200
                refused = await c.get("/")
                assert (refused.status_code, refused.headers["retry-after"]) == (429, "30")
                # Retry-After: 30 pushed the client's own limit back: the next
                # request is refused here and never sent.
                with pytest.raises(HTTPRateLimitedError) as local:
                    await c.get("/")
    assert local.value.retry_after == pytest.approx(30.0, abs=0.01)
    assert arrived == ["/", "/"]  # the third never reached the server
    assert app.calls == 1
    assert client_limit.stats.rejected == 1


async def test_quota_reads_a_client_address_limit_of_a_limiter_without_a_key() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, per=10, clock=clock)
    async with client(ResilienceMiddleware(App(), rate_limit=limiter), "203.0.113.7") as c:
        await c.get("/")
    assert limiter.quota("203.0.113.7") == (1, 5.0)
    assert limiter.quota("198.51.100.4") == (2, math.inf)  # never seen: rested
    assert limiter.quota() == (2, math.inf)  # the limiter's own, unkeyed limit: unused


def test_quota_of_a_keyed_limiter_needs_the_key() -> None:
    with pytest.raises(TypeError, match="needs the key"):
        RateLimiter(1, key=lambda user: user).quota()


def test_a_setting_that_is_not_a_collection_is_refused_naming_it() -> None:
    for parameter in ("exclude_paths", "exclude_methods", "failure_statuses"):
        with pytest.raises(TypeError, match=parameter):
            ResilienceMiddleware(App(), **{parameter: 5})
