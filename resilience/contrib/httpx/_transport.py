"""The two transports: each request drives the Retry's decisions around the
host's compiled attempt (policies, breaker, timeout, bulkhead, the wrapped
transport), in the order of :mod:`resilience.contrib.httpx`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence

import httpx

from resilience import Bulkhead, CircuitBreaker, Hedge, Policy, RateLimiter, Retry, Timeout

from ._errors import translate
from ._rules import (
    RETRYABLE_STATUSES,
    ServerError,
    Settings,
    _idempotent,
    add_idempotency_key,
    replayable,
)

__all__ = ["AsyncResilientTransport", "ResilientTransport"]


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
      oldest unused host goes first); the template itself runs nothing and
      appears in no metrics. 5xx responses and transport errors count as
      failures, 4xx as success.
    - ``timeout``: per attempt, up to the response headers; the body is read
      under httpx's own read timeout.
    - ``bulkhead``: bounds the requests in flight through this transport.
    - ``rate_limit``: a :class:`~resilience.RateLimiter` applied to each
      attempt, before the breaker; with ``per_host=True`` a template from
      which each host gets its own limiter (named like the breakers). A
      refused request is never sent: :class:`HTTPRateLimitedError` (both
      ``RateLimitedError`` and ``httpx.TransportError``). A 429 or 503 with
      ``Retry-After`` (capped by ``max_retry_after``) pushes the host's
      limiter back for that long.
    - ``policies``: your own policies (guards, flows or any
      :class:`~resilience.Policy`), run for each attempt inside the retry and
      outside the breaker.
    - ``hedge``: a :class:`~resilience.Hedge` for each attempt of an
      idempotent request (the retry rule: method or ``Idempotency-Key``)
      whose body can be replayed: a slow attempt gets another, and the
      first response whose status is not in ``retry_statuses`` wins. Every
      other response is closed; every other attempt cancelled.
    - ``idempotency_keys``: when True, a POST or PATCH without an
      ``Idempotency-Key`` header gets one (a quoted UUID4, as
      draft-ietf-httpapi-idempotency-key-header asks), written into the
      request before its first attempt, so its retries and hedges carry the
      same key; the key makes it retryable as a key of your own does. A key
      you set is kept. Off by default: a server that ignores the header
      would run a retried POST twice.

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
        rate_limit: RateLimiter | None = None,
        policies: Sequence[Policy] = (),
        per_host: bool = True,
        max_hosts: int = 1000,
        max_retry_after: float = 60.0,
        retry_statuses: Collection[int] = RETRYABLE_STATUSES,
        hedge: Hedge | None = None,
        idempotency_keys: bool = False,
    ) -> None:
        if hedge is not None and not isinstance(hedge, Hedge):
            raise TypeError(f"hedge must be a Hedge or None, got {hedge!r}")
        if transport is None:
            transport = httpx.AsyncHTTPTransport()
        elif not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(
                f"transport must be an httpx.AsyncBaseTransport (for example "
                f"httpx.AsyncHTTPTransport()), got {transport!r}"
            )
        self._transport = transport
        self._settings = Settings(
            retry=retry,
            breaker=breaker,
            timeout=timeout,
            bulkhead=bulkhead,
            rate_limit=rate_limit,
            policies=policies,
            per_host=per_host,
            max_hosts=max_hosts,
            max_retry_after=max_retry_after,
            retry_statuses=retry_statuses,
            idempotency_keys=idempotency_keys,
            sync=False,
        )
        self._hedge = hedge
        statuses = self._settings.statuses
        self._unacceptable: Callable[[httpx.Response], bool] = lambda r: r.status_code in statuses

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        """The per-host breakers alive now, by ``scheme://host:port``."""
        return self._settings.breakers()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        settings = self._settings
        if settings.keys:
            add_idempotency_key(request)
        host = settings.shared or settings.host_for(request)
        attempt = host.run
        send = self._transport.handle_async_request
        retry = settings.retry
        # No run is built for a call whose first attempt settles it.
        run = retry.start() if retry is not None and retry.needs_start else None
        # Judged before the first attempt: sending may read a stream into
        # memory (then it looks replayable), or consume it for good.
        again = retry is not None and replayable(request)
        # What after_response() says of most responses, decided here.
        statuses = settings.plain_statuses
        hedge = self._hedge
        if hedge is not None and not (_idempotent(request) and replayable(request)):
            hedge = None
        while True:
            try:
                if hedge is None:
                    response: httpx.Response = await attempt(send, request)  # type: ignore[misc]
                else:
                    response = await hedge.race(
                        _answer, (attempt, send, request), {}, self._unacceptable, _close
                    )
            except ServerError as exc:
                response = exc.response
            except Exception as exc:
                if retry is None:
                    delay = None
                else:
                    run = run or retry.start()
                    delay = settings.after_error(run, request, again, exc)
                if delay is None:
                    translated = translate(exc, request)
                    if translated is None:
                        raise
                    raise translated from exc
                if delay > 0:
                    await retry.clock.sleep(delay)  # type: ignore[union-attr]
                continue
            if host.limiter is not None:
                settings.pushed_back(host, response)
            if retry is None:
                return response
            if statuses is not None and response.status_code not in statuses:
                if run is None:
                    retry.succeeded_at_once()
                else:
                    run.stop(failed=False)
                return response
            run = run or retry.start()
            delay = settings.after_response(run, request, again, response)
            if delay is None:
                return response
            await response.aclose()
            if delay > 0:
                await retry.clock.sleep(delay)

    async def aclose(self) -> None:
        await self._transport.aclose()


