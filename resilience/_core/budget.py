"""Retry budget (sans-I/O): a token account over a sliding time window.

Finagle's model: every call deposits ``ratio`` of a token, every retry
withdraws one, and ``min_per_second * window`` tokens are always available so
that a quiet service can still retry. Deposits and withdrawals older than
``window`` seconds expire. Counts are kept in one-second buckets with running
totals, so every operation is O(1) whatever the window.
"""

from __future__ import annotations

import math
import threading

from resilience._validate import seconds

from .windows import MAX_BUCKETS

__all__ = ["RetryBudget"]


class RetryBudget:
    """Caps retries at ``ratio`` of calls (plus a floor of ``min_per_second``)
    over the last ``window`` seconds. Share one budget between several
    :class:`~resilience.Retry` policies to bound their retries together.

    When the budget refuses a retry, the retry stops and the last attempt's
    own error propagates (or its result is returned), exactly as when the
    attempts run out; a ``RetryExhausted`` event says ``reason="budget"``.

    Example::

        budget = RetryBudget(ratio=0.2, min_per_second=10)
        fetch_retry = Retry(4, budget=budget)
        store_retry = Retry(3, budget=budget)
    """

    __slots__ = (
        "_buckets",
        "_calls",
        "_head",
        "_lock",
        "_min_per_second",
        "_per_second",
        "_ratio",
        "_retries",
        "_size",
        "_window",
    )

    def __init__(
        self, ratio: float = 0.2, *, min_per_second: float = 10.0, window: float = 10.0
    ) -> None:
        for param, value in (("ratio", ratio), ("min_per_second", min_per_second)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{param} must be a number, got {value!r}")
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must be between 0 and 1, got {ratio!r}")
        if not (min_per_second >= 0 and math.isfinite(min_per_second)):
            raise ValueError(f"min_per_second must be a finite number >= 0, got {min_per_second!r}")
        window = seconds("window", window)
        if window < 1:
            raise ValueError(f"window must be a finite number of seconds >= 1, got {window!r}")
        self._ratio = float(ratio)
        self._min_per_second = float(min_per_second)
        self._window = window
        # Buckets of [calls, retries], one per second up to MAX_BUCKETS
        # seconds, coarser beyond: memory bounded whatever the window.
        width = math.ceil(math.ceil(window) / MAX_BUCKETS)
        self._per_second = 1.0 / width
        self._size = math.ceil(math.ceil(window) / width)
        # `_head` is the number of the newest bucket, or None before the first operation.
        self._buckets = [[0, 0] for _ in range(self._size)]
        self._calls = 0
        self._retries = 0
        self._head: int | None = None
        # Shared by policies in many threads: two threads rolling the window
        # at once would expire the same buckets twice, and a check-then-
        # withdraw must not spend the last token twice.
        self._lock = threading.Lock()

    @property
    def ratio(self) -> float:
        return self._ratio

    def _roll(self, now: float) -> list[int]:
        second = math.floor(now * self._per_second)
        head = self._head
        if head is None:
            self._head = second
        elif second > head:
            # Expire the buckets that left the window (at most all of them).
            for tick in range(head + 1, min(second, head + self._size) + 1):
                bucket = self._buckets[tick % self._size]
                self._calls -= bucket[0]
                self._retries -= bucket[1]
                bucket[0] = bucket[1] = 0
            self._head = second
        # A reading older than the head (clocks of different policies) lands
        # in the newest bucket rather than corrupting an expired one.
        return self._buckets[self._head % self._size]  # type: ignore[operator]

    def record_call(self, now: float) -> None:
        """A call was made (its first attempt): deposit ``ratio`` of a token."""
        with self._lock:
            self._roll(now)[0] += 1
            self._calls += 1

    def try_retry(self, now: float) -> bool:
        """Withdraw one retry if the budget allows it; False if it does not."""
        with self._lock:
            bucket = self._roll(now)
            allowed = self._min_per_second * self._window + self._ratio * self._calls
            if self._retries + 1 > allowed:
                return False
            bucket[1] += 1
            self._retries += 1
            return True

    def available(self, now: float) -> float:
        """Retries the budget would allow right now."""
        with self._lock:
            self._roll(now)
            allowed = self._min_per_second * self._window + self._ratio * self._calls
            return max(0.0, allowed - self._retries)

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self._ratio!r}, min_per_second={self._min_per_second!r}, "
            f"window={self._window!r})"
        )
