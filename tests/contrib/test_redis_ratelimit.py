"""Rate limits shared on a real redis-server and a real three-node Redis Cluster."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio

from resilience import CircuitState, RateLimitedError, RateLimiter
from resilience.contrib.redis import RedisBackend
from resilience.testing import FakeClock
from tests.redis_servers import RedisCluster, RedisServer, asyncio_only

ROOT = Path(__file__).resolve().parents[2]


def unique() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def ready(backend: RedisBackend) -> None:
    assert await backend.ready()


def evalsha_calls(server: RedisServer) -> int:
    stats = redis.Redis(port=server.address[1]).info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def work() -> str:
    return "done"


@asyncio_only
async def test_two_limiters_sharing_a_name_obey_one_limit(redis_server: RedisServer) -> None:
    client = redis.asyncio.Redis(port=redis_server.address[1])
    backend = RedisBackend(client, prefix=unique(), store_timeout=1.0)
    first = RateLimiter(10, burst=3, name="api", backend=backend)
    second = RateLimiter(10, burst=3, name="api", backend=backend)
    other = RateLimiter(10, burst=3, name="other-api", backend=backend)
    await ready(backend)
    start = time.monotonic()
    admitted = 0
    for limiter in (first, second) * 10:
        try:
            await limiter.call(work)
            admitted += 1
        except RateLimitedError:
            pass
    elapsed = time.monotonic() - start
    # burst + rate * W: one limit between them, however they take turns.
    assert 3 <= admitted <= 3 + 10 * elapsed + 1
    assert await other.call(work) == "done"  # another name: a limit of its own
    await client.aclose()


@asyncio_only
async def test_one_round_trip_per_decision_and_none_for_a_remembered_refusal(
    redis_server: RedisServer,
) -> None:
    client = redis.asyncio.Redis(port=redis_server.address[1])
    backend = RedisBackend(client, prefix=unique(), store_timeout=1.0)
    limiter = RateLimiter(1, per=60, name="slow", backend=backend)
    await ready(backend)
    before = evalsha_calls(redis_server)
    assert await limiter.call(work) == "done"
    with pytest.raises(RateLimitedError) as refused:
        await limiter.call(work)
    assert refused.value.retry_after == pytest.approx(60, abs=1)
    for _ in range(50):  # remembered: refused here, no round trip
        with pytest.raises(RateLimitedError):
            await limiter.call(work)
    assert evalsha_calls(redis_server) - before == 2
    assert limiter.stats.rejected == 51
    await client.aclose()


@asyncio_only
async def test_keys_expire_and_keyed_limits_spread(redis_server: RedisServer) -> None:
    client = redis.asyncio.Redis(port=redis_server.address[1])
    prefix = unique()
    backend = RedisBackend(client, prefix=prefix, store_timeout=1.0)
    limiter = RateLimiter(2, per=10, key=lambda user: user, name="per-user", backend=backend)
    await ready(backend)
    for user in ("ann", "bob", "ann", "ann"):
        try:
            await limiter.call(lambda user: work(), user)
        except RateLimitedError:
            assert user == "ann"
    keys = sorted(await client.keys(f"{{{prefix}:*"))
    assert keys == [
        f"{{{prefix}:rl:per-user:ann}}".encode(),
        f"{{{prefix}:rl:per-user:bob}}".encode(),
    ]
    for key in keys:
        ttl = await client.pttl(key)
        assert 0 < ttl <= 10_001  # gone once the limit has fully recovered
    await client.aclose()


@asyncio_only
async def test_a_corrupt_value_is_overwritten_and_logged_once(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.asyncio.Redis(port=redis_server.address[1])
    prefix = unique()
    backend = RedisBackend(client, prefix=prefix, store_timeout=1.0)
    limiter = RateLimiter(5, name="api", backend=backend)
    await ready(backend)
    key = f"{{{prefix}:rl:api}}"
    with caplog.at_level(logging.WARNING, logger="resilience"):
        for hostile in ("nan", "inf", "1e999", "-5", "\x80\x04pickle", "99999999999999999999"):
            await client.set(key, hostile)
            assert await limiter.call(work) == "done"  # never a crash, never a blocked key
            stored = float(await client.get(key))
            assert 0 < stored < 1e17
        await client.delete(key)
        await client.rpush(key, "a list")  # another type under our key
        assert await limiter.call(work) == "done"
    assert caplog.text.count("no sane arrival time") == 1  # once per key per process
    await client.aclose()


@asyncio_only
async def test_on_the_cluster_keys_spread_over_the_nodes(redis_cluster: RedisCluster) -> None:
    host, port = redis_cluster.nodes[0]
    client = redis.asyncio.RedisCluster(host=host, port=port)
    backend = RedisBackend(client, prefix=unique(), store_timeout=1.0)
    limiter = RateLimiter(1, per=60, key=lambda user: user, name="users", backend=backend)
    await ready(backend)
    users = [f"user-{n}" for n in range(30)]
    for user in users:
        assert await limiter.call(lambda user: work(), user) == "done"
        with pytest.raises(RateLimitedError):
            await limiter.call(lambda user: work(), user)
    slots = {client.keyslot(limiter._store.redis_key(user)) for user in users}  # type: ignore[union-attr]
    nodes = {client.get_node_from_key(limiter._store.redis_key(user)).port for user in users}  # type: ignore[union-attr]
    assert len(slots) > 20
    assert len(nodes) == 3
    await client.aclose()


def test_the_sync_client_shares_the_limit(redis_server: RedisServer) -> None:
    client = redis.Redis(port=redis_server.address[1], socket_timeout=1.0)
    backend = RedisBackend(client, prefix=unique())
    limiter = RateLimiter(1, per=60, name="sync", backend=backend)
    assert backend.ready_sync()
    assert limiter.call_sync(lambda: "done") == "done"
    twin = RateLimiter(1, per=60, name="sync", backend=backend)  # as another process would
    with pytest.raises(RateLimitedError):
        twin.call_sync(lambda: "done")


@asyncio_only
async def test_redis_killed_then_back_calls_never_fail_and_sharing_resumes(
    fresh_redis_server: RedisServer,
) -> None:
    clock = FakeClock()
    client = redis.asyncio.Redis(port=fresh_redis_server.address[1])
    backend = RedisBackend(client, prefix=unique(), store_timeout=0.2, clock=clock)
    limiter = RateLimiter(1000, name="api", backend=backend)
    await ready(backend)
    assert await limiter.call(work) == "done"
    fresh_redis_server.kill()
    for _ in range(20):  # decided by this process's own limit: no call fails
        assert await limiter.call(work) == "done"
    assert backend.breaker.state is CircuitState.OPEN  # and Redis is no longer asked
    fresh_redis_server.restart()
    clock.advance(1.0)  # the store breaker lets a trial through
    with anyio.fail_after(5):
        while backend.breaker.state is not CircuitState.CLOSED or not backend.loaded:
            assert await limiter.call(work) == "done"
            await anyio.sleep(0.01)
    assert evalsha_calls(fresh_redis_server) > 0  # shared again (the scripts reloaded)
    await client.aclose()


@asyncio_only
async def test_a_paused_redis_slows_no_call_beyond_the_store_timeout(
    fresh_redis_server: RedisServer,
) -> None:
    clock = FakeClock()
    client = redis.asyncio.Redis(port=fresh_redis_server.address[1])
    backend = RedisBackend(client, prefix=unique(), store_timeout=0.05, clock=clock)
    limiter = RateLimiter(1000, name="api", backend=backend)
    await ready(backend)
    fresh_redis_server.pause()
    slowest = 0.0
    for _ in range(10):
        start = time.monotonic()
        assert await limiter.call(work) == "done"
        slowest = max(slowest, time.monotonic() - start)
    # redis-py 8 alone would hold a call for 5 s or more; never near that here.
    assert slowest < 1.0
    assert backend.breaker.state is CircuitState.OPEN  # after three, not asked at all
    fresh_redis_server.resume()
    await client.aclose()


def test_on_trio_a_call_fails_with_a_clear_error(redis_server: RedisServer) -> None:
    import trio

    client = redis.asyncio.Redis(port=redis_server.address[1])
    limiter = RateLimiter(5, name="api", backend=RedisBackend(client, prefix=unique()))

    async def main() -> None:
        with pytest.raises(RuntimeError, match="asyncio only"):
            await limiter.call(work)

    trio.run(main)


def test_bad_settings_are_refused_naming_the_parameter() -> None:
    client = redis.asyncio.Redis(port=1)
    with pytest.raises(ValueError, match="needs a name"):
        RateLimiter(5, backend=RedisBackend(client))
    with pytest.raises(TypeError, match="backend must be"):
        RateLimiter(5, name="x", backend="redis://localhost")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="client must be"):
        RedisBackend("redis://localhost")
    with pytest.raises(ValueError, match="prefix"):
        RedisBackend(client, prefix="{tag}")
    with pytest.raises(ValueError, match="store_timeout"):
        RedisBackend(client, store_timeout=0)
    with pytest.raises(TypeError, match="breaker_name must be a str or None, got 7"):
        RedisBackend(client, breaker_name=7)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="breaker_name must be a non-empty str"):
        RedisBackend(client, breaker_name="")
    assert RedisBackend(client, prefix="shop").breaker.name == "shop:redis"
    assert RedisBackend(client, breaker_name="cache").breaker.name == "cache"


def test_four_processes_sharing_one_limit_admit_at_most_burst_plus_rate_times_w(
    redis_server: RedisServer,
) -> None:
    prefix, rate, burst = unique(), 20.0, 5
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.redis_limit_worker",
                str(redis_server.address[1]),
                prefix,
                str(rate),
                str(burst),
                "400",
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        reports: list[dict[str, Any]] = []
        for worker in workers:
            out, _ = worker.communicate(timeout=60)
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    times = sorted(t for report in reports for t in report["admitted"])
    window = times[-1] - times[0]
    assert len(times) >= burst  # the burst at least went through
    # The bound, in the whole span and in every one-second window of it. The
    # times are the workers' clocks after each call returned, not Redis's at
    # its decision: 0.1 s of slack for that.
    assert len(times) <= burst + rate * (window + 0.1)
    for i, start in enumerate(times):
        inside = sum(1 for t in times[i:] if t <= start + 1.0)
        assert inside <= burst + rate * 1.1
    assert sum(report["refused"] for report in reports) > 0


@asyncio_only
async def test_per_host_limiters_of_the_httpx_transport_share_their_host_limit(
    redis_server: RedisServer,
) -> None:
    import httpx

    from resilience.contrib.httpx import AsyncResilientTransport, HTTPRateLimitedError

    client = redis.asyncio.Redis(port=redis_server.address[1])
    backend = RedisBackend(client, prefix=unique(), store_timeout=1.0)
    await ready(backend)

    def transport() -> AsyncResilientTransport:
        template = RateLimiter(1, per=60, name="api", backend=backend)
        upstream = httpx.MockTransport(lambda request: httpx.Response(200))
        return AsyncResilientTransport(upstream, rate_limit=template)

    # Two processes' transports: the host's limit is one across them.
    async with (
        httpx.AsyncClient(transport=transport()) as one,
        httpx.AsyncClient(transport=transport()) as two,
    ):
        assert (await one.get("https://a.test/")).status_code == 200
        with pytest.raises(HTTPRateLimitedError):
            await two.get("https://a.test/")
        assert (await two.get("https://b.test/")).status_code == 200  # another host
    await client.aclose()


async def pushed_ttl(client: Any, key: str, more_than: int) -> int:
    """The key's PTTL once the push back sent in the background has landed."""
    for _ in range(200):  # each a round trip: the push back's task runs meanwhile
        ttl = int(await client.pttl(key))
        if ttl > more_than:
            return ttl
    raise AssertionError(f"{key!r} was not pushed back (PTTL {ttl})")


