"""Bulkheads: limit how much of the process one dependency can occupy.

Two isolation styles, both policies like the others:

- :class:`Bulkhead` (here), semaphore isolation: at most ``max_concurrent``
  calls run at once, a bounded number wait in FIFO order, the rest are
  rejected. It costs almost nothing when a permit is free.
- :class:`~resilience.PoolBulkhead` (:mod:`resilience.pool`), thread
  isolation (Hystrix style): blocking callables run on a small pool of
  threads that belongs to the bulkhead alone, with a bounded queue in front.

Both report their in-flight, waiting and rejected counts through ``stats``
and raise a fresh :class:`~resilience.BulkheadFullError` on each rejection.

Thread safety. Counters are plain ints and the free-permit path takes no
lock. Every read-modify-write of a counter below is a run of bytecodes with
no call in it; CPython (3.11, 3.12, with the GIL) only switches threads at
calls, backward jumps and function entry, so such a run is atomic with
respect to other threads. The lock orders the slow paths (the wait queue,
handing over permits, resizing) among themselves. Free-threaded builds are
not supported by this scheme.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from . import _backend
from ._clock import Clock, SystemClock
from ._parking import (
    EXPIRED,
    GONE,
    GRANTED,
    WAITING,
    AsyncioWaiter,
    ThreadWaiter,
    TrioWaiter,
    Waiter,
    trio_abort,
)
from ._plan import Inline
from ._protocol import WAIT
from ._validate import count, optional_seconds
from .errors import BulkheadFullError
from .events import BulkheadRejected
from .policy import Policy

__all__ = ["Bulkhead", "BulkheadStatistics"]

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BulkheadStatistics:
    """A snapshot of a :class:`Bulkhead` or :class:`PoolBulkhead`.

    Example::

        stats = bulkhead.stats
        print(f"{stats.in_flight}/{stats.capacity} busy, {stats.waiting} waiting")
    """

    in_flight: int
    """Calls holding a permit now (for a pool: threads busy with a call,
    including calls whose caller has stopped waiting)."""
    waiting: int
    """Callers waiting for a permit (for a pool: calls queued for a thread)."""
    rejected: int
    """Calls rejected since creation, at once or when their wait ran out."""
    capacity: int
    """``max_concurrent`` (its current value after :meth:`Bulkhead.resize`),
    or a pool's ``workers``."""
    max_waiting: int
    """How many callers may wait: ``max_waiting``, or a pool's ``queue``."""


