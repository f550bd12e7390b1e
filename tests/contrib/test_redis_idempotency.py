"""RedisIdempotencyStore on a real redis-server and a real three-node Redis
Cluster: the store contract (one lease per key, fencing, stored responses),
expiry on every key, corrupt values, and a Redis that is down.

A lease "running out" is its deadline field moved into the past, in Redis:
the scripts judge it by Redis's clock, so nothing here waits for one."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio

from resilience import CircuitOpenError, CircuitState
from resilience.contrib.asgi import (
    Completed,
    IdempotencyMiddleware,
    IdempotencyRecord,
    IdempotencyStore,
    InFlight,
    Lease,
)
from resilience.contrib.redis import RedisIdempotencyStore, StoreUnavailableError
from resilience.testing import FakeClock
from tests.redis_servers import RedisCluster, RedisServer, asyncio_only

KEY = "a" * 64
OTHER = "b" * 64


def record(body: bytes = b"{}", fingerprint: str = "f1") -> IdempotencyRecord:
    return IdempotencyRecord(fingerprint, 201, ((b"location", b"/orders/7"),), body)


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def forget(client: Any, prefix: str) -> None:
    """Delete the test's keys, one by one: on a cluster they span many slots."""
    async for name in client.scan_iter(match="{" + prefix + ":*"):
        await client.delete(name)


@pytest.fixture(params=["server", "cluster"])
async def client(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Any]:
    """An asyncio client of the session's redis-server, then of its cluster."""
    if request.param == "server":
        server: RedisServer = request.getfixturevalue("redis_server")
        made: Any = redis.asyncio.Redis(port=server.address[1])
    else:
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        host, port = cluster.nodes[0]
        made = redis.asyncio.RedisCluster(host=host, port=port)
        # Before concurrent use: racing first commands trip redis-py's own setup.
        await made.initialize()
    try:
        yield made
        await forget(made, prefix)
    finally:
        await made.aclose()


def store_on(client: Any, prefix: str, **options: Any) -> RedisIdempotencyStore:
    return RedisIdempotencyStore(client, prefix=prefix, store_timeout=2.0, **options)


async def run_out(store: RedisIdempotencyStore, key: str) -> None:
    """The key's lease deadline passes (a stalled or dead holder)."""
    entry = store.redis_keys(key)[0]
    assert await store.client.hset(entry, "dl", "0") == 0  # the field was there


async def ttls(store: RedisIdempotencyStore, key: str) -> tuple[int, int]:
    """The entry's and the fencing counter's PTTL (ms; -1: no expiry, -2: absent).

    Both from one reading of the clock: two PTTL calls can straddle a
    millisecond, so equal expiries would read one apart (Redis 7.0 does
    not freeze the clock for PTTL inside a script).
    """
    both = """
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local out = {}
    for i = 1, 2 do
      local at = redis.call('PEXPIRETIME', KEYS[i])
      if at < 0 then out[i] = at else out[i] = at - now end
    end
    return out
    """
    entry, fence = await store.client.eval(both, 2, *store.redis_keys(key))
    return int(entry), int(fence)


@asyncio_only
async def test_it_keeps_the_protocol_and_one_of_many_concurrent_claims_wins(
    client: Any, prefix: str
) -> None:
    store = store_on(client, prefix)
    assert isinstance(store, IdempotencyStore)
    claims = await asyncio.gather(*(store.claim(KEY, "f1", 10) for _ in range(20)))
    leases = [c for c in claims if isinstance(c, Lease)]
    assert len(leases) == 1
    assert not leases[0].taken_over
    others = [c for c in claims if not isinstance(c, Lease)]
    assert all(isinstance(c, InFlight) and c.fingerprint == "f1" for c in others)
    assert all(0 < c.expires_in <= 10 for c in others)  # type: ignore[union-attr]
    # The fingerprint is the running request's: a changed request is told apart.
    changed = await store.claim(KEY, "f2", 10)
    assert isinstance(changed, InFlight)
    assert changed.fingerprint == "f1"
    assert isinstance(await store.claim(OTHER, "f1", 10), Lease)