def test_a_push_back_pauses_every_process_sharing_the_limit(redis_server: RedisServer) -> None:
    port, prefix = redis_server.address[1], unique()
    key = f"{{{prefix}:rl:shared}}"  # tests.redis_limit_worker's limit is named "shared"

    async def push_back_here() -> None:
        client = redis.asyncio.Redis(port=port)
        backend = RedisBackend(client, prefix=prefix)
        limiter = RateLimiter(100, burst=10, name="shared", backend=backend)
        await ready(backend)
        assert await limiter.call(work) == "done"
        limiter.push_back(30.0)  # a server's Retry-After: 30
        # On Redis: the arrival time 30 s (plus the burst's tolerance) ahead,
        # expiring when the limit has rested again.
        # (Lower bounds with seconds of slack: the machine may stall between.)
        assert 25_000 < await pushed_ttl(client, key, 25_000) <= 30_100
        # Here: refused at once, without asking Redis.
        before = evalsha_calls(redis_server)
        with pytest.raises(RateLimitedError) as refused:
            await limiter.call(work)
        assert refused.value.retry_after == pytest.approx(30, abs=0.5)
        assert evalsha_calls(redis_server) == before
        await client.aclose()

    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.redis_limit_worker", str(port), prefix, "100", "10", "5"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None
        assert worker.stdin is not None
        assert worker.stdout.readline().strip() == "ready"
        asyncio.run(push_back_here())
        worker.stdin.write("go\n")
        worker.stdin.flush()
        out, _ = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    # The other process, which had never been refused: all five refused.
    report = json.loads(out.strip().splitlines()[-1])
    assert (report["admitted"], report["refused"]) == ([], 5)


