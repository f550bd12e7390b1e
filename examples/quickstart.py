"""Quickstart: retry, timeout and fallback around a flaky async call.

Run: python examples/quickstart.py
"""

from __future__ import annotations

import asyncio
import random

from resilience import Fallback, Retry, Timeout, backoff
from resilience.events import Event, RetryScheduled

rng = random.Random(7)


def log(event: Event) -> None:
    if isinstance(event, RetryScheduled):
        print(f"  {event.name}: attempt {event.attempt} failed, retrying in {event.delay:.3f}s")


retry = Retry(4, backoff=backoff.exponential(0.01, cap=0.1, jitter="full"), name="quotes")
retry.add_listener(log)


@Fallback("price unavailable") | retry | Timeout(0.2)
async def fetch_price(symbol: str) -> str:
    roll = rng.random()
    if roll < 0.4:
        raise ConnectionError("connection reset")
    if roll < 0.5:
        await asyncio.sleep(1)  # too slow: the timeout cancels it
    return f"{symbol}: {100 + rng.randint(0, 50)}"


async def main() -> None:
    for symbol in ("ACME", "INIT", "GLOB", "UMBR", "CYBR"):
        print(await fetch_price(symbol))
    print(f"stats: {retry.stats}")


if __name__ == "__main__":
    asyncio.run(main())
