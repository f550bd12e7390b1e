"""Circuit breakers sharing their state on a real redis-server and a real
three-node Redis Cluster: a breaker opened in one process (or by another
breaker object on its own client) is seen open by the others within a few
sync intervals; half-open trials are handed out in total; Redis killed,
paused or holding garbage never fails or slows a call."""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio

from resilience import (
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    CountWindow,
    TimeWindow,
)
from resilience.contrib.redis import RedisBackend, RedisBreakerStore
from resilience.events import StateChanged
from resilience.testing import FakeClock
from tests.redis_servers import RedisCluster, RedisServer

ROOT = Path(__file__).resolve().parents[2]
INTERVAL = 0.05  # sync_interval: small, so that sharing is seen quickly

asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
FORCED_OPEN, DISABLED = CircuitState.FORCED_OPEN, CircuitState.DISABLED


class Boom(Exception):
    pass


async def ok() -> str:
    return "ok"


async def boom() -> None:
    raise Boom


def unique() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def store_of(breaker: CircuitBreaker) -> RedisBreakerStore:
    store = breaker.store
    assert isinstance(store, RedisBreakerStore)
    return store


def shared(
    client: Any,
    prefix: str,
    clock: FakeClock | None = None,
    *,
    name: str = "api",
    store_timeout: float = 1.0,
    interval: float = INTERVAL,
    **settings: Any,
) -> CircuitBreaker:
    """A breaker on its own backend (as another process would have)."""
    backend = RedisBackend(
        client, prefix=prefix, sync_interval=interval, store_timeout=store_timeout
    )
    config: dict[str, Any] = {
        "window": TimeWindow(10),
        "minimum_calls": 4,
        "open_duration": 30,
        **settings,
    }
    return CircuitBreaker(name, backend=backend, clock=clock or FakeClock(), **config)


async def eventually(check: Callable[[], bool], within: float = 3.0) -> None:
    """Wait for a background effect (a few sync intervals), with a deadline."""
    with anyio.fail_after(within):
        while not check():  # noqa: ASYNC110 - polling another task's or process's effect
            await anyio.sleep(0.01)


async def calls(breaker: CircuitBreaker, fn: Callable[[], Awaitable[Any]], n: int) -> None:
    for _ in range(n):
        try:
            await breaker.call(fn)
        except Boom:
            pass


async def stop(*breakers: CircuitBreaker) -> None:
    for breaker in breakers:
        await store_of(breaker).aclose()


def command_calls(server: RedisServer, *names: str) -> int:
    stats = redis.Redis(port=server.address[1]).info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in names)


@asyncio_only
async def test_a_breaker_tripped_on_every_process_s_calls_is_seen_open_by_the_other(
    redis_server: RedisServer,
) -> None:
    port, prefix = redis_server.address[1], unique()
    first_client, second_client = redis.asyncio.Redis(port=port), redis.asyncio.Redis(port=port)
    first, second = shared(first_client, prefix), shared(second_client, prefix)
    seen: list[StateChanged] = []
    second.add_listener(seen.append)
    assert await first.call(ok) == "ok"
    assert await second.call(ok) == "ok"
    await eventually(lambda: store_of(first).connected and store_of(second).connected)
    # Two failures each: neither process alone reaches minimum_calls=4 with
    # a 50% failure rate, the two together do (2 successes, 4 failures).
    await calls(first, boom, 2)
    await calls(second, boom, 2)
    await eventually(lambda: first.state is OPEN and second.state is OPEN)
    assert StateChanged(second.name, CLOSED, OPEN) in seen
    with pytest.raises(CircuitOpenError) as refused:
        await second.call(ok)
    assert refused.value.retry_after == pytest.approx(30, abs=1)
    state, window = store_of(first).redis_keys
    stored = await first_client.hgetall(state)
    assert stored[b"st"] == b"1"
    assert 0 < await first_client.pttl(state) <= 86_400_000
    assert 0 < await first_client.pttl(window) <= 11_000  # the window expires with its seconds
    await stop(first, second)
    await first_client.aclose()
    await second_client.aclose()


