"""Retry: run a call again when it fails, on a schedule."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, ParamSpec, TypeVar

from ._clock import Clock
from ._core.backoff import Backoff
from ._core.budget import RetryBudget
from ._deadline import _current as _current_deadline
from ._matchers import ExceptionFilter, exception_matcher, result_predicate
from ._plan import Inline
from ._validate import count, optional_seconds
from .backoff import exponential
from .errors import BulkheadFullError, CircuitOpenError, RateLimitedError
from .events import RetryExhausted, RetryScheduled, global_listeners
from .policy import Policy

__all__ = ["Retry", "RetryStatistics"]

P = ParamSpec("P")
T = TypeVar("T")

# Retrying these would defeat the policy that raised them: an open breaker or
# a full bulkhead is a request to back off, not a transient failure.
_NEVER_RETRIED = (CircuitOpenError, BulkheadFullError, RateLimitedError)


@dataclass(frozen=True, slots=True)
class RetryStatistics:
    """Running totals of a :class:`Retry` since it was created.

    Example::

        retry = Retry(3, backoff=backoff.immediate())
        retry.call_sync(flaky)   # fails once, then succeeds
        assert retry.stats.success_with_retry == 1
        assert retry.stats.retries == 1
    """

    success_without_retry: int
    success_with_retry: int
    failed_without_retry: int
    failed_with_retry: int
    retries: int
    """Attempts made after the first, across all calls."""


class Retry(Policy):
    """Run the call again when it fails, up to ``attempts`` attempts in all.

    - ``attempts``: every attempt counts, the first included (``Retry(1)`` never retries).
    - ``backoff``: the delay schedule (:mod:`resilience.backoff`); by default
      exponential from 0.1 s, doubling, capped at 5 s, with full jitter.
    - ``on``: which exceptions are retried: types or a predicate (default:
      any :class:`Exception`). Cancellation, ``KeyboardInterrupt``,
      ``SystemExit``, :class:`CircuitOpenError` and :class:`BulkheadFullError`
      are never retried.
    - ``on_result``: a predicate that makes a returned value retryable (for
      example ``lambda r: r.status_code == 503``).
    - ``max_elapsed``: seconds from the start of the first attempt; a wait
      that would end after it is not started. The same holds for a deadline
      in force (an outer :class:`Timeout`, :func:`resilience.deadline`, the
      ASGI middleware's request deadline).
    - ``budget``: a shared :class:`RetryBudget`.

    When it gives up, the last attempt's own exception propagates with a note
    saying how many attempts were made; for a retryable result, the last
    result is returned. A zero delay retries at once without yielding.

    Example::

        @Retry(4, backoff=backoff.exponential(0.2, cap=2, jitter="full"), on=ConnectionError)
        async def fetch(url: str) -> bytes: ...
    """

    __slots__ = (
        "_attempts",
        "_backoff",
        "_budget",
        "_failed_with_retry",
        "_failed_without_retry",
        "_is_retryable",
        "_max_elapsed",
        "_needs_start",
        "_note",
        "_on",
        "_on_result",
        "_retries",
        "_success_with_retry",
        "_success_without_retry",
    )

    _kind = "retry"

    def __init__(
        self,
        attempts: int = 3,
        *,
        backoff: Backoff | None = None,
        on: ExceptionFilter = (Exception,),
        on_result: Callable[[Any], bool] | None = None,
        max_elapsed: float | None = None,
        budget: RetryBudget | None = None,
        name: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        count("attempts", attempts, 1)  # it counts the first attempt
        if backoff is None:
            backoff = exponential(0.1, 2.0, cap=5.0, jitter="full")
        elif not isinstance(backoff, Backoff):
            raise TypeError(f"backoff must have a delay(attempt, previous) method, got {backoff!r}")
        max_elapsed = optional_seconds("max_elapsed", max_elapsed)
        if budget is not None and not isinstance(budget, RetryBudget):
            raise TypeError(f"budget must be a RetryBudget or None, got {budget!r}")
        super().__init__(name=name, clock=clock)
        self._attempts = attempts
        self._backoff = backoff
        self._on = on
        self._is_retryable = exception_matcher("on", on, never=_NEVER_RETRIED)
        self._on_result = result_predicate("on_result", on_result)
        self._max_elapsed = max_elapsed
        self._budget = budget
        self._needs_start = budget is not None or max_elapsed is not None
        self._note = f"resilience: Retry {self._name!r} gave up after"
        self._success_without_retry = 0
        self._success_with_retry = 0
        self._failed_without_retry = 0
        self._failed_with_retry = 0
        self._retries = 0

    @property
    def attempts(self) -> int:
        """How many attempts a call gets in all, the first included."""
        return self._attempts

    @property
    def backoff(self) -> Backoff:
        """The delay schedule between attempts (:mod:`resilience.backoff`).

        Example::

            assert Retry(3, backoff=backoff.fixed(1.0)).backoff.seconds == 1.0
        """
        return self._backoff

    @property
    def on(self) -> ExceptionFilter:
        """The ``on=`` filter as given: exception types or a predicate.

        Example::

            assert Retry(3, on=ConnectionError).on is ConnectionError
        """
        return self._on

    @property
    def max_elapsed(self) -> float | None:
        """Seconds from the first attempt after which no wait starts, or None."""
        return self._max_elapsed

    @property
    def budget(self) -> RetryBudget | None:
        """The shared :class:`RetryBudget`, or None."""
        return self._budget

    def retryable(self, error: BaseException) -> bool:
        """Whether this policy would retry a call that raised ``error``: its
        ``on=`` filter says yes, and it is none of the kinds never retried
        (an open breaker, a full bulkhead, a rate-limit refusal).

        Example::

            retry = Retry(3, on=ConnectionError)
            assert retry.retryable(ConnectionError()) and not retry.retryable(ValueError())
        """
        return isinstance(error, Exception) and bool(self._is_retryable(error))

    @property
    def stats(self) -> RetryStatistics:
        """Outcome totals since creation (what the Prometheus exporter reads)."""
        return RetryStatistics(
            success_without_retry=self._success_without_retry,
            success_with_retry=self._success_with_retry,
            failed_without_retry=self._failed_without_retry,
            failed_with_retry=self._failed_with_retry,
            retries=self._retries,
        )

    @property
    def on_result(self) -> Callable[[Any], bool] | None:
        """The predicate that makes a result retryable, or None."""
        return self._on_result

    # The flow -----------------------------------------------------------------

    @property
    def needs_start(self) -> bool:
        """Whether a call's :meth:`start` must come before its first attempt
        (a ``budget`` counts the call, ``max_elapsed`` needs its start time).
        When it is False, a driver may make the first attempt without a run
        and, if it succeeds, report it with :meth:`succeeded_at_once`.

        Example::

            run = retry.start() if retry.needs_start else None
        """
        return self._needs_start

    def succeeded_at_once(self) -> None:
        """Count a call whose first attempt succeeded, made without a
        :class:`RetryRun` (see :attr:`needs_start`).

        Example::

            if run is None and ok:
                retry.succeeded_at_once()
        """
        self._success_without_retry += 1

    def start(self) -> RetryRun:
        """The decisions of one call (see :class:`RetryRun`): what
        :meth:`call`, :meth:`call_sync`, pipelines and the httpx transports
        drive, one attempt at a time.

        Example::

            run = retry.start()
            delay = run.after(ConnectionError(), None)   # 0.1 (the schedule's first delay)
        """
        run = _new_run(RetryRun)
        run.policy = self
        run.attempt = 1
        run.delay = 0.0
        run.started = self._begin() if self._needs_start else 0.0
        return run

    def _begin(self) -> float:
        now = self._clock.now()
        if self._budget is not None:
            self._budget.record_call(now)
        return now

    def _give_up(
        self,
        attempt: int,
        reason: Literal["attempts", "max_elapsed", "deadline", "budget"],
        exc: BaseException | None,
        result: object,
    ) -> None:
        self._count_failure(attempt)
        if exc is not None:
            exc.add_note(f"{self._note} {attempt} attempt{'s' if attempt > 1 else ''} ({reason})")
        if self._listeners or global_listeners:
            self._emit(RetryExhausted(self._name, attempt, reason, exc, result))

    def _count_success(self, attempt: int) -> None:
        if attempt == 1:
            self._success_without_retry += 1
        else:
            self._success_with_retry += 1

    def _count_failure(self, attempt: int) -> None:
        if attempt == 1:
            self._failed_without_retry += 1
        else:
            self._failed_with_retry += 1

    def __repr__(self) -> str:
        return f"<Retry {self._name!r} attempts={self._attempts} backoff={self._backoff!r}>"


_new_run = object.__new__

# What plans compile into their brackets: no RetryRun is built unless the
# first attempt fails (or the policy needs its start time).
Retry._inline_source = Inline(  # type: ignore[attr-defined]
    start="""
        run = {g}.start() if {g}._needs_start else None
    """,
    after="""
        if run is None and error is None and {g}._on_result is None:
            {g}._success_without_retry += 1  # succeeded_at_once(), without its call
            delay = None
        else:
            if run is None:
                run = {g}.start()
            delay = run.after(error, result)
    """,
)
# A subclass that overrides start() runs through it.
Retry._inline_source.methods["start"] = Retry.start  # type: ignore[attr-defined]


class RetryRun:
    """One call's retry decisions: after each attempt, stop or wait and try again.

    Sans-I/O: it never sleeps and never calls the work; the driver does both.

    - :meth:`after`: judged by the policy's own rules (``on``,
      ``on_result``); :meth:`retry`: the driver has judged the outcome
      retryable by rules of its own (the httpx transports' HTTP rules) and
      may pass a delay the server asked for as ``hint``; :meth:`stop`: the
      driver stops for its own reasons. Each returns None to stop (counted in
      the policy's stats) or the seconds to wait before the next attempt.

    (The loop that drives it is in :class:`~resilience.lowlevel.Flow`.)

    Example::

        run = Retry(3, backoff=backoff.fixed(1.0)).start()
        run.retry(None, response_503, hint=2.5)   # 2.5: the server's Retry-After
        run.stop(failed=True)                     # a request not safe to repeat
    """

    __slots__ = ("attempt", "delay", "policy", "started")

    attempt: int
    """The attempt just made, counting from 1."""
    delay: float
    """The last delay answered (0.0 before any)."""
    policy: Retry
    started: float

    def after(self, error: BaseException | None, result: object) -> float | None:
        """After an attempt that raised ``error`` (or returned ``result``)."""
        retry = self.policy
        if error is None:
            on_result = retry._on_result
            if on_result is None or not on_result(result):
                retry._count_success(self.attempt)
                return None
        elif not isinstance(error, Exception):
            return None  # cancellation and the like: propagate, count nothing
        elif not retry._is_retryable(error):
            retry._count_failure(self.attempt)
            if self.attempt > 1:
                error.add_note(
                    f"resilience: Retry {retry._name!r} stopped after {self.attempt} attempts "
                    f"({type(error).__name__} is not retried)"
                )
            return None
        return self.retry(error, result)

    def retry(
        self, error: BaseException | None, result: object, *, hint: float | None = None
    ) -> float | None:
        """After an attempt the driver judged retryable; ``hint`` (seconds the
        other side asked for, such as ``Retry-After``) replaces the schedule's delay."""
        retry = self.policy
        attempt = self.attempt
        if attempt >= retry._attempts:
            retry._give_up(attempt, "attempts", error, result)
            return None
        delay = retry._backoff.delay(attempt, self.delay) if hint is None else hint
        limit = _current_deadline.get()
        if limit is not None and delay >= limit.remaining():
            # The next attempt could not finish in time: answer now with what
            # we have rather than be cut off mid-wait.
            retry._give_up(attempt, "deadline", error, result)
            return None
        if retry._needs_start:
            now = retry._clock.now()
            if retry._max_elapsed is not None and now + delay - self.started > retry._max_elapsed:
                retry._give_up(attempt, "max_elapsed", error, result)
                return None
            if retry._budget is not None and not retry._budget.try_retry(now):
                retry._give_up(attempt, "budget", error, result)
                return None
        retry._retries += 1
        if retry._listeners or global_listeners:
            retry._emit(RetryScheduled(retry._name, attempt, delay, error, result))
        self.attempt = attempt + 1
        self.delay = delay
        return delay

    def stop(self, *, failed: bool) -> None:
        """The driver stops for its own reasons (a request that is not safe to
        repeat, a server asking for too long a wait): count the call."""
        policy = self.policy
        if failed:
            policy._count_failure(self.attempt)
        elif self.attempt == 1:
            policy._success_without_retry += 1
        else:
            policy._success_with_retry += 1
