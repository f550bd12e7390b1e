"""ASGI middleware: a bare ASGI app called directly, and the same app wrapped
by ResilienceMiddleware with every feature on (bulkhead with a wait queue,
request timeout, circuit breaker, excluded paths, deadline header).

Both rows run one whole request: the app receives the request body and sends
a start message and a body message to a no-op ``send``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .cases import Case
from .cases_baseline import f

__all__ = ["cases"]

GROUP = "ASGI middleware, one request"
BARE = "bare ASGI app"

Target = Callable[[], Any]

_SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/items/1",
    "raw_path": b"/items/1",
    "query_string": b"",
    "root_path": "",
    "headers": [
        (b"host", b"127.0.0.1:8000"),
        (b"user-agent", b"bench"),
        (b"accept", b"*/*"),
        (b"accept-encoding", b"gzip, deflate"),
        (b"connection", b"keep-alive"),
    ],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}
_REQUEST = {"type": "http.request", "body": b"", "more_body": False}
_START = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
_BODY = {"type": "http.response.body", "body": b"ok"}


async def _receive() -> dict[str, Any]:
    return _REQUEST


async def _send(message: dict[str, Any]) -> None:
    return None


async def app(scope: Any, receive: Any, send: Any) -> None:
    """The bare app: reads the request, does the shared work, answers."""
    await receive()
    await f()
    await send(_START)
    await send(_BODY)


def bare() -> Target:
    async def target() -> None:
        await app(_SCOPE, _receive, _send)

    return target


def full_middleware() -> Any:
    """``app`` inside ResilienceMiddleware with every feature on (also what
    ``benchmarks.asgi_wrk`` serves, so both describe the same middleware)."""
    from resilience import CircuitBreaker
    from resilience.contrib.asgi import ResilienceMiddleware

    return ResilienceMiddleware(
        app,
        max_concurrent=100,
        max_waiting=100,
        timeout=10.0,
        breaker=CircuitBreaker("bench-asgi"),
        exclude_paths=("/health", "/metrics"),
        deadline_header="X-Request-Timeout",
        name="bench-asgi",
    )


def ours() -> Target:
    middleware = full_middleware()

    async def target() -> None:
        await middleware(_SCOPE, _receive, _send)

    return target


def cases() -> list[Case]:
    return [
        Case(GROUP, BARE, bare, key="asgi.bare"),
        Case(
            GROUP,
            "resilience ResilienceMiddleware (all features)",
            ours,
            baseline=BARE,
            ours=True,
            key="asgi.middleware",
        ),
    ]
