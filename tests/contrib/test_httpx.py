from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
import respx

import resilience
from resilience import Bulkhead, CircuitBreaker, CircuitState, Retry, Timeout, backoff
from resilience.contrib.httpx import (
    AsyncResilientTransport,
    HTTPBulkheadFullError,
    HTTPCircuitOpenError,
    HTTPTimeoutError,
    ResilientTransport,
    parse_retry_after,
)
from resilience.events import Event, RetryScheduled
from resilience.testing import FakeClock
from tests.servers import free_port, serve

URL = "https://api.test/items"


class TrackedStream(httpx.AsyncByteStream, httpx.SyncByteStream):
    """A response body that remembers whether it was closed."""

    def __init__(self, body: bytes = b"") -> None:
        self.body = body
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.body

    def __iter__(self) -> Iterator[bytes]:
        yield self.body

    async def aclose(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True


class Upstream:
    """A scripted upstream: each request takes the next status (or exception)."""

    def __init__(self, *script: int | Exception, headers: dict[str, str] | None = None) -> None:
        self.script = list(script)
        self.headers = headers or {}
        self.requests: list[httpx.Request] = []
        self.streams: list[TrackedStream] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.stream is not None and not isinstance(request.stream, httpx.ByteStream):
            request.read()
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        stream = TrackedStream(f"status {step}".encode())
        self.streams.append(stream)
        return httpx.Response(step, headers=self.headers, stream=stream)


def client_for(
    upstream: Callable[[httpx.Request], httpx.Response], **policies: Any
) -> httpx.AsyncClient:
    transport = AsyncResilientTransport(httpx.MockTransport(upstream), **policies)
    return httpx.AsyncClient(transport=transport)


def fixed_retry(clock: FakeClock, attempts: int = 3, delay: float = 1.0) -> Retry:
    return Retry(attempts, backoff=backoff.fixed(delay), clock=clock)


async def test_get_is_retried_on_503_and_discarded_responses_are_closed() -> None:
    clock = FakeClock()
    upstream = Upstream(503, 502, 200)
    async with client_for(upstream, retry=fixed_retry(clock)) as client:
        response = await client.get(URL)
    assert response.status_code == 200
    assert len(upstream.requests) == 3
    assert clock.sleeps == [1.0, 1.0]
    assert [s.closed for s in upstream.streams[:2]] == [True, True]
    assert response.text == "status 200"


async def test_final_response_is_returned_unread_when_streaming() -> None:
    clock = FakeClock()
    upstream = Upstream(503, 200)
    client = client_for(upstream, retry=fixed_retry(clock))
    async with client, client.stream("GET", URL) as response:
        assert not upstream.streams[-1].closed
        assert not response.is_stream_consumed
        assert await response.aread() == b"status 200"
    assert upstream.streams[-1].closed


async def test_post_is_not_retried_on_a_response() -> None:
    clock = FakeClock()
    upstream = Upstream(503, 200)
    async with client_for(upstream, retry=fixed_retry(clock)) as client:
        response = await client.post(URL, content=b"order")
    assert response.status_code == 503
    assert len(upstream.requests) == 1


async def test_idempotency_key_opts_post_and_patch_into_retries() -> None:
    clock = FakeClock()
    upstream = Upstream(503, 200)
    async with client_for(upstream, retry=fixed_retry(clock)) as client:
        response = await client.patch(URL, content=b"x", headers={"Idempotency-Key": "k-1"})
    assert response.status_code == 200
    assert len(upstream.requests) == 2
    assert upstream.requests[1].content == b"x"


async def test_connect_errors_are_retried_for_every_method() -> None:
    clock = FakeClock()
    upstream = Upstream(httpx.ConnectError("refused"), 201)
    async with client_for(upstream, retry=fixed_retry(clock)) as client:
        response = await client.post(URL, json={"a": 1})
    assert response.status_code == 201
    assert len(upstream.requests) == 2


async def test_read_errors_are_retried_only_for_idempotent_methods() -> None:
    clock = FakeClock()
    post = Upstream(httpx.ReadError("reset"), 200)
    async with client_for(post, retry=fixed_retry(clock)) as client:
        with pytest.raises(httpx.ReadError):
            await client.post(URL, content=b"x")
    assert len(post.requests) == 1
    get = Upstream(httpx.ReadError("reset"), 200)
    async with client_for(get, retry=fixed_retry(clock)) as client:
        assert (await client.get(URL)).status_code == 200
    assert len(get.requests) == 2


async def test_a_body_that_cannot_be_replayed_is_never_retried() -> None:
    clock = FakeClock()
    upstream = Upstream(httpx.ConnectError("refused"), 200)

    async def body() -> AsyncIterator[bytes]:
        yield b"chunk"

    async with client_for(upstream, retry=fixed_retry(clock)) as client:
        with pytest.raises(httpx.ConnectError):
            await client.put(URL, content=body())
    assert len(upstream.requests) == 1


async def test_retry_after_in_seconds_replaces_the_backoff() -> None:
    clock = FakeClock()
    upstream = Upstream(429, 200, headers={"Retry-After": "7"})
    async with client_for(upstream, retry=fixed_retry(clock)) as client:
        assert (await client.get(URL)).status_code == 200
    assert clock.sleeps == [7.0]


async def test_retry_after_as_an_http_date() -> None:
    clock = FakeClock()
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    upstream = Upstream(503, 200, headers={"Retry-After": when})
    async with client_for(upstream, retry=fixed_retry(clock)) as client:
        assert (await client.get(URL)).status_code == 200
    (slept,) = clock.sleeps
    assert 27 <= slept <= 30


async def test_retry_after_beyond_the_cap_returns_the_response_at_once() -> None:
    clock = FakeClock()
    upstream = Upstream(503, 200, headers={"Retry-After": "3600"})
    async with client_for(upstream, retry=fixed_retry(clock), max_retry_after=60) as client:
        response = await client.get(URL)
    assert response.status_code == 503
    assert len(upstream.requests) == 1
    assert clock.sleeps == []
    assert response.text == "status 503"  # the caller gets it, readable


@pytest.mark.parametrize("value", ["soon", "-5", "1e3", "Thu, 01 Jan 1970 00:00:00 GMT", ""])
async def test_hostile_retry_after_is_ignored(value: str) -> None:
    clock = FakeClock()
    upstream = Upstream(503, 200, headers={"Retry-After": value})
    async with client_for(upstream, retry=fixed_retry(clock, delay=0.5)) as client:
        assert (await client.get(URL)).status_code == 200
    assert clock.sleeps == [0.5]


def test_parse_retry_after() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("١٢") is None  # non-ASCII digits
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) is None


