"""ASGI middleware with a per-client rate limit, and slowapi on a Starlette app.

As in :mod:`benchmarks.cases_ratelimit`, every limit is 10^9 requests per
second with a burst of 10^9, so no request ever waits or is refused: the rows
time the admission (and the response fields) a limit adds to every request.
Each setup sends one request through the row's app with a recording ``send``
and fails the case unless it was answered 200 with the limit's response
fields (and, for ours, admitted by the limiter): a limit that did not run, or
refused, is not timed.

- ``asgi.middleware.ratelimit``: :func:`benchmarks.cases_asgi.full_middleware`'s
  configuration (every feature on) plus ``rate_limit=RateLimiter(1e9,
  burst=1e9)``, keyed by the client's IP address (the default), with the
  ``RateLimit-Policy`` / ``RateLimit`` fields on the response; over
  ``asgi.middleware``, the same middleware without the limit. The
  ``.noheaders`` row is the same with ``rate_limit_headers=False``.
- Starlette: one route answering a two-byte ``PlainTextResponse``, driven
  like the bare ASGI app (prepared scope, ``receive``, no-op ``send``; a
  fresh shallow copy of the scope per request, as a server gives, since
  Starlette and slowapi write into it). ``starlette.app`` is the app alone;
  ``starlette.slowapi`` adds slowapi's ``SlowAPIASGIMiddleware`` with
  ``Limiter(key_func=get_remote_address, default_limits=["1000000000/second"],
  headers_enabled=True)`` (its X-RateLimit-* fields), set up as its docs show
  (``app.state.limiter``, the 429 handler); ``starlette.ours.ratelimit`` adds
  ``ResilienceMiddleware(rate_limit=RateLimiter(1e9, burst=1e9))`` and
  nothing else. slowapi is a Starlette/FastAPI tool documented on asyncio,
  so its row is asyncio only; ours and the bare app also run on trio.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from .cases import ASYNCIO_ONLY, Case
from .cases_asgi import _SCOPE, _receive, _send, app
from .cases_baseline import f

__all__ = ["cases"]

GROUP = "ASGI middleware with a per-client rate limit, one request"
STARLETTE_GROUP = "Starlette app with a per-client rate limit, one request"
FULL = "resilience ResilienceMiddleware (all features)"
"""The label of ``asgi.middleware`` (benchmarks.cases_asgi): the baseline here."""
STARLETTE = "Starlette app, one route (PlainTextResponse)"

RATE = 10**9
"""Requests per second, and the burst: far above what a loop can send."""

Target = Callable[[], Any]


class NotLimited(Exception):
    """A row's setup request was not answered 200 with the limit's fields."""


def _run_now(coroutine: Coroutine[Any, Any, Any]) -> None:
    """Run ``coroutine`` to its end without a loop: it must not suspend."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise NotLimited("the request suspended: it would have waited")


def _answer(asgi: Any, scope: dict[str, Any]) -> tuple[int, dict[bytes, bytes]]:
    """One request through ``asgi``: the status and the header fields sent."""
    sent: list[dict[str, Any]] = []

    async def record(message: dict[str, Any]) -> None:
        sent.append(message)

    _run_now(asgi(dict(scope), _receive, record))
    starts = [m for m in sent if m["type"] == "http.response.start"]
    if len(starts) != 1:
        raise NotLimited(f"{len(starts)} response starts sent")
    headers = {bytes(k).lower(): bytes(v) for k, v in starts[0].get("headers", ())}
    return starts[0]["status"], headers


def _check(
    asgi: Any, scope: dict[str, Any], present: tuple[bytes, ...], absent: tuple[bytes, ...] = ()
) -> None:
    status, headers = _answer(asgi, scope)
    missing = [name for name in present if name not in headers]
    extra = [name for name in absent if name in headers]
    if status != 200 or missing or extra:
        raise NotLimited(f"status {status}, fields missing {missing}, unexpected {extra}")


def _limiter() -> Any:
    from resilience import RateLimiter

    return RateLimiter(RATE, burst=RATE)


def _admitted(limiter: Any, calls: int) -> None:
    stats = limiter.stats
    if stats.admitted != calls or stats.waited or stats.rejected:
        raise NotLimited(f"{limiter!r} in setup: {stats}")


# Ours, every feature on ---------------------------------------------------------


def _full_with_limit(headers: bool) -> tuple[Any, Any]:
    """``full_middleware()``'s configuration plus the rate limit."""
    from resilience import CircuitBreaker
    from resilience.contrib.asgi import ResilienceMiddleware

    limiter = _limiter()
    middleware = ResilienceMiddleware(
        app,
        max_concurrent=100,
        max_waiting=100,
        timeout=10.0,
        breaker=CircuitBreaker("bench-asgi"),
        exclude_paths=("/health", "/metrics"),
        deadline_header="X-Request-Timeout",
        rate_limit=limiter,
        rate_limit_headers=headers,
        name="bench-asgi",
    )
    return middleware, limiter


