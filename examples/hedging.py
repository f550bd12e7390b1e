"""Hedging: a key-value read hedged at the p95 of its own latency, a budget
that caps the extra load, and an adaptive timeout on the same tracker.

Three phases against replicas whose reads take 2-8 ms, and 2 % of whose
reads stall for a second:

1. warm-up: until the tracker holds 100 durations, the hedge waits its
   ``default_delay`` (1 s), the adaptive timeout its ``default`` (2 s);
2. steady: the hedge fires at the p95 (about 5 % more reads) and the stalls
   vanish from the tail;
3. slow for everyone: every read takes 40 ms. Each one now outlasts the old
   p95, so each would be hedged: the budget caps that. The timeout, cut at
   twice a p99 of a few ms, records every read it cuts as lasting at least
   its limit, so the limit climbs to the new latency instead of collapsing.

The calls run on a virtual-time event loop (:class:`VirtualTimeLoop`): when
nothing is ready, the loop jumps to its next timer, so ``asyncio.sleep(1.0)``
costs no real time and attempts overlap as they would for real
(``FakeClock`` cannot overlap them: its sleep moves the one time at once).
The policies read that loop's clock (``clock=``); in a service, leave
``clock`` out. ``benchmarks/tail_at_scale.py`` runs the same loop at scale.

Run: python -m examples.hedging
"""

from __future__ import annotations

import asyncio
import math
import random
import selectors

from resilience import Hedge, LatencyTracker, RetryBudget, Timeout, TimeoutError
from resilience.events import Event, HedgeStarted


class _Selector(selectors.SelectSelector):
    """Asked to wait for I/O, it moves the time on instead."""

    now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise RuntimeError("nothing left to wait for")
        self.now += max(timeout, 0.0)
        return super().select(0)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on virtual time: it jumps to its next timer at once."""

    def __init__(self) -> None:
        self._selector_ = _Selector()
        super().__init__(self._selector_)

    def time(self) -> float:
        return self._selector_.now


class LoopClock:
    """A resilience clock on the loop's time; its ``call_at`` (the loop's) times the
    Timeout and the hedge's delay."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.now = loop.time
        self.call_at = loop.call_at

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def sleep_sync(self, seconds: float) -> None:
        raise RuntimeError("nothing blocks here")


def quantile(values: list[float], q: float) -> float:
    ranked = sorted(values)
    return ranked[math.ceil(q * len(ranked)) - 1]