async def test_retries_end_when_attempts_run_out_with_the_last_response() -> None:
    clock = FakeClock()
    upstream = Upstream(503)
    retry = fixed_retry(clock)
    events: list[Event] = []
    retry.add_listener(events.append)
    async with client_for(upstream, retry=retry) as client:
        response = await client.get(URL)
    assert response.status_code == 503
    assert len(upstream.requests) == 3
    assert sum(isinstance(e, RetryScheduled) for e in events) == 2
    assert retry.stats.failed_with_retry == 1


async def test_each_host_gets_its_own_breaker() -> None:
    clock = FakeClock()

    def upstream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500 if request.url.host == "bad.test" else 200)

    breaker = CircuitBreaker("api", minimum_calls=2, failure_rate=0.5, clock=clock)
    transport = AsyncResilientTransport(httpx.MockTransport(upstream), breaker=breaker)
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(2):
            assert (await client.get("https://bad.test/")).status_code == 500
        with pytest.raises(HTTPCircuitOpenError) as info:
            await client.get("https://bad.test/")
        assert (await client.get("https://good.test/")).status_code == 200
    assert info.value.name == "api:https://bad.test:443"
    breakers = transport.breakers
    assert breakers["https://bad.test:443"].state is CircuitState.OPEN
    assert breakers["https://good.test:443"].state is CircuitState.CLOSED
    assert breaker.state is CircuitState.CLOSED  # the template is never used itself