async def _answer(
    attempt: Callable[..., Awaitable[httpx.Response]],
    send: Callable[[httpx.Request], Awaitable[httpx.Response]],
    request: httpx.Request,
) -> httpx.Response:
    """One hedged attempt: a 5xx the breaker recorded is an answer too,
    judged by its status like any other."""
    try:
        return await attempt(send, request)
    except ServerError as exc:
        return exc.response


async def _close(response: httpx.Response) -> None:
    await response.aclose()


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
        rate_limit: RateLimiter | None = None,
        policies: Sequence[Policy] = (),
        per_host: bool = True,
        max_hosts: int = 1000,
        max_retry_after: float = 60.0,
        retry_statuses: Collection[int] = RETRYABLE_STATUSES,
        hedge: Hedge | None = None,
        idempotency_keys: bool = False,
    ) -> None:
        if hedge is not None:
            raise TypeError(
                "ResilientTransport cannot hedge: a sync request runs in the calling "
                "thread, and the losing attempts could not be cancelled; use "
                "AsyncResilientTransport"
            )
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
        self._settings = Settings(
            retry=retry,
            breaker=breaker,
            timeout=None,
            bulkhead=bulkhead,
            rate_limit=rate_limit,
            policies=policies,
            per_host=per_host,
            max_hosts=max_hosts,
            max_retry_after=max_retry_after,
            retry_statuses=retry_statuses,
            idempotency_keys=idempotency_keys,
            sync=True,
        )

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        """The per-host breakers alive now, by ``scheme://host:port``."""
        return self._settings.breakers()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        settings = self._settings
        if settings.keys:
            add_idempotency_key(request)
        host = settings.shared or settings.host_for(request)
        attempt = host.run
        send = self._transport.handle_request
        retry = settings.retry
        run = retry.start() if retry is not None and retry.needs_start else None
        again = retry is not None and replayable(request)
        statuses = settings.plain_statuses
        while True:
            try:
                response = send(request) if attempt is None else attempt(send, request)
            except ServerError as exc:
                response = exc.response
            except Exception as exc:
                if retry is None:
                    delay = None
                else:
                    run = run or retry.start()
                    delay = settings.after_error(run, request, again, exc)
                if delay is None:
                    translated = translate(exc, request)
                    if translated is None:
                        raise
                    raise translated from exc
                if delay > 0:
                    retry.clock.sleep_sync(delay)  # type: ignore[union-attr]
                continue
            if host.limiter is not None:
                settings.pushed_back(host, response)
            if retry is None:
                return response
            if statuses is not None and response.status_code not in statuses:
                if run is None:
                    retry.succeeded_at_once()
                else:
                    run.stop(failed=False)
                return response
            run = run or retry.start()
            delay = settings.after_response(run, request, again, response)
            if delay is None:
                return response
            response.close()
            if delay > 0:
                retry.clock.sleep_sync(delay)

    def close(self) -> None:
        self._transport.close()