@asyncio_only
async def test_the_closed_path_makes_no_round_trip(redis_server: RedisServer) -> None:
    client = redis.asyncio.Redis(port=redis_server.address[1])
    breaker = shared(client, unique(), minimum_calls=100_000)
    await breaker.call(ok)  # the first call starts the background task...
    assert breaker._fast  # ...and the others take the local breaker's fast path
    await eventually(lambda: store_of(breaker).connected)
    before = command_calls(redis_server, "evalsha", "eval")
    start = time.monotonic()
    for _ in range(5000):
        await breaker.call(ok)
    await calls(breaker, boom, 100)
    rounds = command_calls(redis_server, "evalsha", "eval") - before
    # One script per sync_interval, whatever the number of calls.
    assert rounds <= (time.monotonic() - start) / INTERVAL + 2
    await store_of(breaker).refresh()
    assert store_of(breaker).window[:2] >= (5100, 100)  # every call was flushed to Redis
    await stop(breaker)
    await client.aclose()


@asyncio_only
async def test_half_open_trials_are_handed_out_in_total_across_breakers(
    redis_server: RedisServer,
) -> None:
    port, prefix = redis_server.address[1], unique()
    clients = [redis.asyncio.Redis(port=port) for _ in range(2)]
    clock = FakeClock()
    first, second = (shared(client, prefix, clock, half_open_calls=2) for client in clients)
    await first.call(ok)
    await second.call(ok)
    first.open()
    await eventually(lambda: second.state is OPEN)
    clock.advance(31)  # each measures the open period out on its own clock
    release = anyio.Event()
    admitted = 0

    async def trial() -> str:
        nonlocal admitted
        admitted += 1
        await release.wait()
        return "ok"

    async with anyio.create_task_group() as tg:

        async def attempt(breaker: CircuitBreaker) -> None:
            try:
                await breaker.call(trial)
            except CircuitOpenError:
                pass

        # Keep asking on both until two trials run, then for a few rounds more.
        with anyio.fail_after(5):
            while admitted < 2:
                for breaker in (first, second):
                    tg.start_soon(attempt, breaker)
                await anyio.sleep(INTERVAL / 2)
        for _ in range(10):
            for breaker in (first, second):
                tg.start_soon(attempt, breaker)
            await anyio.sleep(INTERVAL / 2)
        assert admitted == 2  # half_open_calls in total, not per process
        assert first.state is HALF_OPEN
        assert second.state is HALF_OPEN
        release.set()
    # Both trials succeeded: the shared breaker closes, for both.
    await eventually(lambda: first.state is CLOSED and second.state is CLOSED)
    assert await second.call(ok) == "ok"
    await stop(first, second)
    for client in clients:
        await client.aclose()


@asyncio_only
async def test_a_failed_trial_reopens_the_shared_breaker(redis_server: RedisServer) -> None:
    port, prefix = redis_server.address[1], unique()
    clients = [redis.asyncio.Redis(port=port) for _ in range(2)]
    clock = FakeClock()
    first, second = (shared(client, prefix, clock) for client in clients)
    await first.call(ok)
    await second.call(ok)
    first.open()
    await eventually(lambda: second.state is OPEN)
    clock.advance(31)
    with anyio.fail_after(3):
        while True:  # refused until this process has been handed the trial
            try:
                await second.call(boom)
                break
            except CircuitOpenError:
                await anyio.sleep(INTERVAL / 2)
            except Boom:
                break
    await eventually(lambda: first.state is OPEN and second.state is OPEN)
    with pytest.raises(CircuitOpenError) as refused:
        await first.call(ok)
    assert refused.value.retry_after == pytest.approx(30, abs=1)
    await stop(first, second)
    for client in clients:
        await client.aclose()