async def test_the_host_lru_is_bounded() -> None:
    transport = AsyncResilientTransport(
        httpx.MockTransport(lambda r: httpx.Response(200)),
        breaker=CircuitBreaker("api"),
        max_hosts=3,
    )
    async with httpx.AsyncClient(transport=transport) as client:
        for n in range(10):
            await client.get(f"http://h{n}.test/")
        assert set(transport.breakers) == {f"http://h{n}.test:80" for n in (7, 8, 9)}
        await client.get("http://h8.test/")  # used again: h7 and h9 are older
        await client.get("http://h10.test/")
        assert set(transport.breakers) == {f"http://h{n}.test:80" for n in (8, 9, 10)}
        await client.get("http://h11.test/")
        assert set(transport.breakers) == {f"http://h{n}.test:80" for n in (8, 10, 11)}
        # A host that goes on being used is never the one evicted.
        for n in range(12, 40):
            await client.get("http://h8.test/")
            await client.get(f"http://h{n}.test/")
            assert "http://h8.test:80" in transport.breakers
            assert len(transport.breakers) == 3


async def test_a_full_local_bulkhead_does_not_open_the_hosts_breaker() -> None:
    clock = FakeClock()
    started = anyio.Event()
    release = anyio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        started.set()
        await release.wait()
        return httpx.Response(200)

    transport = AsyncResilientTransport(
        httpx.MockTransport(slow),
        breaker=CircuitBreaker("api", minimum_calls=2, clock=clock),
        bulkhead=Bulkhead(1),
    )
    async with httpx.AsyncClient(transport=transport) as client, anyio.create_task_group() as tg:
        tg.start_soon(client.get, URL)
        await started.wait()
        for _ in range(5):
            with pytest.raises(HTTPBulkheadFullError):
                await client.get(URL)
        release.set()
    (breaker,) = transport.breakers.values()
    assert breaker.state is CircuitState.CLOSED
    assert (breaker.stats.failed_total, breaker.stats.ignored_total) == (0, 5)


async def test_breaker_counts_5xx_and_transport_errors_as_failures_4xx_as_success() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("shared", minimum_calls=4, failure_rate=0.5, clock=clock)
    upstream = Upstream(404, 404, 404, 502, httpx.ConnectError("x"), 200)
    async with client_for(upstream, breaker=breaker, per_host=False) as client:
        for _ in range(4):
            await client.get(URL)
        with pytest.raises(httpx.ConnectError):
            await client.get(URL)
    stats = breaker.stats
    assert (stats.calls, stats.failures) == (5, 2)
    assert breaker.state is CircuitState.CLOSED


async def test_open_breaker_error_is_both_ours_and_httpx() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("b", clock=clock)
    breaker.force_open()
    upstream = Upstream(200)
    async with client_for(upstream, breaker=breaker, per_host=False, retry=Retry(3)) as client:
        with pytest.raises(httpx.TransportError) as info:
            await client.get(URL)
    assert isinstance(info.value, resilience.CircuitOpenError)
    assert isinstance(info.value, HTTPCircuitOpenError)
    assert info.value.request.url == URL
    assert upstream.requests == []  # and the open breaker was not retried


async def test_bulkhead_rejection_is_an_httpx_transport_error() -> None:
    started = anyio.Event()
    release = anyio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        started.set()
        await release.wait()
        return httpx.Response(200)

    transport = AsyncResilientTransport(httpx.MockTransport(slow), bulkhead=Bulkhead(1))
    async with httpx.AsyncClient(transport=transport) as client, anyio.create_task_group() as tg:
        tg.start_soon(client.get, URL)
        await started.wait()
        with pytest.raises(httpx.TransportError) as info:
            await client.get(URL)
        release.set()
    assert isinstance(info.value, HTTPBulkheadFullError)
    assert isinstance(info.value, resilience.BulkheadFullError)


