"""A hedged call's race: how each attempt ended, who won, and, on asyncio,
the first attempt run in the caller's own task until the delay passes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio

from .events import HedgeCancelled

if TYPE_CHECKING:
    from .hedge import Hedge

__all__ = ["Race", "Watch", "discard_answers"]


class Race:
    """The attempts of one call: how each ended, and the coordinator to wake."""

    __slots__ = (
        "answered",
        "errors",
        "failed",
        "finished",
        "on_win",
        "passed",
        "results",
        "wake",
        "winner",
    )

    def __init__(self, attempts: int) -> None:
        self.answered: list[int] = []  # the attempts that returned a result
        self.errors: list[BaseException | None] = [None] * attempts
        self.results: list[Any] = [None] * attempts
        self.finished = 0
        self.failed = 0  # failures not yet answered by starting the next attempt
        self.winner: int | None = None
        self.wake: anyio.CancelScope | None = None
        self.passed = False  # the delay passed (on a clock with timers of its own)
        # Called when an attempt other than the first wins while the first
        # runs in the caller's own task (asyncio), to cancel it.
        self.on_win: Callable[[], None] | None = None

    def delay_passed(self) -> None:
        self.passed = True
        if self.wake is not None:
            self.wake.cancel()

    def ended(self, index: int, error: BaseException | None, result: Any, good: bool) -> None:
        self.errors[index] = error
        self.results[index] = result
        self.finished += 1
        if good:
            if self.winner is None:
                self.winner = index
                if index and self.on_win is not None:
                    self.on_win()
        else:
            self.failed += 1
        if self.wake is not None:
            self.wake.cancel()


async def discard_answers(
    race: Race, discard: Callable[[Any], Awaitable[None]], kept: int | None
) -> None:
    # Shielded: a response must be closed even while the call is cancelled.
    with anyio.CancelScope(shield=True):
        for index in race.answered:
            if index != kept:
                await discard(race.results[index])


class Watch:
    """asyncio: the first attempt runs in the caller's own task. This is what
    the delay's timer, the coordinator it starts and the caller share."""

    __slots__ = (
        "at",
        "call",
        "caller",
        "cancelled",
        "cancelling",
        "coordinator",
        "done",
        "hedge",
        "race",
        "task",
    )

    # An entry of the hedge's DeadlineQueue: ``at`` is when the delay
    # passes, ``task`` the caller's task while queued (None once released),
    # and the queue's timer calls fire().
    at: float
    task: asyncio.Task[Any] | None
    # Set by fire(), not per call: only a call whose delay passed reads them.
    cancelled: bool
    coordinator: asyncio.Task[None]
    done: bool

    def __init__(
        self,
        hedge: Hedge,
        task: asyncio.Task[Any],
        call: tuple[Callable[..., Awaitable[Any]], tuple[Any, ...], dict[str, Any], Any, float],
    ) -> None:
        self.hedge = hedge
        self.caller = self.task = task
        self.cancelling = task.cancelling()
        self.call = call  # (fn, args, kwargs, reject, delay): what the hedges run
        self.race: Race | None = None  # set once the delay passes

    def fire(self) -> None:
        """The queue's timer: the delay passed; a coordinator starts the hedges."""
        self.cancelled = False  # we cancelled the first attempt: a hedge won
        self.done = False  # the first attempt has ended
        race = self.race = Race(self.hedge.attempts)
        race.on_win = self.cancel_first
        fn, args, kwargs, reject, delay = self.call
        self.coordinator = self.caller.get_loop().create_task(
            self.hedge._coordinate(race, fn, args, kwargs, reject, delay, 1)
        )

    def cancel_first(self) -> None:
        if not self.done:
            self.cancelled = True
            self.caller.cancel()

    async def join(
        self,
        race: Race,
        error: BaseException | None,
        result: Any,
        took: float,
        discard: Callable[[Any], Awaitable[None]] | None,
    ) -> Any:
        """The first attempt ended while hedges run: tell the race, wait for
        the coordinator (which cancels and awaits the losers), answer."""
        self.done = True
        hedge = self.hedge
        coordinator = self.coordinator
        ours = self.cancelled and self.caller.uncancel() <= self.cancelling
        hedge.tracker.record(took)
        if ours and isinstance(error, asyncio.CancelledError):
            hedge._cancelled += 1  # a hedge won; the first attempt was cancelled
            race.finished += 1
            if hedge._observed():
                hedge._emit(HedgeCancelled(hedge._name, 1))
        elif error is None or isinstance(error, Exception):
            good = False
            if error is None:
                race.answered.append(0)
                try:
                    reject = self.call[3]
                    good = reject is None or not reject(result)
                except Exception as exc:
                    error = exc
            race.ended(0, error, result, good)
        else:  # cancelled from outside: cancel the hedges and wait for them
            coordinator.cancel()
            while not coordinator.done():
                try:
                    await asyncio.wait((coordinator,))
                except asyncio.CancelledError:
                    continue
            if discard is not None:
                await discard_answers(race, discard, None)
            raise error
        try:
            await coordinator
        except BaseException:
            if discard is not None:
                await discard_answers(race, discard, None)
            raise
        return await hedge._outcome(race, discard)