@asyncio_only
async def test_a_push_back_never_moves_a_limit_back_and_a_short_one_is_waited_out(
    redis_server: RedisServer,
) -> None:
    client = redis.asyncio.Redis(port=redis_server.address[1])
    prefix, clock = unique(), FakeClock()
    backend = RedisBackend(client, prefix=prefix, store_timeout=1.0)
    limiter = RateLimiter(10, name="waits", max_wait=5, backend=backend, clock=clock)
    await ready(backend)
    key = f"{{{prefix}:rl:waits}}"
    limiter.push_back(2.0)
    ttl = await pushed_ttl(client, key, 1_000)
    limiter.push_back(1.0)  # earlier than the pause in force: no change
    for _ in range(20):
        await client.ping()  # lets the second push back land
    assert int(await client.pttl(key)) <= ttl
    # Within max_wait: not remembered as a refusal here, but waited out on
    # Redis's word (the fake clock's sleep takes no time).
    assert await limiter.call(work) == "done"
    assert limiter.stats.waited == 1
    assert 1.0 < limiter.stats.wait_seconds <= 2.0  # what was left of the pause
    await client.aclose()


def test_a_sync_client_pushes_back_at_once(redis_server: RedisServer) -> None:
    client = redis.Redis(port=redis_server.address[1])
    prefix = unique()
    limiter = RateLimiter(10, name="sync", backend=RedisBackend(client, prefix=prefix))
    limiter.push_back(5.0)
    # 5 s paused, then a burst of 10 refilling at 10 a second: rested in 5.9 s.
    assert 5_000 < client.pttl(f"{{{prefix}:rl:sync}}") <= 5_901
    with pytest.raises(RateLimitedError):
        limiter.call_sync(lambda: "done")
    client.close()


