"""ASGI middleware: load shedding, request timeouts, a circuit breaker and
deadline propagation for any ASGI application.

Example::

    from starlette.applications import Starlette
    from resilience import CircuitBreaker
    from resilience.contrib.asgi import ResilienceMiddleware

    app = Starlette(routes=routes)
    app.add_middleware(
        ResilienceMiddleware,
        max_concurrent=100,
        max_waiting=50,
        timeout=5.0,
        breaker=CircuitBreaker("api", failure_rate=0.5, minimum_calls=50),
        exclude_paths=("/health", "/metrics"),
        deadline_header="X-Request-Timeout",
        name="api",
    )

Per HTTP request, outermost first: the bulkhead (``max_concurrent``,
``max_waiting``), the circuit breaker, then the application under the
request's time budget. Lifespan and websocket scopes, and paths under
``exclude_paths``, go straight to the application.

What the timeout covers. The budget (``timeout``, or a shorter one asked for
in ``deadline_header``) starts when the request reaches the middleware,
queueing for a permit included. The application must start its response
within the budget, and after that it must hand the server each further
message of the response within the budget of the previous one: it is a
*progress* limit, so a stream that keeps sending is never cut, while one that
stalls is. Time spent blocked in ``send`` (a slow client) counts. Once the
response is complete the budget no longer applies: work done after it
(Starlette background tasks) runs unbounded and sees no deadline.

When the budget runs out:

- while queued for a permit: 503 with ``Retry-After`` (the app never ran);
- before the response started: the app is cancelled, 504;
- after it started: the app is cancelled and the middleware raises
  :class:`resilience.TimeoutError`, which is how ASGI tells a server that a
  response cannot be finished. uvicorn (h11 and httptools alike) logs
  "Exception in ASGI application" and closes the connection, so the client
  sees a truncated body (a protocol error), never a short response that
  passes as complete. Hypercorn and Daphne do the same.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Final

import anyio

from resilience._clock import SYSTEM_CLOCK, Clock
from resilience._deadline import Deadline
from resilience._deadline import _current as _current_deadline
from resilience.breaker import _CLOSED, CircuitBreaker
from resilience.bulkhead import Bulkhead
from resilience.errors import BulkheadFullError, CircuitOpenError
from resilience.errors import TimeoutError as ResilienceTimeoutError
from resilience.policy import Policy
from resilience.timeout import Timeout

__all__ = ["ResilienceMiddleware", "ServerErrorResponse"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_get_running_loop = asyncio._get_running_loop
# asyncio.current_task is Python code on 3.11; this is the dict it reads.
_current_tasks: dict[Any, asyncio.Task[Any]] = asyncio.tasks._current_tasks  # type: ignore[attr-defined]
_get_ident = threading.get_ident
_monotonic = time.monotonic  # SYSTEM_CLOCK.now, without the attribute lookups
_heappush = heapq.heappush
_heappop = heapq.heappop
_INF: Final = math.inf

# How the request's budget is enforced (see _Request.mode).
_UNTIMED: Final = 0
_TASK: Final = 1  # asyncio: the shared timer heap cancels the task
_SCOPE: Final = 2  # trio (or asyncio outside a task): a cancel scope's deadline
_CLOCK: Final = 3  # a clock with call_at (FakeClock): its timer cancels a scope

# Outcomes that the middleware answers itself.
_SHED: Final = 1
_OPEN: Final = 2
_TIMED_OUT: Final = 3

# How far a request got (_Request.state).
_QUEUED: Final = 0
_ENTERED: Final = 1
_STARTED: Final = 2
_COMPLETE: Final = 3


class ServerErrorResponse(Exception):
    """The application answered with a 5xx status.

    Once the response is complete, the middleware gives it to the circuit
    breaker as the outcome of the call, which the breaker classifies like
    any exception (``record``, ``ignore``); it never escapes the middleware.
    It carries the status code only. A breaker given a custom ``record``
    must include it for 5xx responses to count.

    Example::

        breaker = CircuitBreaker("api", record=(ServerErrorResponse, OSError))
    """

    def __init__(self, status: int) -> None:
        super().__init__(f"the application answered {status}")
        self.status = status


def _invalid(parameter: str, value: object, expected: str) -> ValueError:
    return ValueError(f"{parameter} must be {expected}, got {value!r}")


def _count(parameter: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _invalid(parameter, value, f"an int >= {minimum}")
    return value


def _error_response(
    status: int, reason: str, json: bool, retry_after: int | None
) -> tuple[Message, Message, Message]:
    """The start message and body message (and HEAD's empty body) of a
    fixed error response: built once, sent as is."""
    if json:
        body = b'{"detail":"' + reason.encode() + b'"}'
        content_type = b"application/json"
    else:
        body = reason.encode()
        content_type = b"text/plain; charset=utf-8"
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    start = {"type": "http.response.start", "status": status, "headers": headers}
    return start, {"type": "http.response.body", "body": body}, {"type": "http.response.body"}


class _Timers:
    """The budgets of one middleware's requests on one asyncio loop.

    A heap of ``(at, seq, request)`` and one loop timer armed for the
    earliest entry: a heap push per request instead of a ``TimerHandle``
    (the middleware adds and removes entries inline). Requests of equal
    budget arrive in deadline order, so a request leaving usually finds its
    entry last in the heap (requests one at a time) or first (concurrent
    requests finish roughly in arrival order) and pops it, then the finished
    entries behind it.
    A request's deadline only moves later (each message it sends pushes it
    on), so an entry is re-filed lazily when it comes up early; entries of
    finished requests are dropped when they come up, or all at once when
    they outnumber the live ones.
    """

    __slots__ = ("armed", "handle", "heap", "live", "loop", "seq")

    SLACK = 256

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.heap: list[tuple[float, int, _Request]] = []
        self.handle: asyncio.TimerHandle | None = None
        self.armed = _INF
        self.live = 0
        self.seq = itertools.count()

    def arm(self, at: float) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.armed = at
        # call_later, not call_at: `at` is on time.monotonic(), which need
        # not be the loop's own time scale.
        self.handle = self.loop.call_later(at - _monotonic(), self.expire)

    def compact(self) -> None:
        self.heap = [entry for entry in self.heap if entry[2].task is not None]
        heapq.heapify(self.heap)

    def expire(self) -> None:
        self.handle = None
        self.armed = _INF
        now = _monotonic()
        heap = self.heap
        while heap:
            at, _, request = heap[0]
            if at > now:
                self.arm(at)
                return
            _heappop(heap)
            task = request.task
            if task is None or request.at == _INF:
                continue  # finished, or its response is complete
            if request.at > now:
                # It sent something since: file it under its new deadline.
                _heappush(heap, (request.at, next(self.seq), request))
                continue
            request.fired = True
            task.cancel()


class _Request(Deadline):
    """One request's state, and the deadline in force while it is handled
    (published in the context variable; ``at`` moves on as the response
    makes progress, and becomes infinite once it is complete).

    ``state`` says how far the request got: _QUEUED (the app has not been
    entered), _ENTERED, _STARTED (the response started), _COMPLETE.
    """

    __slots__ = (
        "budget",
        "cancelling",
        "downstream",
        "error",
        "fired",
        "mode",
        "now",
        "retry_after",
        "scope",
        "state",
        "status",
        "task",
        "timer",
        "trailers",
    )

    budget: float
    cancelling: int
    downstream: Send
    fired: bool
    mode: int
    now: Callable[[], float]  # the cancel scope's clock (mode _SCOPE)
    retry_after: float | None
    scope: Any  # an anyio or trio CancelScope
    state: int
    status: int
    task: asyncio.Task[Any] | None
    error: ResilienceTimeoutError
    timer: Any
    trailers: bool

    # Built by ResilienceMiddleware.__call__, which sets only what every
    # request reads (clock, downstream, mode, state); the rest is set where
    # it is known.

    def send(self, message: Message) -> Awaitable[None]:
        """The ``send`` the application sees: notes how far the response has
        got, pushes the deadline on, then forwards the message. A plain
        function returning the server's own awaitable: no coroutine frame
        of ours per message."""
        state = self.state
        if state == _STARTED:
            kind = message["type"]
            if kind == "http.response.body":
                if not self.trailers and not message.get("more_body", False):
                    self.state = _COMPLETE
            elif kind == "http.response.trailers":
                if not message.get("more_trailers", False):
                    self.state = _COMPLETE
            elif not message.get("more_body", False):  # pathsend, zerocopysend
                self.state = _COMPLETE
        elif state == _ENTERED and message["type"] == "http.response.start":
            self.state = _STARTED
            self.status = message["status"]
            self.trailers = message.get("trailers", False)
        mode = self.mode
        if mode:
            if self.state == _COMPLETE:
                self.at = _INF
                if mode == _SCOPE:
                    self.scope.deadline = _INF
                # No deadline from here on, and not this request as one: what
                # the server schedules while sending the last message (a
                # keep-alive timer) copies the context, which would keep the
                # request and the server's per-request objects alive with it.
                _current_deadline.set(None)
            elif mode == _TASK:
                self.at = _monotonic() + self.budget
            else:
                self.at = self.clock.now() + self.budget
                if mode == _SCOPE:
                    self.scope.deadline = self.now() + self.budget
        return self.downstream(message)

    def expired(self) -> bool:
        """Whether the budget ran out (and cancelled the work): called on the
        way out of the application with an exception, or after it returned."""
        mode = self.mode
        if mode == _TASK:
            if not self.fired:
                return False
            self.fired = False
            # Ours, unless someone else cancelled the task too.
            return self.task.uncancel() <= self.cancelling  # type: ignore[union-attr]
        if mode:
            return bool(self.scope.cancel_called)
        return False

    def fire(self) -> None:
        """The clock's timer callback (mode _CLOCK)."""
        if self.at == _INF:
            return
        if self.at > self.clock.now():
            self.timer = self.clock.call_at(self.at, self.fire)  # type: ignore[attr-defined]
            return
        self.scope.cancel()


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
      from the breaker). Exceptions from the app and 5xx responses (as
      :class:`ServerErrorResponse`), and timeouts, count as failures
      (subject to the breaker's ``record`` and ``ignore``).
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
            name="web",
        )

        # or around any ASGI callable
        app = ResilienceMiddleware(app, max_concurrent=64, timeout=10.0)
    """

    __slots__ = (
        "_breaker",
        "_bulkhead",
        "_cache",
        "_clock",
        "_exclude",
        "_exclude_methods",
        "_header",
        "_open_response",
        "_retry_after",
        "_run",
        "_seconds",
        "_shed_response",
        "_timeout",
        "_timeout_response",
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
        exclude_paths: Iterable[str] = (),
        exclude_methods: Iterable[str] = (),
        retry_after: int = 1,
        deadline_header: str | None = None,
        json_errors: bool = False,
        name: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not callable(app):
            raise _invalid("app", app, "an ASGI application (a callable)")
        if max_concurrent is not None:
            _count("max_concurrent", max_concurrent, 1)
        _count("max_waiting", max_waiting, 0)
        if max_waiting and max_concurrent is None:
            raise ValueError(f"max_waiting={max_waiting!r} needs max_concurrent, got None")
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not (timeout > 0 and math.isfinite(timeout))
        ):
            raise _invalid("timeout", timeout, "a finite number of seconds > 0 or None")
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise _invalid("breaker", breaker, "a CircuitBreaker or None")
        if isinstance(exclude_paths, str | bytes):
            # A lone "/health" would otherwise become the prefixes "/", "h", ...
            raise _invalid("exclude_paths", exclude_paths, "a collection of path prefixes")
        exclude = tuple(exclude_paths)
        for prefix in exclude:
            if not isinstance(prefix, str) or not prefix.startswith("/"):
                raise _invalid("exclude_paths", exclude_paths, "path prefixes starting with '/'")
        if isinstance(exclude_methods, str | bytes):
            raise _invalid("exclude_methods", exclude_methods, "a collection of HTTP methods")
        methods = frozenset(exclude_methods)
        for method in methods:
            if not isinstance(method, str) or not method.isalpha() or not method.isupper():
                raise _invalid("exclude_methods", exclude_methods, "upper-case HTTP methods")
        _count("retry_after", retry_after, 0)
        header = None
        if deadline_header is not None:
            if (
                not isinstance(deadline_header, str)
                or not deadline_header
                or not deadline_header.isascii()
                or any(c in deadline_header for c in ' \t:()<>@,;"/[]?={}')
            ):
                raise _invalid("deadline_header", deadline_header, "a header name or None")
            if timeout is None:
                raise ValueError(f"deadline_header={deadline_header!r} needs timeout, got None")
            header = deadline_header.lower().encode()
        if not isinstance(json_errors, bool):
            raise _invalid("json_errors", json_errors, "a bool")
        if name is not None and (not isinstance(name, str) or not name):
            raise _invalid("name", name, "a non-empty string or None")
        use_clock = clock is not None and clock is not SYSTEM_CLOCK
        if clock is not None and not isinstance(clock, Clock):
            raise _invalid("clock", clock, "a clock (now(), sleep(), sleep_sync()) or None")
        if use_clock and timeout is not None and not callable(getattr(clock, "call_at", None)):
            raise _invalid("clock", clock, "a clock with call_at(when, callback) to drive timeout")

        self.app = app
        self._bulkhead = (
            None
            if max_concurrent is None
            else Bulkhead(max_concurrent, max_waiting=max_waiting, name=name, clock=clock)
        )
        self._timeout = None if timeout is None else Timeout(timeout, name=name, clock=clock)
        self._breaker = breaker
        # The chain each request runs: bulkhead(breaker(app)), built once; the
        # breaker is applied inside _guarded.
        run: Callable[[_Request, Scope, Receive], Awaitable[None]] = self._guarded
        if self._bulkhead is not None:
            run = self._bulkhead(run)
        self._run = run
        self._seconds: float | None = None if timeout is None else float(timeout)
        self._exclude = exclude
        self._exclude_methods = methods
        self._header = header
        self._clock: Clock = clock if clock is not None else SYSTEM_CLOCK
        self._use_clock = use_clock
        self._retry_after = retry_after
        self._shed_response = _error_response(503, "Service Unavailable", json_errors, retry_after)
        self._open_response = _error_response(503, "Service Unavailable", json_errors, None)
        self._timeout_response = _error_response(504, "Gateway Timeout", json_errors, None)
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
        # _Request(send, clock), without the __init__ frame: the hot path.
        request = _new_request(_Request)
        request.clock = self._clock
        request.downstream = send
        request.mode = _UNTIMED
        request.state = _QUEUED
        seconds = self._seconds
        if seconds is None:
            try:
                await self._run(request, scope, receive)
                return
            except BaseException as exc:
                outcome = self._outcome(request, exc)
            if outcome:
                await self._answer(outcome, request, scope, send)
            return
        if self._header is not None:
            seconds = self._header_budget(scope, seconds)
        request.budget = seconds
        cached = self._cache
        task = _current_tasks.get(cached[1]) if cached[0] == _get_ident() else None
        if task is None:
            loop = _get_running_loop()
            if loop is None or self._use_clock or (task := _current_tasks.get(loop)) is None:
                outcome = await self._call_scoped(request, scope, receive)
                if outcome:
                    await self._answer(outcome, request, scope, send)
                return
            self._cache = cached = (_get_ident(), loop, _Timers(loop))
        # asyncio: an entry in a heap with one timer per loop for all of this
        # middleware's requests; the timer cancels the task.
        timers: _Timers = cached[2]
        request.mode = _TASK
        request.task = task
        request.cancelling = task.cancelling()
        request.fired = False
        request.at = at = _monotonic() + seconds
        # Timers.add, inlined: this is the hot path.
        _heappush(timers.heap, (at, next(timers.seq), request))
        timers.live += 1
        if at < timers.armed:
            timers.arm(at)
        token = _current_deadline.set(request)
        try:
            # A free permit taken inline (the bulkhead decorator's fast path,
            # one coroutine frame fewer), unless the shells are wrapped.
            bulkhead = self._bulkhead
            if bulkhead is not None and bulkhead._in_flight < bulkhead._capacity and Policy._inline:
                bulkhead._in_flight += 1
                try:
                    await self._guarded(request, scope, receive)
                finally:
                    bulkhead._release()
            else:
                await self._run(request, scope, receive)
            outcome = 0
        except BaseException as exc:
            if request.state == _QUEUED and request.expired():
                outcome = _SHED  # still queued for a permit when the budget ran out
                self._timed_out(seconds)
            else:
                outcome = self._outcome(request, exc)
        finally:
            _current_deadline.reset(token)
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
            await self._answer(outcome, request, scope, send)

    async def _call_scoped(self, request: _Request, scope: Scope, receive: Receive) -> int:
        """trio, a fake clock, or asyncio outside a task: a cancel scope."""
        budget = request.budget
        request.at = self._clock.now() + budget
        outcome = _SHED  # what a cancellation swallowed by the scope means
        token = _current_deadline.set(request)
        try:
            if self._use_clock:
                request.mode = _CLOCK
                with anyio.CancelScope() as cancel_scope:
                    request.scope = cancel_scope
                    request.timer = self._clock.call_at(request.at, request.fire)  # type: ignore[attr-defined]
                    try:
                        await self._run(request, scope, receive)
                        outcome = 0
                    except BaseException as exc:
                        outcome = self._outcome(request, exc)
                    finally:
                        request.at = _INF
                        request.timer.cancel()
            else:
                request.mode = _SCOPE
                if _get_running_loop() is None:
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
                        await self._run(request, scope, receive)
                        outcome = 0
                    except BaseException as exc:
                        outcome = self._outcome(request, exc)
        finally:
            _current_deadline.reset(token)
        if cancel_scope.cancel_called:
            if request.state == _QUEUED:
                if cancel_scope.cancelled_caught:  # still queued for a permit
                    self._timed_out(budget)
            elif not outcome:
                outcome = self._swallowed(request)
        return outcome

    def _outcome(self, request: _Request, exc: BaseException) -> int:
        """What an exception out of the bulkhead, breaker and app means: the
        response the middleware sends itself, 0 for none, or re-raise it."""
        if isinstance(exc, ServerErrorResponse):
            return 0  # recorded by the breaker; the response went out already
        state = request.state
        if exc is getattr(request, "error", None):  # our timeout
            if state == _STARTED:
                raise exc  # the server closes the connection
            return 0 if state == _COMPLETE else _TIMED_OUT
        if state == _QUEUED:  # the app's own rejections propagate
            if isinstance(exc, BulkheadFullError):
                return _SHED
            if isinstance(exc, CircuitOpenError):
                request.retry_after = exc.retry_after
                return _OPEN
        raise exc

    def _timed_out(self, budget: float) -> ResilienceTimeoutError:
        """Count and report a request timeout through the Timeout policy.

        The Timeout's own ``call`` runs to a fixed deadline; a request's
        budget moves on as its response progresses, so the middleware runs
        its own timer and reports through the policy, whose stats and
        events are what exporters read.
        """
        timeout = self._timeout
        assert timeout is not None
        return timeout._timed_out(budget)

    def _swallowed(self, request: _Request) -> int:
        """The budget ran out but the app caught the cancellation and returned."""
        if request.state == _COMPLETE:
            return 0
        error = self._timed_out(request.budget)
        if request.state == _STARTED:
            raise error
        return _TIMED_OUT

    async def _guarded(
        self, request: _Request, scope: Scope, receive: Receive, inside: bool = False
    ) -> None:
        """The app inside the circuit breaker: inline while the breaker is on
        its fast path (closed), one frame for both; otherwise through the
        breaker's call, which calls back here with ``inside=True``."""
        breaker = None if inside else self._breaker
        permit = 0
        if breaker is not None:
            if not (breaker._core.state is _CLOSED and breaker._fast and Policy._inline):
                await breaker.call(self._guarded, request, scope, receive, True)
                return
            permit = breaker._core.epoch
        request.state = _ENTERED
        try:
            await self.app(scope, receive, request.send)
        except BaseException as exc:
            if request.mode and request.expired():
                # A TimeoutError the breaker records; the middleware turns it
                # into a 504 or an aborted connection.
                request.error = error = self._timed_out(request.budget)
                if breaker is not None:
                    breaker._fast_failure(permit, error)
                raise error from None
            if breaker is not None and isinstance(exc, Exception):
                breaker._fast_failure(permit, exc)
            raise
        if self._breaker is None:
            return
        if request.state >= _STARTED and request.status >= 500:
            failure = ServerErrorResponse(request.status)
            if breaker is None:
                raise failure  # for the breaker's call to record
            breaker._fast_failure(permit, failure)
        elif breaker is not None:
            breaker._fast_success(permit, None)

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

    async def _answer(self, outcome: int, request: _Request, scope: Scope, send: Send) -> None:
        if outcome == _SHED:
            start, body, empty = self._shed_response
        elif outcome == _OPEN:
            start, body, empty = self._open_response
            # When the breaker will let a trial through; forced open: the default.
            wait = request.retry_after
            seconds = self._retry_after if wait is None else max(1, math.ceil(wait))
            start = {**start, "headers": [*start["headers"], (b"retry-after", b"%d" % seconds)]}
        else:
            start, body, empty = self._timeout_response
        await send(start)
        await send(empty if scope.get("method") == "HEAD" else body)

    def __repr__(self) -> str:
        return f"<ResilienceMiddleware app={self.app!r}>"
