"""The client half of idempotency keys, against the orders service of
examples/idempotency_service.py served by uvicorn on a real socket, with a
sync ``httpx.Client``.

In front of the service sits a gateway that times out on the first request
of each key: the order is created, but the client gets a 502. With
``idempotency_keys=True`` the transport retries the POST with the key it
generated, and the service replays the order instead of creating another.
A key of your own (derived from the cart) goes further: a client that
restarts and sends the cart again gets the same order back, where a
generated key, new for each call, would order twice. Without keys the POST
is not retried at all.

Run: python -m examples.idempotency_client
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
import uvicorn

from examples.idempotency_service import create_app, orders
from resilience import Retry, backoff
from resilience.contrib.asgi import MemoryIdempotencyStore
from resilience.contrib.httpx import ResilientTransport


class Gateway:
    """Passes requests to the service; the first one of each key (and the
    first without one) gets a 502 once the service has answered it: a
    gateway timeout after the work was done."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.keys: set[bytes] = set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        key = dict(scope.get("headers", ())).get(b"idempotency-key", b"")
        if key in self.keys:
            await self.app(scope, receive, send)
            return
        self.keys.add(key)

        async def lost(message: dict[str, Any]) -> None:
            pass

        await self.app(scope, receive, lost)
        await send({"type": "http.response.start", "status": 502, "headers": []})
        await send({"type": "http.response.body", "body": b"gateway timeout"})


def client(url: str, **options: Any) -> httpx.Client:
    transport = ResilientTransport(retry=Retry(3, backoff=backoff.fixed(0.01)), **options)
    return httpx.Client(transport=transport, base_url=url)


def shop(url: str) -> None:
    cart = {"sku": "tea", "qty": 2}
    with client(url, idempotency_keys=True) as generated:
        response = generated.post("/orders", json=cart)
    key = response.request.headers["Idempotency-Key"]
    print(
        f"generated key {key}: 502 from the gateway, retried with the same key -> "
        f"{response.status_code} {response.headers['Location']}, "
        f"Idempotent-Replayed: {response.headers['Idempotent-Replayed']}"
    )
    assert response.headers["Idempotent-Replayed"] == "true"
    assert len(orders) == 1

    # A client that restarted sends the cart again: a generated key is new.
    with client(url, idempotency_keys=True) as restarted:
        again = restarted.post("/orders", json=cart)
    print(f"after a restart, a new generated key -> {again.headers['Location']} (a second order)")
    assert len(orders) == 2

    own = {"Idempotency-Key": '"cart-7f3a"'}  # derived from the cart: the same after a restart
    for attempt in ("first", "after a restart"):
        with client(url, idempotency_keys=True) as yours:
            mine = yours.post("/orders", json=cart, headers=own)
        assert mine.request.headers["Idempotency-Key"] == own["Idempotency-Key"]  # kept
        print(
            f"your own key, {attempt}: -> {mine.status_code} {mine.headers['Location']}, "
            f"Idempotent-Replayed: {mine.headers['Idempotent-Replayed']}"
        )
    assert len(orders) == 3

    with client(url) as plain:
        unkeyed = plain.post("/orders", json=cart)
    print(
        f"without keys: {unkeyed.status_code}, not retried; the service has "
        f"{len(orders)} orders, the client cannot tell"
    )
    assert unkeyed.status_code == 502
    assert len(orders) == 4
    print("idempotency_client: every check passed")


async def main() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    service = Gateway(create_app(MemoryIdempotencyStore()))
    server = uvicorn.Server(
        uvicorn.Config(service, log_level="warning", lifespan="off", access_log=False)
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event to wait on)
        await asyncio.sleep(0.01)
    try:
        # The sync client in a thread: this loop serves it.
        await asyncio.to_thread(shop, f"http://127.0.0.1:{sock.getsockname()[1]}")
    finally:
        server.should_exit = True
        await serving
        sock.close()


if __name__ == "__main__":
    asyncio.run(main())
