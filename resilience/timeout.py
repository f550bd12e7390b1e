"""Timeout: cancel the work when its time is up."""

from __future__ import annotations

import asyncio
import math
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import anyio

from ._clock import SYSTEM_CLOCK, Clock
from ._deadline import Deadline
from ._deadline import _current as _current_deadline
from ._timer import DeadlineQueue, Expiry
from .errors import TimeoutError
from .events import TimedOut
from .policy import Policy

__all__ = ["Timeout", "TimeoutStatistics"]

P = ParamSpec("P")
T = TypeVar("T")

_get_running_loop = asyncio._get_running_loop
_current_task = asyncio.current_task
_get_ident = threading.get_ident
_monotonic = time.monotonic  # SYSTEM_CLOCK.now
_new_expiry = object.__new__


def _trio() -> Any:
    # Only reached while trio runs this code, so it is imported already.
    return sys.modules["trio"]


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

    __slots__ = ("_cache", "_call_at", "_seconds", "_timeouts")

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
        self._cache: tuple[int, Any, Any] = (-1, None, None)

    @property
    def seconds(self) -> float:
        return self._seconds

    @property
    def stats(self) -> TimeoutStatistics:
        return TimeoutStatistics(timeouts=self._timeouts)

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        expiry = self._enter()
        if expiry is not None:
            try:
                return await fn(*args, **kwargs)
            except asyncio.CancelledError:
                if expiry.fired and self._expired(expiry):
                    raise self._timed_out(self._seconds) from None
                raise
            finally:
                self._leave(expiry)
        seconds = self._seconds
        outer = _current_deadline.get()
        if outer is not None and outer.remaining() >= seconds:
            outer = None  # ours is the tighter one
        if outer is None and self._call_at is None and _get_running_loop() is None:
            # trio: its own cancel scope, inline, for the one frame and the
            # Deadline arithmetic _call_scoped would add.
            trio = _trio()
            limit = Deadline(_monotonic() + seconds, SYSTEM_CLOCK)
            token = _current_deadline.set(limit)
            try:
                with trio.CancelScope(deadline=trio.current_time() + seconds):
                    return await fn(*args, **kwargs)
            finally:
                _current_deadline.reset(token)
            # Only reached when the scope swallowed its own cancellation.
            raise self._timed_out(seconds)
        return await self._call_scoped(outer, fn, *args, **kwargs)

    # The asyncio fast path, in three steps that embedders (the httpx
    # transport) call around their own await: a deque append on a timer
    # shared by this policy's calls on this loop; no Task, no context
    # manager, no timer handle per call.

    def _enter(self) -> Expiry | None:
        """Start timing the current asyncio task: its :class:`Expiry`, now
        queued and published as the deadline in force; or None when the
        fast path does not apply (trio, a fake clock, no task, or a tighter
        deadline in force): :meth:`call` takes its other paths then."""
        seconds = self._seconds
        outer = _current_deadline.get()
        if outer is not None and outer.remaining() < seconds:
            return None
        # Which loop, and which task? The cache answers without
        # asyncio._get_running_loop() (a getpid() call on 3.11); a task of
        # the cached loop being current proves that loop runs in this thread.
        cached = self._cache
        task = _current_task(cached[1]) if cached[0] == _get_ident() else None
        if task is not None:
            queue: DeadlineQueue = cached[2]
        else:
            running = _get_running_loop()
            if running is None or self._call_at is not None:
                return None
            task = _current_task(running)
            if task is None:
                return None
            queue = DeadlineQueue(running)
            # One attribute, so a thread running another loop reads a
            # consistent triple. A call keeps the queue it started with, so
            # replacing it never strands a deadline.
            self._cache = (_get_ident(), running, queue)
        expiry = _new_expiry(Expiry)
        expiry.at = queue.now() + seconds
        expiry.clock = SYSTEM_CLOCK
        expiry.task = task
        expiry.fired = False
        expiry.queue = queue
        expiry.cancelling = task.cancelling()
        queue.entries.append(expiry)
        queue.live += 1
        if queue.handle is None:
            queue.arm(expiry.at)
        expiry.token = _current_deadline.set(expiry)
        return expiry

    @staticmethod
    def _expired(expiry: Expiry) -> bool:
        """On a CancelledError with ``expiry.fired``: whether it is our
        timeout (True) rather than an outer cancellation that came too."""
        expiry.fired = False
        return expiry.task.uncancel() <= expiry.cancelling  # type: ignore[union-attr]

    @staticmethod
    def _leave(expiry: Expiry) -> None:
        """Stop timing: always, however the work ended."""
        _current_deadline.reset(expiry.token)
        task = expiry.task
        expiry.task = None
        queue = expiry.queue
        queue.live -= 1
        entries = queue.entries
        if entries and entries[0] is expiry:
            entries.popleft()
            while entries and entries[0].task is None:
                entries.popleft()
        elif len(entries) > 2 * queue.live + queue.SLACK:
            queue.compact()
        if expiry.fired:
            # Our cancel was requested but the work swallowed it: take it
            # back so the task's cancellation count stays honest.
            task.uncancel()  # type: ignore[union-attr]

    async def _call_scoped(
        self,
        outer: Deadline | None,
        fn: Callable[P, Awaitable[T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """The general path (trio, a fake clock, or a tighter outer deadline):
        a cancel scope, cancelled by the clock's timer or by its deadline."""
        limit = Deadline(self._clock.now() + self._seconds, self._clock) if outer is None else outer
        seconds = max(0.0, limit.remaining())
        call_at = getattr(limit.clock, "call_at", None) if limit.clock is not SYSTEM_CLOCK else None
        token = _current_deadline.set(limit)
        try:
            if call_at is not None:
                with anyio.CancelScope() as scope:
                    timer = call_at(limit.at, scope.cancel)
                    try:
                        return await fn(*args, **kwargs)
                    finally:
                        timer.cancel()
            elif _get_running_loop() is None:
                # trio: its own cancel scope costs less than anyio's wrapper.
                trio = _trio()
                with trio.CancelScope(deadline=trio.current_time() + seconds):
                    return await fn(*args, **kwargs)
            else:
                with anyio.CancelScope(deadline=anyio.current_time() + seconds):
                    return await fn(*args, **kwargs)
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
