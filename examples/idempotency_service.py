"""An orders service behind IdempotencyMiddleware, and a client whose POSTs
are retried safely with generated Idempotency-Keys.

The network loses the first response (the order was created, the client
sees a ReadError): the client's transport retries the POST with the same
key, and the service answers with the stored response instead of creating a
second order. Then the same key with another body (422), a duplicate while
the first still runs (409), and a key run again after its expiry.

The client talks to the app in-process (httpx.ASGITransport, no network);
the retry's backoff and the store's expiry run on a fake clock
(resilience.testing.FakeClock): nothing waits for real.

Run: python -m examples.idempotency_service
"""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from resilience import Retry
from resilience.contrib.asgi import IdempotencyMiddleware, MemoryIdempotencyStore
from resilience.contrib.httpx import AsyncResilientTransport
from resilience.testing import FakeClock

# --8<-- [start:service]
orders: dict[int, dict[str, object]] = {}
# To show a duplicate in flight: while `slow` is set, the next order waits.
slow, entered, proceed = asyncio.Event(), asyncio.Event(), asyncio.Event()


async def create_order(request: Request) -> Response:
    order = await request.json()
    if slow.is_set():
        slow.clear()
        entered.set()
        await proceed.wait()
    number = len(orders) + 1
    orders[number] = order
    location = {"Location": f"/orders/{number}"}
    return JSONResponse({"id": number, **order}, status_code=201, headers=location)


def create_app(store: MemoryIdempotencyStore) -> IdempotencyMiddleware:
    app = Starlette(routes=[Route("/orders", create_order, methods=["POST"])])
    # Each key runs once; its retries get the stored response for an hour.
    # (Or app.add_middleware(IdempotencyMiddleware, ...), the same thing.)
    return IdempotencyMiddleware(app, store=store, expiry=3600, name="orders")


# --8<-- [end:service]


class LosesFirstResponse(httpx.AsyncBaseTransport):
    """Delivers every request, but loses the first response on its way back:
    the order exists, the client sees a ReadError."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self.transport = transport
        self.sent: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request.headers.get("Idempotency-Key", "-"))
        response = await self.transport.handle_async_request(request)
        if len(self.sent) == 1:
            await response.aclose()
            raise httpx.ReadError("connection reset by peer", request=request)
        return response


async def main() -> None:
    clock = FakeClock()
    store = MemoryIdempotencyStore(clock=clock)
    app = create_app(store)
    network = LosesFirstResponse(httpx.ASGITransport(app))
    # --8<-- [start:client]
    transport = AsyncResilientTransport(
        network,
        retry=Retry(3, clock=clock),  # retries transport errors and 429/502/503/504
        idempotency_keys=True,  # one key per POST, the same for each of its retries
    )
    # --8<-- [end:client]
    async with httpx.AsyncClient(transport=transport, base_url="http://orders") as client:
        response = await client.post("/orders", json={"sku": "tea", "qty": 2})
        replayed = response.headers.get("Idempotent-Replayed")
        print(
            f"retried POST: {len(network.sent)} attempts with one key, -> {response.status_code} "
            f"{response.headers['Location']}, Idempotent-Replayed: {replayed}"
        )
        assert len(network.sent) == 2
        assert network.sent[0] == network.sent[1] != "-"
        assert response.status_code == 201
        assert replayed == "true"
        print(f"service: {len(orders)} order created")
        assert len(orders) == 1

        key = {"Idempotency-Key": network.sent[0]}
        changed = await client.post("/orders", json={"sku": "tea", "qty": 20}, headers=key)
        print(f"same key, other body: {changed.status_code} {changed.json()['code']}")
        assert changed.status_code == 422

        slow.set()
        first = asyncio.ensure_future(
            client.post(
                "/orders", json={"sku": "mug", "qty": 1}, headers={"Idempotency-Key": '"m"'}
            )
        )
        await entered.wait()  # the first is inside the handler
        duplicate = await client.post(
            "/orders", json={"sku": "mug", "qty": 1}, headers={"Idempotency-Key": '"m"'}
        )
        proceed.set()
        print(
            f"duplicate in flight: {duplicate.status_code} {duplicate.json()['code']}, "
            f"Retry-After: {duplicate.headers['Retry-After']}; the first -> "
            f"{(await first).status_code}"
        )
        assert duplicate.status_code == 409

        clock.advance(3600)
        again = await client.post("/orders", json={"sku": "tea", "qty": 2}, headers=key)
        print(f"after the hour's expiry: {again.status_code}, a new order {again.json()['id']}")
        assert "Idempotent-Replayed" not in again.headers
    stats = app.stats
    print(
        f"stats: ran={stats.ran} replayed={stats.replayed} conflicts={stats.conflicts} "
        f"mismatches={stats.mismatches} stored={stats.stored}"
    )
    assert (stats.ran, stats.replayed, stats.conflicts, stats.mismatches) == (3, 1, 1, 1)
    print("idempotency_service: every check passed")


if __name__ == "__main__":
    asyncio.run(main())
