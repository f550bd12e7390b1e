"""The idempotency store contract, on the in-memory store: leases with
fencing tokens, takeovers, stored responses, expiry and the bounds."""

from __future__ import annotations

import pytest

from resilience.contrib.asgi import (
    Completed,
    IdempotencyRecord,
    IdempotencyStore,
    InFlight,
    Lease,
    MemoryIdempotencyStore,
)
from resilience.testing import FakeClock

KEY = "a" * 64
OTHER = "b" * 64


def record(body: bytes = b"{}", fingerprint: str = "f1") -> IdempotencyRecord:
    return IdempotencyRecord(fingerprint, 201, ((b"content-type", b"application/json"),), body)


def test_the_memory_store_keeps_the_protocol() -> None:
    assert isinstance(MemoryIdempotencyStore(), IdempotencyStore)


async def test_one_claim_wins_and_the_others_see_it_running() -> None:
    clock = FakeClock()
    store = MemoryIdempotencyStore(clock=clock)
    first = await store.claim(KEY, "f1", 10)
    assert isinstance(first, Lease)
    assert not first.taken_over
    clock.advance(4)
    assert await store.claim(KEY, "f1", 10) == InFlight("f1", 6.0)
    # The fingerprint is the running request's, so a changed request is told apart.
    assert await store.claim(KEY, "f2", 10) == InFlight("f1", 6.0)
    # Another key is independent.
    assert isinstance(await store.claim(OTHER, "f1", 10), Lease)


async def test_complete_stores_the_record_until_its_expiry() -> None:
    clock = FakeClock()
    store = MemoryIdempotencyStore(clock=clock)
    lease = await store.claim(KEY, "f1", 10)
    assert isinstance(lease, Lease)
    assert await store.complete(KEY, lease.token, record(), 100)
    clock.advance(30)
    assert await store.claim(KEY, "f1", 10) == Completed(record(), 70.0)
    # The record is no longer a lease: the token does nothing more.
    assert not await store.renew(KEY, lease.token, 10)
    assert not await store.release(KEY, lease.token)
    assert not await store.complete(KEY, lease.token, record(b"[]"), 100)
    clock.advance(70)
    again = await store.claim(KEY, "f1", 10)
    assert isinstance(again, Lease)
    assert not again.taken_over
    assert again.token != lease.token


async def test_release_frees_the_key_at_once() -> None:
    store = MemoryIdempotencyStore(clock=FakeClock())
    lease = await store.claim(KEY, "f1", 10)
    assert isinstance(lease, Lease)
    assert await store.release(KEY, lease.token)
    assert not await store.release(KEY, lease.token)
    assert isinstance(await store.claim(KEY, "f2", 10), Lease)
    assert len(store) == 1


async def test_a_renewed_lease_holds_and_an_unrenewed_one_is_taken_over() -> None:
    clock = FakeClock()
    store = MemoryIdempotencyStore(clock=clock)
    lease = await store.claim(KEY, "f1", 10)
    assert isinstance(lease, Lease)
    clock.advance(8)
    assert await store.renew(KEY, lease.token, 10)
    clock.advance(8)  # 16 s after the claim, 8 after the renewal
    assert isinstance(await store.claim(KEY, "f1", 10), InFlight)
    clock.advance(2)  # the renewed lease ran out
    assert not await store.renew(KEY, lease.token, 10)
    newer = await store.claim(KEY, "f1", 10)
    assert isinstance(newer, Lease)
    assert newer.taken_over
    # Fencing: the old holder can neither store over the new one nor free its key.
    assert not await store.complete(KEY, lease.token, record(b"late"), 100)
    assert not await store.release(KEY, lease.token)
    assert not await store.renew(KEY, lease.token, 10)
    assert await store.complete(KEY, newer.token, record(b"new"), 100)
    found = await store.claim(KEY, "f1", 10)
    assert isinstance(found, Completed)
    assert found.record.body == b"new"


async def test_a_lease_that_ran_out_cannot_complete_even_untaken() -> None:
    clock = FakeClock()
    store = MemoryIdempotencyStore(clock=clock)
    lease = await store.claim(KEY, "f1", 10)
    assert isinstance(lease, Lease)
    clock.advance(10)
    assert not await store.complete(KEY, lease.token, record(), 100)


async def test_full_of_records_the_oldest_go_first() -> None:
    clock = FakeClock()
    store = MemoryIdempotencyStore(max_keys=3, clock=clock)
    for n in range(3):
        lease = await store.claim(f"{n:064x}", "f", 10)
        assert isinstance(lease, Lease)
        assert await store.complete(f"{n:064x}", lease.token, record(), 100)
    assert isinstance(await store.claim(f"{9:064x}", "f", 10), Lease)
    assert len(store) == 3
    assert isinstance(await store.claim(f"{0:064x}", "f", 10), Lease)  # evicted: runs again
    assert isinstance(await store.claim(f"{2:064x}", "f", 10), Completed)


async def test_live_leases_are_never_evicted() -> None:
    store = MemoryIdempotencyStore(max_keys=2, clock=FakeClock())
    assert isinstance(await store.claim(KEY, "f", 10), Lease)
    assert isinstance(await store.claim(OTHER, "f", 10), Lease)
    with pytest.raises(RuntimeError, match="full of running requests"):
        await store.claim("c" * 64, "f", 10)
    assert isinstance(await store.claim(KEY, "f", 10), InFlight)


async def test_bytes_are_bounded_and_expired_entries_do_not_stay() -> None:
    clock = FakeClock()
    store = MemoryIdempotencyStore(max_bytes=3000, clock=clock)
    for n in range(20):
        key = f"{n:064x}"
        lease = await store.claim(key, "f", 10)
        assert isinstance(lease, Lease)
        assert await store.complete(key, lease.token, record(b"x" * 1000), 100)
    assert len(store) <= 3
    clock.advance(101)
    for n in range(20, 40):
        key = f"{n:064x}"
        lease = await store.claim(key, "f", 10)
        assert isinstance(lease, Lease)
        assert await store.release(key, lease.token)
    assert len(store) == 0


def test_records_round_trip_as_plain_bytes() -> None:
    stored = IdempotencyRecord("f" * 64, 201, ((b"location", b"/o/\xe9"),), b"\x00\xff body")
    data = stored.encode()
    assert IdempotencyRecord.decode(data) == stored
    assert data.startswith(b'{"v":1,')
    for corrupt in (b"", b"[]", b"{}", b'{"v":2}', data.replace(b'"s":201', b'"s":"x"'), b"\xff"):
        with pytest.raises(ValueError, match="not an idempotency record"):
            IdempotencyRecord.decode(corrupt)


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"max_keys": 0}, ValueError, "max_keys must be >= 1, got 0"),
        ({"max_keys": "10"}, TypeError, "max_keys must be an int, got '10'"),
        ({"max_bytes": 0}, ValueError, "max_bytes must be >= 1, got 0"),
        ({"clock": object()}, TypeError, "clock must be a clock"),
    ],
)
def test_bad_settings_name_the_parameter(
    kwargs: dict[str, object], error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text):
        MemoryIdempotencyStore(**kwargs)  # type: ignore[arg-type]
