"""Hedge: when an attempt is slow, start another, and take the first good answer."""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import anyio

from . import _backend, _validate
from ._clock import Clock, SystemClock
from ._core.budget import RetryBudget
from ._plan import COROUTINE as _COROUTINE
from ._plan import FUNCTION as _FUNCTION
from ._plan import run_call
from ._race import Race, Watch, discard_answers
from ._timer import DeadlineQueue
from .events import HedgeCancelled, HedgeStarted, HedgeWon
from .latency import LatencyTracker
from .policy import Policy

__all__ = ["Hedge", "HedgeStatistics"]

P = ParamSpec("P")
T = TypeVar("T")

# How often a quantile delay is read from the tracker again, in seconds.
_REFRESH = 1.0
_get_ident = _backend.get_ident
_new_watch = object.__new__
_running_loop = _backend.running_loop
_current_task = _backend.current_task
_QUANTILE = re.compile(r"p(\d{1,2}(?:\.\d+)?)")


@dataclass(frozen=True, slots=True)
class HedgeStatistics:
    """Running totals of a :class:`Hedge` since it was created.

    Example::

        stats = hedge.stats
        extra = stats.hedges / max(1, stats.calls)
        print(f"{extra:.1%} extra attempts, {stats.won} won by a hedge")
    """

    calls: int
    """Calls made through the policy."""
    hedges: int
    """Attempts started besides the first (the extra load)."""
    won: int
    """Calls whose answer came from a hedge, not the first attempt."""
    cancelled: int
    """Attempts cancelled because another answered first (the first attempt included)."""
    refused: int
    """Hedges the budget did not allow."""


def _delay(delay: float | str) -> tuple[float | None, float | None]:
    """``(seconds, None)`` for a fixed delay, ``(None, quantile)`` for ``"p95"``."""
    if isinstance(delay, str):
        match = _QUANTILE.fullmatch(delay)
        quantile = float(match.group(1)) / 100 if match else 0.0
        if not 0.0 < quantile < 1.0:
            raise ValueError(
                f"delay must be seconds or a latency quantile such as 'p95' or 'p99.9', "
                f"got {delay!r}"
            )
        return None, quantile
    return _validate.delay("delay", delay), None


