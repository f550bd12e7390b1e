"""IdempotencyMiddleware in process (httpx's ASGITransport, raw ASGI calls),
on asyncio and trio: the key's syntax, what is stored and what is not, the
store failing, the lease's renewal, cancellation, and bad settings."""

from __future__ import annotations

import functools
from typing import Any

import anyio
import httpx
import pytest

from resilience.contrib.asgi import (
    Claim,
    IdempotencyLeaseLost,
    IdempotencyLeaseTakenOver,
    IdempotencyMiddleware,
    IdempotencyRecord,
    IdempotencyStoreFailed,
    InFlight,
    Lease,
    MemoryIdempotencyStore,
)
from resilience.contrib.asgi._idempotency_http import fingerprint, scoped_key
from resilience.events import Event
from resilience.testing import FakeClock
from tests.contrib.idempotency_app import Orders, Receive, Scope, Send


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test")


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


async def twice(middleware: IdempotencyMiddleware, **request: Any) -> tuple[httpx.Response, ...]:
    async with client(middleware) as c:
        return (await c.post("/orders", **request), await c.post("/orders", **request))


async def test_other_methods_unkeyed_requests_and_other_scopes_pass_through() -> None:
    orders = Orders()
    middleware = IdempotencyMiddleware(orders)
    async with client(middleware) as c:
        for _ in range(2):
            assert (await c.post("/orders", content=b"a")).status_code == 201
            assert (await c.put("/orders", content=b"a", headers=key('"k"'))).status_code == 201
    assert orders.runs == 4
    await middleware({"type": "lifespan"}, _never, _never)  # type: ignore[arg-type]
    assert middleware.stats.ran == 0


async def _never(*_: object) -> Any:
    raise AssertionError("not called")


async def test_a_required_key_that_is_missing_is_400() -> None:
    orders = Orders()
    async with client(IdempotencyMiddleware(orders, required=True)) as c:
        missing = await c.post("/orders", content=b"a")
        other = await c.get("/orders")
    assert missing.status_code == 400
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json() == {
        "type": "about:blank",
        "title": "Bad Request",
        "status": 400,
        "code": "idempotency_key_required",
        "detail": missing.json()["detail"],
    }
    assert "Idempotency-Key" in missing.json()["detail"]
    assert other.status_code == 201
    assert orders.runs == 1


@pytest.mark.parametrize(
    ("value", "same_as"),
    [
        ('"abc"', b"abc"),
        ("abc", b"abc"),
        (' "abc" ', b"abc"),
        ('"a\\"b\\\\c"', b'a"b\\c'),
        ("8e03978e-40d5-43e8-bc93-6894a57f9324", None),
        ('"' + "x" * 255 + '"', None),
    ],
)
async def test_keys_are_sf_strings_or_bare_values(value: str, same_as: bytes | None) -> None:
    orders = Orders()
    middleware = IdempotencyMiddleware(orders)
    first, again = await twice(middleware, content=b"a", headers=key(value))
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    if same_as is not None:  # the quotes are not part of the key
        quoted = '"' + same_as.decode().replace("\\", "\\\\").replace('"', '\\"') + '"'
        async with client(middleware) as c:
            other = await c.post("/orders", content=b"a", headers=key(quoted))
        assert other.headers["idempotent-replayed"] == "true"
    assert orders.runs == 1


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ('""', "malformed"),
        ('"', "malformed"),
        ('"abc', "malformed"),
        ('"ab"c"', "malformed"),
        ('"a\\b"', "malformed"),
        ("a b", "malformed"),
        ('"' + "x" * 256 + '"', "longer than 255"),
        ("x" * 256, "longer than 255"),
    ],
)
async def test_malformed_or_long_keys_are_400_and_never_run(value: str, detail: str) -> None:
    orders = Orders()
    async with client(IdempotencyMiddleware(orders)) as c:
        answer = await c.post("/orders", content=b"a", headers=key(value))
    assert answer.status_code == 400
    assert answer.json()["code"] == "idempotency_key_invalid"
    assert detail in answer.json()["detail"]
    assert orders.runs == 0


async def test_two_key_headers_are_400() -> None:
    orders = Orders()
    headers = [("Idempotency-Key", '"a"'), ("Idempotency-Key", '"b"')]
    async with client(IdempotencyMiddleware(orders)) as c:
        answer = await c.post("/orders", content=b"a", headers=headers)
    assert answer.status_code == 400
    assert "more than one" in answer.json()["detail"]
    assert orders.runs == 0


