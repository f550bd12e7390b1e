"""The middleware: per request, the budget around the compiled chain around the app."""

from __future__ import annotations

import heapq
import sys
import threading
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import anyio

from resilience import Bulkhead, CircuitBreaker, Clock, Policy, RateLimiter, SystemClock, Timeout
from resilience.errors import TimeoutError as ResilienceTimeoutError
from resilience.lowlevel import (
    Plan,
    check_count,
    check_optional_seconds,
    current_task,
    deadline_var,
    running_loop,
)

from ._answers import _SHED, _TIMED_OUT, Answers
from ._entry import Entry
from ._limit import RequestLimit
from ._outcome import outcome_of
from ._request import (
    _CLOCK,
    _COMPLETE,
    _INF,
    _QUEUED,
    _SCOPE,
    _STARTED,
    _TASK,
    _UNTIMED,
    ASGIApp,
    Receive,
    Request,
    Scope,
    Send,
)
from ._settings import header_name, invalid, methods, prefixes, statuses, wrong
from ._timers import Timers

__all__ = ["DEFAULT_FAILURE_STATUSES", "ResilienceMiddleware"]

DEFAULT_FAILURE_STATUSES: frozenset[int] = frozenset({500})
"""The responses the middleware's breaker records as failures by default.

Only 500: the 502, 503 and 504 an app passes on from its own dependencies
(an upstream's open breaker, a gateway timeout) say that dependency is down,
not this service; counting them makes stacked breakers hold the whole
service open long after the dependency recovered.

Example::

    app = ResilienceMiddleware(
        app,
        breaker=CircuitBreaker("api"),
        failure_statuses=DEFAULT_FAILURE_STATUSES | {503},   # 503s count too
    )
"""

_SYSTEM_CLOCK = SystemClock()
_current_task = current_task
_running_loop = running_loop
_get_ident = threading.get_ident
_heappush = heapq.heappush
_heappop = heapq.heappop
_new_request = object.__new__


