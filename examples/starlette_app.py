"""A Starlette app protected by ResilienceMiddleware, calling an upstream
through AsyncResilientTransport: the request's deadline bounds the retries.

Run: python -m examples.starlette_app            (self-test: serves, calls, exits)
     python -m examples.starlette_app --serve    (serve on 127.0.0.1:8000 until Ctrl-C)
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import time

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import resilience
from resilience import Retry, backoff
from resilience.contrib.asgi import ResilienceMiddleware
from resilience.contrib.httpx import AsyncResilientTransport

# Where /report finds its upstream (this same server, for the demo).
UPSTREAM = "http://127.0.0.1:8000"


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


async def slow(request: Request) -> Response:
    await asyncio.sleep(float(request.query_params.get("s", "1")))
    return PlainTextResponse("slow but done")


upstream_hits = 0


async def flaky(request: Request) -> Response:
    global upstream_hits
    upstream_hits += 1
    return PlainTextResponse("upstream overloaded", status_code=503)


async def report(request: Request) -> Response:
    """Calls a failing upstream with retries every 0.2 s. The retries stop
    when the next wait would end past this request's deadline."""
    hits = upstream_hits
    transport = AsyncResilientTransport(retry=Retry(10, backoff=backoff.fixed(0.2)))
    async with httpx.AsyncClient(transport=transport, base_url=UPSTREAM) as client:
        upstream = await client.get("/flaky")
    attempts = upstream_hits - hits
    left = resilience.current_deadline()
    budget = "" if left is None else f", {left.remaining():.2f}s of budget left"
    return PlainTextResponse(
        f"upstream answered {upstream.status_code} after {attempts} attempts{budget}",
        status_code=502,
    )


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


def create_app() -> Starlette:
    app = Starlette(
        routes=[
            Route("/hello", hello),
            Route("/slow", slow),
            Route("/flaky", flaky),
            Route("/report", report),
            Route("/health", health),
        ]
    )
    app.add_middleware(
        ResilienceMiddleware,
        max_concurrent=4,
        timeout=1.0,
        exclude_paths=("/health",),
        deadline_header="X-Request-Timeout",
        retry_after=2,
        name="example",
    )
    return app


async def self_test() -> int:
    global UPSTREAM
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    UPSTREAM = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(
        uvicorn.Config(create_app(), log_level="warning", lifespan="off", access_log=False)
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event to wait on)
        await asyncio.sleep(0.01)
    failures = 0

    def show(label: str, response: httpx.Response, started: float, expected: int) -> None:
        nonlocal failures
        extra = (
            f" Retry-After: {response.headers['retry-after']}"
            if response.status_code == 503
            else ""
        )
        print(
            f"{label:<44} -> {response.status_code} {response.text!r}{extra} "
            f"({time.perf_counter() - started:.2f}s)"
        )
        failures += response.status_code != expected

    try:
        async with httpx.AsyncClient(base_url=UPSTREAM, timeout=10) as client:
            started = time.perf_counter()
            show("GET /hello", await client.get("/hello"), started, 200)

            started = time.perf_counter()
            show("GET /slow?s=3 (timeout 1 s)", await client.get("/slow?s=3"), started, 504)

            started = time.perf_counter()
            response = await client.get("/slow?s=0.5", headers={"X-Request-Timeout": "0.2"})
            show("GET /slow?s=0.5 with X-Request-Timeout: 0.2", response, started, 504)

            started = time.perf_counter()
            show("GET /report (upstream always 503)", await client.get("/report"), started, 502)

            # Six at once against max_concurrent=4: two are shed at once.
            started = time.perf_counter()
            burst = await asyncio.gather(*(client.get("/slow?s=0.3") for _ in range(6)))
            statuses = sorted(r.status_code for r in burst)
            print(f"{'6 x GET /slow?s=0.3 at once':<44} -> {statuses}")
            failures += statuses != [200, 200, 200, 200, 503, 503]
            shed = next(r for r in burst if r.status_code == 503)
            show("  one of the shed requests", shed, started, 503)

            started = time.perf_counter()
            show("GET /health (excluded)", await client.get("/health"), started, 200)
    finally:
        server.should_exit = True
        await serving
    if failures:
        print(f"self-test FAILED: {failures} unexpected answers")
        return 1
    print("self-test passed")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="serve on 127.0.0.1:8000")
    if parser.parse_args().serve:
        uvicorn.run(create_app(), host="127.0.0.1", port=8000)
        return 0
    return asyncio.run(self_test())


if __name__ == "__main__":
    raise SystemExit(main())
