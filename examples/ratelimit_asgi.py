"""Per-client rate limits in a Starlette service: 429 with Retry-After and the
RateLimit fields, an excluded health check, and a limit per API key.

The clients talk to the app in-process (httpx.ASGITransport, no network), and
the limiters run on a fake clock (resilience.testing.FakeClock): nothing
waits for real, and the seconds printed are the fake clock's.

Run: python -m examples.ratelimit_asgi
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from resilience import RateLimiter, RateLimiterStatistics
from resilience.contrib.asgi import ResilienceMiddleware
from resilience.testing import FakeClock

ANN = "203.0.113.7"
BOB = "198.51.100.4"

# Requests that reached the handler of /items.
handled: list[str] = []


async def items(request: Request) -> Response:
    handled.append(request.client.host if request.client else "?")
    return PlainTextResponse("items")


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


def create_app(limiter: RateLimiter, **settings: Any) -> Starlette:
    app = Starlette(routes=[Route("/items", items), Route("/health", health)])
    app.add_middleware(
        ResilienceMiddleware, rate_limit=limiter, exclude_paths=("/health",), **settings
    )
    return app


def client(app: Starlette, ip: str, port: int = 5000) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app, client=(ip, port))
    return httpx.AsyncClient(transport=transport, base_url="http://service")


def fields(response: httpx.Response) -> str:
    shown = [
        f"{name}: {response.headers[name]}"
        for name in ("Retry-After", "RateLimit-Policy", "RateLimit")
        if name in response.headers
    ]
    return ", ".join(shown) or "no RateLimit fields"


def show(label: str, response: httpx.Response) -> httpx.Response:
    path = response.request.url.path
    print(f"{label} GET {path} -> {response.status_code} {fields(response)}")
    return response


async def per_client() -> None:
    clock = FakeClock()
    # 3 requests a minute per client address (one every 20 s), 3 at once after a rest.
    limiter = RateLimiter(3, per=60, name="per-client", clock=clock)
    app = create_app(limiter)
    handled.clear()
    async with client(app, ANN) as ann, client(app, BOB) as bob:
        statuses = []
        for _ in range(4):
            response = show(f"per client: {ANN}", await ann.get("/items"))
            statuses.append(response.status_code)
        assert statuses == [200, 200, 200, 429]
        assert response.headers["retry-after"] == "20"
        assert response.headers["ratelimit-policy"] == '"per-client";q=3;w=60'
        assert response.headers["ratelimit"] == '"per-client";r=0;t=20'
        assert response.text == "Too Many Requests"
        assert handled == [ANN] * 3  # the refused request never reached the handler

        # The key is the address without the port: a new connection shares the limit.
        async with client(app, ANN, port=5001) as ann_again:
            assert (await ann_again.get("/items")).status_code == 429

        # Another address has a limit of its own.
        response = show(f"per client: {BOB}", await bob.get("/items"))
        assert response.status_code == 200
        assert response.headers["ratelimit"] == '"per-client";r=2;t=20'

        # An excluded path passes without using the limit, and carries no fields.
        checks = [await ann.get("/health") for _ in range(5)]
        assert [r.status_code for r in checks] == [200] * 5
        assert all("ratelimit" not in r.headers for r in checks)
        print(f"per client: {ANN} GET /health x5 -> 200, {fields(checks[-1])}")

        clock.advance(20.0)  # Retry-After: one of ann's slots is back
        response = show(f"per client: {ANN} after 20s", await ann.get("/items"))
        assert response.status_code == 200
        assert response.headers["ratelimit"] == '"per-client";r=0;t=20'
    print(f"per client: {limiter.stats}")
    assert limiter.stats == RateLimiterStatistics(
        admitted=5, waited=0, rejected=2, wait_seconds=0.0, keys=2
    )


def api_key(scope: dict[str, Any]) -> Hashable:
    return dict(scope["headers"]).get(b"x-api-key", b"anonymous")


async def per_api_key() -> None:
    clock = FakeClock()
    # 2 requests a minute per API key, wherever they come from.
    limiter = RateLimiter(2, per=60, key=api_key, name="per-key", clock=clock)
    app = create_app(limiter, json_errors=True)
    async with client(app, ANN) as ann, client(app, BOB) as bob:
        key_1 = {"X-API-Key": "k-1"}
        assert (await ann.get("/items", headers=key_1)).status_code == 200
        assert (await ann.get("/items", headers=key_1)).status_code == 200
        # The same key from another address: the same limit.
        refused = show(f"per key: k-1 from {BOB}", await bob.get("/items", headers=key_1))
        print(f"per key: the 429's body: {refused.text}")
        assert refused.status_code == 429
        assert refused.json() == {"detail": "Too Many Requests"}
        assert refused.headers["retry-after"] == "30"
        assert refused.headers["ratelimit"] == '"per-key";r=0;t=30'

        other = show(
            f"per key: k-2 from {BOB}", await bob.get("/items", headers={"X-API-Key": "k-2"})
        )
        assert other.status_code == 200
        assert other.headers["ratelimit"] == '"per-key";r=1;t=30'

        # Requests without a key share the "anonymous" limit.
        anonymous = [(await c.get("/items")).status_code for c in (ann, bob, ann)]
        print(f"per key: no key from {ANN}, {BOB}, {ANN} -> {anonymous}")
        assert anonymous == [200, 200, 429]

    # What the RateLimit field says, read without taking anything.
    print(f"per key: quota k-1 {limiter.quota(b'k-1')}, k-2 {limiter.quota(b'k-2')}")
    assert limiter.quota(b"k-1") == (0, 30.0)
    assert limiter.quota(b"k-2") == (1, 30.0)
    assert limiter.quota(b"never-seen") == (2, float("inf"))  # fully rested
    assert (limiter.stats.rejected, limiter.stats.keys) == (2, 3)


async def main() -> None:
    await per_client()
    await per_api_key()
    print("ratelimit_asgi: every check passed")


if __name__ == "__main__":
    asyncio.run(main())
