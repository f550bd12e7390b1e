"""One worker process of the shared-limit test: call through a RateLimiter
shared on Redis as fast as it can for a while, and print what it admitted.

Run: python -m tests.redis_limit_worker PORT PREFIX RATE BURST CALLS
Prints one JSON line: {"admitted": [wall-clock times], "refused": n}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import redis.asyncio

from resilience import RateLimitedError, RateLimiter
from resilience.contrib.redis import RedisBackend


async def main(port: int, prefix: str, rate: float, burst: int, calls: int) -> None:
    client = redis.asyncio.Redis(port=port)
    backend = RedisBackend(client, prefix=prefix, store_timeout=1.0)
    limiter = RateLimiter(rate, burst=burst, name="shared", backend=backend)
    # Loaded before the start: local decisions would not be shared.
    print("ready" if await backend.ready() else "not ready", flush=True)
    sys.stdin.readline()  # every worker starts at once

    async def work() -> float:
        return time.time()

    admitted: list[float] = []
    refused = 0
    for _ in range(calls):
        try:
            admitted.append(await limiter.call(work))
        except RateLimitedError:
            refused += 1
            await asyncio.sleep(0.001)
    await client.aclose()
    print(json.dumps({"admitted": admitted, "refused": refused}), flush=True)


if __name__ == "__main__":
    port, prefix, rate, burst, calls = sys.argv[1:6]
    asyncio.run(main(int(port), prefix, float(rate), int(burst), int(calls)))
