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
import time
from collections import deque
from collections.abc import Callable
from contextvars import Token
from typing import Any

from ._deadline import Deadline


class Expiry(Deadline):
    """One call's deadline, also published as the context's :class:`Deadline`
    (one object for both), with what the call needs to leave: its queue, the
    task's cancellation count on entry and the context variable's token.
    ``task`` is None once the call has left."""

    __slots__ = ("cancelling", "fired", "queue", "task", "token")

    # Built field by field by Timeout._enter (no __init__ frame on the hot
    # path). `at` is on the queue's clock: loop.time(), which is
    # time.monotonic() on asyncio's loops (uvloop: the same clock, cached per
    # loop iteration).
    cancelling: int
    fired: bool
    queue: DeadlineQueue
    task: asyncio.Task[Any] | None
    token: Token[Deadline | None]


class DeadlineQueue:
    """Deadlines of one policy on one loop, in arrival (= deadline) order."""

    __slots__ = ("entries", "handle", "live", "loop", "now")

    # Entries that finished out of order wait behind a slow head; compact
    # when they outnumber the live ones by this much, so memory stays
    # proportional to the calls in flight.
    SLACK = 256

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # loop.time(), without its Python frame where it is only
        # time.monotonic() (asyncio's own loops; uvloop's is C already).
        self.now: Callable[[], float] = (
            time.monotonic
            if getattr(type(loop), "time", None) is asyncio.BaseEventLoop.time
            else loop.time
        )
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
        now = self.now()
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
