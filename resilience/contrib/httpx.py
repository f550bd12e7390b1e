"""httpx transports that retry, break circuits, time out and limit concurrency.

Example::

    import httpx
    from resilience import Bulkhead, CircuitBreaker, Retry, Timeout, backoff
    from resilience.contrib.httpx import AsyncResilientTransport

    client = httpx.AsyncClient(
        transport=AsyncResilientTransport(
            retry=Retry(3, backoff=backoff.exponential(0.1, cap=2, jitter="full")),
            breaker=CircuitBreaker("api", failure_rate=0.5, minimum_calls=20),
            timeout=Timeout(2.0),
            bulkhead=Bulkhead(100),
        )
    )

Policies apply in this order, outermost first: retry, circuit breaker (one
per host by default), per-attempt timeout, bulkhead, then the wrapped
transport.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime
from typing import Any

import httpx

from resilience import errors
from resilience._deadline import _current as _current_deadline
from resilience._matchers import ExceptionFilter, exception_types
from resilience.breaker import _CLOSED, CircuitBreaker
from resilience.bulkhead import Bulkhead
from resilience.policy import Policy
from resilience.retry import Retry
from resilience.timeout import Timeout

__all__ = [
    "IDEMPOTENT_METHODS",
    "RETRYABLE_STATUSES",
    "AsyncResilientTransport",
    "HTTPBulkheadFullError",
    "HTTPCircuitOpenError",
    "HTTPTimeoutError",
    "ResilientTransport",
    "parse_retry_after",
]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
"""Methods retried on any transport error and on a retryable status."""

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
"""Statuses retried by default (idempotent requests only)."""

_RETRY_AFTER_STATUSES = frozenset({429, 503})
# Nothing reached the server: safe to retry whatever the method.
_NOTHING_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Long enough never to bind: only the deadline in force does.
_FOREVER = 10 * 365 * 24 * 3600.0


class HTTPCircuitOpenError(errors.CircuitOpenError, httpx.TransportError):
    """The host's circuit breaker is open: both our
    :class:`~resilience.CircuitOpenError` and an :class:`httpx.TransportError`.

    Example::

        try:
            await client.get(url)
        except httpx.TransportError:   # catches this too
            ...
    """

    def __init__(self, source: errors.CircuitOpenError, request: httpx.Request) -> None:
        super().__init__(name=source.name, retry_after=source.retry_after)
        self.request = request


class HTTPBulkheadFullError(errors.BulkheadFullError, httpx.TransportError):
    """The bulkhead rejected the request: both our
    :class:`~resilience.BulkheadFullError` and an :class:`httpx.TransportError`.

    Example::

        except HTTPBulkheadFullError:
            return Response(503)
    """

    def __init__(self, source: errors.BulkheadFullError, request: httpx.Request) -> None:
        super().__init__(name=source.name, capacity=source.capacity)
        self.request = request


class HTTPTimeoutError(errors.TimeoutError, httpx.TimeoutException):
    """The per-attempt timeout (or the deadline in force) fired: both our
    :class:`~resilience.TimeoutError` and an :class:`httpx.TimeoutException`.

    Example::

        except httpx.TimeoutException:   # catches this too
            ...
    """

    def __init__(self, source: errors.TimeoutError, request: httpx.Request) -> None:
        super().__init__(name=source.name, seconds=source.seconds)
        self.request = request


class _ServerError(httpx.HTTPStatusError):
    """How a 5xx response reaches the circuit breaker: as a failure it can
    record (``record=`` may name ``httpx.HTTPStatusError``). The transport
    unwraps it and returns the response."""


def _server_error(request: httpx.Request, response: httpx.Response) -> _ServerError:
    return _ServerError(f"server error {response.status_code}", request=request, response=response)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or None if it is absent,
    garbage, negative or in the past.

    Accepts delta-seconds (``"120"``) and HTTP dates
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``).

    Example::

        parse_retry_after("3")                      # 3.0
        parse_retry_after("soon")                   # None
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    wall = time.time() if now is None else now
    seconds = (when - datetime.fromtimestamp(wall, UTC)).total_seconds()
    return seconds if seconds >= 0 else None


def _replayable(request: httpx.Request) -> bool:
    # Bytes bodies (and no body) can be sent again; a generator or file
    # stream may already be consumed.
    return isinstance(request.stream, httpx.ByteStream)


def _host_label(url: httpx.URL) -> str:
    port = url.port
    if port is None:
        port = 443 if url.scheme == "https" else 80
    return f"{url.scheme}://{url.host}:{port}"


_HostKey = tuple[str, str, int | None]


def _public_key(url: httpx.URL) -> _HostKey:
    return (url.scheme, url.host, url.port)


def _parsed_key(url: httpx.URL) -> _HostKey:
    # httpx keeps the parsed URL as a tuple (scheme, userinfo, host, port,
    # ...), normalised as the public properties are: three item reads
    # instead of three properties (which decode and re-check).
    ref = url._uri_reference
    return (ref[0], ref[2], ref[3])


def _pick_host_key() -> Callable[[httpx.URL], _HostKey]:
    # The private layout is used only if it answers as the public API does.
    probes = ("http://a.example/", "https://B.example:8443/x", "http://[::1]:80/")
    try:
        if all(_parsed_key(httpx.URL(u)) == _public_key(httpx.URL(u)) for u in probes):
            return _parsed_key
    except (AttributeError, IndexError, TypeError):
        pass
    return _public_key


_host_key = _pick_host_key()


class _Host:
    """One destination's breaker and its policy chains, built once: a request
    only looks its host up. (Each policy calls the next one's bound `call`
    with the rest of the chain as leading arguments, as a Pipeline does.)"""

    __slots__ = ("breaker", "calls", "calls_sync", "label", "used")

    def __init__(
        self,
        label: str,
        breaker: CircuitBreaker | None,
        timeout: Timeout | None,
        bulkhead: Bulkhead | None,
    ) -> None:
        self.label = label
        self.breaker = breaker
        # Looked up since the last eviction sweep passed it (second chance).
        self.used = False
        policies = [p for p in (breaker, timeout, bulkhead) if p is not None]
        self.calls: tuple[Callable[..., Awaitable[Any]], ...] = tuple(p.call for p in policies)
        self.calls_sync: tuple[Callable[..., Any], ...] = tuple(
            p.call_sync for p in policies if not isinstance(p, Timeout)
        )


class _Settings:
    """What both transports share: the policies, the HTTP retry rules and the
    per-host breakers. Everything here is decided without I/O."""

    __slots__ = (
        "breaker",
        "bulkhead",
        "hosts",
        "max_hosts",
        "max_retry_after",
        "per_host",
        "retry",
        "shared",
        "statuses",
        "timeout",
    )

    def __init__(
        self,
        *,
        retry: Retry | None,
        breaker: CircuitBreaker | None,
        timeout: Timeout | None,
        bulkhead: Bulkhead | None,
        per_host: bool,
        max_hosts: int,
        max_retry_after: float,
        retry_statuses: Collection[int],
    ) -> None:
        for param, value, kind in (
            ("retry", retry, Retry),
            ("breaker", breaker, CircuitBreaker),
            ("timeout", timeout, Timeout),
            ("bulkhead", bulkhead, Bulkhead),
        ):
            if value is not None and not isinstance(value, kind):
                raise TypeError(f"{param} must be a {kind.__name__} or None, got {value!r}")
        if isinstance(max_hosts, bool) or not isinstance(max_hosts, int) or max_hosts < 1:
            raise ValueError(f"max_hosts must be an int >= 1, got {max_hosts!r}")
        if not (max_retry_after >= 0 and math.isfinite(max_retry_after)):
            raise ValueError(
                f"max_retry_after must be a finite number >= 0, got {max_retry_after!r}"
            )
        statuses = frozenset(retry_statuses)
        if not all(isinstance(s, int) and 100 <= s <= 599 for s in statuses):
            raise ValueError(f"retry_statuses must be HTTP status codes, got {retry_statuses!r}")
        self.retry = retry
        self.breaker = breaker
        self.timeout = timeout
        self.bulkhead = bulkhead
        self.per_host = per_host
        self.max_hosts = max_hosts
        self.max_retry_after = float(max_retry_after)
        self.statuses = statuses
        # Per host, oldest first.
        self.hosts: dict[_HostKey, _Host] = {}
        # Without per-host breakers, every request shares one _Host.
        self.shared = (
            None if breaker is not None and per_host else _Host("*", breaker, timeout, bulkhead)
        )

    def host_for(self, request: httpx.Request) -> _Host:
        shared = self.shared
        if shared is not None:
            return shared
        url = request.url
        key = _host_key(url)
        host = self.hosts.get(key)
        if host is None:
            return self._add_host(key, url)
        host.used = True
        return host

    def _add_host(self, key: _HostKey, url: httpx.URL) -> _Host:
        template = self.breaker
        assert template is not None
        label = _host_label(url)
        breaker = template.derive(
            name=f"{template.name}:{label}", ignore=_with_local_rejections(template)
        )
        host = _Host(label, breaker, self.timeout, self.bulkhead)
        hosts = self.hosts
        hosts[key] = host
        # Bounded: past the limit, a host goes with its breaker and metric
        # series. Which one: the oldest not looked up since the sweep last
        # passed it ("second chance", an LRU approximation that costs a hit
        # a flag store instead of a reordering).
        while len(hosts) > self.max_hosts:
            oldest = next(iter(hosts))
            candidate = hosts.pop(oldest)
            if candidate.used:
                candidate.used = False
                hosts[oldest] = candidate
        return host

    def breakers(self) -> dict[str, CircuitBreaker]:
        return {host.label: host.breaker for host in self.hosts.values() if host.breaker}

    def may_retry_error(self, request: httpx.Request, replayable: bool, exc: Exception) -> bool:
        if not replayable:
            return False
        if isinstance(exc, _NOTHING_SENT):
            return True
        if isinstance(exc, errors.CircuitOpenError | errors.BulkheadFullError):
            return False
        return _idempotent(request)

    def retryable_response(
        self, request: httpx.Request, replayable: bool, response: httpx.Response
    ) -> bool:
        # The status first: most responses stop here, before any header lookup.
        assert self.retry is not None
        on_result = self.retry._on_result
        if on_result is None:
            if response.status_code not in self.statuses:
                return False
        elif not on_result(response):
            return False
        return replayable and _idempotent(request)

    def after_error(
        self,
        request: httpx.Request,
        replayable: bool,
        exc: Exception,
        attempt: int,
        delay: float,
        start: float,
    ) -> float | None:
        """The delay before retrying after ``exc``, or None to raise it now.
        Shared by both transports: everything but the await."""
        retry = self.retry
        assert retry is not None
        if not self.may_retry_error(request, replayable, exc):
            retry._count_failure(attempt)
            return None
        return retry._after_failure(attempt, delay, start, exc, None)

    def after_response(
        self,
        request: httpx.Request,
        replayable: bool,
        response: httpx.Response,
        attempt: int,
        delay: float,
        start: float,
    ) -> float | None:
        """The delay before retrying after ``response`` (the caller closes it
        first), or None to return it now."""
        retry = self.retry
        assert retry is not None
        if not self.retryable_response(request, replayable, response):
            retry._count_success(attempt)
            return None
        hint = self.retry_after(response)
        if hint is not None and hint > self.max_retry_after:
            retry._count_failure(attempt)
            return None
        return retry._after_failure(attempt, delay, start, None, response, hint)

    def retry_after(self, response: httpx.Response) -> float | None:
        if response.status_code not in _RETRY_AFTER_STATUSES:
            return None
        return parse_retry_after(response.headers.get("retry-after"))

    def translate(self, exc: Exception, request: httpx.Request) -> Exception | None:
        """Our errors as httpx errors, so `except httpx.TransportError` works."""
        if isinstance(exc, errors.CircuitOpenError) and not isinstance(exc, httpx.HTTPError):
            return HTTPCircuitOpenError(exc, request)
        if isinstance(exc, errors.BulkheadFullError) and not isinstance(exc, httpx.HTTPError):
            return HTTPBulkheadFullError(exc, request)
        if isinstance(exc, errors.TimeoutError) and not isinstance(exc, httpx.HTTPError):
            return HTTPTimeoutError(exc, request)
        return None


def _with_local_rejections(template: CircuitBreaker) -> ExceptionFilter:
    """The template's ``ignore`` plus our bulkhead's rejections: a full local
    bulkhead says nothing about the host's health, so it must not open the
    host's breaker (the bulkhead sits inside the breaker in this order)."""
    ignore = template._config["ignore"]
    if isinstance(ignore, tuple | type):
        return (*exception_types("ignore", ignore), errors.BulkheadFullError)
    predicate = ignore
    return lambda exc: isinstance(exc, errors.BulkheadFullError) or bool(predicate(exc))


