"""A windowed latency histogram (sans-I/O): quantiles of the last few seconds in O(1).

Durations go into log-spaced buckets: bucket ``i`` holds the durations in
``[FLOOR * GAMMA**i, FLOOR * GAMMA**(i + 1))`` and answers with
``FLOOR * GAMMA**i * (1 + RELATIVE_ERROR)``, which is within
``RELATIVE_ERROR`` (2 %) of every duration in the bucket, with ``GAMMA =
(1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)`` as in DDSketch. So the answer
to ``quantile(q)`` is within 2 % of the exact ``q``-quantile of the window's
durations (the one at rank ``ceil(q * n)`` of ``n``, to float rounding),
whatever their distribution, for durations between ``FLOOR`` (10 µs) and
``CEILING`` (1000 s). Durations outside clamp into the end buckets: a
shorter one counts as about 10 µs, a longer one (or ``math.inf``) as about
1000 s. Zero and negative durations count as the shortest; NaN is ignored.

The window is ``sub_windows`` sub-windows of ``window / sub_windows`` seconds
each, in a ring, as in Finagle's ``WindowedPercentileHistogram`` (3 x 10 s).
A duration recorded at ``now`` counts until the sub-window ``sub_windows``
places after its own begins: between ``window - window / sub_windows`` and
``window`` seconds, so a whole window without samples leaves none. A running
total of the closed sub-windows is updated as each closes and expires, so a
record touches only the current sub-window and a query adds two histograms,
never all the sub-windows; an idle gap of any length costs O(sub_windows).

A query reads cumulative counts of the total, cached. They are rebuilt after
an expiry, and once ``max(1, n // 100)`` samples arrived since the last build
(``n``: the samples at that build); until then a query answers from the last
build, which lacks fewer than 1 % of the window's samples (none while the
window holds fewer than 200). So there are at most about a hundred builds
per window, plus one per expiry, whatever the traffic, and a query costs a
dict lookup between them. Expiring a sub-window and building touch only the
buckets in use (about 12 µs and 8 µs for the hundred buckets that calls
around 20 ms fill).

Nothing here reads a clock or takes a lock: callers pass ``now``, and a
caller shared by threads serialises the calls (see
:class:`resilience.LatencyTracker`).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable
from itertools import accumulate, compress
from operator import add, sub
from typing import Any

from .source import snippet

__all__ = [
    "BUCKETS",
    "CEILING",
    "FLOOR",
    "GAMMA",
    "RECORD",
    "RELATIVE_ERROR",
    "WindowedHistogram",
    "bucket_of",
    "compile_record",
    "value_of",
]

RELATIVE_ERROR = 0.02
"""Every answer is within this fraction of the exact quantile (in range)."""
GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
"""The ratio of a bucket's upper bound to its lower bound (about 1.0408)."""
FLOOR = 1e-5
"""Seconds: shorter durations count as this (10 µs)."""
CEILING = 1e3
"""Seconds: longer durations count as this (1000 s)."""

# log2 and trunc are the cheapest way from a float to its bucket: math.log
# takes an optional base and so parses a tuple of arguments, int() goes
# through the generic constructor (about 1.8k instructions for both, 0.7k
# for these). trunc also rounds the few-ulp negatives just above FLOOR to 0.
_log2 = math.log2
_trunc = math.trunc
_floor = math.floor
_SCALE = 1.0 / math.log2(GAMMA)
_OFFSET = -math.log2(FLOOR) * _SCALE
_TOP = _trunc(math.log2(CEILING) * _SCALE + _OFFSET)

BUCKETS = _TOP + 1
"""How many buckets a histogram has (462)."""

_VALUES = tuple(FLOOR * GAMMA**i * (1 + RELATIVE_ERROR) for i in range(BUCKETS))
_ZEROS = [0] * BUCKETS
_INDEXES = range(BUCKETS)
_MISSING = object()


def bucket_of(seconds: float) -> int | None:
    """The bucket a duration counts in (None: NaN, not counted).

    Example::

        assert bucket_of(0.0) == bucket_of(1e-9) == 0
        assert bucket_of(math.inf) == BUCKETS - 1
    """
    if seconds > FLOOR:
        return _trunc(_log2(seconds) * _SCALE + _OFFSET) if seconds < CEILING else _TOP
    return 0 if seconds == seconds else None