@pytest.mark.parametrize(
    ("status", "stored"),
    [
        *[(status, True) for status in (200, 201, 204, 404, 409, 422)],
        *[(status, False) for status in (302, 408, 429, 500, 503)],
    ],
)
async def test_which_statuses_are_stored(status: int, stored: bool) -> None:
    orders = Orders()
    orders.status = status
    middleware = IdempotencyMiddleware(orders)
    _, again = await twice(middleware, content=b"a", headers=key('"k"'))
    assert again.status_code == status
    assert ("idempotent-replayed" in again.headers) is stored
    assert orders.runs == (1 if stored else 2)  # not stored: the key was freed at once


async def test_server_errors_and_cookies_are_stored_when_asked() -> None:
    orders = Orders()
    orders.status = 500
    _, again = await twice(
        IdempotencyMiddleware(orders, store_server_errors=True), content=b"a", headers=key("k")
    )
    assert again.status_code == 500
    assert again.headers["idempotent-replayed"] == "true"
    orders.status, orders.cookie = 201, True
    _, again = await twice(IdempotencyMiddleware(orders), content=b"a", headers=key("k"))
    assert "idempotent-replayed" not in again.headers
    _, again = await twice(
        IdempotencyMiddleware(orders, store_cookies=True), content=b"a", headers=key("k")
    )
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["set-cookie"] == "session=abc"
    assert orders.runs == 4


async def test_a_streamed_response_is_stored_whole() -> None:
    orders = Orders()
    orders.size, orders.chunks = 3000, 7
    first, again = await twice(IdempotencyMiddleware(orders), content=b"a", headers=key("k"))
    assert again.content == first.content == b"x" * 3000
    assert again.headers["idempotent-replayed"] == "true"
    assert orders.runs == 1


class DownStore(MemoryIdempotencyStore):
    """A store whose chosen operations raise, as a store that is down does."""

    __slots__ = ("down",)

    def __init__(self, *down: str) -> None:
        super().__init__()
        self.down = set(down)

    def _check(self, operation: str) -> None:
        if operation in self.down:
            raise ConnectionError(f"{operation}: the store is down")

    async def claim(self, key: str, fingerprint: str, lease: float) -> Claim:
        self._check("claim")
        return await super().claim(key, fingerprint, lease)

    async def renew(self, key: str, token: int, lease: float) -> bool:
        self._check("renew")
        return await super().renew(key, token, lease)

    async def complete(
        self, key: str, token: int, record: IdempotencyRecord, expiry: float
    ) -> bool:
        self._check("complete")
        return await super().complete(key, token, record, expiry)


async def test_a_store_that_is_down_fails_closed_with_503(caplog: pytest.LogCaptureFixture) -> None:
    orders = Orders()
    middleware = IdempotencyMiddleware(orders, store=DownStore("claim"), retry_after=3)
    events: list[Event] = []
    middleware.add_listener(events.append)
    async with client(middleware) as c:
        answer = await c.post("/orders", content=b"a", headers=key("k"))
        unkeyed = await c.post("/orders", content=b"a")
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "3"
    assert answer.json()["code"] == "idempotency_unavailable"
    assert unkeyed.status_code == 201  # requests without a key never touch the store
    assert orders.runs == 1
    (event,) = events
    assert isinstance(event, IdempotencyStoreFailed)
    assert (event.name, event.operation, event.failed_open) == ("idempotency", "claim", False)
    assert isinstance(event.exception, ConnectionError)
    assert (middleware.stats.store_errors, middleware.stats.unavailable) == (1, 1)
    assert "idempotency store claim failed" in caplog.text


async def test_a_store_that_is_down_fails_open_when_asked() -> None:
    orders = Orders()
    middleware = IdempotencyMiddleware(orders, store=DownStore("claim"), fail_open=True)
    events: list[Event] = []
    middleware.add_listener(events.append)
    first, again = await twice(middleware, content=b"a", headers=key("k"))
    assert first.status_code == again.status_code == 201
    assert orders.runs == 2
    assert [type(e) for e in events] == [IdempotencyStoreFailed] * 2
    assert all(isinstance(e, IdempotencyStoreFailed) and e.failed_open for e in events)
    assert middleware.stats.unprotected == 2


async def test_a_store_failing_to_complete_still_sends_the_response() -> None:
    orders = Orders()
    middleware = IdempotencyMiddleware(orders, store=DownStore("complete"))
    first, _ = await twice(middleware, content=b"a", headers=key("k"))
    assert first.status_code == 201
    assert middleware.stats.store_errors == 1
    assert middleware.stats.stored == 0


