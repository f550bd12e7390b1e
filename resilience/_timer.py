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
from typing import TYPE_CHECKING, Any

from ._clock import Clock, SystemClock
from ._core.source import snippet
from ._deadline import Deadline

# The queue's two hot operations, as source written once: the Timeout's
# guard compiles them inline (resilience.timeout), and the queue's own
# add() and release() below are compiled from the same text. {q}: the queue,
# {e}: the entry, {x}: a local for the entries.
ENQUEUE = """\
{q}.entries.append({e})
{q}.live += 1
if {q}.handle is None:
    {q}.arm({e}.at)"""
RELEASE = """\
{q}.live -= 1
{x} = {q}.entries
if {q}.live == 0:
    # None in flight: every entry still queued has left too (the common
    # case, one call at a time, without looking at the entries).
    {x}.clear()
elif {x} and {x}[0] is {e}:
    {x}.popleft()
    while {x} and {x}[0].task is None:
        {x}.popleft()
elif len({x}) > 2 * {q}.live + {q}.SLACK:
    {q}.compact()"""


class Expiry(Deadline):
    """One call's deadline, also published as the context's :class:`Deadline`
    (one object for both), with what the call needs to leave: its queue, the
    task's cancellation count on entry and the context variable's token.
    ``task`` is None once the call has left. A call bounded by a tighter
    deadline than its Timeout's has a timer of its own (``handle``) instead
    of a place in the queue."""

    __slots__ = ("cancelling", "fired", "handle", "limit", "queue", "task", "token")

    # Built field by field by Timeout.admit: ``Expiry()`` runs no __init__
    # frame (not Deadline's), and calling the class costs less than
    # ``object.__new__(Expiry)``, which packs its argument into a tuple and
    # checks it (about 300 instructions a call).
    if TYPE_CHECKING:

        def __init__(self) -> None: ...

    else:
        __init__ = object.__init__

    cancelling: int
    fired: bool
    handle: Any
    limit: float
    queue: DeadlineQueue
    task: asyncio.Task[Any] | None
    token: Token[Deadline | None]

    def fire(self) -> None:
        """Its deadline passed (its queue's timer, or its own): cancel the task.

        A task already being cancelled from outside is left to that
        cancellation: a second cancel() would replace its message, by which
        anyio's cancel scopes recognise their own."""
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

    add: Callable[[Any], None]
    """Queue an entry whose ``at`` is no earlier than any queued one's."""
    release: Callable[[Any], None]
    """An entry has left (its ``task`` set to None already)."""

    def compact(self) -> None:
        # In place: callers hold a reference to `entries`.
        live = [e for e in self.entries if e.task is not None]
        self.entries.clear()
        self.entries.extend(live)

    def expire(self) -> None:
        """Timer callback: fire every entry whose deadline has passed."""
        self.handle = None
        now = self.now()
        entries = self.entries
        while entries:
            head = entries[0]
            if head.task is None:  # left already
                entries.popleft()
            elif head.at <= now:
                entries.popleft()
                head.fire()
            else:
                self.arm(head.at)
                return


def _compiled(name: str, body: str) -> Callable[[DeadlineQueue, Any], None]:
    namespace: dict[str, Any] = {}
    exec(f"def {name}(self, entry):\n{body}\n", {}, namespace)
    function: Callable[[DeadlineQueue, Any], None] = namespace[name]
    return function


DeadlineQueue.add = _compiled("add", snippet(ENQUEUE, "    ", q="self", e="entry"))  # type: ignore[assignment]
DeadlineQueue.release = _compiled(  # type: ignore[assignment]
    "release", snippet(RELEASE, "    ", q="self", e="entry", x="entries")
)