@asyncio_only
async def test_a_completed_key_replays_until_its_expiry_and_its_token_is_spent(
    client: Any, prefix: str
) -> None:
    store = store_on(client, prefix)
    lease = await store.claim(KEY, "f1", 10)
    assert isinstance(lease, Lease)
    stored = IdempotencyRecord("f1", 201, ((b"x-bytes", b"\xe9\x00"),), b"\x00\xff")
    assert await store.complete(KEY, lease.token, stored, 100)
    found = await store.claim(KEY, "f2", 10)
    assert isinstance(found, Completed)
    assert found.record == stored
    assert 99 < found.expires_in <= 100
    assert not await store.renew(KEY, lease.token, 10)
    assert not await store.release(KEY, lease.token)
    assert not await store.complete(KEY, lease.token, record(b"again"), 100)
    entry, fence = await ttls(store, KEY)
    assert 99_000 < entry <= 100_000
    assert fence >= entry  # the counter outlives what it fences


@asyncio_only
async def test_release_frees_the_key_at_once_and_tokens_keep_growing(
    client: Any, prefix: str
) -> None:
    store = store_on(client, prefix)
    tokens = []
    for _ in range(3):
        lease = await store.claim(KEY, "f1", 10)
        assert isinstance(lease, Lease)
        tokens.append(lease.token)
        assert await store.release(KEY, lease.token)
        assert not await store.release(KEY, lease.token)
    # The counter expired (here: deleted): tokens still grow, from Redis's time.
    await store.client.delete(store.redis_keys(KEY)[1])
    lease = await store.claim(KEY, "f1", 10)
    assert isinstance(lease, Lease)
    tokens.append(lease.token)
    assert tokens == sorted(set(tokens))


@asyncio_only
async def test_a_lease_that_ran_out_is_taken_over_and_the_old_holder_is_fenced(
    client: Any, prefix: str
) -> None:
    store = store_on(client, prefix)
    old = await store.claim(KEY, "f1", 10)
    assert isinstance(old, Lease)
    await run_out(store, KEY)
    assert not await store.renew(KEY, old.token, 10)
    new = await store.claim(KEY, "f1", 10)
    assert isinstance(new, Lease)
    assert new.taken_over
    assert new.token > old.token
    # The late finisher can neither store over the new holder nor free its key.
    assert not await store.complete(KEY, old.token, record(b"late"), 100)
    assert not await store.release(KEY, old.token)
    assert not await store.renew(KEY, old.token, 10)
    assert await store.complete(KEY, new.token, record(b"new"), 100)
    found = await store.claim(KEY, "f1", 10)
    assert isinstance(found, Completed)
    assert found.record.body == b"new"


@asyncio_only
async def test_a_lease_that_ran_out_untaken_cannot_complete(client: Any, prefix: str) -> None:
    store = store_on(client, prefix)
    lease = await store.claim(KEY, "f1", 10)
    assert isinstance(lease, Lease)
    await run_out(store, KEY)
    assert not await store.complete(KEY, lease.token, record(), 100)
    assert not await store.release(KEY, lease.token)


@asyncio_only
async def test_renewal_pushes_the_deadline_and_every_key_expires(client: Any, prefix: str) -> None:
    store = store_on(client, prefix)
    lease = await store.claim(KEY, "f1", 2)
    assert isinstance(lease, Lease)
    entry, fence = await ttls(store, KEY)
    # A lease entry lingers one lease past its deadline (a takeover says so).
    assert 3_000 < entry <= 4_000
    assert fence >= entry
    assert await store.renew(KEY, lease.token, 30)
    held = await store.claim(KEY, "f1", 2)
    assert isinstance(held, InFlight)
    assert 29 < held.expires_in <= 30
    entry, fence = await ttls(store, KEY)
    assert 59_000 < entry <= 60_000
    assert fence >= entry
    assert await store.release(KEY, lease.token)
    entry, fence = await ttls(store, KEY)
    assert entry == -2  # gone
    assert 0 < fence <= 60_000  # and the counter still expires


