"""What both transports share, decided without I/O: the HTTP retry rules, the
policies per host, and the table of per-host breakers."""

from __future__ import annotations

import datetime
import email.utils
import math
import threading
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from datetime import UTC
from typing import Any

import httpx

from resilience import Bulkhead, CircuitBreaker, Policy, RateLimiter, Retry, Timeout, errors
from resilience.lowlevel import DeadlineGuard, Inline, Plan, RetryRun, mark_template

__all__ = [
    "IDEMPOTENT_METHODS",
    "RETRYABLE_STATUSES",
    "ServerError",
    "Settings",
    "add_idempotency_key",
    "parse_retry_after",
]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
"""Methods retried on any transport error and on a retryable status.

Example::

    "GET" in IDEMPOTENT_METHODS    # True: a GET is retried after a connection error
    "POST" in IDEMPOTENT_METHODS   # False: retried only with an Idempotency-Key header
"""

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
"""Statuses retried by default (idempotent requests only).

Example::

    transport = AsyncResilientTransport(retry_statuses=RETRYABLE_STATUSES | {500})
"""

_RETRY_AFTER_STATUSES = frozenset({429, 503})
# The methods draft-ietf-httpapi-idempotency-key-header is for: the others
# are idempotent already.
_KEYED_METHODS = frozenset({"POST", "PATCH"})
# Nothing reached the server: safe to retry whatever the method.
_NOTHING_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class ServerError(httpx.HTTPStatusError):
    """How a 5xx response reaches the circuit breaker: as a failure it can
    record (``record=`` may name ``httpx.HTTPStatusError``). The transport
    unwraps it and returns the response."""


class _ServerStatus:
    """A guard right inside the breaker: a 5xx response settles as a
    :class:`ServerError`, so the breaker classifies it like any failure."""

    __slots__ = ()

    sync_unsupported = None
    _internal = True  # observers do not see its spans

    admit: Callable[[], object]
    settle: Callable[[object, BaseException | None, Any], BaseException | None]

    async def wait(self) -> object:  # pragma: no cover - admit never waits
        return None

    def wait_sync(self) -> object:  # pragma: no cover - admit never waits
        return None

    @staticmethod
    def failure(response: httpx.Response) -> ServerError:
        try:
            request = response.request
        except RuntimeError:  # a transport that did not set it
            request = None
        message = f"server error {response.status_code}"
        return ServerError(message, request=request, response=response)  # type: ignore[arg-type]


_STATUS_SOURCE = Inline(
    admit="""
        {t} = None
    """,
    settle="""
        if error is None and result.status_code >= 500:
            error = {g}.failure(result)
    """,
)
_ServerStatus._inline_source = _STATUS_SOURCE  # type: ignore[attr-defined]
_ServerStatus.admit = _STATUS_SOURCE.method("admit", "Nothing to take.")
_ServerStatus.settle = _STATUS_SOURCE.method("settle", "A 5xx response becomes a ServerError.")


_SERVER_STATUS = _ServerStatus()


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
    seconds = (when - datetime.datetime.fromtimestamp(wall, UTC)).total_seconds()
    return seconds if seconds >= 0 else None


def replayable(request: httpx.Request) -> bool:
    """Bytes bodies (and no body) can be sent again; a generator or file
    stream may already be consumed."""
    return isinstance(request.stream, httpx.ByteStream)


def add_idempotency_key(request: httpx.Request) -> None:
    """Give a POST or PATCH without an ``Idempotency-Key`` a fresh one: a
    UUID4 quoted as the structured-field String the draft asks for.

    Written into the request's own headers, so every attempt of it (retries,
    hedges) carries the same key, and :func:`_idempotent` then treats it as
    it treats a caller's key. A caller's key is never replaced.

    Example::

        request = httpx.Request("POST", "https://api.test/orders")
        add_idempotency_key(request)
        request.headers["Idempotency-Key"]   # '"5b0c...-..."'
    """
    if request.method in _KEYED_METHODS and "idempotency-key" not in request.headers:
        request.headers["Idempotency-Key"] = f'"{uuid.uuid4()}"'


def _idempotent(request: httpx.Request) -> bool:
    # An Idempotency-Key header is the caller's promise that a repeat is safe.
    return request.method in IDEMPOTENT_METHODS or "idempotency-key" in request.headers