class Bulkhead(Policy):
    """Run at most ``max_concurrent`` calls at once; queue or reject the rest.

    - A call that finds a free permit takes it and runs, with no lock, no
      allocation and no yield to the event loop.
    - Otherwise it waits, in FIFO order, if fewer than ``max_waiting``
      callers are waiting already; for at most ``max_wait`` seconds when it
      is set (then it is rejected). Otherwise it is rejected at once.
      A rejection raises a fresh :class:`~resilience.BulkheadFullError`
      and emits :class:`~resilience.events.BulkheadRejected`.
    - Works on asyncio and trio (``await bulkhead.call(fn)`` or decorating
      an ``async def``) and in threads (``bulkhead.call_sync(fn)`` or
      decorating a plain ``def``); one bulkhead may serve all of them at once.
    - Cancelling a waiting caller, a running call, or a timeout around either
      never leaks a permit, and a permit is never handed to a caller that
      has gone.
    - :meth:`resize` changes the limit at runtime; calls in flight finish
      undisturbed.
    - ``clock``: with a clock that has ``call_at`` (such as
      :class:`~resilience.testing.FakeClock`) the ``max_wait`` expiry runs on
      that clock; otherwise on the event loop's timers.

    Example::

        db = Bulkhead(10, max_waiting=20, max_wait=0.5, name="db")

        @db
        async def query(sql: str) -> list[Row]: ...

        print(db.stats.in_flight, db.stats.waiting, db.stats.rejected)
    """

    __slots__ = (
        "_call_at",
        "_capacity",
        "_in_flight",
        "_lock",
        "_max_wait",
        "_max_waiting",
        "_rejected",
        "_waiters",
    )

    _kind = "bulkhead"

    def __init__(
        self,
        max_concurrent: int,
        *,
        max_waiting: int = 0,
        max_wait: float | None = None,
        name: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        count("max_concurrent", max_concurrent, 1)
        count("max_waiting", max_waiting, 0)
        max_wait = optional_seconds("max_wait", max_wait)
        if max_wait is not None and max_waiting == 0:
            # Nobody ever waits, so the setting would silently do nothing.
            raise ValueError(f"max_wait={max_wait!r} needs max_waiting >= 1, got max_waiting=0")
        call_at = None
        if max_wait is not None and clock is not None and not isinstance(clock, SystemClock):
            call_at = getattr(clock, "call_at", None)
            if not callable(call_at):
                raise TypeError(
                    f"clock must provide call_at(when, callback) to drive max_wait, got {clock!r}"
                )
        super().__init__(name=name, clock=clock)
        self._capacity = max_concurrent
        self._max_waiting = max_waiting
        self._max_wait: float | None = None if max_wait is None else float(max_wait)
        self._call_at: Callable[[float, Callable[[], object]], Any] | None = call_at
        self._in_flight = 0
        self._rejected = 0
        # Insertion-ordered, with O(1) removal of a caller that leaves.
        self._waiters: OrderedDict[Waiter, None] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def max_concurrent(self) -> int:
        """The current limit (changed by :meth:`resize`)."""
        return self._capacity

    @property
    def max_waiting(self) -> int:
        return self._max_waiting

    @property
    def max_wait(self) -> float | None:
        return self._max_wait

    @property
    def stats(self) -> BulkheadStatistics:
        """Current in-flight and waiting counts, and rejections since creation."""
        return BulkheadStatistics(
            in_flight=self._in_flight,
            waiting=len(self._waiters),
            rejected=self._rejected,
            capacity=self._capacity,
            max_waiting=self._max_waiting,
        )

    def resize(self, max_concurrent: int) -> None:
        """Change the limit. Growing admits waiting callers at once; shrinking
        lets the calls in flight finish and admits no one until fewer than the
        new limit are running.

        Example::

            bulkhead.resize(bulkhead.max_concurrent * 2)
        """
        count("max_concurrent", max_concurrent, 1)
        with self._lock:
            self._capacity = max_concurrent
            granted = self._grant_locked()
        for waiter in granted:
            self._wake(waiter)

    # The guard -------------------------------------------------------------
    #
    # admit and settle are compiled from _INLINE (below the class), the one
    # source of the free-permit path, which plans also compile into their
    # brackets: a check and an increment with no call between, atomic under
    # the GIL (see the module docstring).

    admit: Callable[[], object]
    settle: Callable[[object, BaseException | None, object], BaseException | None]

    def _admit_slow(self) -> object:
        if not self._max_waiting:
            self._acquire_nowait()  # no waiter to build just to reject
            return True
        return WAIT

    # The slow path ---------------------------------------------------------

    async def wait(self) -> object:
        """Wait for a permit (asyncio or trio), or raise BulkheadFullError."""
        loop = _backend.running_loop()
        if loop is not None:
            await self._wait_asyncio(loop)
        else:
            await self._wait_trio()
        return True

    def wait_sync(self) -> object:
        """Wait for a permit in this thread, or raise BulkheadFullError."""
        waiter = ThreadWaiter()
        if self._enqueue(waiter):
            return True
        timer: Any = None
        timeout = -1.0
        if self._max_wait is not None:
            if self._call_at is not None:
                expire = functools.partial(self._expire, waiter)
                timer = self._call_at(self._clock.now() + self._max_wait, expire)
            else:
                timeout = self._max_wait
        try:
            if not waiter.lock.acquire(timeout=timeout) and not self._leave(waiter):
                # Granted at the last moment: its wake-up is on its way.
                waiter.lock.acquire()
        except BaseException:  # KeyboardInterrupt while waiting
            self._abandon(waiter)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if waiter.state != GRANTED:
            raise self._rejection(waited=True)
        return True

    async def _wait_asyncio(self, loop: asyncio.AbstractEventLoop) -> None:
        waiter = AsyncioWaiter(loop)
        if self._enqueue(waiter):
            return
        timer: Any = None
        if self._max_wait is not None:
            if self._call_at is not None:
                expire = functools.partial(self._expire, waiter)
                timer = self._call_at(self._clock.now() + self._max_wait, expire)
            else:
                timer = loop.call_later(self._max_wait, self._expire, waiter)
        try:
            await waiter.fut
        except BaseException:
            self._abandon(waiter)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if waiter.state != GRANTED:
            raise self._rejection(waited=True)

    async def _wait_trio(self) -> None:
        trio = _backend.trio()
        waiter = TrioWaiter()
        if self._enqueue(waiter):
            return
        # Granted or expired already, the cancellation lands at the next
        # checkpoint, inside the call, which settles the permit it was given.
        abort = trio_abort(lambda: self._leave(waiter))

        if self._max_wait is None:
            await trio.lowlevel.wait_task_rescheduled(abort)
        elif self._call_at is not None:
            timer = self._call_at(
                self._clock.now() + self._max_wait, functools.partial(self._expire, waiter)
            )
            try:
                await trio.lowlevel.wait_task_rescheduled(abort)
            finally:
                timer.cancel()
        else:
            with trio.move_on_after(self._max_wait):
                await trio.lowlevel.wait_task_rescheduled(abort)
            # The deadline's abort left the waiter GONE: rejected below.
        if waiter.state != GRANTED:
            raise self._rejection(waited=True)

    def _acquire_nowait(self) -> None:
        """No wait queue: take a permit freed since the caller looked, or reject.

        Load shedding rejects at high rates, so this builds no waiter.
        """
        with self._lock:
            if self._in_flight < self._capacity:
                self._in_flight += 1
                return
        raise self._rejection(waited=False)

    def _enqueue(self, waiter: Waiter) -> bool:
        """Take a permit (True), queue ``waiter`` (False), or raise when full."""
        granted: list[Waiter] = []
        with self._lock:
            if not self._waiters and self._in_flight < self._capacity:
                self._in_flight += 1
                return True
            if len(self._waiters) >= self._max_waiting:
                full = True
            else:
                full = False
                self._waiters[waiter] = None
                # A release in another thread may have happened after our
                # check above but before it could see this waiter: look again.
                granted = self._grant_locked()
        if full:
            raise self._rejection(waited=False)
        mine = False
        for other in granted:
            if other is waiter:
                mine = True  # not parked yet: nothing to wake
            else:
                self._wake(other)
        return mine

    def _grant_locked(self) -> list[Waiter]:
        """Hand free permits to the first waiters; the caller holds the lock."""
        granted: list[Waiter] = []
        waiters = self._waiters
        while waiters:
            # Check and increment with no call between: see the module docstring.
            if self._in_flight >= self._capacity:
                break
            self._in_flight += 1
            waiter = waiters.popitem(last=False)[0]
            waiter.state = GRANTED
            granted.append(waiter)
        return granted

    def _dispatch(self) -> None:
        with self._lock:
            granted = self._grant_locked()
        for waiter in granted:
            self._wake(waiter)

    def _wake(self, waiter: Waiter) -> None:
        if not waiter.wake() and self._forfeit(waiter):
            # Its loop or run is gone: the permit would never come back.
            self._release()

    def _forfeit(self, waiter: Waiter) -> bool:
        """A granted permit that its waiter will never use: True for the one
        caller that takes it back (the failed waker or the abandoning waiter,
        whichever comes first), so it is released exactly once."""
        with self._lock:
            if waiter.state != GRANTED:
                return False
            waiter.state = GONE
            return True

    def _release(self) -> None:
        self._in_flight -= 1
        if self._waiters:
            self._dispatch()

    def _expire(self, waiter: Waiter) -> None:
        """max_wait ran out (a timer callback)."""
        with self._lock:
            if waiter.state != WAITING:
                return
            waiter.state = EXPIRED
            del self._waiters[waiter]
        waiter.wake()

    def _leave(self, waiter: Waiter) -> bool:
        """The caller gives up: True if it was still waiting (and is now gone)."""
        with self._lock:
            if waiter.state != WAITING:
                return False
            waiter.state = GONE
            del self._waiters[waiter]
            return True

    def _abandon(self, waiter: Waiter) -> None:
        """The caller is cancelled: leave the queue, or give back the permit
        that was handed over but never used. One transition under the lock,
        whichever of the two it is."""
        with self._lock:
            state = waiter.state
            if state == WAITING:
                del self._waiters[waiter]
            if state in (WAITING, GRANTED):
                waiter.state = GONE
        if state == GRANTED:
            self._release()

    def _rejection(self, *, waited: bool) -> BulkheadFullError:
        self._rejected += 1
        if self._observed():
            self._emit(BulkheadRejected(self._name, self._capacity, waited))
        return BulkheadFullError(name=self._name, capacity=self._capacity)

    def __repr__(self) -> str:
        return (
            f"<Bulkhead {self._name!r} max_concurrent={self._capacity} "
            f"max_waiting={self._max_waiting} in_flight={self._in_flight}>"
        )


_INLINE = Inline(
    admit="""
        if {g}._in_flight < {g}._capacity:
            {g}._in_flight += 1
            {t} = True
        else:
            {t} = {g}._admit_slow()
            {wait}
    """,
    settle="""
        {g}._in_flight -= 1
        if {g}._waiters:
            {g}._dispatch()
    """,
)
Bulkhead._inline_source = _INLINE  # type: ignore[attr-defined]
Bulkhead.admit = _INLINE.method(
    "admit",
    """Take a free permit (the ticket), reject, or ask the caller to :meth:`wait`.""",
)
Bulkhead.settle = _INLINE.method(
    "settle",
    """Give the permit back (to the first waiter, if any).""",
)
