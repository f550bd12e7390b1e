"""Sliding windows of call outcomes (sans-I/O): the last N calls or the last N seconds.

Both keep running totals of calls, failures and slow calls, so recording an
outcome and reading the totals cost O(1) whatever the window's size. Methods
that depend on time take ``now`` (seconds, from the caller's monotonic clock);
nothing here reads a clock.

A :class:`~resilience.CircuitBreaker` never records into the window object it
is given: it takes an empty copy of it, so one window can configure many
breakers (and a default argument is safe to share).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable
from typing import TypeAlias

from resilience._validate import count

from .source import method, snippet

__all__ = ["COUNT_RECORD", "PRESENT", "CountWindow", "TimeWindow", "Window"]

_floor = math.floor

MAX_BUCKETS = 120
"""A TimeWindow (and a RetryBudget) keeps at most this many buckets: one per
second up to 120 s, coarser beyond, so its memory is a small constant
whatever its length."""

MAX_COUNT_WINDOW = 1_000_000
"""The largest CountWindow: it keeps one byte per call, by nature."""

# One outcome in a CountWindow slot, as bits: 0 means the slot is still empty.
PRESENT = _PRESENT = 1
_FAILED = 2
_SLOW = 4

# Recording an outcome in a CountWindow, as source written once:
# CountWindow.record is compiled from it, and so is BreakerMachine.success
# (resilience._core.breaker), which a breaker's plan runs inline on every
# call, where a call of record() would be a Python frame more. {w}: the
# window, {code}: the outcome's bits, {i} and {o}: locals. In a steady
# stream of one outcome the slot holds it already: only the position moves.
COUNT_RECORD = """\
{i} = {w}._next
{o} = {w}._slots[{i}]
if {o} != {code}:
    {w}._replace({i}, {o}, {code})
{i} += 1
{w}._next = 0 if {i} == {w}._size else {i}"""


class CountWindow:
    """The outcomes of the last ``size`` calls.

    A ring buffer of outcomes with running totals: recording one call
    replaces the oldest and adjusts three integers, so the cost does not
    depend on ``size``.

    Example::

        breaker = CircuitBreaker("payments", window=CountWindow(50), minimum_calls=20)

        window = CountWindow(3)
        for failed in (True, False, True, True):
            window.record(0.0, failed, False)
        assert window.totals(0.0) == (3, 2, 0)   # calls, failures, slow calls
    """

    __slots__ = ("_calls", "_failures", "_next", "_size", "_slots", "_slow")

    def __init__(self, size: int) -> None:
        self._size = count("size", size, 1)
        if size > MAX_COUNT_WINDOW:
            raise ValueError(
                f"size must be <= {MAX_COUNT_WINDOW:,} (a CountWindow keeps every call; "
                f"use a TimeWindow for long windows), got {size!r}"
            )
        # One byte per call: a list would take 8 bytes per slot for the pointer alone.
        self._slots = bytearray(size)
        self._next = 0
        self._calls = 0
        self._failures = 0
        self._slow = 0

    @property
    def size(self) -> int:
        """How many calls the window holds."""
        return self._size

    # record(now, failed, slow): compiled from COUNT_RECORD, below the class.
    record: Callable[[float | None, bool, bool], None]

    def _replace(self, i: int, old: int, code: int) -> None:
        """Slot ``i`` held ``old`` and now holds ``code`` (they differ): the totals follow."""
        self._slots[i] = code
        if old:
            if old & _FAILED:
                self._failures -= 1
            if old & _SLOW:
                self._slow -= 1
        else:
            self._calls += 1
        if code & _FAILED:
            self._failures += 1
        if code & _SLOW:
            self._slow += 1

    def totals(self, now: float | None = None) -> tuple[int, int, int]:
        """``(calls, failures, slow_calls)`` in the window."""
        return self._calls, self._failures, self._slow

    def clear(self) -> None:
        """Forget every recorded call."""
        self._slots = bytearray(self._size)
        self._next = 0
        self._calls = self._failures = self._slow = 0

    def _empty_copy(self) -> CountWindow:
        return CountWindow(self._size)

    def __repr__(self) -> str:
        return f"CountWindow({self._size})"


CountWindow.record = method(
    "record",
    "def record(self, now, failed, slow):\n"
    "    code = _PRESENT\n"
    "    if failed:\n"
    "        code |= _FAILED\n"
    "    if slow:\n"
    "        code |= _SLOW\n"
    + snippet(COUNT_RECORD, "    ", w="self", code="code", i="i", o="old")
    + "\n",
    globals(),
    CountWindow,
    """Add one call's outcome, dropping the oldest when the window is full.

    ``now`` is accepted for symmetry with :class:`TimeWindow` and ignored,
    so a caller that knows its window counts calls need not read a clock.
    """,
)


class TimeWindow:
    """The outcomes of the calls made in the last ``seconds`` seconds.

    One bucket per second, in a ring, with running totals. Recording a call
    touches one bucket and the totals. When time moves on, the buckets of
    the seconds that left the window are subtracted once each: that work is
    bounded by the seconds elapsed (never more than ``seconds``), not by the
    calls made, and after a gap longer than the window everything is dropped
    at once. So the cost per call does not depend on the window's length.

    A call belongs to the second ``floor(now)``; the window at time ``now``
    holds the seconds ``floor(now) - seconds + 1`` to ``floor(now)``. A
    window longer than :data:`MAX_BUCKETS` seconds uses buckets of
    ``ceil(seconds / MAX_BUCKETS)`` seconds instead (the window then holds
    the calls of the last ``seconds`` seconds to within one bucket), so its
    memory does not grow with its length.

    Example::

        breaker = CircuitBreaker("search", window=TimeWindow(seconds=60))

        window = TimeWindow(10)
        window.record(0.5, True, False)
        window.record(9.5, False, False)
        assert window.totals(9.9) == (2, 1, 0)
        assert window.totals(10.0) == (1, 0, 0)   # second 0 has left the window
    """

    __slots__ = (
        "_bucket_calls",
        "_bucket_failures",
        "_bucket_second",
        "_bucket_slow",
        "_calls",
        "_count",
        "_failures",
        "_head",
        "_head_index",
        "_per_second",
        "_seconds",
        "_slow",
    )

    # Before the first call: a second so far in the past that the first
    # record drops "everything" (nothing) at once.
    _NEVER = -(2**62)

    def __init__(self, seconds: int) -> None:
        if isinstance(seconds, datetime.timedelta):
            seconds = seconds.total_seconds()
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TypeError(f"seconds must be a whole number, got {seconds!r}")
        if not (seconds >= 1 and math.isfinite(seconds) and seconds == int(seconds)):
            raise ValueError(
                f"seconds must be a whole number >= 1 (one bucket per second), got {seconds!r}"
            )
        self._seconds = int(seconds)
        width = math.ceil(self._seconds / MAX_BUCKETS)
        # Bucket numbers are floor(now * _per_second): whole seconds for a
        # window of up to MAX_BUCKETS seconds, coarser ones beyond.
        self._per_second = 1.0 / width
        n = self._count = math.ceil(self._seconds / width)
        self._bucket_calls = [0] * n
        self._bucket_failures = [0] * n
        self._bucket_slow = [0] * n
        self._bucket_second = [self._NEVER] * n
        self._head = self._NEVER
        self._head_index = 0
        self._calls = 0
        self._failures = 0
        self._slow = 0

    @property
    def seconds(self) -> int:
        """How many seconds the window spans."""
        return self._seconds

    def _advance(self, second: int) -> None:
        """Move the newest bucket forward to ``second`` (> the current one)."""
        n = self._count
        calls = self._bucket_calls
        failures = self._bucket_failures
        slow = self._bucket_slow
        seconds = self._bucket_second
        if second - self._head >= n:
            # Everything recorded is out of the window. Older buckets are left
            # as they are: their second is too old to ever be subtracted again.
            self._calls = self._failures = self._slow = 0
        else:
            for t in range(self._head + 1, second + 1):
                i = t % n
                if seconds[i] == t - n:
                    # Still counted in the totals: it leaves the window now.
                    self._calls -= calls[i]
                    self._failures -= failures[i]
                    self._slow -= slow[i]
                calls[i] = failures[i] = slow[i] = 0
                seconds[i] = t
        i = second % n
        if seconds[i] != second:
            calls[i] = failures[i] = slow[i] = 0
            seconds[i] = second
        self._head = second
        self._head_index = i

    def record(self, now: float, failed: bool, slow: bool) -> None:
        """Add one call's outcome at time ``now``.

        A reading older than the newest second seen (two threads finishing
        out of order) is counted in the newest second rather than dropped.
        """
        second = _floor(now * self._per_second)
        if second > self._head:
            self._advance(second)
        i = self._head_index
        self._bucket_calls[i] += 1
        self._calls += 1
        if failed:
            self._bucket_failures[i] += 1
            self._failures += 1
        if slow:
            self._bucket_slow[i] += 1
            self._slow += 1

    def totals(self, now: float) -> tuple[int, int, int]:
        """``(calls, failures, slow_calls)`` in the window at time ``now``."""
        second = _floor(now * self._per_second)
        if second > self._head:
            self._advance(second)
        return self._calls, self._failures, self._slow

    def clear(self) -> None:
        """Forget every recorded call."""
        n = self._count
        self._bucket_calls = [0] * n
        self._bucket_failures = [0] * n
        self._bucket_slow = [0] * n
        self._bucket_second = [self._NEVER] * n
        self._head = self._NEVER
        self._head_index = 0
        self._calls = self._failures = self._slow = 0

    def _empty_copy(self) -> TimeWindow:
        return TimeWindow(self._seconds)

    def __repr__(self) -> str:
        return f"TimeWindow(seconds={self._seconds})"


Window: TypeAlias = CountWindow | TimeWindow
