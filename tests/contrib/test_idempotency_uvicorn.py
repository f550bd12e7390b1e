"""IdempotencyMiddleware under a real uvicorn, with real httpx clients: the
behaviours a client sees on the wire. Leases and expiry run on a FakeClock
that the test moves, so nothing waits for a lease to run out."""

from __future__ import annotations

import json
import threading

import anyio
import httpx

from resilience.contrib.asgi import (
    IdempotencyMiddleware,
    Lease,
    MemoryIdempotencyStore,
)
from resilience.contrib.asgi._idempotency_http import fingerprint, scoped_key
from resilience.testing import FakeClock
from tests.contrib.idempotency_app import Orders
from tests.servers import serve

# Long enough that no renewal (every third of it, in real time) happens
# during a test: the fake clock alone decides when a lease runs out.
LEASE = 60.0


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": f'"{value}"'}


def setup(**options: object) -> tuple[Orders, IdempotencyMiddleware, FakeClock]:
    clock = FakeClock()
    orders = Orders()
    options.setdefault("store", MemoryIdempotencyStore(clock=clock))
    middleware = IdempotencyMiddleware(orders, lease=LEASE, **options)  # type: ignore[arg-type]
    return orders, middleware, clock


async def test_a_retry_gets_the_stored_response_replayed() -> None:
    orders, middleware, _ = setup()
    with serve(middleware) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            first = await client.post("/orders", json={"sku": 7}, headers=key("k1"))
            again = await client.post("/orders", json={"sku": 7}, headers=key("k1"))
            bare = await client.post("/orders", json={"sku": 7}, headers={"Idempotency-Key": "k1"})
    assert orders.runs == 1
    assert first.status_code == again.status_code == bare.status_code == 201
    assert again.content == first.content == bare.content
    assert again.headers["location"] == first.headers["location"] == "/orders/1"
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["idempotency-expires-in"] == "86400"
    assert "idempotent-replayed" not in first.headers
    assert (middleware.stats.ran, middleware.stats.replayed, middleware.stats.stored) == (1, 2, 1)


async def test_the_same_key_for_another_body_or_path_is_422_every_time() -> None:
    orders, middleware, _ = setup()
    with serve(middleware) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            first = await client.post("/orders", json={"amount": 10}, headers=key("k1"))
            # A hostile client: same key, changing bodies, paths and queries.
            for n in range(5):
                changed = await client.post("/orders", json={"amount": 11 + n}, headers=key("k1"))
                assert changed.status_code == 422
                assert changed.headers["content-type"] == "application/problem+json"
                assert changed.json()["code"] == "idempotency_conflict"
                assert b"amount" not in changed.content  # never another request's response
            other_path = await client.post("/refunds", json={"amount": 10}, headers=key("k1"))
            other_query = await client.post("/orders?x=1", json={"amount": 10}, headers=key("k1"))
            same = await client.post("/orders", json={"amount": 10}, headers=key("k1"))
    assert first.status_code == 201
    assert other_path.status_code == other_query.status_code == 422
    assert same.status_code == 201
    assert same.headers["idempotent-replayed"] == "true"
    assert orders.runs == 1
    assert middleware.stats.mismatches == 7


async def test_a_duplicate_while_the_first_runs_is_409_and_a_changed_one_422() -> None:
    orders, middleware, _ = setup(retry_after=2)
    gate = orders.gate()
    with serve(middleware) as url:
        async with httpx.AsyncClient(base_url=url) as client, anyio.create_task_group() as tg:
            answers: list[httpx.Response] = []

            async def first() -> None:
                answers.append(await client.post("/orders", content=b"a", headers=key("k")))

            tg.start_soon(first)
            await gate.reached()
            duplicate = await client.post("/orders", content=b"a", headers=key("k"))
            changed = await client.post("/orders", content=b"b", headers=key("k"))
            gate.open()
    assert duplicate.status_code == 409
    assert duplicate.headers["retry-after"] == "2"
    assert duplicate.json()["code"] == "idempotency_in_flight"
    assert changed.status_code == 422
    assert answers[0].status_code == 201
    assert orders.runs == 1


class CountingStore(MemoryIdempotencyStore):
    """Tells the test how many claims found the key in flight."""

    __slots__ = ("busy",)

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.busy = threading.Event()

    async def claim(self, key: str, fingerprint: str, lease: float):  # type: ignore[no-untyped-def]
        found = await super().claim(key, fingerprint, lease)
        if not isinstance(found, Lease):
            self.busy.set()
        return found


async def test_with_wait_a_duplicate_waits_for_the_first_and_gets_its_response() -> None:
    clock = FakeClock()
    store = CountingStore(clock)
    orders, middleware, _ = setup(store=store, wait=30.0)
    gate = orders.gate()
    with serve(middleware) as url:
        async with httpx.AsyncClient(base_url=url) as client, anyio.create_task_group() as tg:
            answers: dict[str, httpx.Response] = {}

            async def post(name: str) -> None:
                answers[name] = await client.post("/orders", content=b"a", headers=key("k"))

            tg.start_soon(post, "first")
            await gate.reached()
            tg.start_soon(post, "duplicate")
            # Until the duplicate has found the key in flight (and waits).
            await anyio.to_thread.run_sync(store.busy.wait)
            gate.open()
    assert answers["first"].status_code == answers["duplicate"].status_code == 201
    assert answers["duplicate"].content == answers["first"].content
    assert answers["duplicate"].headers["idempotent-replayed"] == "true"
    assert orders.runs == 1
    assert middleware.stats.conflicts == 0


