"""Tools for tests, ours and our users': a fake clock that never waits.

Pass ``clock=FakeClock()`` to any policy. Its sleeps return at once, move the
fake time forward by the requested amount and record it in ``clock.sleeps``;
timeouts driven by it fire when the fake time passes their deadline.

Example::

    from resilience import Retry, backoff
    from resilience.testing import FakeClock

    clock = FakeClock()
    retry = Retry(3, backoff=backoff.fixed(2.0), clock=clock)
    with pytest.raises(ConnectionError):
        retry.call_sync(always_fails)
    assert clock.sleeps == [2.0, 2.0]
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
from collections.abc import Callable

import anyio.lowlevel

__all__ = ["FakeClock"]


class _FakeTimer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock whose time moves only when told to.

    - ``now()`` reads the fake time (``start``, 0.0 by default).
    - ``advance(seconds)`` moves it forward and runs the timers that came due,
      in deadline order.
    - ``await sleep(seconds)`` and ``sleep_sync(seconds)`` record the delay in
      ``sleeps``, advance the time by it, and return without waiting (the
      async one still passes one checkpoint, so cancellation is delivered).
    - ``call_at(when, callback)`` runs ``callback()`` once the fake time
      reaches ``when``; it returns a handle with ``cancel()``.

    Example::

        clock = FakeClock()
        clock.advance(5)
        assert clock.now() == 5.0
    """

    __slots__ = ("_lock", "_now", "_seq", "_timers", "sleeps")

    def __init__(self, start: float = 0.0) -> None:
        if isinstance(start, bool) or not isinstance(start, int | float):
            raise TypeError(f"start must be a number, got {start!r}")
        if not math.isfinite(start):
            raise ValueError(f"start must be a finite number, got {start!r}")
        self._now = float(start)
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the fake time forward by ``seconds`` (>= 0) and fire due timers."""
        if not seconds >= 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        with self._lock:
            self._now += seconds
            due: list[_FakeTimer] = []
            while self._timers and self._timers[0][0] <= self._now:
                due.append(heapq.heappop(self._timers)[2])
        for timer in due:
            if not timer.cancelled:
                timer.callback()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(seconds, 0.0))
        await anyio.lowlevel.checkpoint()

    def sleep_sync(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(seconds, 0.0))

    def call_at(self, when: float, callback: Callable[[], object]) -> _FakeTimer:
        timer = _FakeTimer(when, callback)
        with self._lock:
            if when > self._now:
                heapq.heappush(self._timers, (when, next(self._seq), timer))
                return timer
        callback()
        return timer

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r}, sleeps={len(self.sleeps)})"