class Hedge(Policy):
    """Start the call; if it has not answered after ``delay``, start it again
    (up to ``attempts`` in flight), and take the first acceptable answer.

    - ``delay``: seconds, or a quantile of the dependency's latency
      (``"p95"``, ``"p99.9"``) read from ``tracker`` (by default a
      :class:`~resilience.LatencyTracker` of the policy's own), never below
      ``min_delay``, and ``default_delay`` until the tracker holds
      ``min_samples`` durations. ``delay=0`` starts every attempt at once.
      A p95 delay hedges about 5 % of calls.
    - An attempt that fails (an exception, or a result for which
      ``on_result`` returns True: "not acceptable", as in
      :class:`~resilience.Retry`) starts the next one at once; later ones
      follow at ``delay``.
    - The first acceptable answer wins; every other attempt is cancelled and
      awaited before it is returned: nothing outlives the call. When none is
      acceptable, the first attempt's own outcome (its exception, or its
      result) is the call's.
    - ``budget``: a :class:`~resilience.RetryBudget` bounding the extra load
      (each call deposits, each hedge withdraws); a refused hedge is not
      started, and the call goes on with the attempts it has.
    - Every attempt's duration is recorded in the tracker, a cancelled one as
      the time it had run; share the tracker with an adaptive
      :class:`~resilience.Timeout` of the same dependency.

    Hedge only idempotent calls: every attempt runs the call again. Attempts
    run as tasks of a task group (asyncio and trio); a plain function cannot
    be hedged, since a thread cannot be cancelled.

    Example::

        hedge = Hedge(2, delay="p95", budget=RetryBudget(ratio=0.05))

        @hedge
        async def lookup(key: str) -> bytes: ...
    """

    __slots__ = (
        "_budget",
        "_cache",
        "_call_at",
        "_calls",
        "_cancelled",
        "_default_delay",
        "_delay",
        "_fixed",
        "_hedges",
        "_min_delay",
        "_min_samples",
        "_on_result",
        "_quantile",
        "_refresh_at",
        "_refused",
        "_won",
        "attempts",
        "tracker",
    )

    _kind = "hedge"
    sync_unsupported = "hedged attempts run side by side, and a thread cannot be cancelled"

    def __init__(
        self,
        attempts: int = 2,
        delay: float | str = "p95",
        *,
        tracker: LatencyTracker | None = None,
        budget: RetryBudget | None = None,
        on_result: Callable[[Any], bool] | None = None,
        min_delay: float = 0.001,
        default_delay: float = 1.0,
        min_samples: int = 100,
        name: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        _validate.count("attempts", attempts, 1)
        fixed, quantile = _delay(delay)
        if tracker is not None and not isinstance(tracker, LatencyTracker):
            raise TypeError(f"tracker must be a LatencyTracker or None, got {tracker!r}")
        if budget is not None and not isinstance(budget, RetryBudget):
            raise TypeError(f"budget must be a RetryBudget or None, got {budget!r}")
        if on_result is not None and not callable(on_result):
            raise TypeError(f"on_result must be a predicate or None, got {on_result!r}")
        min_delay = _validate.delay("min_delay", min_delay)
        default_delay = _validate.delay("default_delay", default_delay)
        _validate.count("min_samples", min_samples, 1)
        super().__init__(name=name, clock=clock)
        self.attempts = attempts
        self.tracker = tracker if tracker is not None else LatencyTracker(clock=self._clock)
        """Where the attempts' durations go (and the quantile delay comes from)."""
        self._fixed = fixed
        self._quantile = quantile
        self._budget = budget
        self._on_result = on_result
        self._min_delay = min_delay
        self._default_delay = default_delay
        self._min_samples = min_samples
        self._calls = self._hedges = self._won = self._cancelled = self._refused = 0
        self._delay = default_delay  # a quantile delay's value, until worked out
        self._refresh_at = -math.inf
        # (thread id, loop, timer queue, the queue's delay) of the last loop seen.
        self._cache: tuple[int, Any, Any, float] = (-1, None, None, math.inf)
        # A clock other than the system's times the delay with its own timers.
        self._call_at: Callable[[float, Callable[[], object]], Any] | None = (
            None if isinstance(self._clock, SystemClock) else getattr(self._clock, "call_at", None)
        )

    @property
    def stats(self) -> HedgeStatistics:
        return HedgeStatistics(
            calls=self._calls,
            hedges=self._hedges,
            won=self._won,
            cancelled=self._cancelled,
            refused=self._refused,
        )

    @property
    def delay(self) -> float:
        """The delay an attempt runs before the next starts, worked out now
        (calls read a quantile delay again at most once a second)."""
        if self._fixed is not None:
            return self._fixed
        tracker = self.tracker
        if tracker.count < self._min_samples:
            return self._default_delay
        quantile = tracker.quantile(self._quantile)  # type: ignore[arg-type]
        if quantile is None:
            return self._default_delay
        return max(self._min_delay, quantile)

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        if fn.__class__ is _FUNCTION and fn.__code__.co_flags & _COROUTINE:
            # An ``async def``: what run_call would find, without its frames.
            return await self.race(fn, args, kwargs, self._on_result, None)  # type: ignore[no-any-return]
        result: T = await run_call(self, self._hedged, fn, args, kwargs)
        return result

    async def _hedged(self, fn: Callable[..., Awaitable[Any]], /, *args: Any, **kwargs: Any) -> Any:
        return await self.race(fn, args, kwargs, self._on_result, None)

    def call_sync(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        self._check_sync(fn)
        raise AssertionError("unreachable")  # pragma: no cover

    async def race(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        reject: Callable[[Any], bool] | None,
        discard: Callable[[Any], Awaitable[None]] | None,
    ) -> Any:
        """The hedged call, for drivers with rules of their own: ``reject``
        in place of ``on_result``, and ``discard``, awaited for each answer
        that is not returned (an HTTP response to close).

        On asyncio the first attempt runs in the caller's own task, queued
        on a timer; only if the delay passes does a coordinator task start
        the hedges (and cancel this task's attempt if one of them wins).
        Elsewhere (trio), every attempt is a task of a task group."""
        self._calls += 1
        if self._budget is not None:
            self._budget.record_call(self._clock.now())
        delay = self._fixed
        if delay is None:
            # A quantile, worked out again at most once a second (Finagle:
            # every 3 s): read per call, it would cost more than the hedge.
            # Until the tracker is warm, every call looks (a count is cheap),
            # so the quantile takes over with the min_samples-th duration.
            now = self._clock.now()
            if now >= self._refresh_at:
                self._delay = self.delay
                if self.tracker.count >= self._min_samples:
                    self._refresh_at = now + _REFRESH
            delay = self._delay
        loop = _running_loop()
        if (
            loop is None
            or self.attempts == 1
            or delay == 0.0
            or (task := _current_task(loop)) is None
        ):
            return await self._rest(Race(self.attempts), fn, args, kwargs, reject, discard, delay)
        cached = self._cache
        if cached[1] is loop and delay >= cached[3] and cached[0] == _get_ident():
            queue: DeadlineQueue = cached[2]
        else:
            # One timer per loop for this hedge's calls, their deadlines in
            # order: a shorter delay than the queue's starts a queue of its
            # own (the calls in the old one keep it).
            queue = DeadlineQueue(loop, self._clock)
            self._cache = (_get_ident(), loop, queue, delay)
        # Watch(self, task, call), without the __init__ frame: the hot path.
        watch = _new_watch(Watch)
        watch.hedge = self
        watch.caller = watch.task = task
        watch.cancelling = task.cancelling()
        watch.call = (fn, args, kwargs, reject, delay)
        watch.race = None
        start = queue.now()
        watch.at = start + delay
        queue.add(watch)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            error: BaseException | None = exc
            result = None
        else:
            error = None
        watch.task = None
        queue.release(watch)
        took = queue.now() - start
        race = watch.race
        if race is not None:  # the delay passed: hedges are running
            return await watch.join(race, error, result, took, discard)
        self.tracker.record(took)  # no hedge started: the common case
        returned = error is None
        if returned:
            try:
                if reject is None or not reject(result):
                    return result
            except Exception as exc:  # the predicate's failure is the attempt's
                error = exc
        elif not isinstance(error, Exception):
            raise error  # type: ignore[misc]  # cancelled from outside
        # A failure before the delay: the next attempt at once, and the rest
        # of the race in a task group here.
        race = Race(self.attempts)
        if returned:
            race.answered.append(0)
        race.ended(0, error, result, False)
        return await self._rest(race, fn, args, kwargs, reject, discard, delay, 1)

    async def _rest(
        self,
        race: Race,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        reject: Callable[[Any], bool] | None,
        discard: Callable[[Any], Awaitable[None]] | None,
        delay: float,
        started: int = 0,
    ) -> Any:
        """The race in a task group here, from attempt ``started`` on."""
        try:
            await self._coordinate(race, fn, args, kwargs, reject, delay, started)
        except BaseException:
            if discard is not None:
                await discard_answers(race, discard, None)
            raise
        return await self._outcome(race, discard)

    async def _outcome(self, race: Race, discard: Callable[[Any], Awaitable[None]] | None) -> Any:
        """The winner's answer, or the first attempt's outcome; every other
        answer discarded."""
        winner = race.winner
        if discard is not None:
            # Every answer but the one returned (none when an error is).
            kept = winner if winner is not None else None if race.errors[0] else 0
            await discard_answers(race, discard, kept)
        if winner is not None:
            if winner:
                self._won += 1
                if self._observed():
                    self._emit(HedgeWon(self._name, winner + 1))
            return race.results[winner]
        error = race.errors[0]
        if error is not None:
            raise error
        return race.results[0]

    async def _coordinate(
        self,
        race: Race,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        reject: Callable[[Any], bool] | None,
        delay: float,
        started: int,
    ) -> None:
        """Start attempts (the first; the next when the delay passes, or at
        once after a failure) until one answers acceptably or all have ended;
        then cancel the others, and await them. ``started``: attempts that
        run elsewhere (the first, in the caller's task)."""
        clock = self._clock
        call_at = self._call_at
        attempts = self.attempts
        budget = self._budget
        refused = False
        due = True  # the next attempt may start now
        async with anyio.create_task_group() as group:
            while race.winner is None:
                more = started < attempts and not refused
                if more and (due or race.failed):
                    if started and budget is not None and not budget.try_retry(clock.now()):
                        refused = True
                        self._refused += 1
                        continue
                    group.start_soon(self._attempt, race, started, fn, args, kwargs, reject)
                    started += 1
                    if race.failed:
                        race.failed -= 1  # that failure is answered
                    if started > 1:
                        self._hedges += 1
                        if self._observed():
                            self._emit(HedgeStarted(self._name, started, delay))
                    due = delay == 0.0
                    continue
                if not more and race.finished == started:
                    break  # every attempt ended, none acceptably
                # Until the delay passes or an attempt ends, whichever is first.
                with anyio.CancelScope() as wake:
                    race.wake = wake
                    if not more:
                        await anyio.sleep_forever()
                    elif call_at is None:
                        await clock.sleep(delay)
                        due = True
                    else:
                        # A clock of its own (FakeClock): the delay passes when
                        # its time does, not when this task gets round to it.
                        timer = call_at(clock.now() + delay, race.delay_passed)
                        try:
                            await anyio.sleep_forever()
                        finally:
                            timer.cancel()
                race.wake = None
                if race.passed:
                    race.passed = False
                    due = True
            group.cancel_scope.cancel()

    async def _attempt(
        self,
        race: Race,
        index: int,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        reject: Callable[[Any], bool] | None,
    ) -> None:
        now = self._clock.now
        start = now()
        try:
            result = await fn(*args, **kwargs)
        except Exception as exc:
            self.tracker.record(now() - start)
            race.ended(index, exc, None, False)
            return
        except BaseException:
            self.tracker.record(now() - start)
            if race.winner is not None:  # we cancelled it: another answered first
                self._cancelled += 1
                if self._observed():
                    self._emit(HedgeCancelled(self._name, index + 1))
            raise
        self.tracker.record(now() - start)
        race.answered.append(index)
        try:
            good = reject is None or not reject(result)
        except Exception as exc:  # the predicate's own failure is the attempt's
            race.ended(index, exc, result, False)
            return
        race.ended(index, None, result, good)

    def __repr__(self) -> str:
        delay = f"p{self._quantile * 100:g}" if self._quantile is not None else f"{self._fixed:g}s"
        return f"<Hedge {self._name!r} attempts={self.attempts} delay={delay}>"
