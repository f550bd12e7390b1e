"""A shared timer for the calls of one Timeout on one asyncio loop.

``loop.call_at`` per call costs a TimerHandle object, a heap push and a heap
entry left behind on cancel. Every call of one Timeout has the same duration,
so deadlines arrive in order: a FIFO of entries and a single timer handle,
armed for the oldest live deadline, do the same work for a deque append.
The Timeout's fast path appends and releases entries inline; this module
holds the data and the rare paths.
"""

from __future__ import annotations

import asyncio
from collections import deque
from contextvars import Token
from typing import Any

from ._clock import SYSTEM_CLOCK
from ._deadline import Deadline


class Expiry(Deadline):
    """One call's deadline, also published as the context's :class:`Deadline`
    (one object for both), with what the call needs to leave: its queue, the
    task's cancellation count on entry and the context variable's token.
    ``task`` is None once the call has left."""

    __slots__ = ("cancelling", "fired", "queue", "task", "token")

    def __init__(
        self, task: asyncio.Task[Any], at: float, queue: DeadlineQueue, cancelling: int
    ) -> None:
        # `at` is on loop.time(), which is time.monotonic() on asyncio's loops
        # (uvloop: the same clock, cached per loop iteration).
        self.at = at
        self.clock = SYSTEM_CLOCK
        self.task: asyncio.Task[Any] | None = task
        self.fired = False
        self.queue = queue
        self.cancelling = cancelling
        self.token: Token[Deadline | None]


class DeadlineQueue:
    """Deadlines of one policy on one loop, in arrival (= deadline) order."""

    __slots__ = ("entries", "handle", "live", "loop")

    # Entries that finished out of order wait behind a slow head; compact
    # when they outnumber the live ones by this much, so memory stays
    # proportional to the calls in flight.
    SLACK = 256

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.entries: deque[Expiry] = deque()
        self.handle: asyncio.TimerHandle | None = None
        self.live = 0

    def arm(self, when: float) -> None:
        self.handle = self.loop.call_at(when, self.expire)

    def compact(self) -> None:
        # In place: callers hold a reference to `entries`.
        live = [e for e in self.entries if e.task is not None]
        self.entries.clear()
        self.entries.extend(live)

    def expire(self) -> None:
        """Timer callback: cancel every call whose deadline has passed."""
        self.handle = None
        now = self.loop.time()
        entries = self.entries
        while entries:
            head = entries[0]
            task = head.task
            if task is None:
                entries.popleft()
            elif head.at <= now:
                entries.popleft()
                head.fired = True
                task.cancel()
            else:
                self.arm(head.at)
                return