async def test_the_identity_scopes_keys_and_a_failing_one_is_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    orders = Orders()

    def tenant(scope: Scope) -> str | None:
        for name, value in scope["headers"]:
            if name == b"x-tenant":
                return str(value.decode())
        return None

    middleware = IdempotencyMiddleware(orders, identity=tenant)
    async with client(middleware) as c:
        one = await c.post("/orders", content=b"a", headers={"X-Tenant": "1", **key("k")})
        two = await c.post("/orders", content=b"a", headers={"X-Tenant": "2", **key("k")})
        one_again = await c.post("/orders", content=b"a", headers={"X-Tenant": "1", **key("k")})
    assert (one.json()["run"], two.json()["run"], one_again.json()["run"]) == (1, 2, 1)

    def broken(scope: Scope) -> str:
        raise LookupError("secret detail")

    for identity in (broken, lambda scope: 42):
        async with client(IdempotencyMiddleware(orders, identity=identity)) as c:  # type: ignore[arg-type]
            answer = await c.post("/orders", content=b"a", headers=key("k"))
        assert answer.status_code == 500
        assert "secret" not in answer.text
    assert "the identity function" in caplog.text
    assert orders.runs == 2


async def test_an_app_that_returns_without_answering_frees_the_key() -> None:
    calls = 0

    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal calls
        calls += 1

    store = MemoryIdempotencyStore()
    middleware = IdempotencyMiddleware(silent, store=store)
    messages: list[dict[str, Any]] = []
    for _ in range(2):
        await middleware(request_scope(), body_receive(b"a"), sent_to(messages))
    assert calls == 2
    assert messages == []
    assert len(store) == 0


def request_scope(headers: list[tuple[bytes, bytes]] | None = None) -> Scope:
    return {
        "type": "http",
        "method": "POST",
        "path": "/orders",
        "query_string": b"",
        "headers": [(b"idempotency-key", b'"k"')] if headers is None else headers,
    }


def body_receive(*chunks: bytes, disconnect: bool = False) -> Receive:
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    if disconnect:
        messages[-1:] = [{"type": "http.disconnect"}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        return {"type": "http.disconnect"}

    return receive


def sent_to(messages: list[dict[str, Any]]) -> Send:
    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    return send


async def test_the_body_arrives_whole_to_the_app_and_a_disconnect_runs_nothing() -> None:
    orders = Orders()
    store = MemoryIdempotencyStore()
    middleware = IdempotencyMiddleware(orders, store=store)
    messages: list[dict[str, Any]] = []
    await middleware(request_scope(), body_receive(b"ab", b"cd", b""), sent_to(messages))
    assert b'"body": "abcd"' in messages[-1]["body"]
    await middleware(
        request_scope([(b"idempotency-key", b"k2")]),
        body_receive(b"ab", b"cd", disconnect=True),
        sent_to(messages),
    )
    assert orders.runs == 1
    assert len(store) == 1


async def test_the_apps_exception_propagates_as_is_and_the_key_is_freed() -> None:
    orders = Orders()
    orders.fail = True
    store = MemoryIdempotencyStore()
    middleware = IdempotencyMiddleware(orders, store=store)
    with pytest.raises(RuntimeError, match="the handler crashed"):  # not an ExceptionGroup
        await middleware(request_scope(), body_receive(b"a"), sent_to([]))
    assert len(store) == 0


async def test_a_cancelled_request_frees_its_key() -> None:
    orders = Orders()
    gate = orders.gate()
    store = MemoryIdempotencyStore()
    middleware = IdempotencyMiddleware(orders, store=store)
    async with anyio.create_task_group() as tg:
        tg.start_soon(middleware, request_scope(), body_receive(b"a"), sent_to([]))
        await gate.reached()
        assert len(store) == 1
        tg.cancel_scope.cancel()  # a server timeout, a client gone
    gate.open()
    assert len(store) == 0


class RenewalStore(MemoryIdempotencyStore):
    """Tells the test each renewal, and what the store answered."""

    __slots__ = ("renewal", "renewed")

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.renewed: list[bool] = []
        self.renewal = anyio.Event()

    async def renew(self, key: str, token: int, lease: float) -> bool:
        kept = await super().renew(key, token, lease)
        self.renewed.append(kept)
        self.renewal.set()
        return kept


async def advance_and_renew(clock: FakeClock, seconds: float, store: RenewalStore) -> None:
    """Move the fake clock, then wait for a renewal after that (the renewer
    runs on real time, every third of the lease)."""
    store.renewal = anyio.Event()
    clock.advance(seconds)
    with anyio.fail_after(10):
        await store.renewal.wait()


async def test_a_running_request_renews_its_lease() -> None:
    clock = FakeClock()
    store = RenewalStore(clock)
    orders = Orders()
    gate = orders.gate()
    # Renewed every 10 ms (real time); the lease runs out only on the fake clock.
    middleware = IdempotencyMiddleware(orders, store=store, lease=0.03)
    async with client(middleware) as c, anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(c.post, "/orders", content=b"a", headers=key("k")))
        await gate.reached()
        for _ in range(3):
            await advance_and_renew(clock, 0.02, store)  # within the lease since the last
        # 60 ms after the claim, twice the lease: still held, thanks to the renewals.
        busy = await c.post("/orders", content=b"a", headers=key("k"))
        gate.open()
    assert store.renewed[-3:] == [True, True, True]
    assert all(store.renewed)
    assert busy.status_code == 409
    assert middleware.stats.taken_over == 0


