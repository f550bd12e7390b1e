"""The budgets of one middleware's requests on one asyncio loop, in one timer."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Callable
from typing import Any, Final

from resilience import Clock, SystemClock

__all__ = ["Timers"]

_monotonic = time.monotonic
_heappush = heapq.heappush
_heappop = heapq.heappop
_INF: Final = math.inf


class Timers:
    """The budgets of one middleware's requests on one asyncio loop.

    A heap of ``(at, seq, request)`` and one loop timer armed for the
    earliest entry: a heap push per request instead of a ``TimerHandle``
    (the middleware adds and removes entries inline). Requests of equal
    budget arrive in deadline order, so a request leaving usually finds its
    entry last in the heap (requests one at a time) or first (concurrent
    requests finish roughly in arrival order) and pops it, then the finished
    entries behind it.
    A request's deadline only moves later (each message it sends pushes it
    on), so an entry is re-filed lazily when it comes up early; entries of
    finished requests are dropped when they come up, or all at once when
    they outnumber the live ones.
    """

    __slots__ = ("armed", "call_at", "handle", "heap", "live", "loop", "now", "seq")

    SLACK = 256

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Clock) -> None:
        self.loop = loop
        # The clock's time and timers: the loop's for the system clock, the
        # clock's own otherwise (a FakeClock drives this same path in tests).
        self.now: Callable[[], float] = _monotonic
        self.call_at: Callable[[float, Callable[[], object]], Any] | None = None
        if not isinstance(clock, SystemClock):
            self.now = clock.now
            self.call_at = clock.call_at  # type: ignore[attr-defined]
        self.heap: list[tuple[float, int, Any]] = []
        self.handle: asyncio.TimerHandle | None = None
        self.armed = _INF
        self.live = 0
        self.seq = itertools.count()

    def arm(self, at: float) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.armed = at
        if self.call_at is not None:
            self.handle = self.call_at(at, self.expire)
        else:
            # call_later, not call_at: `at` is on time.monotonic(), which need
            # not be the loop's own time scale.
            self.handle = self.loop.call_later(at - _monotonic(), self.expire)

    def compact(self) -> None:
        self.heap = [entry for entry in self.heap if entry[2].task is not None]
        heapq.heapify(self.heap)

    def expire(self) -> None:
        self.handle = None
        self.armed = _INF
        now = self.now()
        heap = self.heap
        while heap:
            at, _, request = heap[0]
            if at > now:
                self.arm(at)
                return
            _heappop(heap)
            task = request.task
            if task is None or request.at == _INF:
                continue  # finished, or its response is complete
            if request.at > now:
                # It sent something since: file it under its new deadline.
                _heappush(heap, (request.at, next(self.seq), request))
                continue
            request.fired = True
            task.cancel()
