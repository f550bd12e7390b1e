"""Timeout: cancel the work when its time is up."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from . import _backend, _validate
from ._clock import SYSTEM_CLOCK, Clock, SystemClock
from ._core.source import snippet
from ._deadline import Deadline
from ._deadline import _current as _current_deadline
from ._plan import Inline
from ._timer import ENQUEUE, RELEASE, DeadlineQueue, Expiry
from .errors import TimeoutError
from .events import TimedOut
from .policy import Policy

if TYPE_CHECKING:
    from .latency import LatencyTracker

__all__ = ["DeadlineGuard", "Timeout", "TimeoutStatistics"]

P = ParamSpec("P")
T = TypeVar("T")

_current_task = _backend.current_task
_get_ident = _backend.get_ident
_CancelledError = asyncio.CancelledError


@dataclass(frozen=True, slots=True)
class TimeoutStatistics:
    """Running totals of a :class:`Timeout` since it was created.

    Example::

        print(f"{timeout.stats.timeouts} calls timed out")
    """

    timeouts: int
    """Calls that timed out."""
    seconds: float
    """The limit in force (an adaptive timeout's moves)."""


class _Scope:
    """The ticket of a call timed by a cancel scope (trio)."""

    __slots__ = ("limit", "scope", "start", "timer", "token")

    def __init__(self, scope: Any, timer: Any, limit: float, token: Any, start: float) -> None:
        self.scope = scope
        self.timer = timer
        self.limit = limit
        self.token = token
        self.start = start


class Timeout(Policy):
    """Cancel the wrapped work after ``seconds`` and raise :class:`resilience.TimeoutError`.

    The work is really cancelled (its task receives a cancellation at its
    next await), on asyncio and on trio alike. Inside a :class:`Retry` a
    timeout limits each attempt; outside it, the whole call. A cancellation
    that comes from outside is never mistaken for a timeout: it propagates
    as a cancellation. A tighter deadline in force (an outer Timeout,
    :func:`resilience.deadline`, the ASGI middleware's request budget) cuts
    the work at that deadline instead.

    Only async callables can be timed out: a thread cannot be interrupted,
    so decorating a plain function raises ``TypeError``. For blocking code,
    use the blocking library's own timeout (sockets, HTTP clients) or run it
    in a :class:`PoolBulkhead` and time out the wait.

    ``clock``: the timer runs on the policy's clock; a clock other than the
    system clock must provide ``call_at(when, callback)``
    (:class:`~resilience.testing.FakeClock` does).

    Example::

        @Timeout(2.0)
        async def fetch(url: str) -> bytes: ...
    """

    __slots__ = ("_cache", "_call_at", "_seconds", "_timeouts")

    _kind = "timeout"
    sync_unsupported = (
        "a timeout cannot interrupt a running thread; use the blocking call's own "
        "timeout parameter, or wrap an async function instead"
    )

    def __init__(
        self, seconds: float, *, name: str | None = None, clock: Clock | None = None
    ) -> None:
        seconds = _validate.seconds("seconds", seconds)
        call_at = None
        if clock is not None and not isinstance(clock, SystemClock):
            call_at = getattr(clock, "call_at", None)
            if not callable(call_at):
                raise TypeError(
                    f"clock must provide call_at(when, callback) to drive a Timeout, got {clock!r}"
                )
        super().__init__(name=name, clock=clock)
        self._seconds = float(seconds)
        self._call_at: Callable[[float, Callable[[], object]], Any] | None = call_at
        self._timeouts = 0
        # (thread id, loop, queue): the queue of the loop last seen in that thread.
        self._cache: tuple[int, Any, Any] = (-1, None, None)

    @property
    def seconds(self) -> float:
        """The limit in force, in seconds."""
        return self._seconds

    @classmethod
    def adaptive(
        cls,
        tracker: LatencyTracker,
        *,
        quantile: float = 0.99,
        multiplier: float = 1.5,
        min: float = 0.01,
        max: float = 60.0,
        default: float | None = None,
        min_samples: int = 100,
        name: str | None = None,
        clock: Clock | None = None,
    ) -> Timeout:
        """A timeout whose limit follows the latency of the calls it times:
        ``multiplier`` times the ``quantile`` of ``tracker``, clamped to
        ``[min, max]``, and ``default`` (``max`` if not given) until the
        tracker holds ``min_samples`` durations. See
        :class:`~resilience.adaptive.AdaptiveTimeout`.

        Example::

            tracker = LatencyTracker()
            timeout = Timeout.adaptive(tracker, quantile=0.99, multiplier=1.5, min=0.05, max=5.0)
            hedge = Hedge(2, delay="p95", tracker=tracker)   # one tracker per dependency
        """
        from .adaptive import AdaptiveTimeout

        return AdaptiveTimeout(
            tracker,
            quantile=quantile,
            multiplier=multiplier,
            min=min,
            max=max,
            default=default,
            min_samples=min_samples,
            name=name,
            clock=clock,
        )

    @property
    def stats(self) -> TimeoutStatistics:
        return TimeoutStatistics(timeouts=self._timeouts, seconds=self._seconds)

    # The guard ----------------------------------------------------------------
    #
    # admit and settle are compiled from _INLINE (below the class), which
    # plans also compile into their brackets. On asyncio the ticket is the
    # call's Expiry, appended to a timer queue shared by this policy's calls
    # on the loop, and published as the deadline in force: no Task, no
    # context manager, no timer handle per call. Which loop and task: the
    # cache answers without asyncio._get_running_loop() (a getpid() call on
    # 3.11); a task of the cached loop being current proves that loop runs
    # in this thread. Everything else (trio, a tighter deadline in force, a
    # first call on a loop) goes through _admit_slow / _settle_slow.

    admit: Callable[[], object]
    settle: Callable[[object, BaseException | None, object], BaseException | None]

    async def wait(self) -> object:
        raise AssertionError("Timeout.admit never asks to wait")

    def wait_sync(self) -> object:
        raise TypeError(f"Timeout {self._name!r} cannot time a plain call: {self.sync_unsupported}")

    def _admit_slow(self, task: asyncio.Task[Any] | None, outer: Deadline | None) -> object:
        if task is None:
            return self._admit_uncached()
        assert outer is not None
        return self._admit_bounded(task, self._cache[2], outer)

    def _settle_slow(self, ticket: Any, error: BaseException | None) -> BaseException | None:
        if ticket.__class__ is not Expiry:
            return self._settle_scope(ticket, error)
        # An Expiry with a timer of its own (a tighter deadline was in force).
        _current_deadline.reset(ticket.token)
        task = ticket.task
        ticket.task = None
        ticket.handle.cancel()
        return self._fired(ticket, task, error) if ticket.fired else error  # type: ignore[arg-type]

    def _fired(
        self, expiry: Expiry, task: asyncio.Task[Any], error: BaseException | None
    ) -> BaseException | None:
        """Our cancel was requested: take it back, so the task's count stays
        honest, whether the work raised it or swallowed it; our own
        cancellation becomes a TimeoutError."""
        expiry.fired = False
        ours = task.uncancel() <= expiry.cancelling
        if ours and isinstance(error, _CancelledError):
            return self.timed_out(expiry.limit)
        return error

    def _admit_uncached(self) -> object:
        loop = _backend.running_loop()
        if loop is None:
            return self._enter_scope()
        task = _current_task(loop)
        if task is None:
            raise RuntimeError(f"Timeout {self._name!r} needs an asyncio task to cancel")
        # One attribute, so a thread running another loop reads a
        # consistent triple. A call keeps the queue it started with, so
        # replacing it never strands a deadline.
        self._cache = (_get_ident(), loop, DeadlineQueue(loop, self._clock))
        return self.admit()

    def _admit_bounded(
        self, task: asyncio.Task[Any], queue: DeadlineQueue, outer: Deadline
    ) -> Expiry:
        """A tighter deadline is in force: a timer of its own, at that deadline."""
        expiry = Expiry()
        expiry.at = outer.at
        expiry.clock = outer.clock
        expiry.task = task
        expiry.fired = False
        expiry.queue = queue
        expiry.limit = limit = max(0.0, outer.remaining())
        expiry.cancelling = task.cancelling()
        call_at = getattr(outer.clock, "call_at", None) if outer.clock is not SYSTEM_CLOCK else None
        if call_at is not None:
            expiry.handle = call_at(outer.at, expiry.fire)
        else:
            expiry.handle = queue.loop.call_later(limit, expiry.fire)
        expiry.token = _current_deadline.set(expiry)
        return expiry

    def _enter_scope(self) -> _Scope:
        """trio: a cancel scope, entered here and exited by :meth:`settle`."""
        trio = _backend.trio()
        limit = self._seconds
        clock = self._clock
        call_at = self._call_at
        outer = _current_deadline.get()
        if outer is not None and outer.remaining() < limit:
            # The tighter deadline's clock runs the timer.
            limit = max(0.0, outer.remaining())
            clock = outer.clock
            call_at = getattr(clock, "call_at", None) if clock is not SYSTEM_CLOCK else None
        timer = None
        if call_at is None:
            scope = trio.CancelScope(deadline=trio.current_time() + limit)
        else:
            scope = trio.CancelScope()
            timer = call_at(clock.now() + limit, scope.cancel)
        start = clock.now()
        token = _current_deadline.set(Deadline(start + limit, clock))
        scope.__enter__()
        return _Scope(scope, timer, limit, token, start)

    def _settle_scope(self, ticket: _Scope, error: BaseException | None) -> BaseException | None:
        if ticket.timer is not None:
            ticket.timer.cancel()
        _current_deadline.reset(ticket.token)
        try:
            if error is None:
                ticket.scope.__exit__(None, None, None)
                return None
            swallowed = ticket.scope.__exit__(type(error), error, error.__traceback__)
        except BaseException as exc:  # the scope raised something else instead
            return exc
        return self.timed_out(ticket.limit) if swallowed else error

    def timed_out(self, seconds: float | None = None) -> TimeoutError:
        """Count a timeout of this policy, emit ``TimedOut``, and return a fresh
        :class:`~resilience.TimeoutError` for it.

        The guard calls it when its timer fires; an integration that runs a
        timer of its own under this policy's name (the ASGI middleware's
        moving request budget) calls it to report through the same stats,
        events and metrics.

        Example::

            raise timeout.timed_out()
        """
        if seconds is None:
            seconds = self._seconds
        self._timeouts += 1
        if self._observed():
            self._emit(TimedOut(self._name, seconds))
        return TimeoutError(name=self._name, seconds=seconds)

    def call_sync(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        raise TypeError(f"Timeout {self._name!r} cannot run {fn!r}: {self.sync_unsupported}")

    def __repr__(self) -> str:
        return f"<Timeout {self._name!r} seconds={self._seconds!r}>"


_INLINE = Inline(
    admit="""
        {t}q = {g}._cache
        {t}k = {n}current_task({t}q[1]) if {t}q[0] == {n}get_ident() else None
        {t}o = {n}deadline.get()
        if {t}k is None or ({t}o is not None and {t}o.remaining() < {g}._seconds):
            {t} = {g}._admit_slow({t}k, {t}o)
        else:
            {t}q = {t}q[2]
            {t} = {n}Expiry()
            # The clock is a callable in a slot: called as `q.now()`, it would
            # take the generic lookup of a method that is not one, every call.
            {t}n = {t}q.now
            {t}.at = {t}n() + {g}._seconds
            {t}.clock = {g}._clock
            {t}.task = {t}k
            {t}.fired = False
            {t}.handle = None
            {t}.limit = {g}._seconds
            {t}.queue = {t}q
            {t}.cancelling = {t}k.cancelling()
"""
    + snippet(ENQUEUE, "            ", q="{t}q", e="{t}")
    + """
            {t}.token = {n}deadline.set({t})
    """,
    settle="""
        if {t}.__class__ is {n}Expiry and {t}.handle is None:
            {n}deadline.reset({t}.token)
            {t}k = {t}.task
            {t}.task = None
            {t}q = {t}.queue
"""
    + snippet(RELEASE, "            ", q="{t}q", e="{t}", x="{t}e")
    + """
            if {t}.fired:
                error = {g}._fired({t}, {t}k, error)
        else:
            error = {g}._settle_slow({t}, error)
    """,
    names={
        "Expiry": Expiry,
        "current_task": _current_task,
        "deadline": _current_deadline,
        "get_ident": _get_ident,
    },
)
Timeout._inline_source = _INLINE  # type: ignore[attr-defined]
Timeout.admit = _INLINE.method(
    "admit",
    """Start timing the current task; the ticket is its :class:`Expiry`
    (asyncio), queued and published as the deadline in force, or an entered
    cancel scope (trio).""",
)
Timeout.settle = _INLINE.method(
    "settle",
    """Stop timing; our own cancellation becomes :class:`~resilience.TimeoutError`.""",
)


class DeadlineGuard(Timeout):
    """A guard that bounds a call by the deadline in force, and does nothing without one.

    For integrations that must honour :func:`resilience.deadline` (or the
    ASGI middleware's request budget) when the user gave no
    :class:`Timeout`: it is not a policy of the user's, so it has no name of
    its own in metrics or events; the error it raises is a
    :class:`~resilience.TimeoutError` named ``"deadline"``.

    Example::

        plan = Plan([breaker, DeadlineGuard(), bulkhead])
    """

    __slots__ = ()

    _internal = True  # observers do not see its spans

    def __init__(self) -> None:
        # Not Policy.__init__: nothing registered, so no metrics series.
        self._name = "deadline"
        self._clock = SYSTEM_CLOCK
        self._listeners = ()
        self._plan = None
        self._async_run = None
        self._seconds = math.inf
        self._call_at = None
        self._timeouts = 0
        self._cache = (-1, None, None)

    def admit(self) -> object:
        if _current_deadline.get() is None:
            return None
        return super().admit()

    def settle(
        self, ticket: Any, error: BaseException | None, result: object
    ) -> BaseException | None:
        if ticket is None:
            return error
        return super().settle(ticket, error, result)

    def timed_out(self, seconds: float | None = None) -> TimeoutError:
        return TimeoutError(name=self._name, seconds=0.0 if seconds is None else seconds)

    def __repr__(self) -> str:
        return "<DeadlineGuard>"
