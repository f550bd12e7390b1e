"""Typed events and listeners.

Every policy emits frozen event objects at the moments that matter (a retry
is scheduled, a timeout fires, a breaker changes state). Subscribe on one
policy with ``policy.add_listener(fn)`` or on every policy with
:func:`add_listener`. A listener that raises is logged and never breaks the
call. When nobody listens, no event object is built.

Example::

    import resilience
    from resilience.events import RetryScheduled

    def log_retries(event: resilience.events.Event) -> None:
        if isinstance(event, RetryScheduled):
            print(f"{event.name}: attempt {event.attempt} failed, retry in {event.delay}s")

    resilience.events.add_listener(log_retries)
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeAlias

from ._event import Event
from ._saga_events import (
    SagaCompensationFailed,
    SagaCompensationStarted,
    SagaStateChanged,
    SagaStepCancelled,
    SagaStepCompensated,
    SagaStepCompleted,
    SagaStepFailed,
    SagaStepStarted,
)

__all__ = [
    "BulkheadRejected",
    "CallRejected",
    "CircuitState",
    "Event",
    "FallbackUsed",
    "HedgeCancelled",
    "HedgeStarted",
    "HedgeWon",
    "Listener",
    "RateLimitRejected",
    "RateLimitWaited",
    "RetryExhausted",
    "RetryScheduled",
    "SagaCompensationFailed",
    "SagaCompensationStarted",
    "SagaStateChanged",
    "SagaStepCancelled",
    "SagaStepCompensated",
    "SagaStepCompleted",
    "SagaStepFailed",
    "SagaStepStarted",
    "StateChanged",
    "TimedOut",
    "add_listener",
    "remove_listener",
]

logger = logging.getLogger("resilience")


class CircuitState(enum.Enum):
    """The states of a :class:`~resilience.CircuitBreaker`.

    Example::

        breaker = CircuitBreaker("api")
        assert breaker.state is CircuitState.CLOSED
        breaker.force_open()
        assert breaker.state is CircuitState.FORCED_OPEN
    """

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class RetryScheduled(Event):
    """An attempt failed and the retry will wait ``delay`` seconds before
    attempt ``attempt + 1``. ``exception`` is the failure, or ``None`` when a
    result was judged retryable (then ``result`` holds it).

    Example::

        events = []
        retry = Retry(3, backoff=backoff.fixed(0.5), clock=FakeClock(), name="fetch")
        retry.add_listener(events.append)
        retry.call_sync(flaky)   # fails once with ConnectionError, then succeeds
        (event,) = events
        assert (event.attempt, event.delay) == (1, 0.5)
        assert isinstance(event.exception, ConnectionError)
    """

    attempt: int
    delay: float
    exception: BaseException | None
    result: object = None


@dataclass(frozen=True, slots=True)
class RetryExhausted(Event):
    """The retry gave up after ``attempts`` attempts. ``reason`` says why:
    the attempts ran out, the next wait would pass ``max_elapsed`` or the
    deadline in force, or the retry budget refused.

    Example::

        def on_give_up(event: Event) -> None:
            if isinstance(event, RetryExhausted):
                reason = event.reason   # "attempts", "max_elapsed", "deadline" or "budget"
                log.error("%s gave up after %d tries (%s)", event.name, event.attempts, reason)

        retry.add_listener(on_give_up)
    """

    attempts: int
    reason: Literal["attempts", "max_elapsed", "deadline", "budget"]
    exception: BaseException | None
    result: object = None


@dataclass(frozen=True, slots=True)
class TimedOut(Event):
    """A timeout fired after ``seconds`` and cancelled the work.

    Example::

        timeouts = []
        timeout = Timeout(0.01, name="search")
        timeout.add_listener(timeouts.append)
        with contextlib.suppress(resilience.TimeoutError):
            await timeout.call(anyio.sleep, 1)
        assert timeouts == [TimedOut("search", seconds=0.01)]
    """

    seconds: float


@dataclass(frozen=True, slots=True)
class FallbackUsed(Event):
    """The fallback replaced a failure (``exception``) or a rejected result.

    Example::

        events = []
        fallback = Fallback([], name="cache")
        fallback.add_listener(events.append)
        assert fallback.call_sync(load_items) == []   # load_items raised OSError
        assert isinstance(events[0].exception, OSError)
    """

    exception: BaseException | None
    result: object = None


@dataclass(frozen=True, slots=True)
class StateChanged(Event):
    """A circuit breaker moved from ``old_state`` to ``new_state``.

    Example::

        def on_change(event: Event) -> None:
            if isinstance(event, StateChanged):
                print(f"{event.name}: {event.old_state.value} -> {event.new_state.value}")

        breaker = CircuitBreaker("api")
        breaker.add_listener(on_change)
        breaker.force_open()   # prints "api: closed -> forced_open"
    """

    old_state: CircuitState
    new_state: CircuitState


@dataclass(frozen=True, slots=True)
class CallRejected(Event):
    """A circuit breaker rejected a call in ``state``.

    Example::

        events = []
        breaker = CircuitBreaker("api")
        breaker.add_listener(events.append)
        breaker.force_open()
        with contextlib.suppress(CircuitOpenError):
            breaker.call_sync(fetch)
        assert events[-1] == CallRejected("api", CircuitState.FORCED_OPEN, retry_after=None)
    """

    state: CircuitState
    retry_after: float | None


@dataclass(frozen=True, slots=True)
class BulkheadRejected(Event):
    """A bulkhead rejected a call: no free permit and no room to wait, or the
    wait ran out (``waited`` is then True).

    Example::

        def on_reject(event: Event) -> None:
            if isinstance(event, BulkheadRejected):
                why = "waited too long" if event.waited else "full"
                log.warning("%s rejected: %s (capacity %d)", event.name, why, event.capacity)

        db = Bulkhead(10, max_waiting=5, max_wait=1.0, name="db")
        db.add_listener(on_reject)
    """

    capacity: int
    waited: bool


@dataclass(frozen=True, slots=True)
class RateLimitWaited(Event):
    """A rate limiter admitted a call after making it wait ``seconds``.

    Example::

        limiter = RateLimiter(1, max_wait=2.0, name="api")
        limiter.add_listener(lambda event: print(event))   # RateLimitWaited("api", seconds=1.0)
    """

    seconds: float


@dataclass(frozen=True, slots=True)
class RateLimitRejected(Event):
    """A rate limiter refused a call; ``retry_after`` as on the error.

    Example::

        limiter = RateLimiter(10, name="api")
        limiter.add_listener(print)   # RateLimitRejected("api", retry_after=0.1)
    """

    retry_after: float | None


@dataclass(frozen=True, slots=True)
class HedgeStarted(Event):
    """A hedge started attempt number ``attempt`` (2 for the first hedge)
    of one call, the one before it having run ``delay`` seconds without an
    answer, or having failed.

    Example::

        hedge = Hedge(3, delay=0.05, name="search")
        hedge.add_listener(print)   # HedgeStarted("search", attempt=2, delay=0.05)
    """

    attempt: int
    delay: float


@dataclass(frozen=True, slots=True)
class HedgeWon(Event):
    """A call's answer came from attempt ``attempt`` (not the first).

    Example::

        wins = [e for e in events if isinstance(e, HedgeWon)]
    """

    attempt: int


@dataclass(frozen=True, slots=True)
class HedgeCancelled(Event):
    """Attempt ``attempt`` (1 for the first) was cancelled: another answered first.

    Example::

        hedge.add_listener(lambda e: isinstance(e, HedgeCancelled) and print(e.attempt))
    """

    attempt: int


Listener: TypeAlias = Callable[[Event], None]
"""What :func:`add_listener` and ``Policy.add_listener`` take: a function of one event.

Example::

    def on_event(event: Event) -> None:
        if isinstance(event, StateChanged):
            print(event.name, event.new_state)

    add_listener(on_event)
"""

# Read directly by the policies (same list object), so checking "does anyone
# listen?" costs one truthiness test.
global_listeners: list[Listener] = []


def add_listener(listener: Listener) -> None:
    """Call ``listener(event)`` for every event of every policy.

    Example::

        def log_event(event: Event) -> None:
            logging.getLogger("app").info("%s", event)

        add_listener(log_event)
    """
    if not callable(listener):
        raise TypeError(f"listener must be callable, got {listener!r}")
    global_listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    """Stop calling a listener added with :func:`add_listener`.

    Example::

        seen: list[Event] = []
        listener = seen.append
        add_listener(listener)
        try:
            run_scenario()
        finally:
            remove_listener(listener)
    """
    global_listeners.remove(listener)


def dispatch(listeners: tuple[Listener, ...], event: Event) -> None:
    for listener in (*listeners, *global_listeners):
        try:
            listener(event)
        except Exception:
            logger.exception("resilience event listener %r raised on %r", listener, event)
