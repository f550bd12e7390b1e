"""IdempotencyMiddleware: each Idempotency-Key runs once, its retries get the
stored response (draft-ietf-httpapi-idempotency-key-header)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import Awaitable, Iterable
from typing import Any, Final

import anyio

from resilience.events import Event
from resilience.lowlevel import EventSource, check_count, check_seconds

from ._answers import _Response
from ._idempotency_http import (
    BAD_KEY,
    HEADER,
    IDENTITY_FAILED,
    LONG_KEY,
    MAX_KEY,
    MISMATCH,
    MISSING_KEY,
    TWO_KEYS,
    Identity,
    authorization,
    conflict,
    fingerprint,
    parse_key,
    scoped_key,
    too_large,
    unavailable,
)
from ._idempotency_memory import MemoryIdempotencyStore
from ._idempotency_run import Run, replaying, run_leased
from ._idempotency_stats import (
    IdempotencyLeaseLost,
    IdempotencyStats,
    IdempotencyStoreFailed,
)
from ._idempotency_store import Completed, IdempotencyStore, InFlight
from ._limit import whole_seconds
from ._request import ASGIApp, Message, Receive, Scope, Send
from ._settings import invalid, methods, wrong

__all__ = ["IdempotencyMiddleware"]

_logger = logging.getLogger("resilience")
_TOO_LARGE: Final = -1
# How often a duplicate told to wait (``wait=``) asks the store again:
# from the first interval, doubling, up to the last.
_FIRST_POLL: Final = 0.01
_LAST_POLL: Final = 0.25


class IdempotencyMiddleware(EventSource):
    """Run each ``Idempotency-Key`` once; answer its retries with the stored
    response (draft-ietf-httpapi-idempotency-key-header).

    Pure ASGI, for any ASGI app on asyncio or trio. For requests whose method
    is in ``methods`` (POST and PATCH) and that carry an ``Idempotency-Key``:

    - The first request with a key runs; a retry with the same key gets the
      stored status, headers and body, plus ``Idempotent-Replayed: true``
      and ``Idempotency-Expires-In`` (seconds the stored response is kept).
    - The key is scoped to the caller: ``identity(scope)`` (bytes, str or
      None), by default the ``Authorization`` header, hashed with the key
      (callers without one share one anonymous scope). Two callers' keys
      never meet.
    - A request's fingerprint is its method, path, query and body (read
      whole, up to ``max_body``: a larger one is answered 413). The same
      key for a different fingerprint is answered 422, also while the
      first runs; it never sees another request's response.
    - An identical duplicate while the first runs is answered 409 with
      ``Retry-After: retry_after``, or waits up to ``wait`` seconds for the
      first to finish and gets its response.
    - A missing key is answered 400 when ``required``, and passes through
      otherwise. A malformed key (not a quoted structured-field string nor
      a bare visible-ASCII value; empty; over 255 characters) is 400.
    - Errors are ``application/problem+json`` (RFC 9457) with a ``code``:
      ``idempotency_key_required``, ``idempotency_key_invalid``,
      ``idempotency_conflict`` (422), ``idempotency_in_flight`` (409).

    A running request holds its key by a lease of ``lease`` seconds (default
    10) on the store's clock, renewed every third of it while the handler
    runs: a request that crashes frees its key at once, a process that dies
    frees it when the lease runs out, and the retry then runs again, never
    409 for ever. A holder whose lease ran out and was taken over cannot
    store over the new holder's response (fencing tokens).

    Stored: final 2xx and 4xx responses (not 408 or 429) of at most
    ``max_body`` bytes, kept ``expiry`` seconds (24 h). 5xx responses
    (``store_server_errors``) and responses that set a cookie
    (``store_cookies``) are not stored unless asked. A response not stored
    frees the key as soon as it ends, so its retry runs again. The record is
    written before the response's last byte is sent.

    ``store`` (an :class:`IdempotencyStore`, default a
    :class:`MemoryIdempotencyStore`): a store that raises is answered 503
    with ``Retry-After`` (a double charge is worse than a refusal), or with
    ``fail_open=True`` the request runs unchecked; either way an
    :class:`IdempotencyStoreFailed` event and a count in :attr:`stats`.

    Its events (:class:`IdempotencyStoreFailed`,
    :class:`IdempotencyLeaseTakenOver`, :class:`IdempotencyLeaseLost`) go to
    the listeners of ``add_listener`` and to the global ones, as a policy's.

    Example::

        app = IdempotencyMiddleware(app, expiry=3600, wait=2.0, name="orders")

        # Starlette, inside ResilienceMiddleware so that shed load never
        # reaches the store:
        app.add_middleware(IdempotencyMiddleware, store=RedisIdempotencyStore(client))
        app.add_middleware(ResilienceMiddleware, max_concurrent=64)
    """

    __slots__ = (
        "_conflict",
        "_cookies",
        "_expiry",
        "_fail_open",
        "_identity",
        "_lease",
        "_max_body",
        "_methods",
        "_required",
        "_statuses",
        "_store",
        "_too_large",
        "_unavailable",
        "_wait",
        "app",
        "stats",
    )

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: IdempotencyStore | None = None,
        methods: Iterable[str] = ("POST", "PATCH"),
        identity: Identity | None = None,
        required: bool = False,
        lease: float = 10.0,
        expiry: float = 86400.0,
        max_body: int = 1 << 20,
        wait: float = 0.0,
        store_server_errors: bool = False,
        store_cookies: bool = False,
        fail_open: bool = False,
        retry_after: int = 1,
        name: str = "idempotency",
    ) -> None:
        if not callable(app):
            raise wrong("app", app, "an ASGI application (a callable)")
        if store is not None and not isinstance(store, IdempotencyStore):
            raise wrong("store", store, "an IdempotencyStore (claim, renew, complete, release)")
        if identity is not None and not callable(identity):
            raise wrong("identity", identity, "a callable taking the ASGI scope, or None")
        for flag, value in (
            ("required", required),
            ("store_server_errors", store_server_errors),
            ("store_cookies", store_cookies),
            ("fail_open", fail_open),
        ):
            if not isinstance(value, bool):
                raise wrong(flag, value, "a bool")
        if not isinstance(name, str):
            raise wrong("name", name, "a string")
        if not name:
            raise invalid("name", name, "a non-empty string")
        self.app = app
        self._store: IdempotencyStore = store if store is not None else MemoryIdempotencyStore()
        self._methods = _methods("methods", methods)
        self._identity: Identity = identity if identity is not None else authorization
        self._required = required
        self._lease = check_seconds("lease", lease)
        self._expiry = check_seconds("expiry", expiry)
        self._max_body = check_count("max_body", max_body, 0)
        self._wait = _delay("wait", wait)
        self._cookies = store_cookies
        self._fail_open = fail_open
        self._statuses = frozenset(
            s
            for s in range(200, 600)
            if (s < 300 or 400 <= s < 500 or (store_server_errors and s >= 500))
            and s not in (408, 429)
        )
        retry_after = check_count("retry_after", retry_after, 0)
        self._conflict = conflict(retry_after)
        self._unavailable = unavailable(retry_after)
        self._too_large = too_large(self._max_body)
        self._listeners = ()
        self.stats = IdempotencyStats(name)

    @property
    def name(self) -> str:
        """The name the metrics and events carry."""
        return self.stats.name

    @property
    def store(self) -> IdempotencyStore:
        return self._store

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain function handing back the app's own awaitable: a request
        # without a key passes through without a coroutine frame of ours.
        if scope["type"] == "http" and scope["method"] in self._methods:
            for name, value in scope["headers"]:
                if name == b"idempotency-key":  # a constant: cheaper than a global
                    return self._keyed(scope, receive, send, value)
            if self._required:
                return self._refuse(MISSING_KEY, send)
        return self.app(scope, receive, send)

    async def _keyed(self, scope: Scope, receive: Receive, send: Send, value: bytes) -> None:
        # One pass: a second key, and the default identity (Authorization).
        seen = 0
        who: bytes | str | None = None
        for name, found in scope["headers"]:
            if name == HEADER:
                seen += 1
            elif name == b"authorization":
                who = found
        if seen > 1:
            await self._refuse(TWO_KEYS, send)
            return
        key = parse_key(value)
        if key is None or len(key) > MAX_KEY:
            await self._refuse(BAD_KEY if key is None else LONG_KEY, send)
            return
        if self._identity is not authorization:
            try:
                who = self._identity(scope)
                if who is not None and not isinstance(who, bytes | str):
                    raise TypeError(f"identity must return bytes, str or None, got {who!r}")
            except Exception:
                _logger.exception("the identity function of %r raised: answered 500", self)
                await _send(IDENTITY_FAILED, send)
                return
        if isinstance(who, str):
            who = who.encode()
        message = await receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            body = message.get("body", b"")  # the whole body at once: the usual case
            if len(body) > self._max_body:
                await self._refuse(self._too_large, send)
                return
        else:
            rest = await self._read_rest(message, receive)
            if rest is None:
                return  # the client went away before its request was whole
            if rest is _TOO_LARGE:
                await self._refuse(self._too_large, send)
                return
            assert isinstance(rest, bytes)
            body = rest
        stored_key = scoped_key(who, key)
        mark = fingerprint(scope, body)
        store = self._store
        poll = until = 0.0
        while True:
            try:
                claim = await store.claim(stored_key, mark, self._lease)
            except Exception as exc:
                self.store_failed("claim", exc)
                if self._fail_open:
                    self.stats.unprotected += 1
                    await self.app(scope, replaying(body, receive), send)
                else:
                    self.stats.unavailable += 1
                    await _send(self._unavailable, send)
                return
            if isinstance(claim, Completed):
                record = claim.record
                if record.fingerprint != mark:
                    break
                self.stats.replayed += 1
                headers = [
                    *record.headers,
                    (b"idempotent-replayed", b"true"),
                    (b"idempotency-expires-in", b"%d" % whole_seconds(claim.expires_in)),
                ]
                await send(
                    {"type": "http.response.start", "status": record.status, "headers": headers}
                )
                await send({"type": "http.response.body", "body": record.body})
                return
            if isinstance(claim, InFlight):
                if claim.fingerprint != mark:
                    break
                if self._wait:
                    now = anyio.current_time()
                    if not poll:
                        poll, until = _FIRST_POLL, now + self._wait
                    if now < until:
                        await anyio.sleep(min(poll, until - now))
                        poll = min(2 * poll, _LAST_POLL)
                        continue
                self.stats.conflicts += 1
                await _send(self._conflict, send)
                return
            await run_leased(self, scope, replaying(body, receive), send, stored_key, mark, claim)
            return
        self.stats.mismatches += 1
        await _send(MISMATCH, send)

    async def _read_rest(self, message: Message, receive: Receive) -> bytes | int | None:
        """The request body, whole, from its first message on; None if the
        client disconnected, or _TOO_LARGE past ``max_body``."""
        chunks: list[bytes] = []
        size = 0
        while True:
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                return _TOO_LARGE
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
            message = await receive()

    async def _refuse(self, response: _Response, send: Send) -> None:
        self.stats.invalid += 1
        await _send(response, send)

    # Told by the run and the renewer -------------------------------------

    def store_failed(self, operation: str, exc: Exception) -> None:
        self.stats.store_errors += 1
        opened = operation == "claim" and self._fail_open
        _logger.warning(
            "idempotency store %s failed in %r%s",
            operation,
            self,
            " (failing open)" if opened else "",
            exc_info=exc,
        )
        self._tell(IdempotencyStoreFailed, self.stats.name, operation, exc, opened)

    def lease_lost(self, run: Run) -> None:
        if run.lost:
            return
        run.lost = True
        self.stats.fenced += 1
        _logger.warning("idempotency lease lost in %r: the response is not stored", self)
        self._tell(IdempotencyLeaseLost, self.stats.name)

    # Events -----------------------------------------------------------------

    def _tell(self, kind: type[Event], *fields: Any) -> None:
        if self._observed():  # no listener, no event object
            self._emit(kind(*fields))

    def __repr__(self) -> str:
        return f"<IdempotencyMiddleware {self.stats.name!r} app={self.app!r}>"


# Servers tell an ASGI 3 app from an ASGI 2 one by whether its __call__ is a
# coroutine function (uvicorn, hypercorn: asyncio.iscoroutinefunction), and
# ours is a plain function that returns an awaitable: say it is one.
if hasattr(inspect, "markcoroutinefunction"):  # Python 3.12+
    inspect.markcoroutinefunction(IdempotencyMiddleware.__call__)
else:  # Python 3.11: the marker asyncio.iscoroutinefunction looks for
    IdempotencyMiddleware.__call__._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]


async def _send(response: _Response, send: Send) -> None:
    start, body, _ = response
    await send(start)
    await send(body)


def _methods(parameter: str, value: Iterable[str]) -> frozenset[str]:
    found = methods(parameter, value)
    if not found:
        raise invalid(parameter, value, "at least one HTTP method")
    return found


def _delay(parameter: str, value: object) -> float:
    """Seconds >= 0 (0: do not wait)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise wrong(parameter, value, "a number of seconds")
    if not 0 <= value < math.inf:
        raise invalid(parameter, value, "a finite number >= 0")
    return float(value)