async def test_per_attempt_timeout_maps_to_httpx_timeout_and_is_retried() -> None:
    clock = FakeClock()
    calls = 0

    async def hangs_once(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            await clock.sleep(60)
        return httpx.Response(200)

    transport = AsyncResilientTransport(
        httpx.MockTransport(hangs_once),
        retry=fixed_retry(clock),
        timeout=Timeout(2, clock=clock),
    )
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get(URL)).status_code == 200
        calls = 0
        with pytest.raises(httpx.TimeoutException) as info:
            await client.post(URL)  # not idempotent: the timeout is not retried
    assert isinstance(info.value, HTTPTimeoutError)
    assert isinstance(info.value, resilience.TimeoutError)


async def test_a_deadline_in_force_bounds_each_attempt_and_stops_retries() -> None:
    clock = FakeClock()

    async def hangs(request: httpx.Request) -> httpx.Response:
        await clock.sleep(60)
        return httpx.Response(200)

    async with client_for(hangs, retry=fixed_retry(clock)) as client:
        with resilience.deadline(5, clock=clock), pytest.raises(HTTPTimeoutError):
            await client.get(URL)
    assert clock.now() == 60  # the fake sleep ran on, but the attempt was cut at 5


def test_sync_transport_retries_and_closes() -> None:
    clock = FakeClock()
    upstream = Upstream(503, 200)
    transport = ResilientTransport(httpx.MockTransport(upstream), retry=fixed_retry(clock))
    with httpx.Client(transport=transport) as client:
        assert client.get(URL).status_code == 200
    assert upstream.streams[0].closed
    assert clock.sleeps == [1.0]


def test_sync_transport_with_breaker_and_bulkhead() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("sync", minimum_calls=2, clock=clock)
    upstream = Upstream(500)
    transport = ResilientTransport(
        httpx.MockTransport(upstream), breaker=breaker, bulkhead=Bulkhead(4)
    )
    with httpx.Client(transport=transport) as client:
        assert client.get(URL).status_code == 500
        assert client.get(URL).status_code == 500
        with pytest.raises(HTTPCircuitOpenError):
            client.get(URL)


def test_respx_routes_work_as_the_wrapped_transport() -> None:
    clock = FakeClock()
    with respx.mock(assert_all_called=True) as router:
        route = router.get(URL).mock(side_effect=[httpx.Response(503), httpx.Response(200)])
        transport = ResilientTransport(httpx.HTTPTransport(), retry=fixed_retry(clock))
        with httpx.Client(transport=transport) as client:
            assert client.get(URL).status_code == 200
    assert route.call_count == 2