def _idempotent(request: httpx.Request) -> bool:
    # An Idempotency-Key header is the caller's promise that a repeat is safe.
    return request.method in IDEMPOTENT_METHODS or "idempotency-key" in request.headers


class AsyncResilientTransport(httpx.AsyncBaseTransport):
    """An :class:`httpx.AsyncBaseTransport` that applies retry, a circuit
    breaker, a per-attempt timeout and a bulkhead around another transport.

    - ``transport``: the wrapped transport (default ``httpx.AsyncHTTPTransport()``).
    - ``retry``: retries transport errors (connect errors for any method;
      others only for idempotent requests) and the statuses in
      ``retry_statuses`` (429, 502, 503, 504) for idempotent requests: GET,
      HEAD, OPTIONS, PUT, DELETE, TRACE, or any request carrying an
      ``Idempotency-Key`` header. A request whose body is a stream that cannot
      be replayed is never retried. A Retry's ``on_result`` predicate, if set,
      replaces the status rule. ``Retry-After`` (seconds or HTTP date) on 429
      and 503 replaces the backoff delay, but never beyond
      ``max_retry_after``: past it, the response is returned at once.
    - ``breaker``: with ``per_host=True`` a template from which each
      ``scheme://host:port`` gets its own breaker (named
      ``<name>:<scheme>://<host>:<port>``), at most ``max_hosts`` kept (the
      oldest unused host goes first). 5xx responses and transport errors
      count as failures, 4xx as success.
    - ``timeout``: per attempt, up to the response headers; the body is read
      under httpx's own read timeout.
    - ``bulkhead``: bounds the requests in flight through this transport.

    Every response discarded for a retry is closed first; the final one is
    returned unread. Our rejections are raised as httpx errors too:
    :class:`HTTPCircuitOpenError`, :class:`HTTPBulkheadFullError` (both
    ``httpx.TransportError``) and :class:`HTTPTimeoutError`
    (``httpx.TimeoutException``). A deadline in force
    (:func:`resilience.deadline`, the ASGI middleware) bounds every attempt
    and stops retries.

    Example::

        transport = AsyncResilientTransport(retry=Retry(3), breaker=CircuitBreaker("api"))
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get("https://api.example.com/items")
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        retry: Retry | None = None,
        breaker: CircuitBreaker | None = None,
        timeout: Timeout | None = None,
        bulkhead: Bulkhead | None = None,
        per_host: bool = True,
        max_hosts: int = 1000,
        max_retry_after: float = 60.0,
        retry_statuses: Collection[int] = RETRYABLE_STATUSES,
    ) -> None:
        if transport is None:
            transport = httpx.AsyncHTTPTransport()
        elif not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(
                f"transport must be an httpx.AsyncBaseTransport (for example "
                f"httpx.AsyncHTTPTransport()), got {transport!r}"
            )
        self._transport = transport
        self._settings = _Settings(
            retry=retry,
            breaker=breaker,
            timeout=timeout,
            bulkhead=bulkhead,
            per_host=per_host,
            max_hosts=max_hosts,
            max_retry_after=max_retry_after,
            retry_statuses=retry_statuses,
        )
        # Without a Timeout of its own, a deadline in force still bounds each
        # attempt: a Timeout too long to bind runs to that deadline instead.
        self._deadline_guard = Timeout(_FOREVER)

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        """The per-host breakers alive now, by ``scheme://host:port``."""
        return self._settings.breakers()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        settings = self._settings
        host = settings.host_for(request)
        retry = settings.retry
        if retry is None:
            return await self._attempt(host, request)
        # Judged before the first attempt: sending may read a stream into
        # memory (then it looks replayable), or consume it for good.
        replayable = _replayable(request)
        start = retry._start() if retry._needs_start else 0.0
        statuses = None if retry._on_result is not None else settings.statuses
        attempt = 1
        delay = 0.0
        while True:
            try:
                response = await self._attempt(host, request)
                if statuses is not None and response.status_code not in statuses:
                    # What after_response() says of most responses, inline.
                    retry._count_success(attempt)
                    return response
            except Exception as exc:
                next_delay = settings.after_error(request, replayable, exc, attempt, delay, start)
                if next_delay is None:
                    raise
            else:
                next_delay = settings.after_response(
                    request, replayable, response, attempt, delay, start
                )
                if next_delay is None:
                    return response
                await response.aclose()
            delay = next_delay
            if delay > 0:
                await retry.clock.sleep(delay)
            attempt += 1

    async def _attempt(self, host: _Host, request: httpx.Request) -> httpx.Response:
        """One attempt: breaker, timeout and bulkhead inlined around the
        wrapped transport in one frame while each is on its fast path (a
        closed breaker, a free permit, an asyncio task); the policies'
        chain otherwise. The two must agree: the tests run both."""
        settings = self._settings
        breaker = host.breaker
        bulkhead = settings.bulkhead
        if not (
            Policy._inline
            and (breaker is None or (breaker._core.state is _CLOSED and breaker._fast))
            and (bulkhead is None or bulkhead._in_flight < bulkhead._capacity)
        ):
            return await self._chained(host, request)
        timeout = settings.timeout
        if timeout is None:
            if _current_deadline.get() is not None:
                return await self._chained(host, request)
            expiry = None
        else:
            expiry = timeout._enter()
            if expiry is None:
                return await self._chained(host, request)
        permit = 0 if breaker is None else breaker._core.epoch
        try:
            try:
                if bulkhead is None:
                    response = await self._transport.handle_async_request(request)
                else:
                    bulkhead._in_flight += 1
                    try:
                        response = await self._transport.handle_async_request(request)
                    finally:
                        bulkhead._release()
            except asyncio.CancelledError:
                if expiry is not None and expiry.fired and Timeout._expired(expiry):
                    raise timeout._timed_out(timeout._seconds) from None  # type: ignore[union-attr]
                raise
            finally:
                if expiry is not None:
                    Timeout._leave(expiry)
        except Exception as exc:
            if breaker is not None:
                breaker._fast_failure(permit, exc)
            if isinstance(exc, errors.ResilienceError):
                translated = settings.translate(exc, request)
                if translated is not None:
                    raise translated from exc
            raise
        if breaker is not None:
            if response.status_code >= 500:
                breaker._fast_failure(permit, _server_error(request, response))
            else:
                breaker._fast_success(permit, response)
        return response

    async def _chained(self, host: _Host, request: httpx.Request) -> httpx.Response:
        """One attempt through the policies' own calls."""
        settings = self._settings
        chain = host.calls
        if settings.timeout is None and _current_deadline.get() is not None:
            # No Timeout of our own, but a deadline in force: bound the attempt
            # by it, inside the breaker (a cut attempt is the host's failure).
            at = 1 if host.breaker is not None else 0
            chain = (*chain[:at], self._deadline_guard.call, *chain[at:])
        send = self._send if host.breaker is not None else self._transport.handle_async_request
        try:
            if not chain:
                return await send(request)
            response: httpx.Response = await chain[0](*chain[1:], send, request)
            return response
        except _ServerError as exc:
            return exc.response
        except errors.ResilienceError as exc:
            translated = settings.translate(exc, request)
            if translated is None:
                raise
            raise translated from exc

    async def _send(self, request: httpx.Request) -> httpx.Response:
        response = await self._transport.handle_async_request(request)
        if response.status_code >= 500:
            raise _server_error(request, response)
        return response

    async def aclose(self) -> None:
        await self._transport.aclose()


