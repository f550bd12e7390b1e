"""Latency tracker: the cost of recording a duration and of asking a quantile.

No peer: of the streaming quantile estimators in Python, none is windowed
(anchors-next.md 5.2 measured fastdigest, river's P², ddsketch and
hdrhistogram per update, all cumulative).

- ``record``: ``tracker.record(0.0123)`` on the system clock (the window
  moves every 3 s, and those rotations are part of the cost). The duration
  is the same on every call: the bucket is computed from its logarithm
  whatever the value, so a varying one would only add the work of varying it.
- ``quantile``: ``tracker.quantile(0.99)`` after 10,000 lognormal samples
  (median 20 ms), the way a Hedge or an adaptive Timeout asks before each
  call: a cached answer between rebuilds of the cumulative counts (after
  each rotation, and once 1 % more samples arrived), the rebuilds included.

- ``steady``: both per call, the way a Hedge uses its tracker, on a clock
  that moves 3 ms per call: a steady window of 10,000 calls of varying
  duration, with its rotations (every 1,000 calls) and rebuilds (every
  100) counted, amortised.

The first two come in two forms: a plain call (sync, over ``g()``), and the call
followed by ``await f()`` (over ``await f()``), which ``make
bench-instructions`` counts, since its child runs async cases only: there
the extra is the call's own cost and one plain frame (about 0.3k
instructions; see ``record_then_await``), with a window of 10^6 s, so that
no rotation lands in the count: a rotation (every 3 s by default) costs
tens of thousands of instructions once, whatever the traffic.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Coroutine
from typing import Any

from .cases import Case
from .cases_baseline import f

__all__ = ["cases"]

SYNC = "latency tracker, sync"
THEN_AWAIT = "latency tracker, then await f()"

SAMPLES = 10_000
DURATION = 0.0123
STILL = 1e6
"""The instruction rows' window: no rotation in either valgrind run (their
lengths in wall time differ, so rotations would make the count vary)."""

Target = Callable[[], Any]


def _tracker(samples: int, window: float = 30.0) -> Any:
    from resilience import LatencyTracker

    tracker = LatencyTracker(window)
    rng = random.Random(17)
    for _ in range(samples):
        tracker.record(rng.lognormvariate(math.log(0.020), 0.6))
    if tracker.count != samples:
        raise RuntimeError(f"{tracker!r} holds {tracker.count} samples, not {samples}")
    return tracker


def _checked_quantile(tracker: Any) -> Callable[[float], float | None]:
    quantile = tracker.quantile
    p99 = quantile(0.99)
    if p99 is None or not 0.020 < p99 < 1.0:
        raise RuntimeError(f"{tracker!r}: p99 {p99!r} is not that of the samples")
    return quantile  # type: ignore[no-any-return]


def record_sync() -> Target:
    record = _tracker(0).record

    def target() -> None:
        record(DURATION)

    return target


def quantile_sync() -> Target:
    quantile = _checked_quantile(_tracker(SAMPLES))

    def target() -> float | None:
        return quantile(0.99)

    return target


def record_then_await() -> Target:
    record = _tracker(0, STILL).record

    # A plain function returning f's coroutine: an ``async def`` around
    # ``await f()`` would add a coroutine frame (about 1.05k instructions),
    # this adds a plain frame (about 0.3k).
    def target() -> Coroutine[Any, Any, int]:
        record(DURATION)
        return f()

    return target


def quantile_then_await() -> Target:
    quantile = _checked_quantile(_tracker(SAMPLES, STILL))

    def target() -> Coroutine[Any, Any, int]:
        quantile(0.99)
        return f()

    return target


class _Ticking:
    """A clock that moves ``step`` seconds at each reading, in C: time as a
    dependency at a steady rate would see it, and the same in every run."""

    def __init__(self, step: float) -> None:
        self.now = itertools.count(0.0, step).__next__

    async def sleep(self, seconds: float) -> None:
        raise NotImplementedError

    def sleep_sync(self, seconds: float) -> None:
        raise NotImplementedError


def steady_then_await() -> Target:
    from resilience import LatencyTracker

    # Two readings per call, 3 ms apart: 333 calls a second, so the 30 s
    # window holds 10,000 calls, a sub-window ends every 1,000 calls and the
    # cumulative counts are rebuilt every 100.
    tracker = LatencyTracker(clock=_Ticking(0.0015))
    rng = random.Random(17)
    draw = itertools.cycle([rng.lognormvariate(math.log(0.020), 0.6) for _ in range(1009)])
    following = draw.__next__
    for _ in range(2 * SAMPLES):
        tracker.record(following())
        tracker.quantile(0.99)
    if not 9_000 <= tracker.count <= SAMPLES:
        raise RuntimeError(f"{tracker!r}: not a steady 10,000-call window")
    record = tracker.record
    quantile = _checked_quantile(tracker)

    def target() -> Coroutine[Any, Any, int]:
        record(following())
        quantile(0.99)
        return f()

    return target


def cases() -> list[Case]:
    return [
        Case(
            SYNC,
            "resilience tracker.record(d)",
            record_sync,
            kind="sync",
            baseline="g()",
            ours=True,
            key="latency.record.sync",
        ),
        Case(
            SYNC,
            "resilience tracker.quantile(0.99), 10,000 samples",
            quantile_sync,
            kind="sync",
            baseline="g()",
            ours=True,
            key="latency.quantile.sync",
        ),
        Case(
            THEN_AWAIT,
            "resilience tracker.record(d); await f()",
            record_then_await,
            ours=True,
            key="latency.record",
        ),
        Case(
            THEN_AWAIT,
            "resilience tracker.quantile(0.99), 10,000 samples; await f()",
            quantile_then_await,
            ours=True,
            key="latency.quantile",
        ),
        Case(
            THEN_AWAIT,
            "resilience tracker.record(d) and .quantile(0.99), steady 10,000-call window; await f()",
            steady_then_await,
            ours=True,
            key="latency.steady",
        ),
    ]
