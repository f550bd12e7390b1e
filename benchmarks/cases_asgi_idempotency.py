"""IdempotencyMiddleware around the bare ASGI app of :mod:`benchmarks.cases_asgi`.

Every row is one whole request, over the bare app (``asgi.bare``: it reads
the request, awaits ``f()`` and sends a start and a body message), which
does the same work whatever the method or headers:

- ``asgi.idempotency.nokey``: a POST without an ``Idempotency-Key``, which
  passes through (the issue's target: at most 2k instructions over the app);
- ``asgi.idempotency.get``: a GET, which is not a keyed method;
- ``asgi.idempotency.replay``: a POST whose key was answered before: the
  stored response is replayed from the in-memory store, the app not run;
- ``asgi.idempotency.run``: a POST with a new key each time (a counter
  written into a copy of the scope's headers, a few hundred instructions of
  the row): claimed, run under its lease (a task group with the renewer),
  the response stored. The store holds 20,000 keys, more than the
  instruction counter's runs send, so no row pays for evictions there (the
  wall-clock runner's longer batches do: a full store's steady state).

Each setup sends one request and fails the case unless the answer was the
expected one (passed through, replayed, or run and stored).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from .cases import Case
from .cases_asgi import _BODY, _REQUEST, _SCOPE, _START, BARE, _receive, _send, app

__all__ = ["cases"]

GROUP = "ASGI IdempotencyMiddleware, one request"

Target = Callable[[], Any]

_POST = {**_SCOPE, "method": "POST", "path": "/orders", "raw_path": b"/orders"}
_KEYED = {**_POST, "headers": [*_SCOPE["headers"], (b"idempotency-key", b'"bench-1"')]}


class NotIdempotent(Exception):
    """A row's setup request was not answered as the row says."""


def _middleware() -> Any:
    from resilience.contrib.asgi import IdempotencyMiddleware, MemoryIdempotencyStore

    return IdempotencyMiddleware(app, store=MemoryIdempotencyStore(max_keys=20_000))


async def _answer(middleware: Any, scope: dict[str, Any]) -> dict[bytes, bytes]:
    sent: list[dict[str, Any]] = []

    async def record(message: dict[str, Any]) -> None:
        sent.append(message)

    await middleware(scope, _receive, record)
    if [m["type"] for m in sent] != ["http.response.start", "http.response.body"]:
        raise NotIdempotent(f"sent {sent!r}")
    return {bytes(k): bytes(v) for k, v in sent[0]["headers"]}


def _check(middleware: Any, scope: dict[str, Any], ran: int, replayed: int) -> None:
    """One request in setup, which must not suspend (it runs outside the loop)."""
    headers = _now(_answer(middleware, scope))
    stats = middleware.stats
    if (stats.ran, stats.replayed) != (ran, replayed):
        raise NotIdempotent(f"{stats!r}, expected ran={ran} replayed={replayed}")
    if (b"idempotent-replayed" in headers) != bool(replayed):
        raise NotIdempotent(f"answered with {headers!r}")


def passing(scope: dict[str, Any]) -> Callable[[], Target]:
    def setup() -> Target:
        middleware = _middleware()
        _check(middleware, scope, 0, 0)

        async def target() -> None:
            await middleware(scope, _receive, _send)

        return target

    return setup


def _now(coroutine: Any) -> Any:
    """The result of a coroutine that does not suspend (the memory store's)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()  # pragma: no cover - a broken row
    raise NotIdempotent("the store suspended")


def replay() -> Target:
    from resilience.contrib.asgi import IdempotencyRecord, Lease
    from resilience.contrib.asgi._idempotency_http import fingerprint, scoped_key

    middleware = _middleware()
    # The first request's outcome, stored as the middleware would have (it
    # ran under a task group, which a setup outside the loop cannot run).
    key, mark = scoped_key(None, b"bench-1"), fingerprint(_KEYED, _REQUEST["body"])
    lease = _now(middleware.store.claim(key, mark, 10.0))
    if not isinstance(lease, Lease):
        raise NotIdempotent(f"claimed {lease!r}")
    record = IdempotencyRecord(mark, _START["status"], tuple(_START["headers"]), _BODY["body"])
    if not _now(middleware.store.complete(key, lease.token, record, 86400.0)):
        raise NotIdempotent("not stored")
    _check(middleware, _KEYED, 0, 1)

    async def target() -> None:
        await middleware(_KEYED, _receive, _send)

    return target


def run() -> Target:
    middleware = _middleware()
    headers = _SCOPE["headers"]
    numbers = itertools.count()

    async def target() -> None:
        key = b'"run-%d"' % next(numbers)
        scope = {**_POST, "headers": [*headers, (b"idempotency-key", key)]}
        await middleware(scope, _receive, _send)

    return target


def cases() -> list[Case]:
    return [
        Case(
            GROUP,
            "resilience IdempotencyMiddleware, POST without a key",
            passing(_POST),
            baseline=BARE,
            ours=True,
            key="asgi.idempotency.nokey",
        ),
        Case(
            GROUP,
            "resilience IdempotencyMiddleware, GET",
            passing(_SCOPE),
            baseline=BARE,
            ours=True,
            key="asgi.idempotency.get",
        ),
        Case(
            GROUP,
            "resilience IdempotencyMiddleware, POST replayed from MemoryIdempotencyStore",
            replay,
            baseline=BARE,
            ours=True,
            key="asgi.idempotency.replay",
        ),
        Case(
            GROUP,
            "resilience IdempotencyMiddleware, POST with a new key (run, stored)",
            run,
            baseline=BARE,
            ours=True,
            key="asgi.idempotency.run",
        ),
    ]
