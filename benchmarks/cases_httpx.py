"""httpx: one GET through ``httpx.AsyncClient`` over an in-memory
``httpx.MockTransport`` (no sockets), plain, through httpx-retries'
``RetryTransport`` and through our ``AsyncResilientTransport`` (retry, a
per-host circuit breaker and a per-attempt timeout).

The response is 200 and read in full; no row retries. The overhead of the
wrapped rows is measured against the plain client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .cases import ALL_BACKENDS, ASYNCIO_ONLY, Case

__all__ = ["cases"]

GROUP = "httpx AsyncClient + MockTransport, one GET"
PLAIN = "httpx AsyncClient(MockTransport): GET"
URL = "http://bench.local/items/1"

Target = Callable[[], Any]


def _mock() -> Any:
    import httpx

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"ok")

    return httpx.MockTransport(handler)


def _client(transport: Any) -> Target:
    import httpx

    client = httpx.AsyncClient(transport=transport)
    get = client.get

    async def target() -> Any:
        return await get(URL)

    return target


def plain() -> Target:
    return _client(_mock())


def httpx_retries() -> Target:
    from httpx_retries import Retry, RetryTransport

    return _client(RetryTransport(transport=_mock(), retry=Retry(total=3)))


def ours() -> Target:
    from resilience import CircuitBreaker, Retry, Timeout
    from resilience.contrib.httpx import AsyncResilientTransport

    return _client(
        AsyncResilientTransport(
            _mock(), retry=Retry(3), breaker=CircuitBreaker(), timeout=Timeout(10)
        )
    )


def cases() -> list[Case]:
    return [
        Case(GROUP, PLAIN, plain, backends=ALL_BACKENDS, key="httpx.plain"),
        Case(
            GROUP,
            "resilience AsyncResilientTransport(MockTransport, retry, breaker, timeout): GET",
            ours,
            backends=ALL_BACKENDS,
            baseline=PLAIN,
            ours=True,
            key="httpx.transport",
        ),
        Case(
            GROUP,
            "httpx-retries RetryTransport(MockTransport, Retry(total=3)): GET",
            httpx_retries,
            backends=ASYNCIO_ONLY,
            baseline=PLAIN,
            key="httpx_retries.transport",
        ),
    ]
