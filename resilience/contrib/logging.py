"""Log policy events with the standard :mod:`logging` module.

:func:`log_events` subscribes one listener that turns events into log
records: a breaker opening is a WARNING, closing an INFO, and rejections are
summarised at most once per interval so an open breaker under load cannot
flood the log. Needs no third-party package.

Example::

    import logging
    from resilience.contrib.logging import log_events

    logging.basicConfig(level=logging.INFO)
    log_events()
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from types import MappingProxyType

from resilience import Clock, SystemClock, events
from resilience.events import (
    BulkheadRejected,
    CallRejected,
    CircuitState,
    Event,
    FallbackUsed,
    HedgeCancelled,
    HedgeStarted,
    HedgeWon,
    RateLimitRejected,
    RateLimitWaited,
    RetryExhausted,
    RetryScheduled,
    SagaCompensationFailed,
    SagaCompensationStarted,
    SagaStateChanged,
    SagaStepCancelled,
    SagaStepCompensated,
    SagaStepCompleted,
    SagaStepFailed,
    SagaStepStarted,
    StateChanged,
    TimedOut,
)
from resilience.policy import Policy

__all__ = ["DEFAULT_LEVELS", "EventLogger", "log_events"]

DEFAULT_LEVELS: Mapping[type[Event], int] = MappingProxyType(
    {
        # A StateChanged to an alarming state is raised to WARNING (see below).
        StateChanged: logging.INFO,
        CallRejected: logging.INFO,
        BulkheadRejected: logging.INFO,
        RateLimitRejected: logging.INFO,
        RateLimitWaited: logging.DEBUG,
        RetryScheduled: logging.INFO,
        RetryExhausted: logging.WARNING,
        TimedOut: logging.WARNING,
        FallbackUsed: logging.INFO,
        # A hedge is routine: debug, logged as the event's repr.
        HedgeStarted: logging.DEBUG,
        HedgeWon: logging.DEBUG,
        HedgeCancelled: logging.DEBUG,
        # A saga's steps are routine; a failure, and above all a failed
        # compensation (the run needs a human), are not.
        SagaStateChanged: logging.INFO,
        SagaStepStarted: logging.DEBUG,
        SagaStepCompleted: logging.DEBUG,
        SagaStepFailed: logging.WARNING,
        SagaStepCancelled: logging.INFO,
        SagaCompensationStarted: logging.INFO,
        SagaStepCompensated: logging.INFO,
        SagaCompensationFailed: logging.ERROR,
    }
)
"""The level of each event type's records. A :class:`StateChanged` to OPEN,
FORCED_OPEN or DISABLED is logged at ``max(level, WARNING)``.

Example::

    print(DEFAULT_LEVELS[RetryScheduled])            # logging.INFO
    log_events(levels={RetryScheduled: logging.DEBUG})  # merged over these