def value_of(bucket: int) -> float:
    """The duration a bucket answers with: within 2 % of all it holds.

    Example::

        assert abs(value_of(bucket_of(0.1)) / 0.1 - 1) <= RELATIVE_ERROR
    """
    return _VALUES[bucket]


# Recording a duration, as source written once: WindowedHistogram.record is
# compiled from it, and so is LatencyTracker.record (resilience.latency),
# which runs it under its lock, where a call would add a tenth of its cost.
# {h}: the histogram, {now}: the reading, {seconds}: the duration, {i}: a
# local for its bucket. A NaN returns from the function, uncounted.
RECORD = """\
if {now} >= {h}.rotate_at:
    {h}.advance({now})
if {seconds} > FLOOR:
    {i} = _trunc(_log2({seconds}) * _SCALE + _OFFSET) if {seconds} < CEILING else _TOP
elif {seconds} == {seconds}:
    {i} = 0
else:
    return  # NaN: not a duration, and it has no place in an order
{h}.current[{i}] += 1
{h}.count += 1"""
"""Counting one duration in a histogram as source, placeholders as the comment above says.

Example::

    body = snippet(RECORD, "    ", h="self", now="now", seconds="seconds", i="i")
    source = f"def record(self, now, seconds):\\n{body}\\n"
    record = compile_record(source, WindowedHistogram, "Count one duration at ``now``.")
"""


def compile_record(source: str, owner: type, doc: str) -> Callable[..., None]:
    """The function ``record`` that ``source`` defines around :data:`RECORD`,
    with this module's names (``FLOOR``, ``_log2``...) as its globals, named
    and documented as ``owner``'s method."""
    namespace: dict[str, Any] = {}
    exec(source, globals(), namespace)  # our own text
    record: Callable[..., None] = namespace["record"]
    record.__module__ = owner.__module__
    record.__qualname__ = f"{owner.__qualname__}.record"
    record.__doc__ = doc
    return record


def _span(counts: list[int]) -> tuple[int, int]:
    """The narrowest ``[low, high)`` holding every count, found in C (not all zero)."""
    return (
        next(compress(_INDEXES, counts)),
        BUCKETS - next(compress(_INDEXES, reversed(counts))),
    )


