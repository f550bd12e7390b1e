"""One worker process of the shared-breaker tests: a CircuitBreaker shared on
Redis, called in a loop.

Run: python -m tests.redis_breaker_worker PORT PREFIX ROLE
- ROLE "trip": calls that fail until this process's breaker is open;
- ROLE "watch": calls that succeed until one is refused (the breaker was
  opened elsewhere).
Prints "ready" once it has read the shared state, waits for a line on stdin,
then prints one JSON line: {"open_at": wall-clock time it saw OPEN or null,
"calls": n, "failed": n (calls that raised anything but the breaker's own
refusal or the planted failure)}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import redis.asyncio

from resilience import CircuitBreaker, CircuitOpenError, CircuitState, TimeWindow
from resilience.contrib.redis import RedisBackend, RedisBreakerStore


class Planted(Exception):
    pass


async def main(port: int, prefix: str, role: str) -> None:
    client = redis.asyncio.Redis(port=port)
    backend = RedisBackend(client, prefix=prefix, sync_interval=0.05, store_timeout=1.0)
    breaker = CircuitBreaker(
        "fleet",
        window=TimeWindow(10),
        minimum_calls=10,
        open_duration=60,
        backend=backend,
    )
    store = breaker.store
    assert isinstance(store, RedisBreakerStore)
    store.start()
    ready = await store.refresh()
    print("ready" if ready else "not ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    async def work() -> None:
        if role == "trip":
            raise Planted
        await asyncio.sleep(0.02)  # the failing process makes most of the calls

    calls = failed = 0
    open_at = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        calls += 1
        try:
            await breaker.call(work)
        except CircuitOpenError:
            open_at = time.time()
            break
        except Planted:
            if breaker.state is CircuitState.OPEN:
                open_at = time.time()
                break
            await asyncio.sleep(0.001)
        except Exception:
            failed += 1
    store.stop()
    await asyncio.sleep(0)
    await client.aclose()
    print(json.dumps({"open_at": open_at, "calls": calls, "failed": failed}), flush=True)


if __name__ == "__main__":
    port, prefix, role = sys.argv[1:4]
    asyncio.run(main(int(port), prefix, role))
