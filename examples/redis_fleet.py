"""A fleet of worker processes sharing one rate limit on Redis: one limit
while Redis answers, each worker's own limit while it is down, one limit
again once it is back.

The example starts its own redis-server on a free port of 127.0.0.1, in a
temporary directory and without persistence, and stops it at the end,
whatever happens. Each worker is this file run again with ``--worker``: a
separate OS process with its own ``RateLimiter(50, burst=10,
name="partner-api", backend=RedisBackend(...))``. The workers share the limit
because they share its name.

1. shared: the workers call as fast as they can for a second; together they
   admit at most ``burst + rate * W``, as one process would.
2. outage: Redis is killed. No call fails: each worker decides by its own
   copy of the limit, so the fleet admits up to three times the limit. The
   first calls wait ``store_timeout`` each (redis-py retries a refused
   connection until then), until each worker's store breaker opens and
   Redis is not asked at all for a second.
3. rejoin: Redis is started again on the same port (empty). Each worker is
   sharing again within about a second (its store breaker's open duration),
   and the fleet obeys one limit again.

Needs redis-server on PATH (Debian: apt-get install redis-server). Without
it the example says so and exits 0, unless CI=true, where it fails.

Run: python -m examples.redis_fleet
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
from typing import Any

import redis.asyncio

from examples._redis_server import HOST, RedisServer
from examples._workers import Workers
from resilience import CircuitState, RateLimitedError, RateLimiter
from resilience.contrib.redis import RedisBackend

WORKERS = 3
RATE, BURST = 50.0, 10  # per second, for the whole fleet
# The longest a call waits for Redis. The default, 0.05 s, suits a service;
# on a busy test machine scheduling alone can take that long, and a call
# past it is decided by the worker's own limit, so the example gives more.
STORE_TIMEOUT = 0.1
# The admission times are the workers' clocks after each call returned, not
# Redis's at its decision: 0.1 s of slack for that (as the tests allow).
SLACK = 0.1


# -- one worker process -------------------------------------------------------


async def partner_call() -> float:
    """The call the limit protects; returns when it ran (wall clock)."""
    return time.time()


async def run(limiter: RateLimiter, backend: RedisBackend, seconds: float) -> dict[str, Any]:
    """Call through the limiter as fast as possible for ``seconds``."""
    admitted: list[float] = []
    refused, failed, slowest = 0, [], 0.0
    before = backend.breaker.stats
    end = time.monotonic() + seconds
    while (start := time.monotonic()) < end:
        try:
            admitted.append(await limiter.call(partner_call))
        except RateLimitedError:
            refused += 1
            await asyncio.sleep(0.001)  # a real worker would do other work meanwhile
        except Exception as exc:  # what this example says never happens
            failed.append(repr(exc))
        slowest = max(slowest, time.monotonic() - start)
    after = backend.breaker.stats
    return {
        "admitted": admitted,
        "refused": refused,
        "failed": failed,
        "slowest": slowest,
        # Round trips Redis answered, and calls that did not ask it because
        # the store breaker was open.
        "answered": after.successful_total - before.successful_total,
        "skipped": after.rejected - before.rejected,
        "store": after.state.value,
    }


async def rejoin(limiter: RateLimiter, backend: RedisBackend) -> dict[str, Any]:
    """Keep calling (decided locally meanwhile) until the store decides again."""
    start = time.monotonic()
    failed = []
    while not (backend.loaded and backend.breaker.state is CircuitState.CLOSED):
        if time.monotonic() - start > 5.0:
            return {"rejoined": None, "failed": failed}
        try:
            await limiter.call(partner_call)
        except RateLimitedError:
            pass
        except Exception as exc:
            failed.append(repr(exc))
        await asyncio.sleep(0.01)
    return {"rejoined": time.monotonic() - start, "failed": failed}


async def worker(port: int) -> None:
    client = redis.asyncio.Redis(host=HOST, port=port)
    backend = RedisBackend(client, prefix="fleet", store_timeout=STORE_TIMEOUT)
    limiter = RateLimiter(RATE, burst=BURST, name="partner-api", backend=backend)
    # Load the script before the start: until it is, decisions are local.
    print(json.dumps({"ready": await backend.ready()}), flush=True)
    # Then one command a line from the parent: "run SECONDS" or "rejoin".
    while line := await asyncio.to_thread(sys.stdin.readline):
        command, *seconds = line.split()
        if command == "rejoin":
            report = await rejoin(limiter, backend)
        else:
            report = await run(limiter, backend, float(seconds[0]))
        print(json.dumps(report), flush=True)
    await client.aclose()


# -- the parent: a server, three workers, three phases ------------------------


def span(reports: list[dict[str, Any]]) -> tuple[int, float]:
    """The calls admitted by every worker together, and the seconds they span."""
    times = sorted(t for report in reports for t in report["admitted"])
    return len(times), times[-1] - times[0]


def check_one_limit(phase: str, reports: list[dict[str, Any]]) -> None:
    for number, report in enumerate(reports, 1):
        print(
            f"{phase}: worker {number} admitted {len(report['admitted'])}, refused "
            f"{report['refused']} (Redis asked {report['answered']} times)"
        )
        assert not report["failed"], report["failed"]
    total, window = span(reports)
    bound = BURST + RATE * (window + SLACK)
    print(
        f"{phase}: {total} admitted in total over {window:.2f} s, within one limit: "
        f"burst + rate*W = {BURST} + {RATE:g}*{window:.2f} (+{RATE * SLACK:g} for the clocks)"
    )
    assert BURST <= total <= bound, (total, bound)


def fleet(server: RedisServer) -> None:
    with Workers("examples.redis_fleet", [[str(server.port)]] * WORKERS) as workers:
        assert workers.read() == [{"ready": True}] * WORKERS
        print(
            f"fleet: {WORKERS} worker processes share RateLimiter({RATE:g}, burst={BURST}, "
            f"name='partner-api') on 127.0.0.1:{server.port}"
        )

        # 1. One limit for the fleet.
        check_one_limit("shared", workers.ask("run 1.0"))

        # 2. Redis dies: every call is still answered, by each worker's own limit.
        server.kill()
        reports = workers.ask("run 1.0")
        for number, report in enumerate(reports, 1):
            admitted, window = span([report])
            print(
                f"outage: worker {number} admitted {admitted} on its own limit, refused "
                f"{report['refused']}, slowest call {report['slowest'] * 1000:.0f} ms; "
                f"store breaker {report['store']} (Redis not asked {report['skipped']} times)"
            )
            assert not report["failed"], report["failed"]
            assert admitted <= BURST + RATE * (window + SLACK)  # its own limit still holds
            assert report["slowest"] < 1.0  # never Redis's client defaults (seconds)
            assert report["store"] == "open"
        total, window = span(reports)
        print(
            f"outage: Redis killed, no call failed; {total} admitted in total over "
            f"{window:.2f} s (one limit: {BURST + RATE * window:.0f}; up to {WORKERS}x meanwhile)"
        )

        # 3. Redis is back (empty): the workers share one limit again.
        server.start(server.port)
        rejoined = workers.ask("rejoin")
        assert all(not report["failed"] for report in rejoined), rejoined
        seconds = [report["rejoined"] for report in rejoined]
        assert None not in seconds, "a worker was not sharing again within 5 s"
        shown = ", ".join(f"{s:.2f}" for s in seconds)
        print(f"rejoin: Redis restarted on its port; every worker shares again after {shown} s")
        check_one_limit("shared again", workers.ask("run 0.5"))
        assert server.evalsha_calls() > 0  # decided on the new server


def main() -> int:
    binary = shutil.which("redis-server")
    if binary is None:
        in_ci = os.environ.get("CI") == "true"
        print(
            "redis_fleet: redis-server was not found on PATH; install it to run this "
            "example (Debian: apt-get install redis-server)"
            + (" (CI=true: failing)" if in_ci else ""),
        )
        return 1 if in_ci else 0
    server = RedisServer(binary, "redis-fleet-")
    try:
        server.start()
        fleet(server)
    finally:
        server.stop()
    print("redis_fleet: every check passed")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        asyncio.run(worker(int(sys.argv[2])))
    else:
        sys.exit(main())