def test_the_local_copy_follows_the_shared_limit_for_quota_and_an_outage(
    fresh_redis_server: RedisServer,
) -> None:
    port, prefix = fresh_redis_server.address[1], unique()
    # Another process takes 3 of the burst of 5 (one slot back every 100 s).
    worker = subprocess.run(
        [sys.executable, "-m", "tests.redis_limit_worker", str(port), prefix, "0.01", "5", "3"],
        cwd=ROOT,
        input="go\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = json.loads(worker.stdout.strip().splitlines()[-1])
    assert (len(report["admitted"]), report["refused"]) == (3, 0)

    async def here() -> None:
        client = redis.asyncio.Redis(port=port, retry=None)
        backend = RedisBackend(client, prefix=prefix, store_timeout=0.5)
        limiter = RateLimiter(0.01, burst=5, name="shared", backend=backend)
        await ready(backend)
        assert limiter.quota() == (5, math.inf)  # nothing known here yet
        assert await limiter.call(work) == "done"
        # Redis's answer brought this process's copy up to date: 4 of 5 used.
        calls, seconds = limiter.quota()
        assert calls == 1
        assert 90 < seconds <= 100
        # Redis gone: the copy decides, from where the fleet had got to.
        fresh_redis_server.kill()
        assert await limiter.call(work) == "done"
        with pytest.raises(RateLimitedError):
            await limiter.call(work)
        await client.aclose()

    asyncio.run(here())


@asyncio_only
async def test_admitted_responses_carry_the_shared_limits_fields(
    redis_server: RedisServer,
) -> None:
    import httpx

    from resilience.contrib.asgi import ResilienceMiddleware

    port, prefix = redis_server.address[1], unique()
    clients = [redis.asyncio.Redis(port=port) for _ in range(2)]
    backends = [RedisBackend(client, prefix=prefix, store_timeout=1.0) for client in clients]
    # Two services' limiters on one shared limit (as two processes would be).
    limiters = [RateLimiter(0.05, burst=4, name="per-client", backend=b) for b in backends]
    for backend in backends:
        await ready(backend)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def service(limiter: RateLimiter) -> httpx.AsyncClient:
        middleware = ResilienceMiddleware(app, rate_limit=limiter)
        transport = httpx.ASGITransport(middleware, client=("203.0.113.7", 5000))
        return httpx.AsyncClient(transport=transport, base_url="http://service")

    async with service(limiters[0]) as first, service(limiters[1]) as second:
        fields = [(await first.get("/")).headers["ratelimit"]]
        fields.append((await second.get("/")).headers["ratelimit"])
        fields.append((await first.get("/")).headers["ratelimit"])
    # One limit between them, counted down whichever service answers; the
    # next slot within 20 s (one comes back every 20 s).
    parsed = [dict(part.split("=") for part in field.split(";")[1:]) for field in fields]
    assert [int(p["r"]) for p in parsed] == [3, 2, 1]
    assert all(0 < int(p["t"]) <= 20 for p in parsed)
    for client in clients:
        await client.aclose()
