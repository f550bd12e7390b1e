"""The deadline of the work in progress, carried in a context variable.

A :class:`~resilience.Timeout` sets it for the work it wraps; the ASGI
middleware sets it per request; :func:`deadline` sets it by hand. Everything
inside honours the tightest one: inner timeouts never outlive it, retries do
not start a wait that would end past it, and the httpx transport bounds its
requests by it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from . import _validate
from ._clock import SYSTEM_CLOCK, Clock

__all__ = ["Deadline", "current_deadline", "deadline"]


class Deadline:
    """A point in time on a clock: ``at`` seconds on ``clock.now()``'s scale.

    Example::

        with resilience.deadline(2.0) as limit:   # a Deadline
            assert 0 < limit.remaining() <= 2.0
            assert resilience.current_deadline() is limit
    """

    __slots__ = ("at", "clock")

    def __init__(self, at: float, clock: Clock) -> None:
        if at != at:  # NaN: every comparison with it is False
            raise ValueError(f"at must be a point in time, got {at!r}")
        self.at = at
        self.clock = clock

    def remaining(self) -> float:
        """Seconds left (negative once passed)."""
        return self.at - self.clock.now()

    def __repr__(self) -> str:
        return f"Deadline(remaining={self.remaining():.3f}s)"


_current: ContextVar[Deadline | None] = ContextVar("resilience.deadline", default=None)
"""The deadline in force in this context (:func:`current_deadline` reads it).

Example::

    token = deadline_var.set(Deadline(clock.now() + 2.0, clock))   # a request's budget
    try:
        await app(scope, receive, send)
    finally:
        deadline_var.reset(token)
"""


def current_deadline() -> Deadline | None:
    """The deadline in force in this context, or None.

    Example::

        limit = resilience.current_deadline()
        if limit is not None and limit.remaining() < 0.05:
            return cached_answer()
    """
    return _current.get()


@contextmanager
def deadline(seconds: float, *, clock: Clock | None = None) -> Iterator[Deadline]:
    """Bound the work in this block to ``seconds`` from now.

    It never extends a deadline already in force: the tighter one wins. It
    cancels nothing by itself; the policies inside honour it (a
    :class:`~resilience.Timeout` fires at it, a :class:`~resilience.Retry`
    does not start a wait that would end past it).

    Example::

        with resilience.deadline(2.0):
            await fetch_with_retries()   # retries stop once 2 s are spent
    """
    # The same rule as Timeout's (a finite number of seconds > 0, or a
    # timedelta): a deadline that never binds, or one already past, is a mistake.
    seconds = _validate.seconds("seconds", seconds)
    if clock is not None and not isinstance(clock, Clock):
        raise TypeError(f"clock must provide now(), sleep() and sleep_sync(), got {clock!r}")
    clock = clock if clock is not None else SYSTEM_CLOCK
    outer = _current.get()
    mine = Deadline(clock.now() + seconds, clock)
    if outer is not None and outer.remaining() <= seconds:
        mine = outer
    token = _current.set(mine)
    try:
        yield mine
    finally:
        _current.reset(token)