@asyncio_only
async def test_a_round_outliving_half_open_max_wait_reopens_on_redis_s_clock(
    redis_server: RedisServer,
) -> None:
    port, prefix = redis_server.address[1], unique()
    clients = [redis.asyncio.Redis(port=port) for _ in range(2)]
    clock = FakeClock()
    first, second = (shared(client, prefix, clock, half_open_max_wait=0.1) for client in clients)
    await first.call(ok)
    await second.call(ok)
    first.open()
    await eventually(lambda: second.state is OPEN)
    clock.advance(31)
    hung = anyio.Event()
    async with anyio.create_task_group() as tg:

        async def trial() -> None:
            with anyio.fail_after(3):
                while True:
                    try:
                        await second.call(hung.wait)
                        return
                    except CircuitOpenError:
                        await anyio.sleep(INTERVAL / 2)

        tg.start_soon(trial)
        # The trial hangs: 0.1 s later (Redis's clock) the round has failed.
        await eventually(lambda: first.state is OPEN and second.state is OPEN)
        hung.set()
    with pytest.raises(CircuitOpenError) as refused:
        await first.call(ok)
    assert refused.value.retry_after == pytest.approx(30, abs=1)
    await stop(first, second)
    for client in clients:
        await client.aclose()


@asyncio_only
async def test_manual_controls_act_on_the_shared_state(redis_server: RedisServer) -> None:
    port, prefix = redis_server.address[1], unique()
    clients = [redis.asyncio.Redis(port=port) for _ in range(2)]
    first, second = (shared(client, prefix) for client in clients)
    await first.call(ok)
    await second.call(ok)
    for breaker, control, state in (
        (first, "force_open", FORCED_OPEN),
        (second, "reset", CLOSED),
        (second, "open", OPEN),
        (first, "close", CLOSED),
        (first, "disable", DISABLED),
        (second, "close", CLOSED),
    ):
        getattr(breaker, control)()
        assert breaker.state is state  # at once here
        await eventually(lambda state=state: first.state is state and second.state is state)
    await stop(first, second)
    for client in clients:
        await client.aclose()


@asyncio_only
async def test_redis_killed_no_call_fails_and_restarted_the_state_resyncs(
    fresh_redis_server: RedisServer,
) -> None:
    port, prefix = fresh_redis_server.address[1], unique()
    clients = [redis.asyncio.Redis(port=port) for _ in range(2)]
    first, second = (shared(client, prefix, store_timeout=0.05) for client in clients)
    guard = store_of(first)._backend.breaker
    guard_changes: list[StateChanged] = []
    guard.add_listener(guard_changes.append)
    await first.call(ok)
    await second.call(ok)
    await eventually(lambda: store_of(first).connected and store_of(second).connected)
    fresh_redis_server.kill()
    slowest = 0.0
    with anyio.fail_after(5):
        while guard.state is not OPEN:
            for breaker in (first, second):
                begin = time.monotonic()
                assert await breaker.call(ok) == "ok"  # no call fails because Redis is gone
                slowest = max(slowest, time.monotonic() - begin)
            await anyio.sleep(0.01)
    assert slowest < 0.025  # nor waits for it (a round is bounded by store_timeout, 0.05)
    assert not store_of(first).connected
    assert StateChanged(guard.name, CLOSED, OPEN) in guard_changes  # the store breaker says so
    from prometheus_client import CollectorRegistry, generate_latest

    from resilience.contrib.prometheus import ResilienceCollector

    registry = CollectorRegistry()
    registry.register(ResilienceCollector(policies=lambda: [guard]))
    assert (  # ...and so does its metric
        f'resilience_circuit_breaker_state{{name="{guard.name}",state="open"}} 1.0'
        in generate_latest(registry).decode()
    )
    first.open()  # applied here at once, published once Redis is back
    assert second.state is CLOSED  # each on its own state meanwhile
    fresh_redis_server.restart()
    # Sharing again within 5 s of Redis returning.
    await eventually(lambda: second.state is OPEN, within=5)
    assert store_of(first).connected
    assert store_of(second).connected
    second.reset()
    await eventually(lambda: first.state is CLOSED)
    await stop(first, second)
    for client in clients:
        await client.aclose()


