"""The four-policy stack, retry > circuit breaker > timeout > bulkhead, on the
success path: ours as one decorator against the stacks users assemble today.

- ours: ``@(Retry(3) | CircuitBreaker() | Timeout(10) | Bulkhead(10))``;
- the usual hand-assembled stack: tenacity ``@retry`` over aiobreaker over
  ``asyncio.timeout`` over ``asyncio.Semaphore``;
- hyx's decorators stacked in the same order, and pyresilience's
  ``@resilient`` with the four configs;
- a hand-written floor: a ``for`` retry loop, an integer breaker counter, the
  backend's own timeout scope and semaphore. It shows about the least a
  toolkit built on those primitives can cost.

Every peer runs with 3 attempts, a 10 s timeout and 10 permits; the call
succeeds at once, so no peer waits or retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .cases import ALL_BACKENDS, ASYNCIO_ONLY, Case
from .cases_baseline import f

__all__ = ["cases"]

GROUP = "four-policy stack: retry > breaker > timeout > bulkhead, success"

Target = Callable[[], Any]


def ours() -> Target:
    from resilience import Bulkhead, CircuitBreaker, Retry, Timeout

    return (Retry(3) | CircuitBreaker() | Timeout(10) | Bulkhead(10))(f)


def ours_call() -> Target:
    from resilience import Bulkhead, CircuitBreaker, Retry, Timeout

    call = (Retry(3) | CircuitBreaker() | Timeout(10) | Bulkhead(10)).call

    async def target() -> Any:
        return await call(f)

    return target


def tenacity_aiobreaker() -> Target:
    import aiobreaker
    import tenacity

    breaker = aiobreaker.CircuitBreaker(fail_max=5)
    semaphore = asyncio.Semaphore(10)
    timeout = asyncio.timeout

    @tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_exponential(max=10))
    @breaker
    async def target() -> Any:
        async with timeout(10), semaphore:
            return await f()

    return target


def hyx_stack() -> Target:
    from hyx.bulkhead import bulkhead
    from hyx.circuitbreaker import consecutive_breaker
    from hyx.retry import retry
    from hyx.timeout import timeout

    # hyx counts retries, not attempts: attempts=2 means 3 attempts in all.
    return retry(on=Exception, attempts=2)(
        consecutive_breaker()(timeout(10)(bulkhead(max_concurrency=10, max_capacity=20)(f)))
    )


def pyresilience_stack() -> Target:
    from pyresilience import (
        BulkheadConfig,
        CircuitBreakerConfig,
        RetryConfig,
        TimeoutConfig,
        resilient,
    )

    return resilient(
        retry=RetryConfig(max_attempts=3),
        circuit_breaker=CircuitBreakerConfig(),
        timeout=TimeoutConfig(seconds=10),
        bulkhead=BulkheadConfig(max_concurrent=10),
    )(f)


def _floor(scope: Callable[[float], Any], semaphore: Any) -> Target:
    failures = 0

    async def target() -> Any:
        nonlocal failures
        for attempt in range(3):
            if failures >= 5:
                raise RuntimeError("open")
            try:
                with scope(10):
                    async with semaphore:
                        result = await f()
            except Exception:
                failures += 1
                if attempt == 2:
                    raise
                continue
            failures = 0
            return result
        return None

    return target


def floor_asyncio() -> Target:
    timeout = asyncio.timeout
    failures = 0
    semaphore = asyncio.Semaphore(10)

    async def target() -> Any:
        nonlocal failures
        for attempt in range(3):
            if failures >= 5:
                raise RuntimeError("open")
            try:
                async with timeout(10), semaphore:
                    result = await f()
            except Exception:
                failures += 1
                if attempt == 2:
                    raise
                continue
            failures = 0
            return result
        return None

    return target


def floor_trio() -> Target:
    import trio

    return _floor(trio.fail_after, trio.Semaphore(10))


def cases() -> list[Case]:
    return [
        Case(
            GROUP,
            "resilience @(Retry(3) | CircuitBreaker() | Timeout(10) | Bulkhead(10))",
            ours,
            backends=ALL_BACKENDS,
            ours=True,
            key="stack.four",
        ),
        Case(
            GROUP,
            "resilience await (Retry(3) | CircuitBreaker() | Timeout(10) | Bulkhead(10)).call(f)",
            ours_call,
            backends=ALL_BACKENDS,
            ours=True,
            key="stack.four.call",
        ),
        Case(
            GROUP,
            "tenacity @retry > aiobreaker > asyncio.timeout(10) > asyncio.Semaphore(10)",
            tenacity_aiobreaker,
            backends=ASYNCIO_ONLY,
            key="stack.tenacity_aiobreaker",
        ),
        Case(
            GROUP,
            "hyx retry > consecutive_breaker > timeout > bulkhead (decorators)",
            hyx_stack,
            backends=ASYNCIO_ONLY,
            key="stack.hyx",
        ),
        Case(
            GROUP,
            "pyresilience @resilient(retry, circuit_breaker, timeout, bulkhead)",
            pyresilience_stack,
            backends=ASYNCIO_ONLY,
            key="stack.pyresilience",
        ),
        Case(
            GROUP,
            "hand-written floor: for-retry + counter breaker + asyncio.timeout + asyncio.Semaphore",
            floor_asyncio,
            backends=ASYNCIO_ONLY,
            key="stack.floor",
        ),
        Case(
            GROUP,
            "hand-written floor: for-retry + counter breaker + trio.fail_after + trio.Semaphore",
            floor_trio,
            backends=("trio",),
            key="stack.floor.trio",
        ),
    ]