class ResilientTransport(httpx.BaseTransport):
    """The sync twin of :class:`AsyncResilientTransport`, for ``httpx.Client``.

    The same rules apply, through the policies' sync shells. A
    :class:`~resilience.Timeout` cannot interrupt a thread, so passing one is
    refused: set httpx's own ``timeout=`` on the client instead.

    Example::

        client = httpx.Client(transport=ResilientTransport(retry=Retry(3)), timeout=5.0)
    """

    def __init__(
        self,
        transport: httpx.BaseTransport | None = None,
        *,
        retry: Retry | None = None,
        breaker: CircuitBreaker | None = None,
        timeout: Timeout | None = None,
        bulkhead: Bulkhead | None = None,
        per_host: bool = True,
        max_hosts: int = 1000,
        max_retry_after: float = 60.0,
        retry_statuses: Collection[int] = RETRYABLE_STATUSES,
    ) -> None:
        if timeout is not None:
            raise TypeError(
                "ResilientTransport cannot use a Timeout: a sync request runs in the "
                "calling thread and cannot be interrupted; pass timeout=... to "
                "httpx.Client instead (or use AsyncResilientTransport)"
            )
        if transport is None:
            transport = httpx.HTTPTransport()
        elif not isinstance(transport, httpx.BaseTransport):
            raise TypeError(
                f"transport must be an httpx.BaseTransport (for example "
                f"httpx.HTTPTransport()), got {transport!r}"
            )
        self._transport = transport
        self._settings = _Settings(
            retry=retry,
            breaker=breaker,
            timeout=None,
            bulkhead=bulkhead,
            per_host=per_host,
            max_hosts=max_hosts,
            max_retry_after=max_retry_after,
            retry_statuses=retry_statuses,
        )

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        """The per-host breakers alive now, by ``scheme://host:port``."""
        return self._settings.breakers()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        settings = self._settings
        host = settings.host_for(request)
        retry = settings.retry
        if retry is None:
            return self._attempt(host, request)
        # Judged before the first attempt: sending may read a stream into
        # memory (then it looks replayable), or consume it for good.
        replayable = _replayable(request)
        start = retry._start() if retry._needs_start else 0.0
        attempt = 1
        delay = 0.0
        while True:
            try:
                response = self._attempt(host, request)
            except Exception as exc:
                next_delay = settings.after_error(request, replayable, exc, attempt, delay, start)
                if next_delay is None:
                    raise
            else:
                next_delay = settings.after_response(
                    request, replayable, response, attempt, delay, start
                )
                if next_delay is None:
                    return response
                response.close()
            delay = next_delay
            if delay > 0:
                retry.clock.sleep_sync(delay)
            attempt += 1

    def _attempt(self, host: _Host, request: httpx.Request) -> httpx.Response:
        settings = self._settings
        chain = host.calls_sync
        send = self._send if host.breaker is not None else self._transport.handle_request
        try:
            if not chain:
                return send(request)
            response: httpx.Response = chain[0](*chain[1:], send, request)
            return response
        except _ServerError as exc:
            return exc.response
        except errors.ResilienceError as exc:
            translated = settings.translate(exc, request)
            if translated is None:
                raise
            raise translated from exc

    def _send(self, request: httpx.Request) -> httpx.Response:
        response = self._transport.handle_request(request)
        if response.status_code >= 500:
            raise _server_error(request, response)
        return response

    def close(self) -> None:
        self._transport.close()
