"""A shared timer for the calls of one Timeout on one asyncio loop.

``loop.call_at`` per call costs a TimerHandle object, a heap push and a heap
entry left behind on cancel. Every call of one Timeout has the same duration,
so deadlines arrive in order: a FIFO of entries and a single timer handle,
armed for the oldest live deadline, do the same work for a deque append.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any


class Expiry:
    """One call's deadline. ``task`` is None once the call has left."""

    __slots__ = ("deadline", "fired", "task")

    def __init__(self, task: asyncio.Task[Any] | None, deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.fired = False


class DeadlineQueue:
    """Deadlines of one policy on one loop, in arrival (= deadline) order."""

    __slots__ = ("entries", "handle", "live", "loop")

    # Entries that finished out of order wait behind a slow head; compact
    # when they outnumber the live ones by this much, so memory stays
    # proportional to the calls in flight.
    _SLACK = 256

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.entries: deque[Expiry] = deque()
        self.handle: asyncio.TimerHandle | None = None
        self.live = 0

    def add(self, task: asyncio.Task[Any], deadline: float) -> Expiry:
        expiry = Expiry(task, deadline)
        self.entries.append(expiry)
        self.live += 1
        if self.handle is None:
            self.handle = self.loop.call_at(deadline, self.expire)
        return expiry

    def discard(self, expiry: Expiry) -> None:
        expiry.task = None
        self.live -= 1
        entries = self.entries
        while entries and entries[0].task is None:
            entries.popleft()
        if len(entries) > 2 * self.live + self._SLACK:
            self.entries = deque(e for e in entries if e.task is not None)

    def expire(self) -> None:
        """Timer callback: cancel every call whose deadline has passed."""
        self.handle = None
        now = self.loop.time()
        entries = self.entries
        while entries:
            head = entries[0]
            if head.task is None:
                entries.popleft()
            elif head.deadline <= now:
                entries.popleft()
                head.fired = True
                head.task.cancel()
            else:
                self.handle = self.loop.call_at(head.deadline, self.expire)
                return