@asyncio_only
async def test_a_restarted_redis_is_told_the_state_it_lost(fresh_redis_server: RedisServer) -> None:
    port, prefix = fresh_redis_server.address[1], unique()
    clients = [redis.asyncio.Redis(port=port) for _ in range(2)]
    first, second = (shared(client, prefix, store_timeout=0.05) for client in clients)
    await first.call(ok)
    await second.call(ok)
    first.force_open()
    await eventually(lambda: second.state is FORCED_OPEN)
    fresh_redis_server.kill()
    fresh_redis_server.restart()  # empty: it forgot the breaker
    late = shared(redis.asyncio.Redis(port=port), prefix)  # a process started now
    try:
        await late.call(ok)
    except CircuitOpenError:
        pass
    await eventually(lambda: late.state is FORCED_OPEN, within=5)
    assert first.state is FORCED_OPEN
    assert second.state is FORCED_OPEN
    await stop(first, second, late)
    for client in [*clients, store_of(late)._backend.client]:
        await client.aclose()


@asyncio_only
async def test_a_paused_redis_slows_no_call(fresh_redis_server: RedisServer) -> None:
    client = redis.asyncio.Redis(port=fresh_redis_server.address[1])
    breaker = shared(client, unique(), store_timeout=0.05)
    await breaker.call(ok)
    await eventually(lambda: store_of(breaker).connected)
    fresh_redis_server.pause()
    try:
        slowest = 0.0
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            begin = time.monotonic()
            assert await breaker.call(ok) == "ok"
            slowest = max(slowest, time.monotonic() - begin)
            await anyio.sleep(0.005)
        assert slowest < 0.025  # the rounds time out in the background, not in a call
        assert not store_of(breaker).connected
        for _ in range(200):  # deciding alone meanwhile: it trips on its own window
            with contextlib.suppress(Boom):
                await breaker.call(boom)
            if breaker.state is OPEN:
                break
        assert breaker.state is OPEN
    finally:
        fresh_redis_server.resume()
    await stop(breaker)
    await client.aclose()