async def test_a_crashed_handler_frees_its_key_and_the_retry_runs() -> None:
    orders, middleware, _ = setup()
    orders.fail = True
    with serve(middleware) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            crashed = await client.post("/orders", content=b"a", headers=key("k"))
            orders.fail = False
            retried = await client.post("/orders", content=b"a", headers=key("k"))
    assert crashed.status_code == 500  # uvicorn's own answer to an exception
    assert retried.status_code == 201
    assert "idempotent-replayed" not in retried.headers
    assert orders.runs == 2


async def test_a_dead_process_frees_its_key_when_its_lease_runs_out() -> None:
    orders, middleware, clock = setup()
    store = middleware.store
    # Another process claimed the key for this very request, then died.
    scope = {"method": "POST", "path": "/orders", "query_string": b""}
    stored_key = scoped_key(None, b"k")
    assert isinstance(await store.claim(stored_key, fingerprint(scope, b"a"), LEASE), Lease)
    with serve(middleware) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            busy = await client.post("/orders", content=b"a", headers=key("k"))
            clock.advance(LEASE)
            retried = await client.post("/orders", content=b"a", headers=key("k"))
            replayed = await client.post("/orders", content=b"a", headers=key("k"))
    assert busy.status_code == 409
    assert retried.status_code == 201
    assert replayed.headers["idempotent-replayed"] == "true"
    assert orders.runs == 1
    assert middleware.stats.taken_over == 1


async def test_a_late_finisher_cannot_overwrite_the_new_holders_response() -> None:
    orders, middleware, clock = setup()
    stalled = orders.gate()
    with serve(middleware) as url:
        async with httpx.AsyncClient(base_url=url) as client, anyio.create_task_group() as tg:
            late: list[httpx.Response] = []

            async def first() -> None:
                late.append(await client.post("/orders", content=b"a", headers=key("k")))

            tg.start_soon(first)
            await stalled.reached()
            clock.advance(LEASE + 1)  # the first holder stopped renewing: its lease ran out
            second = await client.post("/orders", content=b"a", headers=key("k"))
            stalled.open()  # the first finishes after the takeover
        async with httpx.AsyncClient(base_url=url) as client:
            replayed = await client.post("/orders", content=b"a", headers=key("k"))
    assert second.status_code == 201
    assert second.json()["run"] == 2
    assert late[0].json()["run"] == 1  # its own client still gets its answer
    assert replayed.json()["run"] == 2  # but the stored response is the new holder's
    assert (middleware.stats.taken_over, middleware.stats.fenced) == (1, 1)


async def test_a_stored_response_expires() -> None:
    orders, middleware, clock = setup(expiry=60)
    with serve(middleware) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            await client.post("/orders", content=b"a", headers=key("k"))
            clock.advance(45)
            replayed = await client.post("/orders", content=b"a", headers=key("k"))
            clock.advance(15)
            anew = await client.post("/orders", content=b"a", headers=key("k"))
    assert replayed.headers["idempotency-expires-in"] == "15"
    assert "idempotent-replayed" not in anew.headers
    assert orders.runs == 2


async def test_a_response_over_max_body_passes_unstored_and_its_retry_runs() -> None:
    orders, middleware, _ = setup(max_body=1000)
    orders.size, orders.chunks = 1500, 3
    with serve(middleware) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            big = await client.post("/orders", content=b"a", headers=key("k"))
            again = await client.post("/orders", content=b"a", headers=key("k"))
            orders.size = 1000
            fits = await client.post("/orders", content=b"a", headers=key("k2"))
            replayed = await client.post("/orders", content=b"a", headers=key("k2"))
            too_large = await client.post("/orders", content=b"x" * 1001, headers=key("k3"))
    assert len(big.content) == len(again.content) == 1500
    assert orders.runs == 3
    assert replayed.content == fits.content
    assert replayed.headers["idempotent-replayed"] == "true"
    assert too_large.status_code == 413
    assert too_large.json()["code"] == "idempotency_body_too_large"


async def test_two_identities_never_see_each_others_responses() -> None:
    orders, middleware, _ = setup()
    alice = {"Authorization": "Bearer alice", **key("k")}
    bob = {"Authorization": "Bearer bob", **key("k")}
    with serve(middleware) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            mine = await client.post("/orders", content=b"a", headers=alice)
            theirs = await client.post("/orders", content=b"a", headers=bob)
            anonymous = await client.post("/orders", content=b"a", headers=key("k"))
            mine_again = await client.post("/orders", content=b"a", headers=alice)
    assert [json.loads(r.content)["run"] for r in (mine, theirs, anonymous)] == [1, 2, 3]
    assert mine_again.json()["run"] == 1
    assert orders.runs == 3
