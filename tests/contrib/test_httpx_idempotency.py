"""idempotency_keys= on both transports: a key per logical POST/PATCH, kept
across its retries and hedges, never replacing the caller's."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
import respx

from resilience import Hedge, Retry, backoff
from resilience.contrib.httpx import AsyncResilientTransport, ResilientTransport
from resilience.testing import FakeClock

URL = "https://api.test/orders"


class Upstream:
    """Answers each request with the next scripted status or error, and
    remembers the Idempotency-Key each attempt carried."""

    def __init__(self, *script: int | Exception) -> None:
        self.script = list(script)
        self.keys: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.keys.append(request.headers.get("idempotency-key"))
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        return httpx.Response(step)


def retry(clock: FakeClock) -> Retry:
    return Retry(3, backoff=backoff.fixed(1.0), clock=clock)


def generated(key: str | None) -> uuid.UUID:
    """The UUID inside a generated key, which must be an sf-string."""
    assert key is not None
    assert key[0] == key[-1] == '"', key
    value = uuid.UUID(key[1:-1])
    assert value.version == 4
    return value


def async_client(upstream: Callable[[httpx.Request], Any], **options: Any) -> httpx.AsyncClient:
    transport = AsyncResilientTransport(httpx.MockTransport(upstream), **options)
    return httpx.AsyncClient(transport=transport)


def sync_client(upstream: Callable[[httpx.Request], Any], **options: Any) -> httpx.Client:
    return httpx.Client(transport=ResilientTransport(httpx.MockTransport(upstream), **options))


async def test_posts_and_patches_get_a_key_and_other_methods_do_not() -> None:
    upstream = Upstream(200)
    async with async_client(upstream, idempotency_keys=True) as client:
        for method in ("POST", "PATCH", "GET", "PUT", "DELETE", "HEAD", "OPTIONS"):
            await client.request(method, URL)
    post, patch, *others = upstream.keys
    assert generated(post) != generated(patch)
    assert others == [None] * 5


def test_the_sync_transport_keys_posts_and_patches_only() -> None:
    upstream = Upstream(200)
    with sync_client(upstream, idempotency_keys=True) as client:
        for method in ("POST", "PATCH", "GET", "PUT"):
            client.request(method, URL)
    post, patch, get, put = upstream.keys
    assert generated(post) != generated(patch)
    assert (get, put) == (None, None)


async def test_one_key_across_the_retries_of_a_request_and_a_new_one_for_the_next() -> None:
    upstream = Upstream(503, 502, 200, 201)
    async with async_client(upstream, retry=retry(FakeClock()), idempotency_keys=True) as client:
        first = await client.post(URL, json={"amount": 1})
        second = await client.post(URL, json={"amount": 1})
    assert (first.status_code, second.status_code) == (200, 201)
    assert len(upstream.keys) == 4
    assert len(set(upstream.keys[:3])) == 1
    assert generated(upstream.keys[0]) != generated(upstream.keys[3])
    # What was sent is on the response, for logs and reconciliation.
    assert first.request.headers["idempotency-key"] == upstream.keys[0]


def test_the_sync_transport_keeps_the_key_across_retries() -> None:
    upstream = Upstream(httpx.ReadError("reset"), 503, 200)
    with sync_client(upstream, retry=retry(FakeClock()), idempotency_keys=True) as client:
        assert client.patch(URL, content=b"x").status_code == 200
    assert len(upstream.keys) == 3
    assert len(set(upstream.keys)) == 1
    generated(upstream.keys[0])


async def test_a_generated_key_makes_a_post_retryable_as_the_callers_own_does() -> None:
    # A read error after sending is retried only for idempotent requests.
    script = (httpx.ReadError("reset"), 503, 200)
    keyed, plain = Upstream(*script), Upstream(*script)
    async with async_client(keyed, retry=retry(FakeClock()), idempotency_keys=True) as client:
        assert (await client.post(URL, content=b"x")).status_code == 200
    async with async_client(plain, retry=retry(FakeClock())) as client:
        with pytest.raises(httpx.ReadError):
            await client.post(URL, content=b"x")
    assert len(keyed.keys) == 3
    assert plain.keys == [None]


async def test_a_callers_key_is_never_replaced() -> None:
    upstream = Upstream(503, 200)
    async with async_client(upstream, retry=retry(FakeClock()), idempotency_keys=True) as client:
        await client.post(URL, headers={"Idempotency-Key": '"mine"'})
        await client.patch(URL, headers={"idempotency-key": "bare-token"})
    assert upstream.keys == ['"mine"', '"mine"', "bare-token"]


def test_the_sync_transport_never_replaces_a_callers_key() -> None:
    upstream = Upstream(200)
    with sync_client(upstream, idempotency_keys=True) as client:
        client.post(URL, headers={"Idempotency-Key": '"mine"'})
    assert upstream.keys == ['"mine"']


async def test_off_by_default_no_key_is_added_and_a_post_is_not_retried() -> None:
    upstream = Upstream(503, 200)
    async with async_client(upstream, retry=retry(FakeClock())) as client:
        assert (await client.post(URL)).status_code == 503
    with sync_client(upstream, retry=retry(FakeClock())) as sync:
        sync.post(URL)
    assert upstream.keys == [None, None]


async def test_a_post_without_a_retry_still_gets_a_key() -> None:
    upstream = Upstream(200)
    async with async_client(upstream, idempotency_keys=True) as client:
        await client.post(URL)
    generated(upstream.keys[0])


async def test_resending_the_same_request_object_is_a_retry_of_it() -> None:
    upstream = Upstream(200)
    async with async_client(upstream, idempotency_keys=True) as client:
        request = client.build_request("POST", URL, content=b"x")
        await client.send(request)
        await client.send(request)
    assert upstream.keys[0] == upstream.keys[1]


async def test_hedged_attempts_share_the_key() -> None:
    clock = FakeClock()
    gates: list[anyio.Event] = []
    keys: list[str | None] = []

    async def upstream(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers.get("idempotency-key"))
        gate = anyio.Event()
        gates.append(gate)
        await gate.wait()
        return httpx.Response(200)

    hedge = Hedge(2, delay=0.0, clock=clock)
    async with (
        async_client(upstream, hedge=hedge, idempotency_keys=True) as client,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(client.post, URL)
        with anyio.fail_after(5):
            while len(gates) < 2:
                await anyio.lowlevel.checkpoint()
        gates[0].set()
    assert hedge.stats.calls == 1
    assert keys[0] == keys[1]
    generated(keys[0])


def test_respx_sees_the_generated_key_on_every_attempt() -> None:
    clock = FakeClock()
    with respx.mock(assert_all_called=True) as router:
        route = router.post(URL).mock(side_effect=[httpx.Response(503), httpx.Response(201)])
        transport = ResilientTransport(
            httpx.HTTPTransport(), retry=retry(clock), idempotency_keys=True
        )
        with httpx.Client(transport=transport) as client:
            assert client.post(URL, json={"a": 1}).status_code == 201
    sent = [call.request.headers["idempotency-key"] for call in route.calls]
    assert len(sent) == 2
    assert sent[0] == sent[1]
    generated(sent[0])


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_idempotency_keys_must_be_a_bool(bad: object) -> None:
    with pytest.raises(TypeError, match=r"idempotency_keys must be a bool, got"):
        AsyncResilientTransport(httpx.MockTransport(Upstream(200)), idempotency_keys=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"idempotency_keys must be a bool, got"):
        ResilientTransport(httpx.MockTransport(Upstream(200)), idempotency_keys=bad)  # type: ignore[arg-type]
