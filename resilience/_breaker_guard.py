"""The CircuitBreaker's guard: how a call gets through it and is recorded.

``admit`` and ``settle`` are compiled from :data:`INLINE`, which plans also
compile into their brackets: the closed path (a permit that is the
machine's epoch, read without a lock; a success recorded with no time
reading) is written there once. Everything else is a call to the paths
here, which :class:`~resilience.breaker.CircuitBreaker` holds as its private
methods (``_admit_slow``, ``_settle_slow``, ...): the open and half-open
states, a breaker threads may use (every step locked), slow-call timing,
outcomes to classify, and the rejections.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from ._core.breaker import REJECTED
from ._core.source import snippet
from ._core.success import SUCCESS
from ._core.windows import PRESENT, CountWindow
from ._outcomes import FAILED, IGNORED
from ._plan import Inline
from .errors import CircuitOpenError
from .events import CallRejected, CircuitState, global_listeners

if TYPE_CHECKING:
    from .breaker import CircuitBreaker

__all__ = [
    "BOTH",
    "END",
    "INLINE",
    "UNTIMED",
    "admit_locked",
    "admit_slow",
    "follow_up",
    "open_error",
    "record",
    "rejection",
    "settle_slow",
]

_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN

# How a call is timed: not at all (CLOSED, count window, no slow-call
# detection), at its end only (time window), or at both ends (slow calls).
UNTIMED = 0
END = 1
BOTH = 2

_UNLOCKED = contextlib.nullcontext()

_fresh_error = CircuitOpenError._fresh


INLINE = Inline(
    admit="""
        {t} = {g}._core
        if {t}.state is {n}CLOSED and {g}._fast:
            {t} = {t}.epoch
        else:
            {t} = {g}._admit_slow()
    """,
    settle="""
        if {t}.__class__ is int and error is None and {g}._plain:
            {t}m = {g}._core
            {t}n = {g}._now() if {g}._timing else None
"""
    # BreakerMachine.success, without its frame (nor, in a CountWindow, record's).
    + snippet(
        SUCCESS,
        "            ",
        m="{t}m",
        permit="{t}",
        now="{t}n",
        w="{t}w",
        i="{t}i",
        o="{t}o",
        count="{n}CountWindow",
        present="{n}PRESENT",
        tripped="{g}._follow_up()",
    )
    + """
        else:
            error = {g}._settle_slow({t}, error, result)
    """,
    names={"CLOSED": _CLOSED, "CountWindow": CountWindow, "PRESENT": PRESENT},
)


def settle_slow(
    breaker: CircuitBreaker, ticket: Any, error: BaseException | None, result: object
) -> BaseException | None:
    if ticket.__class__ is int:
        permit: int = ticket
        start = 0.0
        timing = breaker._timing
    else:
        permit, start, timing = ticket
        if permit < 0:
            return error  # disabled: nothing to record
    try:
        outcome = breaker._outcomes.classify(error, result)
    except Exception as exc:
        # A user predicate raised: the call still settles (as a failure),
        # then the predicate's exception propagates.
        breaker._record(permit, FAILED, start, timing)
        return exc
    breaker._record(permit, outcome, start, timing)
    return error


def admit_slow(breaker: CircuitBreaker) -> object:
    if breaker._idle:
        breaker._store.start()  # type: ignore[union-attr]
    if breaker._shared:
        return breaker._admit()
    core = breaker._core
    if core.state is _CLOSED:
        if breaker._fast:
            return core.epoch
        return (core.epoch, breaker._now(), BOTH)
    now = breaker._now()
    if core.state is _OPEN and now < core.trial_at:
        core.rejected_total += 1  # acquire() would say REJECTED
        raise breaker._rejection(now)
    permit = core.acquire(now)
    if permit == REJECTED:
        raise breaker._rejection(now)
    if core.changes:
        breaker._report(core.take_changes())
    return (permit, now, BOTH if breaker._slow_after is not None else END)


def admit_locked(breaker: CircuitBreaker) -> tuple[int, float, int]:
    """Under the lock: ``(permit, start, timing)``; raises when rejected."""
    core = breaker._core
    with breaker._lock:
        if core.state is _CLOSED:
            timing = breaker._timing
            return core.epoch, breaker._now() if timing == BOTH else 0.0, timing
        now = breaker._now()
        permit = core.acquire(now)
        changes = core.take_changes()
        state = core.state
        retry_after = core.retry_after(now)
    if changes:
        breaker._report(changes)
    if permit == REJECTED:
        if breaker._observed():
            breaker._emit(CallRejected(breaker._name, state, retry_after))
        raise breaker._open_error(retry_after)
    return permit, now, BOTH if breaker._slow_after is not None else END


def record(breaker: CircuitBreaker, permit: int, outcome: int, start: float, timing: int) -> None:
    core = breaker._core
    with breaker._lock if breaker._shared else _UNLOCKED:
        if outcome >= IGNORED:
            core.release(permit, outcome == IGNORED)
            return
        end = breaker._now() if timing else None
        slow = timing == BOTH and end - start >= breaker._slow_after  # type: ignore[operator]
        if not core.record(permit, outcome == FAILED, slow, end):
            return
        if core.trip_due:
            core.trip(breaker._now())
        changes = core.take_changes()
    breaker._report(changes)


def follow_up(breaker: CircuitBreaker) -> None:
    core = breaker._core
    if core.trip_due:
        core.trip(breaker._now())
    breaker._report(core.take_changes())


def rejection(breaker: CircuitBreaker, now: float) -> CircuitOpenError:
    """Unlocked: the error for a call just refused by ``acquire(now)``.

    A fresh CircuitOpenError each time (a shared one would grow its
    traceback on every raise), equal to ``CircuitOpenError(name=,
    retry_after=)`` but built without that constructor's three-level
    ``__init__`` chain, which alone costs more than the rest of a
    rejection (the tests check that both agree). Inlined for the same
    reason: this is the path an open breaker serves at full load.
    """
    core = breaker._core
    state = core.state
    if state is _OPEN:
        retry_after: float | None = core.trial_at - now
        if retry_after < 0.0:  # type: ignore[operator]
            retry_after = 0.0
        error = _fresh_error(breaker._name, retry_after)
    else:
        retry_after = None
        error = _fresh_error(breaker._name, None)
    if breaker._listeners or global_listeners:
        breaker._report(core.take_changes())
        breaker._emit(CallRejected(breaker._name, state, retry_after))
    elif core.changes:
        core.changes.clear()
    return error


def open_error(breaker: CircuitBreaker, retry_after: float | None) -> CircuitOpenError:
    """What ``CircuitOpenError(name=breaker.name, retry_after=retry_after)``
    builds (the sync shell's rejection; see :func:`rejection`)."""
    return _fresh_error(breaker._name, retry_after)
