"""A POST retried safely end to end: our httpx transport gives it an
Idempotency-Key and retries it when its response is lost; the service,
behind IdempotencyMiddleware, runs it once and replays its response.

The service charges a card per order. The network between the two loses
the first response after the service has answered (the connection resets
on its way back), which is the case that makes POST retries dangerous: the
charge was made, and the client cannot know it.

Run: python -m examples.idempotency_client
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from resilience import Retry, backoff
from resilience.contrib.asgi import IdempotencyMiddleware
from resilience.contrib.httpx import AsyncResilientTransport

charges: list[dict[str, Any]] = []


async def charge(request: Request) -> Response:
    """``POST /charges``: charge the card (once per run), answer 201."""
    made = {"id": f"ch_{len(charges) + 1}", **await request.json()}
    charges.append(made)
    return JSONResponse(made, status_code=201)


payments = Starlette(routes=[Route("/charges", charge, methods=["POST"])])


class LossyNetwork(httpx.AsyncBaseTransport):
    """Delivers every request, but loses the first response on its way back."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.sent: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request.headers.get("idempotency-key", "(none)"))
        response = await self.inner.handle_async_request(request)
        await response.aread()
        if len(self.sent) == 1:
            raise httpx.ReadError("connection reset by peer")
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def pay(url: str, *, idempotency_keys: bool) -> tuple[LossyNetwork, httpx.Response | None]:
    network = LossyNetwork()
    transport = AsyncResilientTransport(
        network, retry=Retry(3, backoff=backoff.fixed(0.01)), idempotency_keys=idempotency_keys
    )
    async with httpx.AsyncClient(transport=transport, base_url=url) as client:
        try:
            response = await client.post("/charges", json={"order": "o-1", "amount": 4200})
        except httpx.ReadError:
            response = None
    return network, response


async def main() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    service = IdempotencyMiddleware(payments)  # in memory; RedisIdempotencyStore for a fleet
    server = uvicorn.Server(
        uvicorn.Config(service, log_level="warning", lifespan="off", access_log=False)
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event to wait on)
        await asyncio.sleep(0.01)
    try:
        await demonstrate(url)
    finally:
        server.should_exit = True
        await serving
        sock.close()


async def demonstrate(url: str) -> None:
    network, response = await pay(url, idempotency_keys=True)
    assert response is not None
    first, second = network.sent
    print(f"with keys: attempt 1 sent Idempotency-Key {first}: its response was lost")
    print(
        f"with keys: attempt 2 sent the same key: {response.status_code}, replayed: "
        f"{response.headers.get('idempotent-replayed')}, {response.json()['id']}"
    )
    print(f"with keys: the card was charged {len(charges)} time(s)")
    assert first == second
    assert response.headers["idempotent-replayed"] == "true"
    assert len(charges) == 1

    network, response = await pay(url, idempotency_keys=False)
    print(
        f"without keys: {len(network.sent)} attempt, the POST is not retried "
        f"({'ReadError' if response is None else response.status_code}), yet the "
        f"card was charged ({len(charges)} charges in all): the client cannot tell"
    )
    assert response is None
    assert len(network.sent) == 1
    assert len(charges) == 2
    print("idempotency_client: every check passed")


if __name__ == "__main__":
    asyncio.run(main())
