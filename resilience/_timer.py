"""A shared timer for the calls of one Timeout on one asyncio loop.

``loop.call_at`` per call costs a TimerHandle object, a heap push and a heap
entry left behind on cancel. Every call of one Timeout has the same duration,
so deadlines arrive in order: a FIFO of entries and a single timer handle,
armed for the oldest live deadline, do the same work for a deque append.
The Timeout's guard appends and releases entries inline; this module holds
the data and the rare paths.

The queue takes its time and its timer from the policy's clock: the system
clock maps to the loop's own (``loop.time``, ``loop.call_at``); a clock with
``call_at`` (:class:`~resilience.testing.FakeClock`) drives the same queue,
so tests exercise the path production runs.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from contextvars import Token
from typing import Any

from ._clock import Clock, SystemClock
from ._deadline import Deadline


class Expiry(Deadline):
    """One call's deadline, also published as the context's :class:`Deadline`
    (one object for both), with what the call needs to leave: its queue, the
    task's cancellation count on entry and the context variable's token.
    ``task`` is None once the call has left. A call bounded by a tighter
    deadline than its Timeout's has a timer of its own (``handle``) instead
    of a place in the queue."""

    __slots__ = ("cancelling", "fired", "handle", "limit", "queue", "task", "token")

    # Built field by field by Timeout.admit (no __init__ frame on the hot path).
    cancelling: int
    fired: bool
    handle: Any
    limit: float
    queue: DeadlineQueue
    task: asyncio.Task[Any] | None
    token: Token[Deadline | None]

    def fire(self) -> None:
        """Its own timer's callback."""
        task = self.task
        if task is not None and task.cancelling() <= self.cancelling:
            self.fired = True
            task.cancel()


class DeadlineQueue:
    """Deadlines of one policy on one loop, in arrival (= deadline) order."""

    __slots__ = ("call_at", "entries", "handle", "live", "loop", "now")

    # Entries that finished out of order wait behind a slow head; compact
    # when they outnumber the live ones by this much, so memory stays
    # proportional to the calls in flight.
    SLACK = 256

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Clock) -> None:
        self.loop = loop
        self.now: Callable[[], float]
        self.call_at: Callable[[float, Callable[[], object]], Any]
        if isinstance(clock, SystemClock):
            # loop.time(), without its Python frame where it is only
            # time.monotonic() (asyncio's own loops; uvloop's is C already).
            self.now = (
                time.monotonic
                if getattr(type(loop), "time", None) is asyncio.BaseEventLoop.time
                else loop.time
            )
            self.call_at = loop.call_at
        else:
            self.now = clock.now
            self.call_at = clock.call_at  # type: ignore[attr-defined]
        self.entries: deque[Expiry] = deque()
        self.handle: Any = None
        self.live = 0

    def arm(self, when: float) -> None:
        self.handle = self.call_at(when, self.expire)

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
                # A task already being cancelled from outside is left to that
                # cancellation: a second cancel() would replace its message,
                # by which anyio's cancel scopes recognise their own.
                if task.cancelling() <= head.cancelling:
                    head.fired = True
                    task.cancel()
            else:
                self.arm(head.at)
                return
