"""AdaptiveTimeout: a Timeout whose limit follows the dependency's observed latency."""

from __future__ import annotations

import math
from typing import Any

from . import _validate
from ._clock import Clock
from ._codegen import Inline
from ._timer import Expiry
from .errors import TimeoutError
from .latency import LatencyTracker
from .timeout import _INLINE, Timeout

__all__ = ["AdaptiveTimeout"]

# How often the limit is worked out again from the tracker, in seconds: a
# quantile read per call would cost more than the timeout itself.
_REFRESH = 1.0


class AdaptiveTimeout(Timeout):
    """A :class:`~resilience.Timeout` whose limit is ``multiplier`` times a
    latency quantile of the calls it times, between ``min`` and ``max``;
    made by :meth:`Timeout.adaptive`.

    The limit is ``default`` until the tracker holds ``min_samples``
    durations, then it is worked out again at most once a second. A call
    that times out is recorded as lasting at least the limit in force, so
    that timeouts cannot drag the estimate down into a fast-fail loop (a
    call cut at 100 ms says the dependency took 100 ms or more, never less).
    :attr:`seconds`, :attr:`stats` and the error's ``seconds`` give the
    limit in force.

    Example::

        tracker = LatencyTracker()
        timeout = Timeout.adaptive(tracker, quantile=0.99, multiplier=1.5, min=0.05, max=5.0)
    """

    __slots__ = (
        "_default",
        "_max",
        "_min",
        "_min_samples",
        "_multiplier",
        "_next",
        "_q",
        "tracker",
    )

    def __init__(
        self,
        tracker: LatencyTracker,
        *,
        quantile: float = 0.99,
        multiplier: float = 1.5,
        min: float = 0.01,
        max: float = 60.0,
        default: float | None = None,
        min_samples: int = 100,
        name: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(tracker, LatencyTracker):
            raise TypeError(f"tracker must be a LatencyTracker, got {tracker!r}")
        if isinstance(quantile, bool) or not isinstance(quantile, int | float):
            raise TypeError(f"quantile must be a number in (0, 1), got {quantile!r}")
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {quantile!r}")
        if isinstance(multiplier, bool) or not isinstance(multiplier, int | float):
            raise TypeError(f"multiplier must be a number, got {multiplier!r}")
        if not (multiplier > 0 and math.isfinite(multiplier)):
            raise ValueError(f"multiplier must be a finite number > 0, got {multiplier!r}")
        low = _validate.seconds("min", min)
        high = _validate.seconds("max", max)
        if low > high:
            raise ValueError(f"min must be <= max, got min={min!r} and max={max!r}")
        start = high if default is None else _validate.seconds("default", default)
        _validate.count("min_samples", min_samples, 1)
        super().__init__(start, name=name, clock=clock)
        self.tracker = tracker
        """The latencies the limit follows (the calls this timeout times are recorded in it)."""
        self._q = float(quantile)
        self._multiplier = float(multiplier)
        self._min = low
        self._max = high
        self._default = start
        self._min_samples = min_samples
        self._next = -math.inf

    def _record_call(self, ticket: Any, error: BaseException | None) -> None:
        """Record the call's duration, and work the limit out again when due."""
        if ticket.__class__ is Expiry:
            now = ticket.queue.now()
            start = ticket.at - ticket.limit
        else:  # a cancel scope (trio)
            now = self._clock.now()
            start = ticket.start
        took = now - start
        if isinstance(error, TimeoutError) and error.name == self._name:
            took = took if took > ticket.limit else ticket.limit  # at least the limit
        self.tracker.record(took)
        clock_now = self._clock.now()
        if clock_now >= self._next:
            self._next = clock_now + _REFRESH
            self._adapt()

    def _adapt(self) -> None:
        tracker = self.tracker
        quantile = tracker.quantile(self._q) if tracker.count >= self._min_samples else None
        limit = (
            self._default
            if quantile is None
            else min(self._max, max(self._min, quantile * self._multiplier))
        )
        if limit < self._seconds:
            # The calls of one queue must have their deadlines in order: a
            # shorter limit starts a queue of its own (the calls already in
            # the old one keep it, and its timer).
            self._cache = (-1, None, None)
        self._seconds = limit

    def __repr__(self) -> str:
        return (
            f"<AdaptiveTimeout {self._name!r} p{self._q * 100:g} x{self._multiplier:g} "
            f"in [{self._min:g}, {self._max:g}] now {self._seconds:g}s>"
        )


_ADAPTIVE = Inline(
    names=_INLINE.names,
    admit=_INLINE.sources["admit"],
    settle=_INLINE.sources["settle"] + "\n{g}._record_call({t}, error)",
)
AdaptiveTimeout._inline_source = _ADAPTIVE  # type: ignore[attr-defined]
AdaptiveTimeout.admit = _ADAPTIVE.method("admit", Timeout.admit.__doc__ or "")
AdaptiveTimeout.settle = _ADAPTIVE.method(
    "settle", "Stop timing, record the duration, and adapt the limit when due."
)