class WindowedHistogram:
    """Durations of the last ``window`` seconds in log-spaced buckets.

    ``record(now, seconds)``, ``advance(now)`` (expire what left the window)
    and ``quantile(now, q)``; ``count`` is the samples in the window as of
    the last call. ``q`` is not checked here.

    A caller may compile ``record`` inline from :data:`RECORD` (as
    :class:`resilience.LatencyTracker` does). And it may answer a repeated
    query itself: while ``now < rotate_at`` and ``count <
    stale_at``, ``answers.get(q)`` (when present) is what ``quantile(now,
    q)`` would return.

    Example::

        histogram = WindowedHistogram(30.0, 10, origin=0.0)
        for ms in range(1, 101):
            histogram.record(1.0, ms / 1000)
        assert abs(histogram.quantile(2.0, 0.5) / 0.050 - 1) <= RELATIVE_ERROR
        assert histogram.quantile(31.0, 0.5) is None   # expired
    """

    __slots__ = (
        "_base",
        "_built",
        "_closed",
        "_closed_count",
        "_counts",
        "_cumulative",
        "_epoch",
        "_origin",
        "_slot",
        "_spans",
        "_subs",
        "_width",
        "answers",
        "count",
        "current",
        "rotate_at",
        "stale_at",
    )

    def __init__(self, window: float, sub_windows: int, *, origin: float) -> None:
        self._width = window / sub_windows
        self._origin = origin
        self._subs = [list(_ZEROS) for _ in range(sub_windows)]
        self._counts = [0] * sub_windows
        # Where each closed sub-window's counts lie: expiring it and building
        # touch those buckets only (a few dozen for most dependencies).
        self._spans = [(0, 0)] * sub_windows
        self._slot = 0
        self._epoch = 0
        self.current = self._subs[0]
        """The counts per bucket of the sub-window being filled."""
        # The other sub-windows added up, kept as they close and expire; a
        # record adds to the current sub-window only, a build adds the two.
        self._closed = list(_ZEROS)
        self._closed_count = 0
        self.rotate_at = origin + self._width
        """When the current sub-window ends: the next call at or after it rotates."""
        self.count = 0
        """Samples in the window (as of the last call)."""
        self._cumulative: list[int] = []
        self._base = 0
        self._built = 0
        self.stale_at = 1
        """The cached answers stand while ``count`` is below this."""
        self.answers: dict[float, float | None] = {}
        """Answers per quantile since the last build."""

    record: Callable[[float, float], None]
    """``record(now, seconds)``: count one duration at ``now`` (compiled from :data:`RECORD`)."""

    def advance(self, now: float) -> None:
        """Expire the sub-windows that ended by ``now``: O(sub_windows) at most."""
        if now < self.rotate_at:
            return
        # At a sub-window's exact end the division may round just below the
        # next integer: a call at or after rotate_at always moves on.
        epoch = max(_floor((now - self._origin) / self._width), self._epoch + 1)
        steps = epoch - self._epoch
        subs = self._subs
        counts = self._counts
        size = len(subs)
        slot = self._slot
        expired = False
        if steps >= size:
            slot = (slot + steps) % size
            if self.count:
                for old in subs:
                    old[:] = _ZEROS
                self._closed[:] = _ZEROS
                counts[:] = [0] * size
                self.count = self._closed_count = 0
                expired = True
        else:
            closed = self._closed
            filled = self.count - self._closed_count
            if filled:
                low, high = self._spans[slot] = _span(self.current)
                # Element-wise at C speed, once per sub-window.
                closed[low:high] = map(add, closed[low:high], self.current[low:high])
                self._closed_count += filled
                counts[slot] = filled
            for _ in range(steps):
                slot = slot + 1 if slot + 1 < size else 0
                gone = counts[slot]
                if gone:
                    low, high = self._spans[slot]
                    old = subs[slot]
                    closed[low:high] = map(sub, closed[low:high], old[low:high])
                    old[low:high] = _ZEROS[low:high]
                    counts[slot] = 0
                    self._closed_count -= gone
                    self.count -= gone
                    expired = True
        self._slot = slot
        self.current = subs[slot]
        self._epoch = epoch
        # From the origin each time, so rounding never accumulates.
        self.rotate_at = self._origin + (epoch + 1) * self._width
        if expired:
            self.stale_at = -1

    def quantile(self, now: float, q: float) -> float | None:
        """The ``q``-quantile of the window's durations (None when empty)."""
        if now >= self.rotate_at:
            self.advance(now)
        if self.count >= self.stale_at:
            self._build()
        answers = self.answers
        value = answers.get(q, _MISSING)
        if value is _MISSING:
            n = self._built
            # The first bucket whose cumulative count reaches q * n holds the
            # sample at rank ceil(q * n): counts are integers.
            value = _VALUES[self._base + bisect_left(self._cumulative, q * n)] if n else None
            answers[q] = value
        return value  # type: ignore[return-value]

    def _build(self) -> None:
        n = self._built = self.count
        if n:
            # Over the buckets in use only: those of the current sub-window
            # and of each closed one (the current one's slot holds no count).
            low, high = _span(self.current) if n > self._closed_count else (BUCKETS, 0)
            for held, (first, end) in zip(self._counts, self._spans, strict=True):
                if held:
                    low = min(low, first)
                    high = max(high, end)
            self._base = low
            self._cumulative = list(
                accumulate(map(add, self._closed[low:high], self.current[low:high]))
            )
        self.stale_at = n + max(1, n // 100)
        self.answers = {}  # a new dict: a reader holding the old one sees a whole build

    def totals(self) -> list[int]:
        """The window's counts per bucket."""
        return list(map(add, self._closed, self.current))

    def sub_window_totals(self) -> list[list[int]]:
        """Copies of each sub-window's counts per bucket, in ring order."""
        return [list(old) for old in self._subs]


WindowedHistogram.record = compile_record(
    "def record(self, now, seconds):\n"
    + snippet(RECORD, "    ", h="self", now="now", seconds="seconds", i="i")
    + "\n",
    WindowedHistogram,
    "Count one duration at ``now``.",
)
