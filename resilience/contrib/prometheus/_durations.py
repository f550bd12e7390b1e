"""The opt-in duration histogram: a call observer, so nothing is patched."""

from __future__ import annotations

import bisect
import threading
import weakref
from collections.abc import Sequence
from typing import Any

from resilience import Policy
from resilience.errors import BulkheadFullError, CircuitOpenError, RateLimitedError, TimeoutError
from resilience.lowlevel import add_observer, remove_observer

__all__ = ["Durations", "Histogram", "add_store", "remove_store"]


class Histogram:
    __slots__ = ("counts", "total")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size  # per bucket, not cumulative; the last is +Inf
        self.total = 0.0


class Durations:
    """One registry's duration histograms, per live policy and outcome.

    Keyed by ``id(policy)`` because a dict lookup by int is the cheapest thing
    a timed call can do; a finalizer drops the entry when the policy is
    collected, before its id can be reused. Updates are plain list and float
    increments with no call in between (atomic under the GIL, as the
    bulkheads' counters).
    """

    __slots__ = ("bounds", "finalizers", "series")

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = tuple(buckets)
        self.series: dict[int, dict[str, Histogram]] = {}
        self.finalizers: list[weakref.finalize[Any, Any]] = []

    def observe(self, policy: Policy, outcome: str, seconds: float) -> None:
        key = id(policy)
        per_outcome = self.series.get(key)
        if per_outcome is None:
            per_outcome = self.series[key] = {}
            self.finalizers.append(weakref.finalize(policy, self.series.pop, key, None))
        histogram = per_outcome.get(outcome)
        if histogram is None:
            histogram = per_outcome[outcome] = Histogram(len(self.bounds) + 1)
        histogram.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        histogram.total += seconds

    def close(self) -> None:
        for finalizer in self.finalizers:
            finalizer.detach()
        self.finalizers.clear()
        self.series.clear()


# The stores the observer feeds; a tuple replaced as a whole, so a call
# iterating it never sees it change under its feet.
_stores: tuple[Durations, ...] = ()
_lock = threading.Lock()


def _outcome(error: BaseException | None) -> str | None:
    if error is None:
        return "success"
    if not isinstance(error, Exception):
        return None  # cancellation and the like: no outcome
    if isinstance(error, CircuitOpenError | BulkheadFullError | RateLimitedError):
        return "rejected"
    if isinstance(error, TimeoutError):
        return "timeout"
    return "failure"


def _observe(policy: Any, error: BaseException | None, seconds: float) -> None:
    outcome = _outcome(error)
    if outcome is None or not isinstance(policy, Policy):
        return
    for store in _stores:
        store.observe(policy, outcome, seconds)


def add_store(store: Durations) -> None:
    global _stores
    with _lock:
        if not _stores:
            add_observer(_observe)
        _stores = (*_stores, store)


def remove_store(store: Durations) -> None:
    global _stores
    with _lock:
        if store not in _stores:
            return
        _stores = tuple(s for s in _stores if s is not store)
        if not _stores:
            remove_observer(_observe)
    store.close()