def _host_label(url: httpx.URL) -> str:
    port = url.port
    if port is None:
        port = 443 if url.scheme == "https" else 80
    return f"{url.scheme}://{url.host}:{port}"


HostKey = tuple[str, str, int | None]


def public_key(url: httpx.URL) -> HostKey:
    return (url.scheme, url.host, url.port)


def parsed_key(url: httpx.URL) -> HostKey:
    # httpx keeps the parsed URL as a tuple (scheme, userinfo, host, port,
    # ...), normalised as the public properties are: three item reads
    # instead of three properties (which decode and re-check).
    ref = url._uri_reference
    return (ref[0], ref[2], ref[3])


def pick_host_key() -> Callable[[httpx.URL], HostKey]:
    # httpx's private layout is used only if it answers as its public API does.
    probes = ("http://a.example/", "https://B.example:8443/x", "http://[::1]:80/")
    try:
        if all(parsed_key(httpx.URL(u)) == public_key(httpx.URL(u)) for u in probes):
            return parsed_key
    except (AttributeError, IndexError, TypeError):
        pass
    return public_key


host_key = pick_host_key()


class Host:
    """One destination's breaker and the compiled chain of one attempt:
    a request only looks its host up."""

    __slots__ = ("breaker", "label", "limiter", "run", "used")

    def __init__(
        self,
        label: str,
        breaker: CircuitBreaker | None,
        limiter: RateLimiter | None,
        settings: Settings,
        sync: bool,
    ) -> None:
        self.label = label
        self.breaker = breaker
        self.limiter = limiter
        # Looked up since the last eviction sweep passed it (second chance).
        self.used = False
        guards: list[Any] = [*settings.policies]
        if limiter is not None:
            # Before the breaker: a refused request is never sent, and is no
            # outcome of the host's.
            guards.append(limiter)
        if breaker is not None:
            guards += [breaker, _SERVER_STATUS]
        if not sync:
            # Without a Timeout of the user's, a deadline in force still bounds
            # the attempt, inside the breaker: a cut attempt is the host's failure.
            guards.append(settings.timeout if settings.timeout is not None else DeadlineGuard())
        if settings.bulkhead is not None:
            guards.append(settings.bulkhead)
        # The sync transport calls the wrapped transport directly when no
        # policy applies to the attempt.
        self.run: Callable[..., Any] | None = (
            Plan(guards).runner(sync=sync, arity=1) if guards else None
        )