def _same_configuration(middleware: Any) -> None:
    """Fail if ``full_middleware()`` has moved on from the copy above."""
    from .cases_asgi import full_middleware

    full = full_middleware()

    def settings(m: Any) -> tuple[Any, ...]:
        bulkhead = m.bulkhead
        return (
            m.app,
            bulkhead.max_concurrent if bulkhead else None,
            bulkhead.max_waiting if bulkhead else None,
            m._seconds,
            m.breaker.name if m.breaker else None,
            m._exclude,
            m._exclude_methods,
            m._header,
            m._answers._retry_after,
        )

    if settings(middleware) != settings(full):
        raise NotLimited("full_middleware() changed: update _full_with_limit to match")


def ours_full(headers: bool) -> Callable[[], Target]:
    def setup() -> Target:
        middleware, limiter = _full_with_limit(headers)
        _same_configuration(middleware)
        fields = (b"ratelimit-policy", b"ratelimit")
        if headers:
            _check(middleware, _SCOPE, present=fields)
        else:
            _check(middleware, _SCOPE, present=(), absent=fields)
        _admitted(limiter, 1)

        async def target() -> None:
            await middleware(_SCOPE, _receive, _send)

        return target

    return setup


# Starlette ------------------------------------------------------------------------


async def _endpoint(request: Any) -> Any:
    from starlette.responses import PlainTextResponse

    await f()
    return PlainTextResponse("ok")


def _starlette() -> Any:
    from starlette.applications import Starlette
    from starlette.routing import Route

    return Starlette(routes=[Route(_SCOPE["path"], _endpoint)])


def _driven(asgi: Any) -> Target:
    scope = _SCOPE

    async def target() -> None:
        await asgi(dict(scope), _receive, _send)

    return target


def starlette_bare() -> Target:
    starlette = _starlette()
    _check(starlette, _SCOPE, present=(b"content-length",))
    return _driven(starlette)


def starlette_slowapi() -> Target:
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.middleware import SlowAPIASGIMiddleware
    from slowapi.util import get_remote_address

    limiter = Limiter(
        key_func=get_remote_address,
        default_limits=[f"{RATE}/second"],
        headers_enabled=True,
    )
    starlette = _starlette()
    starlette.state.limiter = limiter
    starlette.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)
    starlette.add_middleware(SlowAPIASGIMiddleware)
    _check(
        starlette,
        _SCOPE,
        present=(b"x-ratelimit-limit", b"x-ratelimit-remaining", b"x-ratelimit-reset"),
    )
    return _driven(starlette)


def starlette_ours() -> Target:
    from resilience.contrib.asgi import ResilienceMiddleware

    limiter = _limiter()
    starlette = _starlette()
    starlette.add_middleware(ResilienceMiddleware, rate_limit=limiter)
    _check(starlette, _SCOPE, present=(b"ratelimit-policy", b"ratelimit"))
    _admitted(limiter, 1)
    return _driven(starlette)


def cases() -> list[Case]:
    return [
        Case(
            GROUP,
            "resilience ResilienceMiddleware (all features) "
            "+ rate_limit=RateLimiter(1e9, burst=1e9)",
            ours_full(True),
            baseline=FULL,
            ours=True,
            key="asgi.middleware.ratelimit",
        ),
        Case(
            GROUP,
            "resilience ResilienceMiddleware (all features) "
            "+ rate_limit=RateLimiter(1e9, burst=1e9), rate_limit_headers=False",
            ours_full(False),
            baseline=FULL,
            ours=True,
            key="asgi.middleware.ratelimit.noheaders",
        ),
        Case(STARLETTE_GROUP, STARLETTE, starlette_bare, key="starlette.app"),
        Case(
            STARLETTE_GROUP,
            "Starlette + resilience ResilienceMiddleware(rate_limit=RateLimiter(1e9, burst=1e9))",
            starlette_ours,
            baseline=STARLETTE,
            ours=True,
            key="starlette.ours.ratelimit",
        ),
        Case(
            STARLETTE_GROUP,
            "Starlette + slowapi SlowAPIASGIMiddleware "
            "(Limiter(get_remote_address, "
            'default_limits=["1000000000/second"], headers_enabled=True))',
            starlette_slowapi,
            backends=ASYNCIO_ONLY,
            baseline=STARLETTE,
            key="starlette.slowapi",
        ),
    ]
