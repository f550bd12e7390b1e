"""Timeout: cancel the work when its time is up."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import anyio

from ._clock import SYSTEM_CLOCK, Clock
from ._deadline import Deadline
from ._deadline import _current as _current_deadline
from ._timer import DeadlineQueue
from .errors import TimeoutError
from .events import TimedOut
from .policy import Policy

__all__ = ["Timeout", "TimeoutStatistics"]

P = ParamSpec("P")
T = TypeVar("T")

_get_running_loop = asyncio._get_running_loop
_current_task = asyncio.current_task
_monotonic = time.monotonic


@dataclass(frozen=True, slots=True)
class TimeoutStatistics:
    """Running totals of a :class:`Timeout` since it was created."""

    timeouts: int


class Timeout(Policy):
    """Cancel the wrapped work after ``seconds`` and raise :class:`resilience.TimeoutError`.

    The work is really cancelled (its task receives a cancellation at its
    next await), on asyncio and on trio alike. Inside a :class:`Retry` a
    timeout limits each attempt; outside it, the whole call. A cancellation
    that comes from outside is never mistaken for a timeout: it propagates
    as a cancellation.

    Only async callables can be timed out: a thread cannot be interrupted,
    so decorating a plain function raises ``TypeError``. For blocking code,
    use the blocking library's own timeout (sockets, HTTP clients) or run it
    in a :class:`PoolBulkhead` and time out the wait.

    Example::

        @Timeout(2.0)
        async def fetch(url: str) -> bytes: ...
    """

    __slots__ = ("_call_at", "_queue", "_seconds", "_timeouts")

    _kind = "timeout"
    _sync_unsupported = (
        "a timeout cannot interrupt a running thread; use the blocking call's own "
        "timeout parameter, or wrap an async function instead"
    )

    def __init__(
        self, seconds: float, *, name: str | None = None, clock: Clock | None = None
    ) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TypeError(f"seconds must be a number, got {seconds!r}")
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ValueError(f"seconds must be a finite number > 0, got {seconds!r}")
        call_at = None
        if clock is not None and clock is not SYSTEM_CLOCK:
            call_at = getattr(clock, "call_at", None)
            if not callable(call_at):
                raise TypeError(
                    f"clock must provide call_at(when, callback) to drive a Timeout, got {clock!r}"
                )
        super().__init__(name=name, clock=clock)
        self._seconds = float(seconds)
        self._call_at: Callable[[float, Callable[[], object]], Any] | None = call_at
        self._timeouts = 0
        self._queue: tuple[object, Any] = (None, None)

    @property
    def seconds(self) -> float:
        return self._seconds

    @property
    def stats(self) -> TimeoutStatistics:
        return TimeoutStatistics(timeouts=self._timeouts)

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        seconds = self._seconds
        outer = _current_deadline.get()
        if outer is not None and outer.remaining() < seconds:
            # A tighter deadline is in force (an outer Timeout, the ASGI
            # request, `resilience.deadline`): run to that one instead.
            return await self._call_scoped(outer, fn, *args, **kwargs)
        loop = _get_running_loop()
        if loop is None or self._call_at is not None:
            return await self._call_scoped(None, fn, *args, **kwargs)
        task = _current_task(loop)
        if task is None:
            return await self._call_scoped(None, fn, *args, **kwargs)
        # asyncio fast path: a deque append on a timer shared by this policy's
        # calls on this loop; no Task, no context manager, no handle per call.
        cached = self._queue
        queue: DeadlineQueue = cached[1] if cached[0] is loop else self._queue_for(loop)
        cancelling = task.cancelling()
        expiry = queue.add(task, loop.time() + seconds)
        token = _current_deadline.set(Deadline(_monotonic() + seconds, SYSTEM_CLOCK))
        try:
            return await fn(*args, **kwargs)
        except asyncio.CancelledError:
            if expiry.fired:
                expiry.fired = False
                if task.uncancel() <= cancelling:
                    raise self._timed_out(seconds) from None
            raise
        finally:
            _current_deadline.reset(token)
            queue.discard(expiry)
            if expiry.fired:
                # Our cancel was requested but the work swallowed it: take it
                # back so the task's cancellation count stays honest.
                task.uncancel()

    def _queue_for(self, loop: asyncio.AbstractEventLoop) -> DeadlineQueue:
        # One attribute holding (loop, queue): a thread running another loop
        # reads it atomically and never pairs its loop with another's queue.
        # A call keeps the queue it started with, so replacing it here (when
        # loops alternate) never strands a deadline; a finished loop's queue
        # is simply dropped with it.
        queue = DeadlineQueue(loop)
        self._queue = (loop, queue)
        return queue

    async def _call_scoped(
        self,
        outer: Deadline | None,
        fn: Callable[P, Awaitable[T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """The general path (trio, a fake clock, or a tighter outer deadline):
        an anyio cancel scope, cancelled by the clock's timer or its deadline."""
        limit = Deadline(self._clock.now() + self._seconds, self._clock) if outer is None else outer
        seconds = max(0.0, limit.remaining())
        call_at = getattr(limit.clock, "call_at", None) if limit.clock is not SYSTEM_CLOCK else None
        token = _current_deadline.set(limit)
        try:
            if call_at is None:
                with anyio.CancelScope(deadline=anyio.current_time() + seconds):
                    return await fn(*args, **kwargs)
            else:
                with anyio.CancelScope() as scope:
                    timer = call_at(limit.at, scope.cancel)
                    try:
                        return await fn(*args, **kwargs)
                    finally:
                        timer.cancel()
        finally:
            _current_deadline.reset(token)
        # Only reached when the scope swallowed its own cancellation.
        raise self._timed_out(seconds)

    def _timed_out(self, seconds: float) -> TimeoutError:
        self._timeouts += 1
        if self._observed():
            self._emit(TimedOut(self._name, seconds))
        return TimeoutError(name=self._name, seconds=seconds)

    def call_sync(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        raise TypeError(f"Timeout {self._name!r} cannot run {fn!r}: {self._sync_unsupported}")

    def __repr__(self) -> str:
        return f"<Timeout {self._name!r} seconds={self._seconds!r}>"