async def test_a_lease_lost_while_running_is_told_and_not_stored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    store = RenewalStore(clock)
    orders = Orders()
    gate = orders.gate()
    middleware = IdempotencyMiddleware(orders, store=store, lease=0.03)
    events: list[Event] = []
    middleware.add_listener(events.append)
    async with client(middleware) as c, anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(c.post, "/orders", content=b"a", headers=key("k")))
        await gate.reached()
        # Stalled past its lease (a long pause, a partition from the store).
        await advance_and_renew(clock, 1, store)
        gate.open()
    assert store.renewed[-1] is False
    assert [type(e) for e in events] == [IdempotencyLeaseLost]
    assert (middleware.stats.fenced, middleware.stats.stored) == (1, 0)
    assert "lease lost" in caplog.text
    assert isinstance(await store.claim(next(iter(store._entries)), "f", 1), Lease)


@pytest.mark.parametrize(
    ("options", "error", "text"),
    [
        ({"app": None}, TypeError, "app must be an ASGI application"),
        ({"store": object()}, TypeError, "store must be an IdempotencyStore"),
        ({"methods": "POST"}, TypeError, "methods must be a collection"),
        ({"methods": ()}, ValueError, "methods must be at least one HTTP method, got ()"),
        ({"methods": ("post",)}, ValueError, "methods must be upper-case"),
        ({"identity": "auth"}, TypeError, "identity must be a callable"),
        ({"required": 1}, TypeError, "required must be a bool, got 1"),
        ({"lease": 0}, ValueError, "lease must be a finite number > 0, got 0"),
        ({"lease": "10"}, TypeError, "lease must be a number of seconds, got '10'"),
        ({"expiry": -1}, ValueError, "expiry must be a finite number > 0, got -1"),
        ({"max_body": -1}, ValueError, "max_body must be >= 0, got -1"),
        ({"wait": -1}, ValueError, "wait must be a finite number >= 0, got -1"),
        ({"wait": True}, TypeError, "wait must be a number of seconds, got True"),
        ({"store_cookies": "yes"}, TypeError, "store_cookies must be a bool"),
        ({"fail_open": None}, TypeError, "fail_open must be a bool, got None"),
        ({"retry_after": -1}, ValueError, "retry_after must be >= 0, got -1"),
        ({"name": ""}, ValueError, "name must be a non-empty string, got ''"),
        ({"name": 3}, TypeError, "name must be a string, got 3"),
    ],
)
def test_bad_settings_name_the_parameter_and_the_value(
    options: dict[str, Any], error: type[Exception], text: str
) -> None:
    app = options.pop("app", Orders())
    with pytest.raises(error, match=text.replace("(", r"\(").replace(")", r"\)")):
        IdempotencyMiddleware(app, **options)


async def test_the_counters_reach_prometheus() -> None:
    from prometheus_client import CollectorRegistry
    from prometheus_client.parser import text_string_to_metric_families

    from resilience.contrib.prometheus import instrument

    orders = Orders()
    middleware = IdempotencyMiddleware(orders, name="orders-metrics")
    async with client(middleware) as c:
        for body in (b"a", b"a", b"b"):
            await c.post("/orders", content=body, headers=key("k"))
        await c.post("/orders", content=b"a", headers=key('"'))
    registry = CollectorRegistry()
    with instrument(registry):
        from prometheus_client import generate_latest

        text = generate_latest(registry).decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("name") == "orders-metrics"
    }
    requests = "resilience_idempotency_requests_total"
    for outcome, count in (("ran", 1), ("replayed", 1), ("mismatch", 1), ("invalid", 1)):
        assert samples[requests, (("name", "orders-metrics"), ("outcome", outcome))] == count
    assert samples["resilience_idempotency_stored_total", (("name", "orders-metrics"),)] == 1
    assert samples["resilience_idempotency_fenced_total", (("name", "orders-metrics"),)] == 0


