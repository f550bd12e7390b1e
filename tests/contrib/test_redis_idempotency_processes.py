"""IdempotencyMiddleware with a RedisIdempotencyStore in two uvicorn server
processes (tests/redis_idempotency_worker.py), and real httpx clients: a key
answered by one process is replayed by the other; a duplicate running in
one is refused (409) or waited for by the other; a process killed
mid-request frees its key; and our httpx transport, with generated keys and
retries through a load balancer over both, gets one execution however the
first attempt's answer was lost."""

from __future__ import annotations

import contextlib
import json
import select
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis

from resilience import Retry, backoff
from resilience.contrib.httpx import AsyncResilientTransport, ResilientTransport
from resilience.testing import FakeClock
from tests.redis_idempotency_worker import names
from tests.redis_servers import RedisServer

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0


@dataclass
class Worker:
    process: subprocess.Popen[str]
    url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        assert self.process.stdout is not None
        self.process.stdout.close()


@dataclass
class Fleet:
    redis: redis.Redis
    prefix: str
    a: Worker  # answers a duplicate in flight at once: 409
    b: Worker  # waits up to 5 s for it (wait=5)

    def runs(self, key: str) -> int:
        return int(self.redis.get(names(self.prefix, key)["runs"]) or 0)

    def started(self, key: str) -> int:
        return int(self.redis.llen(names(self.prefix, key)["started"]))

    def open_gate(self, key: str) -> None:
        gate = names(self.prefix, key)["gate"]
        self.redis.rpush(gate, "go")
        self.redis.expire(gate, 300)

    def store_entry(self) -> str:
        """The Redis key of the one idempotency entry this test made."""
        found = [
            name.decode()
            for name in self.redis.scan_iter(match="{" + self.prefix + ":idem:*")
            if not name.endswith(b":fence")
        ]
        assert len(found) == 1, found
        return found[0]


def spawn(redis_port: int, prefix: str, wait: float) -> Worker:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.redis_idempotency_worker",
            str(redis_port),
            prefix,
            str(wait),
        ],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    # Bounded: a worker that cannot start fails the test, never hangs it.
    ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT)
    line = process.stdout.readline() if ready else ""
    if not line.startswith("listening "):
        process.kill()
        process.wait(10)
        process.stdout.close()
        raise RuntimeError(f"the worker did not start: {line!r}")
    return Worker(process, f"http://127.0.0.1:{int(line.split()[1])}")


@contextlib.contextmanager
def running_fleet(server: RedisServer) -> Iterator[Fleet]:
    """Two worker processes sharing a fresh prefix; stopped, and their keys
    checked for an expiry and deleted, on exit."""
    port = server.address[1]
    prefix = f"t{uuid.uuid4().hex[:10]}"
    client = redis.Redis(port=port)
    workers: list[Worker] = []
    try:
        workers.append(spawn(port, prefix, 0.0))
        workers.append(spawn(port, prefix, 5.0))
        yield Fleet(client, prefix, *workers)
        # Every key the store and the workers wrote expires.
        for name in client.scan_iter(match=f"*{prefix}*"):
            assert client.pttl(name) > 0, name
    finally:
        for worker in workers:
            worker.stop()
        for name in client.scan_iter(match=f"*{prefix}*"):
            client.delete(name)
        client.close()


@pytest.fixture(scope="module")
def fleet(redis_server: RedisServer) -> Iterator[Fleet]:
    """One pair for the module: each test uses keys of its own."""
    with running_fleet(redis_server) as started:
        yield started


def key() -> str:
    return f'"{uuid.uuid4()}"'


async def until(predicate: Any) -> None:
    """Poll (never a fixed sleep) until ``predicate()``, 10 s at most."""
    with anyio.fail_after(10):
        # Another process's state, in Redis: nothing to wait on but a poll.
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.005)


