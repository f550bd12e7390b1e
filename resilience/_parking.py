"""Parked callers: how a caller that cannot go on at once waits, and is woken.

One waiter per parked caller, for asyncio, trio and threads alike; both
bulkheads park their callers on them (as trio's primitives all park on its
ParkingLot).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from . import _backend

__all__ = [
    "EXPIRED",
    "GONE",
    "GRANTED",
    "WAITING",
    "AsyncioWaiter",
    "ThreadWaiter",
    "TrioWaiter",
    "Waiter",
    "trio_abort",
]

_get_ident = threading.get_ident

## A caller that cannot go on at once parks on a waiter. The waiter's state
# changes only under the owner's lock; `wake()` resumes the caller, from any
# thread, and returns False when the caller can no longer be resumed (its
# event loop is closed or its trio run has ended).

WAITING = 0
GRANTED = 1  # the permit was handed over: the waiter owns it now
EXPIRED = 2  # max_wait ran out before a permit came
GONE = 3  # the caller left (cancelled) while waiting


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Waiter:
    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = WAITING

    def wake(self) -> bool:
        raise NotImplementedError


class AsyncioWaiter(Waiter):
    __slots__ = ("fut", "loop", "thread")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.fut: asyncio.Future[None] = loop.create_future()
        self.thread = _get_ident()

    def wake(self) -> bool:
        try:
            if _get_ident() == self.thread:
                _resolve(self.fut)
            else:
                self.loop.call_soon_threadsafe(_resolve, self.fut)
        except RuntimeError:  # the loop is closed
            return False
        return True


class TrioWaiter(Waiter):
    __slots__ = ("task", "thread", "token")

    def __init__(self) -> None:
        super().__init__()
        lowlevel = _backend.trio().lowlevel
        self.task = lowlevel.current_task()
        self.token = lowlevel.current_trio_token()
        self.thread = _get_ident()

    def wake(self) -> bool:
        trio = _backend.trio()
        if _get_ident() == self.thread:
            # Only code of the same run can execute in this thread while the
            # task is parked, so rescheduling directly is allowed.
            trio.lowlevel.reschedule(self.task)
            return True
        try:
            self.token.run_sync_soon(trio.lowlevel.reschedule, self.task)
        except trio.RunFinishedError:
            return False
        return True


class ThreadWaiter(Waiter):
    __slots__ = ("lock",)

    def __init__(self) -> None:
        super().__init__()
        # A pre-acquired lock is the cheapest one-shot signal between threads.
        self.lock = threading.Lock()
        self.lock.acquire()

    def wake(self) -> bool:
        self.lock.release()
        return True


def trio_abort(leave: Any) -> Any:
    """The abort callback of a parked trio task: ``leave()`` says whether the
    caller left before being granted (then the cancellation may land now)."""
    lowlevel = _backend.trio().lowlevel

    def abort(_: object) -> Any:
        if leave():
            return lowlevel.Abort.SUCCEEDED
        # Granted or done already: its wake-up is on its way; the cancellation
        # lands at the next checkpoint.
        return lowlevel.Abort.FAILED

    return abort