def test_servers_see_an_asgi3_app() -> None:
    # __call__ is a plain function returning an awaitable (no frame of ours
    # for requests without a key); servers must still take it for ASGI 3.
    import asyncio

    assert asyncio.iscoroutinefunction(IdempotencyMiddleware(Orders()).__call__)


async def test_a_response_with_trailers_is_sent_but_not_stored() -> None:
    calls = 0

    async def with_trailers(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal calls
        calls += 1
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b"ok"})
        await send({"type": "http.response.trailers", "headers": [(b"x-sum", b"1")]})

    store = MemoryIdempotencyStore()
    middleware = IdempotencyMiddleware(with_trailers, store=store)
    for _ in range(2):
        messages: list[dict[str, Any]] = []
        await middleware(request_scope(), body_receive(b"a"), sent_to(messages))
        assert [m["type"] for m in messages][-1] == "http.response.trailers"
    assert calls == 2
    assert len(store) == 0


class BusyStore(MemoryIdempotencyStore):
    """Tells the test when a claim found the key in flight."""

    __slots__ = ("busy",)

    def __init__(self, clock: FakeClock | None = None) -> None:
        super().__init__(clock=clock)
        self.busy = anyio.Event()

    async def claim(self, key: str, fingerprint: str, lease: float) -> Claim:
        found = await super().claim(key, fingerprint, lease)
        if isinstance(found, InFlight):
            self.busy.set()
        return found


async def test_a_waiting_duplicate_runs_itself_when_the_first_is_not_stored() -> None:
    orders = Orders()
    orders.status = 500
    gate = orders.gate()
    store = BusyStore()
    middleware = IdempotencyMiddleware(orders, store=store, wait=30.0)
    async with client(middleware) as c, anyio.create_task_group() as tg:
        answers: list[httpx.Response] = []

        async def post() -> None:
            answers.append(await c.post("/orders", content=b"a", headers=key("k")))

        tg.start_soon(post)
        await gate.reached()
        tg.start_soon(post)
        await store.busy.wait()  # the duplicate found it running, and waits
        gate.open()
    assert [a.status_code for a in answers] == [500, 500]
    assert orders.runs == 2  # the 500 was not stored: the duplicate ran it again
    assert middleware.stats.conflicts == 0


async def test_a_takeover_is_told() -> None:
    clock = FakeClock()
    store = MemoryIdempotencyStore(clock=clock)
    middleware = IdempotencyMiddleware(Orders(), store=store, lease=5)
    events: list[Event] = []
    middleware.add_listener(events.append)
    # A process that claimed the key for this request, then died.
    scope = {"method": "POST", "path": "/orders", "query_string": b""}
    dead = await store.claim(scoped_key(None, b"k"), fingerprint(scope, b"a"), 5)
    assert isinstance(dead, Lease)
    clock.advance(5)
    async with client(middleware) as c:
        answer = await c.post("/orders", content=b"a", headers=key("k"))
    assert answer.status_code == 201
    assert [type(e) for e in events] == [IdempotencyLeaseTakenOver]
    assert middleware.stats.taken_over == 1
    middleware.remove_listener(events.append)


async def test_in_a_starlette_middleware_stack() -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from resilience.contrib.asgi import ResilienceMiddleware

    created: list[object] = []

    async def create(request: Request) -> Response:
        created.append(await request.json())
        return JSONResponse({"id": len(created)}, status_code=201)

    app = Starlette(
        routes=[Route("/orders", create, methods=["POST"])],
        middleware=[
            Middleware(ResilienceMiddleware, max_concurrent=8, timeout=5.0),
            Middleware(IdempotencyMiddleware, name="starlette-orders"),
        ],
    )
    async with client(app) as c:
        first = await c.post("/orders", json={"sku": 1}, headers=key('"s-1"'))
        again = await c.post("/orders", json={"sku": 1}, headers=key('"s-1"'))
        other = await c.post("/orders", json={"sku": 2}, headers=key('"s-1"'))
    assert (first.status_code, again.status_code, other.status_code) == (201, 201, 422)
    assert again.json() == {"id": 1}
    assert again.headers["idempotent-replayed"] == "true"
    assert len(created) == 1