async def test_a_key_answered_by_one_process_is_replayed_by_the_other(fleet: Fleet) -> None:
    k = key()
    order = {"sku": "lamp", "qty": 1}
    async with httpx.AsyncClient() as client:
        first = await client.post(
            f"{fleet.a.url}/orders", json=order, headers={"Idempotency-Key": k}
        )
        second = await client.post(
            f"{fleet.b.url}/orders", json=order, headers={"Idempotency-Key": k}
        )
        changed = await client.post(
            f"{fleet.b.url}/orders", json={"sku": "lamp", "qty": 2}, headers={"Idempotency-Key": k}
        )
    assert first.status_code == second.status_code == 201
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()
    assert first.json()["pid"] == fleet.a.process.pid
    assert changed.status_code == 422
    assert changed.headers["content-type"] == "application/problem+json"
    assert fleet.runs(k) == 1


async def test_a_duplicate_running_in_one_process_is_409_in_the_other(fleet: Fleet) -> None:
    k = key()
    async with httpx.AsyncClient(timeout=30) as client, anyio.create_task_group() as tg:
        got: dict[str, httpx.Response] = {}

        async def first() -> None:
            got["first"] = await client.post(
                f"{fleet.b.url}/orders/slow", json={"sku": "lamp"}, headers={"Idempotency-Key": k}
            )

        tg.start_soon(first)
        await until(lambda: fleet.started(k) == 1)  # running in process B
        duplicate = await client.post(
            f"{fleet.a.url}/orders/slow", json={"sku": "lamp"}, headers={"Idempotency-Key": k}
        )
        changed = await client.post(
            f"{fleet.a.url}/orders/slow", json={"sku": "desk"}, headers={"Idempotency-Key": k}
        )
        fleet.open_gate(k)
    assert duplicate.status_code == 409
    assert int(duplicate.headers["retry-after"]) >= 1
    assert changed.status_code == 422  # also while the first runs
    assert got["first"].status_code == 201
    async with httpx.AsyncClient() as client:
        after = await client.post(
            f"{fleet.a.url}/orders/slow", json={"sku": "lamp"}, headers={"Idempotency-Key": k}
        )
    assert after.headers["idempotent-replayed"] == "true"
    assert after.json() == got["first"].json()
    assert fleet.runs(k) == 1


def evalsha_calls(fleet: Fleet) -> int:
    stats = fleet.redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_a_duplicate_told_to_wait_gets_the_response_of_the_other_process(
    fleet: Fleet,
) -> None:
    k = key()
    async with httpx.AsyncClient(timeout=30) as client, anyio.create_task_group() as tg:
        got: dict[str, httpx.Response] = {}

        async def post(name: str, url: str) -> None:
            got[name] = await client.post(
                f"{url}/orders/slow", json={"sku": "lamp"}, headers={"Idempotency-Key": k}
            )

        tg.start_soon(post, "first", fleet.a.url)
        await until(lambda: fleet.started(k) == 1)  # running in process A
        asked = evalsha_calls(fleet)
        tg.start_soon(post, "waiting", fleet.b.url)
        # B asked the store more than once: it found the key in flight and polls.
        await until(lambda: evalsha_calls(fleet) >= asked + 2)
        assert "waiting" not in got
        fleet.open_gate(k)
    assert got["first"].status_code == got["waiting"].status_code == 201
    assert got["waiting"].headers["idempotent-replayed"] == "true"
    assert got["waiting"].json() == got["first"].json()
    assert fleet.runs(k) == 1


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # about the servers, not the client
async def test_a_process_killed_mid_request_frees_its_key_once_its_lease_runs_out(
    redis_server: RedisServer,
) -> None:
    k = key()
    order = {"sku": "lamp"}
    with running_fleet(redis_server) as own:  # one of these processes dies
        async with httpx.AsyncClient(timeout=30) as client, anyio.create_task_group() as tg:

            async def doomed() -> None:
                with pytest.raises(httpx.TransportError):
                    await client.post(
                        f"{own.b.url}/orders/slow", json=order, headers={"Idempotency-Key": k}
                    )

            tg.start_soon(doomed)
            await until(lambda: own.started(k) == 1)
            own.b.process.kill()  # mid-request, holding the key's lease
            own.b.process.wait(10)
        async with httpx.AsyncClient() as client:
            url = f"{own.a.url}/orders/slow"
            held = await client.post(url, json=order, headers={"Idempotency-Key": k})
            assert held.status_code == 409  # the dead holder's lease is still live
            # Its lease runs out (on Redis's clock: moved there, not waited for).
            own.redis.hset(own.store_entry(), "dl", "0")
            own.open_gate(k)
            retried = await client.post(url, json=order, headers={"Idempotency-Key": k})
        assert retried.status_code == 201
        assert "idempotent-replayed" not in retried.headers
        assert retried.json()["pid"] == own.a.process.pid
        assert own.runs(k) == 1  # the killed run never got as far as counting