@asyncio_only
async def test_no_key_the_store_writes_lives_without_an_expiry(client: Any, prefix: str) -> None:
    store = store_on(client, prefix)
    keys = [f"{n:064x}" for n in range(12)]
    for n, key in enumerate(keys):
        lease = await store.claim(key, "f", 5)
        assert isinstance(lease, Lease)
        if n % 3 == 0:
            await store.complete(key, lease.token, record(), 50)
        elif n % 3 == 1:
            await store.release(key, lease.token)
        else:
            await store.renew(key, lease.token, 5)
    names = [name for key in keys for name in store.redis_keys(key)]
    found = [ttl for ttl in [await store.client.pttl(name) for name in names] if ttl != -2]
    assert len(found) == len(names) - 4  # the released entries are gone
    assert all(0 < ttl <= 50_000 for ttl in found)


@asyncio_only
async def test_a_corrupt_entry_is_treated_as_absent_and_logged_once(
    client: Any, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = store_on(client, prefix)
    entry, fence = store.redis_keys(KEY)
    await store.client.set(entry, "not a hash")  # WRONGTYPE
    await store.client.set(fence, "garbage")
    with caplog.at_level(logging.WARNING, logger="resilience"):
        lease = await store.claim(KEY, "f1", 10)
        assert isinstance(lease, Lease)
        assert lease.token > 0
        assert await store.complete(KEY, lease.token, record(), 100)
        await store.client.hset(entry, "rec", b"\xff not json")
        again = await store.claim(KEY, "f1", 10)  # the record cannot be read
    assert isinstance(again, Lease)
    assert again.token > lease.token
    assert caplog.text.count("was not ours") == 1
    assert (await ttls(store, KEY))[0] > 0


@asyncio_only
async def test_a_half_written_hash_is_overwritten(client: Any, prefix: str) -> None:
    store = store_on(client, prefix)
    entry = store.redis_keys(KEY)[0]
    for fields in ({"st": "c", "tk": "5"}, {"st": "l", "tk": "5"}, {"st": "x"}, {"tk": "1"}):
        await store.client.delete(entry)
        await store.client.hset(entry, mapping=fields)
        lease = await store.claim(KEY, "f1", 10)
        assert isinstance(lease, Lease), fields
        assert await store.release(KEY, lease.token)


@asyncio_only
async def test_scripts_flushed_from_redis_are_sent_again(client: Any, prefix: str) -> None:
    store = store_on(client, prefix)
    assert isinstance(await store.claim(KEY, "f1", 10), Lease)
    await store.client.script_flush()
    assert isinstance(await store.claim(KEY, "f1", 10), InFlight)


@asyncio_only
async def test_a_decoding_client_works_too(redis_server: RedisServer, prefix: str) -> None:
    client = redis.asyncio.Redis(port=redis_server.address[1], decode_responses=True)
    store = store_on(client, prefix)
    lease = await store.claim(KEY, "f1", 10)
    assert isinstance(lease, Lease)
    assert isinstance(await store.claim(KEY, "f1", 10), InFlight)
    assert await store.complete(KEY, lease.token, record(b"\x00\xff"), 100)
    found = await store.claim(KEY, "f1", 10)
    assert isinstance(found, Completed)
    assert found.record == record(b"\x00\xff")
    await forget(client, prefix)
    await client.aclose()


@asyncio_only
async def test_on_the_cluster_each_keys_pair_shares_a_slot_and_keys_spread(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    host, port = redis_cluster.nodes[0]
    client = redis.asyncio.RedisCluster(host=host, port=port)
    store = store_on(client, prefix)
    keys = [uuid.uuid4().hex * 2 for _ in range(30)]
    for key in keys:
        assert isinstance(await store.claim(key, "f", 10), Lease)
    pairs = [store.redis_keys(key) for key in keys]
    assert all(client.keyslot(entry) == client.keyslot(fence) for entry, fence in pairs)
    assert len({client.get_node_from_key(entry).port for entry, _ in pairs}) == 3
    await forget(client, prefix)
    await client.aclose()


@asyncio_only
async def test_a_dead_redis_is_a_store_unavailable_error_then_fails_fast(
    fresh_redis_server: RedisServer,
) -> None:
    clock = FakeClock()
    client = redis.asyncio.Redis(port=fresh_redis_server.address[1])
    store = RedisIdempotencyStore(client, prefix="dead", store_timeout=0.2, clock=clock)
    lease = await store.claim(KEY, "f1", 10)
    assert isinstance(lease, Lease)
    fresh_redis_server.kill()
    causes = []
    for step in (
        store.claim(KEY, "f1", 10),
        store.renew(KEY, lease.token, 10),
        store.complete(KEY, lease.token, record(), 100),
        store.release(KEY, lease.token),
    ):
        with pytest.raises(StoreUnavailableError, match="'dead': Redis did not answer") as e:
            await step
        causes.append(type(e.value.__cause__))
    # Three failures in a row, each carried by the error (the refused
    # connection, or the store_timeout that redis-py's own reconnection
    # attempts ran into): then Redis is not even asked until the breaker's trial.
    assert all(c in (redis.exceptions.ConnectionError, TimeoutError) for c in causes[:3])
    assert causes[3] is CircuitOpenError
    assert store.breaker.state is CircuitState.OPEN
    # Named apart from a RedisBackend's ("dead:redis"), whose series it would join.
    assert store.breaker.name == "dead:idempotency:redis"
    fresh_redis_server.restart()
    with pytest.raises(StoreUnavailableError, match="breaker is open") as e:
        await store.claim(KEY, "f1", 10)
    assert isinstance(e.value.__cause__, CircuitOpenError)
    clock.advance(1.0)
    assert isinstance(await store.claim(KEY, "f1", 10), Lease)  # a restarted, empty Redis
    await client.aclose()


@asyncio_only
async def test_a_paused_redis_holds_a_step_no_longer_than_the_store_timeout(
    fresh_redis_server: RedisServer,
) -> None:
    client = redis.asyncio.Redis(port=fresh_redis_server.address[1])
    store = RedisIdempotencyStore(client, prefix="paused", store_timeout=0.05, clock=FakeClock())
    assert isinstance(await store.claim(KEY, "f1", 10), Lease)
    fresh_redis_server.pause()
    try:
        causes = []
        for _ in range(5):  # redis-py 8 alone would hold each for 5 s or more
            with pytest.raises(StoreUnavailableError) as e:
                await asyncio.wait_for(store.claim(OTHER, "f1", 10), 3.0)
            causes.append(type(e.value.__cause__))
        # Timed out three times, then refused by the store's breaker at once.
        assert causes == [TimeoutError] * 3 + [CircuitOpenError] * 2
    finally:
        fresh_redis_server.resume()
    await client.aclose()


def test_on_trio_a_step_fails_with_a_clear_error(redis_server: RedisServer) -> None:
    import trio

    store = RedisIdempotencyStore(redis.asyncio.Redis(port=redis_server.address[1]))

    async def main() -> None:
        with pytest.raises(RuntimeError, match="asyncio only"):
            await store.claim(KEY, "f1", 10)

    trio.run(main)


def test_bad_settings_are_refused_naming_the_parameter() -> None:
    client = redis.asyncio.Redis(port=1)
    with pytest.raises(TypeError, match=r"client must be a redis\.asyncio\.Redis"):
        RedisIdempotencyStore(redis.Redis(port=1))
    with pytest.raises(ValueError, match="prefix must be a non-empty str without braces"):
        RedisIdempotencyStore(client, prefix="{tag}")
    with pytest.raises(ValueError, match="store_timeout must be a finite number > 0, got 0"):
        RedisIdempotencyStore(client, store_timeout=0)
    with pytest.raises(ValueError, match="key must be a digest without braces"):
        RedisIdempotencyStore(client).redis_keys("}" * 64)


@asyncio_only
async def test_behind_the_middleware_a_dead_redis_fails_closed_with_503(
    fresh_redis_server: RedisServer,
) -> None:
    ran: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        ran.append(scope["path"])
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"charged"})

    client = redis.asyncio.Redis(port=fresh_redis_server.address[1])
    store = RedisIdempotencyStore(client, prefix="closed", store_timeout=0.2, clock=FakeClock())
    service = IdempotencyMiddleware(app, store=store)
    fresh_redis_server.kill()
    transport = httpx.ASGITransport(app=service)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as http:
        for _ in range(4):  # the last ones refused by the store's breaker, at once
            response = await http.post("/charges", headers={"Idempotency-Key": '"k-1"'})
            assert response.status_code == 503
            assert int(response.headers["retry-after"]) >= 1
            assert response.headers["content-type"] == "application/problem+json"
    assert ran == []
    assert service.stats.unavailable == 4
    await client.aclose()
