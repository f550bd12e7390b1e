"""One server process of the cross-process idempotency tests: uvicorn serving
an orders endpoint behind IdempotencyMiddleware with a RedisIdempotencyStore.

Run: python -m tests.redis_idempotency_worker REDIS_PORT PREFIX WAIT
Prints ``listening PORT`` once it serves on 127.0.0.1:PORT (a port of its
own choosing: nothing can take it in between); SIGTERM stops it.

What the handler does is counted in Redis, so the test sees every process:

- ``POST /orders``: ``201`` with ``{"run": n, "pid": pid, "order": body}``,
  n counting the runs under this request's ``Idempotency-Key``.
- ``POST /orders/slow``: the same, after announcing the run (``started``)
  and waiting for the test to open its gate (a list the test pushes to).
- In front of the middleware, a gateway: ``/lost/...`` runs the request
  and answers ``502`` instead the first time a key is seen (the response
  lost after the work was done), ``/shed/...`` answers ``503`` the first
  time without running it. Then both pass the request on (path unprefixed).

Every key the worker writes expires.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio
import uvicorn

from resilience.contrib.asgi import IdempotencyMiddleware
from resilience.contrib.redis import RedisIdempotencyStore

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
TTL = 300  # seconds: every key of the test's own expires too
GATE_TIMEOUT = 30


def names(prefix: str, key: str) -> dict[str, str]:
    """The Redis keys the handler and the test share for one idempotency key."""
    return {part: f"{prefix}:{part}:{key}" for part in ("runs", "started", "gate", "gateway")}


def header(scope: Scope, name: bytes) -> str:
    return next((v.decode() for k, v in scope["headers"] if k == name), "")


async def answer(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Orders:
    """The handler behind the middleware."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/health":
            await answer(send, 200, b"{}")
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        keys = names(self.prefix, header(scope, b"idempotency-key"))
        if scope["path"] == "/orders/slow":
            await self.client.rpush(keys["started"], os.getpid())
            await self.client.expire(keys["started"], TTL)
            await self.client.blpop([keys["gate"]], timeout=GATE_TIMEOUT)
        runs = await self.client.incr(keys["runs"])
        await self.client.expire(keys["runs"], TTL)
        order = json.loads(body) if body else None
        reply = {"run": runs, "pid": os.getpid(), "order": order}
        await answer(send, 201, json.dumps(reply).encode())


class Gateway:
    """In front of the middleware: loses or sheds a key's first request."""

    def __init__(self, app: Any, client: Any, prefix: str) -> None:
        self.app = app
        self.client = client
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        mode, _, rest = path[1:].partition("/")
        if mode not in ("lost", "shed"):
            await self.app(scope, receive, send)
            return
        scope = {**scope, "path": "/" + rest, "raw_path": ("/" + rest).encode()}
        gateway = names(self.prefix, header(scope, b"idempotency-key"))["gateway"]
        first = await self.client.set(gateway, os.getpid(), nx=True, ex=TTL)
        if first and mode == "shed":
            await answer(send, 503, b'{"error": "shed"}')
            return
        if first:

            async def swallow(message: dict[str, Any]) -> None:
                pass

            await self.app(scope, receive, swallow)
            await answer(send, 502, b'{"error": "upstream response lost"}')
            return
        await self.app(scope, receive, send)


async def main(redis_port: int, prefix: str, wait: float) -> None:
    # No socket timeout: the slow handler blocks in BLPOP (redis-py 8's 5 s
    # default would cut it).
    client = redis.asyncio.Redis(port=redis_port, socket_timeout=None)
    store = RedisIdempotencyStore(
        redis.asyncio.Redis(port=redis_port), prefix=prefix, store_timeout=2.0
    )
    app = Gateway(
        IdempotencyMiddleware(Orders(client, prefix), store=store, wait=wait), client, prefix
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    )
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            serving.result()  # raises what stopped it
            return
        await asyncio.sleep(0.01)
    print(f"listening {sock.getsockname()[1]}", flush=True)
    await serving
    await client.aclose()
    await store.client.aclose()


if __name__ == "__main__":
    redis_port, prefix, wait = sys.argv[1:4]
    asyncio.run(main(int(redis_port), prefix, float(wait)))