class Balancer(httpx.AsyncBaseTransport, httpx.BaseTransport):
    """Sends attempt n to the n-th server, round robin (a load balancer), and
    can lose the first response after it arrived (the connection dropped)."""

    def __init__(self, urls: list[str], *, lose_first: bool = False) -> None:
        self.urls = [httpx.URL(url) for url in urls]
        self.lose_first = lose_first
        self.sent: list[tuple[str, str | None]] = []
        self.replies: list[int] = []
        self.inner = httpx.AsyncHTTPTransport()
        self.inner_sync = httpx.HTTPTransport()

    def _route(self, request: httpx.Request) -> httpx.Request:
        target = self.urls[len(self.sent) % len(self.urls)]
        self.sent.append((str(target), request.headers.get("idempotency-key")))
        request.url = request.url.copy_with(host=target.host, port=target.port)
        return request

    def _lost(self) -> bool:
        return self.lose_first and len(self.replies) == 1

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(self._route(request))
        await response.aread()
        self.replies.append(response.status_code)
        if self._lost():
            raise httpx.ReadError("connection reset before the response reached us")
        return response

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner_sync.handle_request(self._route(request))
        response.read()
        self.replies.append(response.status_code)
        if self._lost():
            raise httpx.ReadError("connection reset before the response reached us")
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    def close(self) -> None:
        self.inner_sync.close()


def retry() -> Retry:
    return Retry(3, backoff=backoff.fixed(1.0), clock=FakeClock())


@pytest.mark.parametrize(
    ("path", "lose_first", "first_reply", "replayed"),
    [
        ("/lost/orders", False, 502, True),  # the gateway lost the answer: replayed
        ("/orders", True, 201, True),  # lost on the way back: replayed
        ("/shed/orders", False, 503, False),  # shed before it ran: runs once, on the retry
    ],
    ids=["502-after-the-work", "response-lost-in-transit", "503-before-the-work"],
)
async def test_our_transport_retries_a_post_and_it_runs_once(
    fleet: Fleet, path: str, lose_first: bool, first_reply: int, replayed: bool
) -> None:
    balancer = Balancer([fleet.a.url, fleet.b.url], lose_first=lose_first)
    transport = AsyncResilientTransport(balancer, retry=retry(), idempotency_keys=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://orders.internal") as client:
        response = await client.post(path, json={"sku": "lamp"})
    assert response.status_code == 201
    assert balancer.replies == [first_reply, 201]
    (first, k1), (second, k2) = balancer.sent
    assert (first, second) == (fleet.a.url, fleet.b.url)  # two processes
    assert k1 == k2 == response.request.headers["idempotency-key"]
    assert ("idempotent-replayed" in response.headers) is replayed
    assert fleet.runs(k1) == 1


def test_the_sync_transport_retries_a_lost_response_into_a_replay(fleet: Fleet) -> None:
    balancer = Balancer([fleet.a.url, fleet.b.url], lose_first=True)
    transport = ResilientTransport(balancer, retry=retry(), idempotency_keys=True)
    with httpx.Client(transport=transport, base_url="http://orders.internal") as client:
        response = client.post("/orders", content=json.dumps({"sku": "desk"}))
    assert response.status_code == 201
    assert response.headers["idempotent-replayed"] == "true"
    assert fleet.runs(response.request.headers["idempotency-key"]) == 1