class ResilienceMiddleware:
    """Protect an ASGI application: shed load, time requests out, break the
    circuit, and give every request a deadline that outbound calls honour.

    Pure ASGI (not Starlette's ``BaseHTTPMiddleware``): it wraps any ASGI
    application and works with ``app.add_middleware(ResilienceMiddleware,
    ...)`` in Starlette and FastAPI, on asyncio and trio.

    - ``max_concurrent``: at most this many requests run at once (a
      :class:`~resilience.Bulkhead`); ``max_waiting`` more wait for a
      permit; the rest are answered ``503 Service Unavailable`` with
      ``Retry-After: retry_after`` at once, without calling the app.
    - ``timeout``: the request's time budget, in seconds; see the module
      documentation for exactly what it covers. Running out answers 504
      before the response started, and aborts the connection after.
    - ``breaker``: a :class:`~resilience.CircuitBreaker` around the app.
      While it is open, requests are answered 503 at once (``Retry-After``
      from the breaker). Exceptions from the app, timeouts, and responses
      whose status is in ``failure_statuses`` (as
      :class:`~resilience.contrib.asgi.ServerErrorResponse`; by default
      only 500, see :data:`DEFAULT_FAILURE_STATUSES`) count as failures
      (subject to the breaker's ``record`` and ``ignore``).
    - ``rate_limit``: a :class:`~resilience.RateLimiter` applied first, per
      client: its ``key`` receives the ASGI scope (without one, the key is
      the client's IP address, without the port). A refused request is
      answered ``429 Too Many Requests`` at once with ``Retry-After`` (whole
      seconds, rounded up), takes no permit and never reaches the breaker.
      Responses carry the ``RateLimit-Policy`` and ``RateLimit`` fields of
      draft-ietf-httpapi-ratelimit-headers-11 (admitted ones only with
      ``rate_limit_headers``, the default). A key function that raises is
      answered 500, and logged.
    - ``policies``: your own policies (guards, flows or any
      :class:`~resilience.Policy`), run for each request outside the
      bulkhead, under the request's budget.
    - ``exclude_paths``: path prefixes (``str.startswith``) that bypass
      everything, such as health checks and metrics.
    - ``exclude_methods``: HTTP methods that bypass everything, such as
      ``OPTIONS`` (CORS preflights should not take a permit).
    - ``deadline_header``: a request header (``X-Request-Timeout``) giving
      the client's own budget in seconds; it can shorten ``timeout`` for
      this request, never lengthen it. A value that is not a number > 0 is
      ignored.
    - The deadline in force (:func:`resilience.current_deadline`) is set for
      the app's duration: a :class:`~resilience.Timeout`, a
      :class:`~resilience.Retry` and the httpx transports inside the handler
      never outlive the request.
    - Error bodies are short fixed texts ("Service Unavailable", "Gateway
      Timeout"), JSON (``{"detail": ...}``) with ``json_errors=True``; never
      exception text.
    - ``name`` names the :class:`~resilience.Bulkhead` and
      :class:`~resilience.Timeout` it builds (readable as :attr:`bulkhead`
      and :attr:`timeout`), whose stats and events are the middleware's
      metrics. ``clock`` drives the timeout (a
      :class:`~resilience.testing.FakeClock` in tests).

    Example::

        app.add_middleware(
            ResilienceMiddleware,
            max_concurrent=64,
            timeout=10.0,
            exclude_paths=("/healthz",),
            rate_limit=RateLimiter(10, per=1.0, burst=20, name="per-client"),
            name="web",
        )

        # or around any ASGI callable
        app = ResilienceMiddleware(app, max_concurrent=64, timeout=10.0)
    """

    __slots__ = (
        "_answers",
        "_breaker",
        "_bulkhead",
        "_cache",
        "_clock",
        "_exclude",
        "_exclude_methods",
        "_header",
        "_limit",
        "_run",
        "_seconds",
        "_timeout",
        "_use_clock",
        "app",
    )

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_concurrent: int | None = None,
        max_waiting: int = 0,
        timeout: float | None = None,
        breaker: CircuitBreaker | None = None,
        failure_statuses: Collection[int] = DEFAULT_FAILURE_STATUSES,
        policies: Sequence[Policy] = (),
        rate_limit: RateLimiter | None = None,
        rate_limit_headers: bool = True,
        exclude_paths: Iterable[str] = (),
        exclude_methods: Iterable[str] = (),
        retry_after: int = 1,
        deadline_header: str | None = None,
        json_errors: bool = False,
        name: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not callable(app):
            raise wrong("app", app, "an ASGI application (a callable)")
        if max_concurrent is not None:
            check_count("max_concurrent", max_concurrent, 1)
        check_count("max_waiting", max_waiting, 0)
        if max_waiting and max_concurrent is None:
            raise ValueError(f"max_waiting={max_waiting!r} needs max_concurrent, got None")
        timeout = check_optional_seconds("timeout", timeout)
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise wrong("breaker", breaker, "a CircuitBreaker or None")
        failures = statuses("failure_statuses", failure_statuses)
        if isinstance(policies, Policy) or not all(isinstance(p, Policy) for p in policies):
            raise wrong("policies", policies, "a sequence of Policy instances")
        if rate_limit is not None and not isinstance(rate_limit, RateLimiter):
            raise wrong("rate_limit", rate_limit, "a RateLimiter or None")
        if not isinstance(rate_limit_headers, bool):
            raise wrong("rate_limit_headers", rate_limit_headers, "a bool")
        exclude = prefixes("exclude_paths", exclude_paths)
        excluded_methods = methods("exclude_methods", exclude_methods)
        check_count("retry_after", retry_after, 0)
        header = None
        if deadline_header is not None:
            header = header_name("deadline_header", deadline_header)
            if timeout is None:
                raise ValueError(f"deadline_header={deadline_header!r} needs timeout, got None")
        if not isinstance(json_errors, bool):
            raise wrong("json_errors", json_errors, "a bool")
        if name is not None and not isinstance(name, str):
            raise wrong("name", name, "a string or None")
        if name == "":
            raise invalid("name", name, "a non-empty string or None")
        use_clock = clock is not None and not isinstance(clock, SystemClock)
        if clock is not None and not isinstance(clock, Clock):
            raise wrong("clock", clock, "a clock (now(), sleep(), sleep_sync()) or None")
        if use_clock and timeout is not None and not callable(getattr(clock, "call_at", None)):
            raise wrong("clock", clock, "a clock with call_at(when, callback) to drive timeout")

        self.app = app
        self._bulkhead = (
            None
            if max_concurrent is None
            else Bulkhead(max_concurrent, max_waiting=max_waiting, name=name, clock=clock)
        )
        self._timeout = None if timeout is None else Timeout(timeout, name=name, clock=clock)
        self._breaker = breaker
        self._limit = None if rate_limit is None else RequestLimit(rate_limit, rate_limit_headers)
        # The chain each request runs, compiled once: the rate limit (a
        # refusal takes nothing else), policies, bulkhead, breaker, then the
        # app, entered by the innermost guard.
        entry = Entry(self._timeout, breaker, failures)
        chain = [self._limit, *policies, self._bulkhead, breaker, entry]
        self._run = Plan([p for p in chain if p is not None]).decorate(app, sync=False, arity=3)
        self._seconds: float | None = None if timeout is None else float(timeout)
        self._exclude = exclude
        self._exclude_methods = excluded_methods
        self._header = header
        self._clock: Clock = clock if clock is not None else _SYSTEM_CLOCK
        self._use_clock = use_clock
        self._answers = Answers(json_errors, retry_after)
        # (thread id, loop, timers): per event loop, never per request.
        self._cache: tuple[int, Any, Any] = (-1, None, None)

    @property
    def bulkhead(self) -> Bulkhead | None:
        """The concurrency limit (None without ``max_concurrent``)."""
        return self._bulkhead

    @property
    def breaker(self) -> CircuitBreaker | None:
        return self._breaker

    @property
    def rate_limit(self) -> RateLimiter | None:
        """The rate limit (None without ``rate_limit``)."""
        return None if self._limit is None else self._limit.limiter

    @property
    def timeout(self) -> Timeout | None:
        """The policy that counts and reports request timeouts (None without ``timeout``)."""
        return self._timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or (self._exclude and scope["path"].startswith(self._exclude))
            or (self._exclude_methods and scope["method"] in self._exclude_methods)
        ):
            await self.app(scope, receive, send)
            return
        # Request(send, clock), without the __init__ frame: the hot path.
        request = _new_request(Request)
        request.clock = self._clock
        request.downstream = send
        request.mode = _UNTIMED
        request.state = _QUEUED
        request.limit = None
        seconds = self._seconds
        if seconds is None:
            try:
                await self._run(scope, receive, request.send)
                return
            except BaseException as exc:
                outcome = outcome_of(request, exc, self._limit)
            if outcome:
                await self._answers.send(outcome, request, scope, send)
            return
        if self._header is not None:
            seconds = self._header_budget(scope, seconds)
        request.budget = seconds
        cached = self._cache
        task = _current_task(cached[1]) if cached[0] == _get_ident() else None
        if task is None:
            loop = _running_loop()
            if loop is None or (task := _current_task(loop)) is None:
                outcome = await self._call_scoped(request, scope, receive)
                if outcome:
                    await self._answers.send(outcome, request, scope, send)
                return
            self._cache = cached = (_get_ident(), loop, Timers(loop, self._clock))
        # asyncio: an entry in a heap with one timer per loop for all of this
        # middleware's requests; the timer cancels the task.
        timers: Timers = cached[2]
        request.mode = _TASK
        request.task = task
        request.cancelling = task.cancelling()
        request.fired = False
        request.now = now = timers.now
        request.at = at = now() + seconds
        # Timers.add, inlined: this is the hot path.
        _heappush(timers.heap, (at, next(timers.seq), request))
        timers.live += 1
        if at < timers.armed:
            timers.arm(at)
        token = deadline_var.set(request)
        try:
            await self._run(scope, receive, request.send)
            outcome = 0
        except BaseException as exc:
            if request.state == _QUEUED and request.expired():
                outcome = _SHED  # still queued for a permit when the budget ran out
                self._timed_out(seconds)
            else:
                outcome = outcome_of(request, exc, self._limit)
        finally:
            deadline_var.reset(token)
            request.task = None
            # Timers.done, inlined. Leaving entries behind is not free: each
            # keeps its request (and the server's per-request objects) alive,
            # and the garbage collector runs on what accumulates.
            timers.live -= 1
            heap = timers.heap
            if heap:
                if heap[-1][2] is request:  # the newest: one request at a time
                    heap.pop()
                elif heap[0][2] is request:  # the oldest: concurrent requests
                    _heappop(heap)
                    while heap and heap[0][2].task is None:
                        _heappop(heap)
                elif len(heap) > 2 * timers.live + timers.SLACK:
                    timers.compact()
        if request.fired:
            # The app caught our cancellation and returned anyway.
            request.fired = False
            task.uncancel()
            outcome = self._swallowed(request)
        if outcome:
            await self._answers.send(outcome, request, scope, send)

    async def _call_scoped(self, request: Request, scope: Scope, receive: Receive) -> int:
        """trio, or asyncio outside a task: a cancel scope."""
        budget = request.budget
        request.at = self._clock.now() + budget
        outcome = _SHED  # what a cancellation swallowed by the scope means
        token = deadline_var.set(request)
        try:
            if self._use_clock:
                request.mode = _CLOCK
                with anyio.CancelScope() as cancel_scope:
                    request.scope = cancel_scope
                    request.timer = self._clock.call_at(request.at, request.fire)  # type: ignore[attr-defined]
                    try:
                        await self._run(scope, receive, request.send)
                        outcome = 0
                    except BaseException as exc:
                        outcome = outcome_of(request, exc, self._limit)
                    finally:
                        request.at = _INF
                        request.timer.cancel()
            else:
                request.mode = _SCOPE
                if _running_loop() is None:
                    # trio: its own cancel scope and clock, without anyio's
                    # wrappers around both (a fifth of the request's cost).
                    trio = sys.modules["trio"]
                    request.now = now = trio.current_time
                    scope_type = trio.CancelScope
                else:
                    request.now = now = anyio.current_time
                    scope_type = anyio.CancelScope
                with scope_type(deadline=now() + budget) as cancel_scope:
                    request.scope = cancel_scope
                    try:
                        await self._run(scope, receive, request.send)
                        outcome = 0
                    except BaseException as exc:
                        outcome = outcome_of(request, exc, self._limit)
        finally:
            deadline_var.reset(token)
        if cancel_scope.cancel_called:
            if request.state == _QUEUED:
                if cancel_scope.cancelled_caught:  # still queued for a permit
                    self._timed_out(budget)
            elif not outcome:
                outcome = self._swallowed(request)
        return outcome

    def _timed_out(self, budget: float) -> ResilienceTimeoutError:
        """Count and report a request timeout through the Timeout policy.

        The Timeout's own guard runs to a fixed deadline; a request's
        budget moves on as its response progresses, so the middleware runs
        its own timer and reports through the policy, whose stats and
        events are what exporters read.
        """
        timeout = self._timeout
        assert timeout is not None
        return timeout.timed_out(budget)

    def _swallowed(self, request: Request) -> int:
        """The budget ran out but the app caught the cancellation and returned
        (whatever it sent after that, a late answer, was dropped)."""
        if request.state == _COMPLETE:
            return 0
        error = self._timed_out(request.budget)
        if request.state == _STARTED:
            raise error
        return _TIMED_OUT

    def _header_budget(self, scope: Scope, seconds: float) -> float:
        name = self._header
        for key, value in scope["headers"]:
            if key == name:
                try:
                    asked = float(value)
                except ValueError:
                    return seconds  # malformed: ignored
                # NaN fails both comparisons; inf and <= 0 are ignored too.
                return asked if 0 < asked < seconds else seconds
        return seconds

    def __repr__(self) -> str:
        return f"<ResilienceMiddleware app={self.app!r}>"