class Settings:
    """The policies, the HTTP retry rules and the per-host breakers of one transport."""

    __slots__ = (
        "breaker",
        "bulkhead",
        "hosts",
        "keys",
        "lock",
        "max_hosts",
        "max_retry_after",
        "per_host",
        "plain_statuses",
        "policies",
        "rate_limit",
        "retry",
        "shared",
        "statuses",
        "sync",
        "timeout",
    )

    def __init__(
        self,
        *,
        retry: Retry | None,
        breaker: CircuitBreaker | None,
        timeout: Timeout | None,
        bulkhead: Bulkhead | None,
        rate_limit: RateLimiter | None,
        policies: Sequence[Policy],
        per_host: bool,
        max_hosts: int,
        max_retry_after: float,
        retry_statuses: Collection[int],
        idempotency_keys: bool,
        sync: bool,
    ) -> None:
        for param, value, kind in (
            ("retry", retry, Retry),
            ("breaker", breaker, CircuitBreaker),
            ("timeout", timeout, Timeout),
            ("bulkhead", bulkhead, Bulkhead),
            ("rate_limit", rate_limit, RateLimiter),
        ):
            if value is not None and not isinstance(value, kind):
                raise TypeError(f"{param} must be a {kind.__name__} or None, got {value!r}")
        if isinstance(policies, Policy) or not all(isinstance(p, Policy) for p in policies):
            raise TypeError(f"policies must be a sequence of Policy instances, got {policies!r}")
        for flag, on in (("per_host", per_host), ("idempotency_keys", idempotency_keys)):
            if not isinstance(on, bool):
                raise TypeError(f"{flag} must be a bool, got {on!r}")
        if isinstance(max_hosts, bool) or not isinstance(max_hosts, int):
            raise TypeError(f"max_hosts must be an int, got {max_hosts!r}")
        if max_hosts < 1:
            raise ValueError(f"max_hosts must be >= 1, got {max_hosts!r}")
        if isinstance(max_retry_after, datetime.timedelta):
            max_retry_after = max_retry_after.total_seconds()
        if isinstance(max_retry_after, bool) or not isinstance(max_retry_after, int | float):
            raise TypeError(f"max_retry_after must be a number, got {max_retry_after!r}")
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
        self.policies = tuple(policies)
        self.rate_limit = rate_limit
        self.sync = sync
        self.per_host = per_host
        # Whether POST and PATCH requests without a key get one.
        self.keys = idempotency_keys
        self.max_hosts = max_hosts
        self.max_retry_after = float(max_retry_after)
        self.statuses = statuses
        # The statuses retried, when the status alone decides (no on_result).
        self.plain_statuses = statuses if retry is not None and retry.on_result is None else None
        # Per host, oldest first.
        self.hosts: dict[HostKey, Host] = {}
        self.lock = threading.Lock()
        # Without per-host breakers, every request shares one Host.
        self.shared = None
        if per_host and (breaker is not None or rate_limit is not None):
            # Only the policies derived from them run; they are templates.
            for template in (breaker, rate_limit):
                if template is not None:
                    mark_template(template)
        else:
            self.shared = Host("*", breaker, rate_limit, self, sync)

    def host_for(self, request: httpx.Request) -> Host:
        shared = self.shared
        if shared is not None:
            return shared
        url = request.url
        key = host_key(url)
        host = self.hosts.get(key)
        if host is None:
            return self._add_host(key, url)
        host.used = True
        return host

    def _add_host(self, key: HostKey, url: httpx.URL) -> Host:
        template = self.breaker
        with self.lock:  # transports are shared by threads
            hosts = self.hosts
            host = hosts.get(key)
            if host is not None:
                return host
            label = _host_label(url)
            limit = self.rate_limit
            host = Host(
                label,
                None if template is None else template.derive(name=f"{template.name}:{label}"),
                None if limit is None else limit.derive(name=f"{limit.name}:{label}"),
                self,
                self.sync,
            )
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
        with self.lock:
            hosts = list(self.hosts.values())
        return {host.label: host.breaker for host in hosts if host.breaker}

    def pushed_back(self, host: Host, response: httpx.Response) -> None:
        """A 429 or 503 with ``Retry-After``: the host's limiter admits nothing
        for that long (capped by ``max_retry_after``), so the client stops
        sending instead of retrying into the server's limit."""
        limiter = host.limiter
        if limiter is None or limiter.keyed or response.status_code not in _RETRY_AFTER_STATUSES:
            return
        hint = parse_retry_after(response.headers.get("retry-after"))
        if hint:
            limiter.push_back(min(hint, self.max_retry_after))

    def after_error(
        self, run: RetryRun, request: httpx.Request, replayable: bool, exc: Exception
    ) -> float | None:
        """The delay before retrying after ``exc``, or None to raise it now."""
        if not replayable or isinstance(exc, errors.CircuitOpenError | errors.BulkheadFullError):
            run.stop(failed=True)
            return None
        if not (isinstance(exc, _NOTHING_SENT) or _idempotent(request)):
            run.stop(failed=True)
            return None
        return run.after(exc, None)

    def after_response(
        self, run: RetryRun, request: httpx.Request, replayable: bool, response: httpx.Response
    ) -> float | None:
        """The delay before retrying after ``response`` (the caller closes it
        first), or None to return it now. A response whose status is not in
        ``statuses`` (with no ``on_result``) the caller may settle itself
        with ``run.stop(failed=False)``, as this would."""
        assert self.retry is not None
        on_result = self.retry.on_result
        if on_result is None:
            retryable = response.status_code in self.statuses
        else:
            retryable = bool(on_result(response))
        if not (retryable and replayable and _idempotent(request)):
            run.stop(failed=False)
            return None
        hint = None
        if response.status_code in _RETRY_AFTER_STATUSES:
            hint = parse_retry_after(response.headers.get("retry-after"))
            if not hint:
                hint = None  # Retry-After: 0 means "no particular wait": the schedule's
            elif hint > self.max_retry_after:
                run.stop(failed=True)
                return None
        return run.retry(None, response, hint=hint)
