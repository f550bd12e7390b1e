"""hedge= on AsyncResilientTransport: idempotent requests only, losers cancelled or closed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from resilience import Hedge, Retry, backoff
from resilience.contrib.httpx import AsyncResilientTransport, ResilientTransport
from resilience.testing import FakeClock
from tests.servers import serve


class Body(httpx.AsyncByteStream):
    """A response body that says whether it was closed."""

    def __init__(self, data: bytes, closed: list[str], label: str) -> None:
        self.data = data
        self.closed = closed
        self.label = label

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data

    async def aclose(self) -> None:
        self.closed.append(self.label)


class Upstream:
    """A scripted upstream: attempt n waits for gate n, then answers status n."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.gates: list[anyio.Event] = []
        self.cancelled: list[int] = []
        self.closed: list[str] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        index = len(self.gates)
        gate = anyio.Event()
        self.gates.append(gate)
        try:
            await gate.wait()
        except anyio.get_cancelled_exc_class():
            self.cancelled.append(index)
            raise
        label = f"attempt {index}"
        return httpx.Response(self.statuses[index], stream=Body(label.encode(), self.closed, label))


async def until(predicate: Any) -> None:
    with anyio.fail_after(5):
        while not predicate():
            await anyio.lowlevel.checkpoint()


def client(upstream: Upstream, hedge: Hedge, **kwargs: Any) -> httpx.AsyncClient:
    transport = AsyncResilientTransport(httpx.MockTransport(upstream), hedge=hedge, **kwargs)
    return httpx.AsyncClient(transport=transport, base_url="https://api.test")


async def test_a_slow_get_is_hedged_and_the_first_response_wins() -> None:
    clock = FakeClock()
    upstream = Upstream([200, 200])
    hedge = Hedge(2, delay=0.2, clock=clock)
    got: list[httpx.Response] = []
    async with client(upstream, hedge) as c:

        async def get() -> None:
            got.append(await c.get("/items"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(get)
            await until(lambda: len(upstream.gates) == 1)
            clock.advance(0.2)
            await until(lambda: len(upstream.gates) == 2)
            upstream.gates[1].set()
        assert got[0].text == "attempt 1"
    assert upstream.cancelled == [0]
    assert hedge.stats.won == 1


async def test_a_retryable_status_starts_the_next_attempt_and_its_response_is_closed() -> None:
    clock = FakeClock()
    upstream = Upstream([503, 200])
    hedge = Hedge(2, delay=10.0, clock=clock)
    got: list[httpx.Response] = []
    async with client(upstream, hedge) as c:

        async def get() -> None:
            got.append(await c.get("/items"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(get)
            await until(lambda: len(upstream.gates) == 1)
            upstream.gates[0].set()  # 503: not acceptable, the hedge starts at once
            await until(lambda: len(upstream.gates) == 2)
            upstream.gates[1].set()
    assert (got[0].status_code, got[0].text) == (200, "attempt 1")
    # The 503 was closed, never returned; the winner once httpx had read it.
    assert upstream.closed == ["attempt 0", "attempt 1"]


async def test_when_every_attempt_is_retryable_the_first_response_goes_to_the_retry() -> None:
    clock = FakeClock()
    upstream = Upstream([503, 503, 200, 200])
    hedge = Hedge(2, delay=10.0, clock=clock)
    retry = Retry(2, backoff=backoff.immediate(), clock=clock)
    got: list[httpx.Response] = []
    async with client(upstream, hedge, retry=retry) as c:

        async def get() -> None:
            got.append(await c.get("/items"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(get)
            for index in range(3):
                await until(lambda index=index: len(upstream.gates) == index + 1)
                upstream.gates[index].set()
    assert got[0].status_code == 200
    assert got[0].text == "attempt 2"
    # The hedged 503s: the second closed by the hedge, the first by the
    # retry before its next attempt; the winner once httpx had read it.
    assert upstream.closed == ["attempt 1", "attempt 0", "attempt 2"]


async def test_a_post_without_an_idempotency_key_is_never_hedged() -> None:
    clock = FakeClock()
    upstream = Upstream([200])
    hedge = Hedge(2, delay=0.0, clock=clock)
    async with client(upstream, hedge) as c, anyio.create_task_group() as tg:
        tg.start_soon(c.post, "/orders")
        await until(lambda: len(upstream.gates) == 1)
        clock.advance(60)
        await anyio.lowlevel.checkpoint()
        assert len(upstream.gates) == 1
        upstream.gates[0].set()
    assert hedge.stats.calls == 0


async def test_a_post_with_an_idempotency_key_is_hedged() -> None:
    clock = FakeClock()
    upstream = Upstream([200, 200])
    hedge = Hedge(2, delay=0.0, clock=clock)
    async with client(upstream, hedge) as c, anyio.create_task_group() as tg:
        tg.start_soon(lambda: c.post("/orders", content=b"{}", headers={"Idempotency-Key": '"k1"'}))
        await until(lambda: len(upstream.gates) == 2)
        upstream.gates[0].set()
    assert hedge.stats.calls == 1
    assert upstream.cancelled == [1]


def test_the_sync_transport_refuses_to_hedge() -> None:
    with pytest.raises(TypeError, match="cannot hedge"):
        ResilientTransport(hedge=Hedge())
    with pytest.raises(TypeError, match="hedge must be a Hedge"):
        AsyncResilientTransport(hedge=0.1)  # type: ignore[arg-type]


async def test_under_uvicorn_a_stalled_request_is_hedged_and_abandoned() -> None:
    arrived: list[int] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        index = len(arrived)
        arrived.append(index)
        if index == 0:  # the first request stalls until its client goes away
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        body = b"second"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})

    hedge = Hedge(2, delay=0.05)
    with serve(app) as url:
        transport = AsyncResilientTransport(hedge=hedge)
        async with httpx.AsyncClient(transport=transport, base_url=url, timeout=5) as c:
            with anyio.fail_after(5):
                response = await c.get("/")
    assert response.text == "second"
    assert arrived == [0, 1]
    assert hedge.stats.cancelled == 1
