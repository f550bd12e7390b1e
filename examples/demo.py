"""`make demo`: the policies at work against a flaky upstream, live.

An embedded upstream goes through phases (healthy, slow, failing,
recovering) while many concurrent clients call it through one pipeline:
Fallback > Retry (jittered exponential backoff, shared retry budget) >
per-attempt Timeout. Every second a line shows what the policies did.

Run: python -m examples.demo [--duration SECONDS] [--clients N]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass

from resilience import Fallback, Retry, RetryBudget, Timeout, backoff
from resilience.events import Event, RetryExhausted, RetryScheduled, TimedOut


@dataclass(frozen=True)
class Phase:
    name: str
    failure_rate: float
    latency: float  # seconds, typical
    slow_rate: float  # share of calls that hang far beyond the timeout


PHASES = (
    Phase("healthy", 0.02, 0.005, 0.0),
    Phase("slow", 0.05, 0.02, 0.3),
    Phase("failing", 0.8, 0.005, 0.05),
    Phase("recovering", 0.2, 0.01, 0.02),
)


class Upstream:
    """A dependency whose behaviour changes with time."""

    def __init__(self, duration: float, rng: random.Random) -> None:
        self.started = time.monotonic()
        self.phase_length = duration / len(PHASES)
        self.rng = rng

    @property
    def phase(self) -> Phase:
        index = int((time.monotonic() - self.started) / self.phase_length)
        return PHASES[min(index, len(PHASES) - 1)]

    async def get(self, item: int) -> str:
        phase = self.phase
        if self.rng.random() < phase.slow_rate:
            await asyncio.sleep(5)
        await asyncio.sleep(self.rng.expovariate(1 / phase.latency))
        if self.rng.random() < phase.failure_rate:
            raise ConnectionError("upstream reset the connection")
        return f"item {item}"


class Tally:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def on_event(self, event: Event) -> None:
        if isinstance(event, RetryScheduled):
            self.counts["retries"] += 1
        elif isinstance(event, RetryExhausted):
            self.counts[f"gave up ({event.reason})"] += 1
        elif isinstance(event, TimedOut):
            self.counts["timeouts"] += 1


async def client(pipeline: Fallback, upstream: Upstream, tally: Tally, stop: float) -> None:
    item = 0
    while time.monotonic() < stop:
        item += 1
        result = await pipeline.call(upstream.get, item)
        tally.counts["served" if result != "fallback" else "fallback"] += 1
        await asyncio.sleep(0.01)


async def main(duration: float, clients: int, seed: int) -> Counter[str]:
    tally = Tally()
    retry = Retry(
        3,
        backoff=backoff.exponential(0.02, cap=0.2, jitter="full"),
        budget=RetryBudget(ratio=0.2, min_per_second=5),
        name="upstream-retry",
    )
    timeout = Timeout(0.1, name="upstream-timeout")
    fallback = Fallback("fallback", name="upstream-fallback")
    for policy in (retry, timeout, fallback):
        policy.add_listener(tally.on_event)
    pipeline = fallback | retry | timeout
    upstream = Upstream(duration, random.Random(seed))
    stop = time.monotonic() + duration
    print(f"{clients} clients for {duration:g}s: {' -> '.join(p.name for p in PHASES)}")
    print(f"{'t':>5}  {'phase':<11} {'served':>7} {'fallback':>9} {'retries':>8} {'timeouts':>9}")
    tasks = [asyncio.create_task(client(pipeline, upstream, tally, stop)) for _ in range(clients)]
    last = Counter[str]()
    started = time.monotonic()
    try:
        while time.monotonic() < stop:
            await asyncio.sleep(min(1.0, max(0.0, stop - time.monotonic())))
            now = tally.counts.copy()
            delta = now - last
            last = now
            print(
                f"{time.monotonic() - started:5.1f}  {upstream.phase.name:<11} "
                f"{delta['served']:>7} {delta['fallback']:>9} {delta['retries']:>8} "
                f"{delta['timeouts']:>9}",
                flush=True,
            )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print("summary:", dict(sorted(tally.counts.items())))
    print("retry stats:", retry.stats)
    return tally.counts


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=12.0, help="seconds (default 12)")
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.clients < 1:
        parser.error("--duration must be > 0 and --clients >= 1")
    try:
        asyncio.run(main(args.duration, args.clients, args.seed))
    except KeyboardInterrupt:
        print("interrupted")


if __name__ == "__main__":
    cli()