def test_bad_input_is_refused_at_construction() -> None:
    with pytest.raises(TypeError, match="transport"):
        AsyncResilientTransport(httpx.HTTPTransport())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="transport"):
        ResilientTransport(httpx.AsyncHTTPTransport())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Timeout"):
        ResilientTransport(timeout=Timeout(1))
    with pytest.raises(TypeError, match="retry"):
        AsyncResilientTransport(retry=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_hosts"):
        AsyncResilientTransport(max_hosts=0)
    with pytest.raises(ValueError, match="max_retry_after"):
        AsyncResilientTransport(max_retry_after=-1)
    with pytest.raises(ValueError, match="retry_statuses"):
        AsyncResilientTransport(retry_statuses=[1000])


async def test_mounts_route_through_the_resilient_transport() -> None:
    clock = FakeClock()
    upstream = Upstream(503, 200)
    transport = AsyncResilientTransport(httpx.MockTransport(upstream), retry=fixed_retry(clock))
    async with httpx.AsyncClient(mounts={"https://api.test": transport}) as client:
        assert (await client.get(URL)).status_code == 200
    assert len(upstream.requests) == 2


# End to end: a real server on 127.0.0.1 that fails on purpose.


class FlakyApp:
    """Answers 503 (with Retry-After: 0) to the first ``failures`` requests."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.hits = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.hits += 1
        status = 503 if self.hits <= self.failures else 200
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"retry-after", b"0"), (b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"hit %d" % self.hits})


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_end_to_end_against_a_real_server() -> None:
    app = FlakyApp(failures=2)
    transport = AsyncResilientTransport(
        retry=Retry(4, backoff=backoff.fixed(0.01)),
        breaker=CircuitBreaker("e2e", minimum_calls=10),
        timeout=Timeout(5),
        bulkhead=Bulkhead(10),
    )
    with serve(app) as base_url:
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get(f"{base_url}/items")
            assert response.status_code == 200
            assert response.text == "hit 3"
            closed = httpx.AsyncClient(
                transport=AsyncResilientTransport(retry=Retry(3, backoff=backoff.immediate()))
            )
            async with closed:
                with pytest.raises(httpx.ConnectError) as info:
                    await closed.post(f"http://127.0.0.1:{free_port()}/")
            assert "3 attempts" in info.value.__notes__[-1]
    assert app.hits == 3


def test_end_to_end_sync_client() -> None:
    app = FlakyApp(failures=1)
    transport = ResilientTransport(retry=Retry(3, backoff=backoff.fixed(0.01)))
    with serve(app) as base_url, httpx.Client(transport=transport) as client:
        assert client.get(base_url).status_code == 200
    assert app.hits == 2


# The async transport inlines breaker, timeout and bulkhead while each is on
# its fast path, and goes through the policies' calls otherwise. These run the
# same scenarios through both, on the system clock (a FakeClock Timeout always
# takes the policies' calls).


async def test_inlined_timeout_cuts_the_attempt_and_counts_for_the_breaker() -> None:
    calls = 0

    async def hangs_once(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            await anyio.sleep_forever()
        return httpx.Response(200)

    timeout = Timeout(0.02)
    breaker = CircuitBreaker("b", minimum_calls=100)
    bulkhead = Bulkhead(4)
    async with client_for(
        hangs_once,
        retry=Retry(2, backoff=backoff.immediate()),
        breaker=breaker,
        timeout=timeout,
        bulkhead=bulkhead,
        per_host=False,
    ) as client:
        assert (await client.get(URL)).status_code == 200
        assert resilience.current_deadline() is None
    assert calls == 2
    assert timeout.stats.timeouts == 1
    assert (breaker.stats.calls, breaker.stats.failures) == (2, 1)
    assert bulkhead.stats.in_flight == 0


async def test_inlined_timeout_error_is_an_httpx_timeout() -> None:
    async def hangs(request: httpx.Request) -> httpx.Response:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async with client_for(hangs, timeout=Timeout(0.02), breaker=CircuitBreaker()) as client:
        with pytest.raises(HTTPTimeoutError) as info:
            await client.get(URL)
    assert isinstance(info.value.__cause__, resilience.TimeoutError)


async def test_an_outer_cancellation_is_not_taken_for_the_inlined_timeout() -> None:
    started = anyio.Event()

    async def hangs(request: httpx.Request) -> httpx.Response:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    timeout = Timeout(30)
    breaker = CircuitBreaker("b")
    async with client_for(hangs, timeout=timeout, breaker=breaker, per_host=False) as client:
        with anyio.move_on_after(0.02) as scope:
            await client.get(URL)
    assert scope.cancelled_caught
    assert timeout.stats.timeouts == 0
    assert breaker.stats.calls == 0  # a cancellation is no outcome


async def test_the_attempt_records_outcomes_through_the_policies() -> None:
    # One path since the guard protocol: the host's compiled plan.
    upstream = Upstream(200, 404, 503, httpx.ReadError("x"), 500, 200)
    breaker = CircuitBreaker("b", minimum_calls=100, failure_result=lambda r: r.status_code == 404)
    bulkhead = Bulkhead(1)
    async with client_for(
        upstream, breaker=breaker, bulkhead=bulkhead, timeout=Timeout(30), per_host=False
    ) as client:
        statuses = []
        for _ in range(6):
            try:
                statuses.append((await client.get(URL)).status_code)
            except httpx.ReadError:
                statuses.append(0)
    assert statuses == [200, 404, 503, 0, 500, 200]
    stats = breaker.stats
    assert (stats.calls, stats.failures) == (6, 4)  # 404 (the predicate), 503, the error, 500
    assert bulkhead.stats.in_flight == 0


def test_the_host_key_agrees_with_httpx_public_url_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    from resilience.contrib.httpx import _rules as transport_module

    for url in (
        "http://A.example/x",
        "https://b.example:8443/",
        "http://b.example:80/",
        "http://[::1]/",
    ):
        parsed = httpx.URL(url)
        assert transport_module.host_key(parsed) == transport_module.public_key(parsed)
    # Should httpx change its private layout, the public properties are used.

    def broken(url: httpx.URL) -> Any:
        raise AttributeError("_uri_reference")

    monkeypatch.setattr(transport_module, "parsed_key", broken)
    assert transport_module.pick_host_key() is transport_module.public_key


def test_hosts_evicted_from_many_threads_never_break_a_request() -> None:
    # More hosts than max_hosts, from several threads at once: eviction must
    # never race (it raised RuntimeError and KeyError before it took a lock).
    import sys
    import threading

    transport = ResilientTransport(
        httpx.MockTransport(lambda request: httpx.Response(200)),
        breaker=CircuitBreaker("hosts"),
        max_hosts=4,
    )
    errors: list[BaseException] = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)

    def worker(seed: int) -> None:
        try:
            with httpx.Client(transport=transport) as client:
                for i in range(400):
                    host = (seed * 7 + i) % 40
                    assert client.get(f"http://h{host}.test/").status_code == 200
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert len(transport.breakers) <= 4


# Rate limits ----------------------------------------------------------------------------


async def test_a_per_host_rate_limit_refuses_without_sending() -> None:
    from resilience import RateLimitedError, RateLimiter
    from resilience.contrib.httpx import HTTPRateLimitedError

    clock = FakeClock()
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(str(request.url.host))
        return httpx.Response(200)

    transport = AsyncResilientTransport(
        httpx.MockTransport(handler), rate_limit=RateLimiter(1, per=10, clock=clock, name="api")
    )
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get("https://a.test/")).status_code == 200
        assert (await client.get("https://b.test/")).status_code == 200  # a limit of its own
        with pytest.raises(HTTPRateLimitedError) as refused:
            await client.get("https://a.test/")
    assert isinstance(refused.value, RateLimitedError)
    assert isinstance(refused.value, httpx.TransportError)
    assert refused.value.name == "api:https://a.test:443"
    assert refused.value.retry_after == pytest.approx(10.0)
    assert sent == ["a.test", "b.test"]  # the refused request never left


async def test_a_429_with_retry_after_pushes_the_hosts_limit_back() -> None:
    from resilience import RateLimiter
    from resilience.contrib.httpx import HTTPRateLimitedError

    clock = FakeClock()
    sent: list[float] = []
    answers = iter([httpx.Response(429, headers={"Retry-After": "30"})])

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(clock.now())
        return next(answers, httpx.Response(200))

    transport = AsyncResilientTransport(
        httpx.MockTransport(handler), rate_limit=RateLimiter(100, clock=clock, name="quota")
    )
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get(URL)).status_code == 429
        # The server asked for 30 s: nothing is sent to it before then.
        with pytest.raises(HTTPRateLimitedError) as refused:
            await client.get(URL)
        assert refused.value.retry_after == pytest.approx(30.0, abs=0.01)
        clock.advance(30.0)
        assert (await client.get(URL)).status_code == 200
    assert sent == [0.0, 30.0]


async def test_a_retry_waits_out_the_pushback_instead_of_sending_into_it() -> None:
    from resilience import RateLimiter

    clock = FakeClock()
    sent: list[float] = []
    answers = iter([httpx.Response(429, headers={"Retry-After": "30"})])

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(clock.now())
        return next(answers, httpx.Response(200))

    transport = AsyncResilientTransport(
        httpx.MockTransport(handler),
        retry=Retry(3, backoff=backoff.immediate(), clock=clock),
        rate_limit=RateLimiter(100, clock=clock),
        per_host=False,
    )
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get(URL)).status_code == 200
    assert sent == [0.0, 30.0]