async def main() -> None:
    loop = asyncio.get_running_loop()
    clock = LoopClock(loop)
    rng = random.Random(17)
    slow_for_everyone = False
    reads = 0

    async def read_replica(key: str) -> str:
        """One read of one replica: the call being hedged."""
        nonlocal reads
        reads += 1
        if slow_for_everyone:
            latency = rng.uniform(0.030, 0.050)
        elif rng.random() < 0.02:
            latency = 1.0  # a stalled replica: a GC pause, a long disk queue
        else:
            latency = rng.uniform(0.002, 0.008)
        await asyncio.sleep(latency)
        return f"value of {key}"

    # One tracker for the dependency: the hedge's delay and the timeout's
    # limit both come from it, and both record into it.
    tracker = LatencyTracker(name="kv", clock=clock)
    budget = RetryBudget(ratio=0.1, min_per_second=1.0)  # at most ~10 % extra reads
    hedge = Hedge(2, delay="p95", tracker=tracker, budget=budget, name="kv", clock=clock)
    timeout = Timeout.adaptive(
        tracker, quantile=0.99, multiplier=2.0, min=0.005, max=2.0, name="kv", clock=clock
    )
    events: list[Event] = []
    hedge.add_listener(events.append)

    # The hedge outside, the timeout inside: each attempt is timed.
    @hedge | timeout
    async def get(key: str) -> str:
        return await read_replica(key)

    async def phase(calls: int) -> list[tuple[float, int, bool]]:
        """Run ``calls`` reads, one after another: for each, its latency, the
        hedges it started and whether it failed."""
        done = []
        for i in range(calls):
            started, hedges = loop.time(), hedge.stats.hedges
            try:
                assert await get(f"key-{i}") == f"value of key-{i}"
                failed = False
            except TimeoutError:  # every attempt was cut at the limit
                failed = True
            done.append((loop.time() - started, hedge.stats.hedges - hedges, failed))
        return done

    # 1. Warm-up: too few samples, so the defaults hold.
    assert (hedge.delay, timeout.seconds) == (1.0, 2.0)
    await phase(100)
    print(
        f"warm-up: 100 reads, {tracker.count} durations in the tracker; the hedge delay is now "
        f"{hedge.delay * 1000:.1f} ms (the p95), the timeout still {timeout.seconds:g} s "
        f"(worked out again at most once a second)"
    )
    assert timeout.seconds == 2.0
    # Each attempt is recorded twice (by the hedge and by the timeout that
    # times it): the quantiles are the same, min_samples comes sooner.
    assert tracker.count >= 200
    assert 0.006 < hedge.delay < 0.009  # the p95 of 2-8 ms, within 2 %

    # 2. Steady: 2 % of reads stall for 1 s; the hedge answers them.
    reads_before, stats_before = reads, hedge.stats
    steady = await phase(2000)
    latencies = [t for t, _, _ in steady]
    extra = (hedge.stats.hedges - stats_before.hedges) / 2000
    won = hedge.stats.won - stats_before.won
    print(
        f"steady: 2,000 reads, p50 {quantile(latencies, 0.5) * 1000:.1f} ms, "
        f"p99.9 {quantile(latencies, 0.999) * 1000:.1f} ms, slowest "
        f"{max(latencies) * 1000:.1f} ms; {extra:.1%} extra reads, {won} won by a hedge"
    )
    assert won > 20  # ~40 first attempts stalled for 1 s: the hedge answered instead
    assert max(latencies) < 0.1  # and no call waited for a stall
    assert quantile(latencies, 0.999) < 0.030
    assert 0.03 < extra < 0.07  # about 5 %: the p95
    assert reads - reads_before == 2000 + hedge.stats.hedges - stats_before.hedges
    print(f"steady: the adaptive timeout's limit is {timeout.seconds * 1000:.1f} ms (2 x p99)")
    assert 0.010 < timeout.seconds < 0.030

    # 3. Slow for everyone: every read takes 30-50 ms, more than the p95 and
    # than the timeout's limit.
    slow_for_everyone = True
    refused_before, limit_before = hedge.stats.refused, timeout.seconds
    cut_before = timeout.stats.timeouts
    slow = await phase(300)
    hedged = sum(1 for _, hedges, _ in slow if hedges)
    failed = sum(1 for _, _, failed in slow if failed)
    refused = hedge.stats.refused - refused_before
    print(
        f"slow for everyone: 300 reads of 30-50 ms, {hedged} hedged and {refused} refused by "
        f"the budget; {failed} failed with TimeoutError ({timeout.stats.timeouts - cut_before} "
        f"attempts cut) while the limit climbed from "
        f"{limit_before * 1000:.1f} to {timeout.seconds * 1000:.1f} ms"
    )
    print(
        f"slow for everyone: the hedge delay rose to {hedge.delay * 1000:.1f} ms (the p95 of a "
        f"window that still holds the fast reads); the last 200 reads timed out "
        f"{sum(f for _, _, f in slow[100:])} times"
    )
    assert refused > 0  # without the budget, each of those reads would have been sent twice
    assert 0 < failed < 100
    # A cut read counts as lasting at least the limit: the estimate rose to
    # the new latency instead of collapsing into a loop of fast failures.
    assert timeout.seconds >= 0.050 * 1.5
    assert not any(f for _, _, f in slow[100:])
    assert hedge.delay > 0.030
    started = [e for e in events if isinstance(e, HedgeStarted)]
    assert len(started) == hedge.stats.hedges
    print(f"stats: {hedge.stats}")
    print(
        f"stats: {tracker.stats.count} durations in the window; the timeout fired "
        f"{timeout.stats.timeouts} times, its limit is {timeout.stats.seconds * 1000:.1f} ms"
    )
    print("hedging: every check passed")


if __name__ == "__main__":
    loop = VirtualTimeLoop()  # in a service: asyncio.run(main()), and no clock=
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