@asyncio_only
async def test_corrupt_values_are_treated_as_absent_overwritten_and_logged_once(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.asyncio.Redis(port=redis_server.address[1])
    prefix = unique()
    # Rounds only when the test asks (refresh()): a background round between
    # two of the test's writes would rebuild the key under them (rpush on the
    # hash it recreated: WRONGTYPE).
    breaker = shared(client, prefix, interval=3600.0)
    await breaker.call(ok)
    store = store_of(breaker)
    state, window = store.redis_keys
    hostile: list[dict[str, str]] = [
        {"st": "nan"},
        {"st": "1", "ep": "inf", "at": "0", "of": "30000000"},
        {"st": "1", "ep": "5", "at": "1e999", "of": "30000000"},
        {"st": "1", "ep": "5", "at": "0", "of": "99999999999999"},  # open for years
        {"st": "\x80\x04\x95pickle"},
        {"st": "1", "ep": "-3"},
    ]
    with caplog.at_level(logging.WARNING, logger="resilience"):
        for fields in hostile:
            await client.delete(state)
            await client.hset(state, mapping=fields)
            assert await store.refresh()
            assert breaker.state is CLOSED  # absent: never an open-everything
            assert await breaker.call(ok) == "ok"
            stored = await client.hgetall(state)
            assert stored[b"st"] == b"0"
            assert 1e15 < float(stored[b"ep"]) < 1e17
        await client.delete(state)
        await client.rpush(state, "a list")  # another type under our key
        assert await store.refresh()
        assert await client.type(state) == b"hash"
        # A million failures planted in a bucket ahead of Redis's clock.
        epoch = (await client.hgetall(state))[b"ep"]
        await client.hset(window, mapping={"e": epoch, "c9999999999": 10**6, "f9999999999": 10**6})
        await calls(breaker, boom, 1)
        assert await store.refresh()
        assert breaker.state is CLOSED  # one failure: no trip on a planted window
        assert store.window == (1, 1, 0)
        for garbage in ("a string", "nan"):
            if garbage == "nan":
                await client.hset(window, "c1", garbage)
            else:
                await client.set(window, garbage)
            assert await breaker.call(ok) == "ok"
            assert await store.refresh()
            assert store.window == (1, 0, 0)  # the call made since; the garbage dropped
            assert await client.type(window) == b"hash"
    assert caplog.text.count("no sane breaker state at") == 2  # once per key per process
    await stop(breaker)
    await client.aclose()


@asyncio_only
async def test_on_the_cluster_each_breaker_is_one_slot_and_they_spread(
    redis_cluster: RedisCluster,
) -> None:
    host, port = redis_cluster.nodes[0]
    clients = [redis.asyncio.RedisCluster(host=host, port=port) for _ in range(2)]
    prefix = unique()
    names = [f"api-{n}" for n in range(12)]
    firsts = [shared(clients[0], prefix, name=name) for name in names]
    seconds = [shared(clients[1], prefix, name=name) for name in names]
    for breaker in (*firsts, *seconds):
        await breaker.call(ok)
    firsts[0].open()
    firsts[5].force_open()
    await eventually(lambda: seconds[0].state is OPEN and seconds[5].state is FORCED_OPEN)
    assert all(breaker.state is CLOSED for breaker in seconds[1:5])
    nodes = set()
    for breaker in firsts:
        state, window = store_of(breaker).redis_keys
        assert clients[0].keyslot(state) == clients[0].keyslot(window)
        nodes.add(clients[0].get_node_from_key(state).port)
    assert len(nodes) == 3
    await stop(*firsts, *seconds)
    for client in clients:
        await client.aclose()


def test_the_sync_client_shares_from_a_thread(redis_server: RedisServer) -> None:
    port, prefix = redis_server.address[1], unique()
    clients = [redis.Redis(port=port, socket_timeout=1.0) for _ in range(2)]
    first, second = (shared(client, prefix) for client in clients)

    def fail() -> None:
        raise Boom

    assert first.call_sync(lambda: "ok") == "ok"
    assert second.call_sync(lambda: "ok") == "ok"
    deadline = time.monotonic() + 3
    while not store_of(first).connected and time.monotonic() < deadline:
        time.sleep(0.01)
    for _ in range(4):
        with pytest.raises(Boom):
            first.call_sync(fail)
    deadline = time.monotonic() + 3
    while second.state is not OPEN and time.monotonic() < deadline:
        time.sleep(0.01)
    assert second.state is OPEN
    assert store_of(second).refresh_sync()
    for breaker in (first, second):
        store_of(breaker).stop()
    for client in clients:
        client.close()


def test_on_trio_a_call_fails_with_a_clear_error(redis_server: RedisServer) -> None:
    import trio

    breaker = shared(redis.asyncio.Redis(port=redis_server.address[1]), unique())

    async def main() -> None:
        with pytest.raises(RuntimeError, match="asyncio only"):
            await breaker.call(ok)

    trio.run(main)


def test_bad_settings_are_refused_naming_the_parameter() -> None:
    backend = RedisBackend(redis.asyncio.Redis(port=1))
    with pytest.raises(ValueError, match="needs a name"):
        CircuitBreaker(window=TimeWindow(10), backend=backend)
    with pytest.raises(ValueError, match="needs a TimeWindow"):
        CircuitBreaker("api", window=CountWindow(10), backend=backend)
    with pytest.raises(ValueError, match="consecutive_failures"):
        CircuitBreaker("api", window=TimeWindow(10), consecutive_failures=3, backend=backend)
    with pytest.raises(TypeError, match="backend must be"):
        CircuitBreaker("api", window=TimeWindow(10), backend="redis://")  # type: ignore[arg-type]
    derived = CircuitBreaker("api", window=TimeWindow(10), backend=backend).derive(name="b")
    assert isinstance(derived.store, RedisBreakerStore)  # same backend, its own state


def test_one_os_process_trips_the_breaker_and_the_others_see_it_open(
    redis_server: RedisServer,
) -> None:
    prefix = unique()

    def worker(role: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.redis_breaker_worker",
                str(redis_server.address[1]),
                prefix,
                role,
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    workers = [worker("watch") for _ in range(3)] + [worker("trip")]
    try:
        for process in workers:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"
        for process in workers:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        reports: list[dict[str, Any]] = []
        for process in workers:
            out, _ = process.communicate(timeout=30)
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
    tripped = reports[-1]["open_at"]
    assert tripped is not None
    for report in reports[:3]:
        assert report["failed"] == 0
        assert report["open_at"] is not None
        # Seen within a few sync intervals (0.05 s) of the trip.
        assert report["open_at"] - tripped < 1.0
