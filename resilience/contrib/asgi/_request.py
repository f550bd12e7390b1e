"""One request's state and the middleware's fixed answers."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from resilience import Deadline
from resilience.errors import TimeoutError as ResilienceTimeoutError
from resilience.lowlevel import deadline_var

__all__ = ["Message", "Request", "Send", "ServerErrorResponse"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_INF: Final = math.inf

# How the request's budget is enforced (see _Request.mode).
_UNTIMED: Final = 0
_TASK: Final = 1  # asyncio: the shared timer heap (on the clock) cancels the task
_SCOPE: Final = 2  # trio (or asyncio outside a task): a cancel scope's deadline
_CLOCK: Final = 3  # trio with a clock that has call_at (FakeClock): its timer cancels a scope

# How far a request got (_Request.state).
_QUEUED: Final = 0
_ENTERED: Final = 1
_STARTED: Final = 2
_COMPLETE: Final = 3
# The budget ran out before the response started, and the app answered
# anyway (it caught the cancellation): what it sends is dropped, and the
# request is answered as timed out.
_LATE: Final = -1


async def _dropped() -> None:
    """What ``send`` returns for a message it does not forward."""


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


class Request(Deadline):
    """One request's state, and the deadline in force while it is handled
    (published in the context variable; ``at`` moves on as the response
    makes progress, and becomes infinite once it is complete).

    ``state`` says how far the request got: _QUEUED (the app has not been
    entered), _ENTERED, _STARTED (the response started), _COMPLETE.
    """

    __slots__ = (
        "budget",
        "cancelling",
        "cell",
        "downstream",
        "error",
        "fired",
        "limit",
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
    cell: Any  # the rate limit's cell for this request's key (with ``limit``)
    downstream: Send
    fired: bool
    limit: Any  # the middleware's RequestLimit, to stamp the response; or None
    mode: int
    now: Callable[[], float]  # the timer's clock (modes _TASK and _SCOPE)
    retry_after: float | None
    scope: Any  # an anyio or trio CancelScope
    state: int
    status: int
    task: asyncio.Task[Any] | None
    error: ResilienceTimeoutError
    timer: Any
    trailers: bool

    # Built by ResilienceMiddleware.__call__, which sets only what every
    # request reads (clock, downstream, limit, mode, state); the rest is set
    # where it is known.

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
            mode = self.mode
            # ran_out(), inline: this runs once per request.
            if mode and (self.fired if mode == _TASK else self.scope.cancel_called):
                self.state = _LATE
                return _dropped()
            self.state = _STARTED
            self.status = message["status"]
            self.trailers = message.get("trailers", False)
            if self.limit is not None:
                message = self.limit.stamp(message, self.cell)
        elif state == _LATE:
            return _dropped()
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
                deadline_var.set(None)
            elif mode == _TASK:
                self.at = self.now() + self.budget
            else:
                self.at = self.clock.now() + self.budget
                if mode == _SCOPE:
                    self.scope.deadline = self.now() + self.budget
        return self.downstream(message)

    def ran_out(self) -> bool:
        """Whether the budget has fired (without consuming the fact, as
        :meth:`expired` does)."""
        if self.mode == _TASK:
            return self.fired
        return bool(self.scope.cancel_called)

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
