"""Retry: run a call again when it fails, on a schedule."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, ParamSpec, TypeVar

from ._clock import Clock
from ._core.backoff import Backoff
from ._core.budget import RetryBudget
from ._deadline import _current as _current_deadline
from ._matchers import ExceptionFilter, exception_matcher, result_predicate
from .backoff import exponential
from .errors import BulkheadFullError, CircuitOpenError
from .events import RetryExhausted, RetryScheduled, global_listeners
from .policy import Policy

__all__ = ["Retry", "RetryStatistics"]

P = ParamSpec("P")
T = TypeVar("T")

# Retrying these would defeat the policy that raised them: an open breaker or
# a full bulkhead is a request to back off, not a transient failure.
_NEVER_RETRIED = (CircuitOpenError, BulkheadFullError)


@dataclass(frozen=True, slots=True)
class RetryStatistics:
    """Running totals of a :class:`Retry` since it was created."""

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
        if isinstance(attempts, bool) or not isinstance(attempts, int):
            raise TypeError(f"attempts must be an int, got {attempts!r}")
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1 (it counts the first attempt), got {attempts}")
        if backoff is None:
            backoff = exponential(0.1, 2.0, cap=5.0, jitter="full")
        elif not isinstance(backoff, Backoff):
            raise TypeError(f"backoff must have a delay(attempt, previous) method, got {backoff!r}")
        if max_elapsed is not None and not (max_elapsed > 0 and math.isfinite(max_elapsed)):
            raise ValueError(
                f"max_elapsed must be a finite number > 0 or None, got {max_elapsed!r}"
            )
        if budget is not None and not isinstance(budget, RetryBudget):
            raise TypeError(f"budget must be a RetryBudget or None, got {budget!r}")
        super().__init__(name=name, clock=clock)
        self._attempts = attempts
        self._backoff = backoff
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
        return self._attempts

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

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        start = self._start() if self._needs_start else 0.0
        attempt = 1
        delay = 0.0
        while True:
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                next_delay = self._after_failure(attempt, delay, start, exc, None)
                if next_delay is None:
                    raise
            else:
                if self._on_result is None or not self._on_result(result):
                    if attempt == 1:
                        self._success_without_retry += 1
                    else:
                        self._success_with_retry += 1
                    return result
                next_delay = self._after_failure(attempt, delay, start, None, result)
                if next_delay is None:
                    return result
            delay = next_delay
            if delay > 0:
                await self._clock.sleep(delay)
            attempt += 1

    def call_sync(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        start = self._start()
        attempt = 1
        delay = 0.0
        while True:
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                next_delay = self._after_failure(attempt, delay, start, exc, None)
                if next_delay is None:
                    raise
            else:
                if self._on_result is None or not self._on_result(result):
                    if attempt == 1:
                        self._success_without_retry += 1
                    else:
                        self._success_with_retry += 1
                    return result
                next_delay = self._after_failure(attempt, delay, start, None, result)
                if next_delay is None:
                    return result
            delay = next_delay
            if delay > 0:
                self._clock.sleep_sync(delay)
            attempt += 1

    def _start(self) -> float:
        if not self._needs_start:
            return 0.0
        now = self._clock.now()
        if self._budget is not None:
            self._budget.record_call(now)
        return now

    def _after_failure(
        self,
        attempt: int,
        previous: float,
        start: float,
        exc: BaseException | None,
        result: object,
        hint: float | None = None,
    ) -> float | None:
        """The delay before the next attempt, or None to give up now.

        Shared by every shell (async, sync, the httpx transports): everything
        but the await. ``hint`` is a delay the other side asked for
        (Retry-After); it replaces the schedule's.
        """
        if exc is not None and not self._is_retryable(exc):
            self._count_failure(attempt)
            if attempt > 1:
                exc.add_note(
                    f"resilience: Retry {self._name!r} stopped after {attempt} attempts "
                    f"({type(exc).__name__} is not retried)"
                )
            return None
        if attempt >= self._attempts:
            self._give_up(attempt, "attempts", exc, result)
            return None
        delay = self._backoff.delay(attempt, previous) if hint is None else hint
        limit = _current_deadline.get()
        if limit is not None and delay >= limit.remaining():
            # The next attempt could not finish in time: answer now with what
            # we have rather than be cut off mid-wait.
            self._give_up(attempt, "deadline", exc, result)
            return None
        if self._needs_start:
            now = self._clock.now()
            if self._max_elapsed is not None and now + delay - start > self._max_elapsed:
                self._give_up(attempt, "max_elapsed", exc, result)
                return None
            if self._budget is not None and not self._budget.try_retry(now):
                self._give_up(attempt, "budget", exc, result)
                return None
        self._retries += 1
        if self._listeners or global_listeners:
            self._emit(RetryScheduled(self._name, attempt, delay, exc, result))
        return delay

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