"""

# States in which the breaker no longer protects as configured: worth a warning.
_ALARMING = frozenset({CircuitState.OPEN, CircuitState.FORCED_OPEN, CircuitState.DISABLED})


def _describe(exc: BaseException | None, result: object) -> str:
    if exc is not None:
        text = str(exc)
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return f"result {result!r}"


class EventLogger:
    """The listener :func:`log_events` installs. :meth:`close` removes it.

    Rejections (:class:`~resilience.events.CallRejected`,
    :class:`~resilience.events.BulkheadRejected`) are logged at most once
    every ``rejection_interval`` seconds per policy name; the record says
    how many more were left out since the previous one.

    Example::

        with log_events(logging.getLogger("app.resilience")):
            ...   # events are logged inside the block only
    """

    __slots__ = (
        "_clock",
        "_levels",
        "_lock",
        "_logger",
        "_policy",
        "_rejections",
        "closed",
        "rejection_interval",
    )

    def __init__(
        self,
        logger: logging.Logger,
        levels: Mapping[type[Event], int],
        rejection_interval: float,
        policy: Policy | None,
        clock: Clock,
    ) -> None:
        self._logger = logger
        self._levels = dict(levels)
        self.rejection_interval = rejection_interval
        self._policy = policy
        self._clock = clock
        self._lock = threading.Lock()
        # name -> (time of the last record, rejections left out since then)
        self._rejections: dict[str, tuple[float, int]] = {}
        self.closed = False

    @property
    def logger(self) -> logging.Logger:
        return self._logger

    def __call__(self, event: Event) -> None:
        level = self._levels.get(type(event))
        if level is None:
            return  # an event type this logger was told (or does not know how) to skip
        if isinstance(event, StateChanged) and event.new_state in _ALARMING:
            level = max(level, logging.WARNING)
        logger = self._logger
        if not logger.isEnabledFor(level):
            return  # cheap when the level is off: no formatting, no rate-limit bookkeeping
        extra = {"resilience_event": event, "resilience_policy": event.name}
        if isinstance(event, CallRejected | BulkheadRejected | RateLimitRejected):
            suppressed = self._admit_rejection(event.name)
            if suppressed is None:
                return
            logger.log(
                level, "%s%s", self._rejection_text(event), self._more(suppressed), extra=extra
            )
        elif isinstance(event, StateChanged):
            logger.log(
                level,
                "circuit breaker %r: %s -> %s",
                event.name,
                event.old_state.value,
                event.new_state.value,
                extra=extra,
            )
        elif isinstance(event, RetryScheduled):
            logger.log(
                level,
                "retry %r: attempt %d failed (%s); next attempt in %.3fs",
                event.name,
                event.attempt,
                _describe(event.exception, event.result),
                event.delay,
                extra=extra,
            )
        elif isinstance(event, RetryExhausted):
            logger.log(
                level,
                "retry %r gave up after %d attempt%s (%s): %s",
                event.name,
                event.attempts,
                "" if event.attempts == 1 else "s",
                event.reason,
                _describe(event.exception, event.result),
                extra=extra,
            )
        elif isinstance(event, RateLimitWaited):
            logger.log(
                level,
                "rate limiter %r: a call waited %.3fs for its slot",
                event.name,
                event.seconds,
                extra=extra,
            )
        elif isinstance(event, TimedOut):
            logger.log(
                level, "timeout %r: cancelled after %gs", event.name, event.seconds, extra=extra
            )
        elif isinstance(event, FallbackUsed):
            logger.log(
                level,
                "fallback %r used instead of %s",
                event.name,
                _describe(event.exception, event.result),
                extra=extra,
            )
        else:  # a level was given for a newer event type: log it generically
            logger.log(level, "%r", event, extra=extra)

    def _admit_rejection(self, name: str) -> int | None:
        """How many rejections were left out before this one, or None to leave it out too."""
        now = self._clock.now()
        with self._lock:
            last = self._rejections.get(name)
            if last is not None and now - last[0] < self.rejection_interval:
                self._rejections[name] = (last[0], last[1] + 1)
                return None
            if last is None and len(self._rejections) >= 10_000:
                # Names are bounded by configuration, but per-host breakers
                # come and go: forget the oldest rather than grow forever.
                del self._rejections[next(iter(self._rejections))]
            self._rejections[name] = (now, 0)
            return 0 if last is None else last[1]

    @staticmethod
    def _rejection_text(event: CallRejected | BulkheadRejected | RateLimitRejected) -> str:
        if isinstance(event, RateLimitRejected):
            text = f"rate limiter {event.name!r} refused a call"
            if event.retry_after is not None:
                text += f" (it would pass in {event.retry_after:.3f}s)"
            return text
        if isinstance(event, CallRejected):
            text = f"circuit breaker {event.name!r} rejected a call ({event.state.value}"
            if event.retry_after is not None:
                text += f", next trial in {event.retry_after:.3f}s"
            return text + ")"
        how = "after waiting" if event.waited else "at once"
        return f"bulkhead {event.name!r} rejected a call {how} (capacity {event.capacity})"

    def _more(self, suppressed: int) -> str:
        if not suppressed:
            return ""
        return f"; {suppressed} more in the last {self.rejection_interval:g}s not logged"

    def close(self) -> None:
        """Stop logging events. Closing twice does nothing.

        Example::

            handle = log_events()
            handle.close()
        """
        if self.closed:
            return
        self.closed = True
        if self._policy is None:
            events.remove_listener(self)
        else:
            self._policy.remove_listener(self)

    def __enter__(self) -> EventLogger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = "all policies" if self._policy is None else repr(self._policy)
        return f"<EventLogger {self._logger.name!r} for {where}{' closed' if self.closed else ''}>"


def log_events(
    logger: logging.Logger | str | None = None,
    *,
    policy: Policy | None = None,
    levels: Mapping[type[Event], int | None] | None = None,
    rejection_interval: float = 10.0,
    clock: Clock | None = None,
) -> EventLogger:
    """Log the events of every policy (or of one ``policy``) to ``logger``.

    - ``logger``: a :class:`logging.Logger` or a logger name; default the
      ``"resilience"`` logger.
    - ``levels``: per event type, the level to log it at (see
      :data:`DEFAULT_LEVELS`), or ``None`` to skip that type; merged over
      the defaults. Breaker state changes: WARNING when the breaker opens,
      is forced open or disabled; INFO for half-open and closed.
    - ``rejection_interval``: at most one rejection record per policy name
      per this many seconds (``0`` logs every one).
    - ``clock``: what the interval is measured on (tests pass a
      :class:`~resilience.testing.FakeClock`).

    Every record carries ``resilience_event`` (the event object) and
    ``resilience_policy`` (its name) as extra attributes, for structured
    formatters. Listening to every policy means events are built for every
    rejection, retry and timeout (not for successful calls).

    Example::

        import logging
        from resilience.events import RetryScheduled
        from resilience.contrib.logging import log_events

        handle = log_events("app.resilience", levels={RetryScheduled: logging.DEBUG})
        ...
        handle.close()
    """
    if logger is None:
        logger = logging.getLogger("resilience")
    elif isinstance(logger, str):
        logger = logging.getLogger(logger)
    elif not isinstance(logger, logging.Logger):
        raise TypeError(f"logger must be a logging.Logger, a logger name or None, got {logger!r}")
    if policy is not None and not isinstance(policy, Policy):
        raise TypeError(f"policy must be a Policy or None, got {policy!r}")
    if isinstance(rejection_interval, bool) or not isinstance(rejection_interval, int | float):
        raise TypeError(f"rejection_interval must be a number, got {rejection_interval!r}")
    if not rejection_interval >= 0:
        raise ValueError(f"rejection_interval must be >= 0, got {rejection_interval!r}")
    merged: dict[type[Event], int] = dict(DEFAULT_LEVELS)
    for event_type, level in (levels or {}).items():
        if not (isinstance(event_type, type) and issubclass(event_type, Event)):
            raise TypeError(f"levels keys must be Event types, got {event_type!r}")
        if level is None:
            merged.pop(event_type, None)
        elif isinstance(level, bool) or not isinstance(level, int):
            raise TypeError(
                f"levels[{event_type.__name__}] must be an int level or None, got {level!r}"
            )
        else:
            merged[event_type] = level
    handle = EventLogger(
        logger,
        merged,
        float(rejection_interval),
        policy,
        clock if clock is not None else SystemClock(),
    )
    if policy is None:
        events.add_listener(handle)
    else:
        policy.add_listener(handle)
    return handle
