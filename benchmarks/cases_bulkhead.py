"""Bulkheads: our Bulkhead and PoolBulkhead against the raw semaphores and
limiters (asyncio, anyio, trio, threading) and the bulkheads of hyx and
pyresilience.

Every semaphore has 10 permits and the call never waits for one: this is the
cost a bulkhead adds to every call while the dependency is healthy. The pool
rows time a round trip through a worker thread, against the shared pools a
user would reach for otherwise.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .cases import ALL_BACKENDS, ASYNCIO_ONLY, Case
from .cases_baseline import f, g

__all__ = ["cases"]

FREE = "bulkhead, free permit"
FREE_SYNC = "bulkhead, free permit, sync"
FULL = "bulkhead, full: rejection"
POOL = "pool bulkhead, round trip through a worker thread"

Target = Callable[[], Any]


# Ours -----------------------------------------------------------------------


def ours_bulkhead() -> Target:
    from resilience import Bulkhead

    return Bulkhead(10)(f)


def ours_bulkhead_call() -> Target:
    from resilience import Bulkhead

    call = Bulkhead(10).call

    async def target() -> Any:
        return await call(f)

    return target


def ours_bulkhead_queued() -> Target:
    """Configured with a wait queue: the free path must cost the same."""
    from resilience import Bulkhead

    return Bulkhead(10, max_waiting=20, max_wait=1.0)(f)


class _Suspend:
    """Suspends a coroutine once, on any backend (the coroutine is driven by hand)."""

    def __await__(self) -> Any:
        yield


async def _hold() -> None:
    await _Suspend()


def ours_bulkhead_full() -> Target:
    from resilience import Bulkhead, BulkheadFullError

    bulkhead = Bulkhead(1)
    holder = bulkhead.call(_hold)
    holder.send(None)  # now suspended inside, holding the only permit
    wrapped = bulkhead(f)

    async def target() -> None:
        _ = holder  # keep it alive: closing it would give the permit back
        try:
            await wrapped()
        except BulkheadFullError:
            pass

    return target


def ours_bulkhead_sync() -> Target:
    from resilience import Bulkhead

    return Bulkhead(10)(g)


def ours_pool() -> Target:
    from resilience import PoolBulkhead

    call = PoolBulkhead(4).call

    async def target() -> Any:
        return await call(g)

    return target


# Peers: free permit -------------------------------------------------------------


def asyncio_semaphore() -> Target:
    sem = asyncio.Semaphore(10)

    async def target() -> Any:
        async with sem:
            return await f()

    return target


def anyio_semaphore_fast() -> Target:
    import anyio

    sem = anyio.Semaphore(10, fast_acquire=True)

    async def target() -> Any:
        async with sem:
            return await f()

    return target


def anyio_capacity_limiter() -> Target:
    import anyio

    limiter = anyio.CapacityLimiter(10)

    async def target() -> Any:
        async with limiter:
            return await f()

    return target


def trio_semaphore() -> Target:
    import trio

    sem = trio.Semaphore(10)

    async def target() -> Any:
        async with sem:
            return await f()

    return target


def hyx_bulkhead() -> Target:
    from hyx.bulkhead import bulkhead

    return bulkhead(max_concurrency=10, max_capacity=20)(f)


def pyresilience_bulkhead() -> Target:
    from pyresilience import BulkheadConfig, resilient

    return resilient(bulkhead=BulkheadConfig(max_concurrent=10))(f)


def threading_semaphore() -> Target:
    sem = threading.BoundedSemaphore(10)

    def target() -> Any:
        with sem:
            return g()

    return target


# Peers: worker threads -----------------------------------------------------------


def anyio_to_thread() -> Target:
    import anyio.to_thread

    run_sync = anyio.to_thread.run_sync

    async def target() -> Any:
        return await run_sync(g)

    return target


def asyncio_executor() -> Target:
    loop = asyncio.get_running_loop()
    # A dedicated executor, as the pool bulkhead has: not the shared default.
    executor = ThreadPoolExecutor(4)

    async def target() -> Any:
        return await loop.run_in_executor(executor, g)

    return target


def cases() -> list[Case]:
    return [
        Case(FREE, "resilience @Bulkhead(10)", ours_bulkhead, ours=True, key="bulkhead.free"),
        Case(
            FREE,
            "resilience await Bulkhead(10).call(f)",
            ours_bulkhead_call,
            ours=True,
            key="bulkhead.free.call",
        ),
        Case(
            FREE,
            "resilience @Bulkhead(10, max_waiting=20, max_wait=1.0)",
            ours_bulkhead_queued,
            ours=True,
            key="bulkhead.free.queued",
        ),
        Case(
            FREE,
            "asyncio.Semaphore(10)",
            asyncio_semaphore,
            backends=ASYNCIO_ONLY,
            key="asyncio.semaphore",
        ),
        Case(
            FREE,
            "anyio.Semaphore(10, fast_acquire=True)",
            anyio_semaphore_fast,
            backends=ALL_BACKENDS,
            key="anyio.semaphore.fast",
        ),
        Case(
            FREE,
            "anyio.CapacityLimiter(10)",
            anyio_capacity_limiter,
            backends=ALL_BACKENDS,
            key="anyio.capacity_limiter",
        ),
        Case(FREE, "trio.Semaphore(10)", trio_semaphore, backends=("trio",), key="trio.semaphore"),
        Case(
            FREE,
            "hyx @bulkhead(max_concurrency=10, max_capacity=20)",
            hyx_bulkhead,
            backends=ASYNCIO_ONLY,
            key="hyx.bulkhead",
        ),
        Case(
            FREE,
            "pyresilience @resilient(bulkhead=BulkheadConfig(max_concurrent=10))",
            pyresilience_bulkhead,
            backends=ASYNCIO_ONLY,
            key="pyresilience.bulkhead",
        ),
        Case(
            FULL,
            "resilience @Bulkhead(1), rejected (max_waiting=0)",
            ours_bulkhead_full,
            baseline="raise caught",
            ours=True,
            key="bulkhead.rejected",
        ),
        Case(
            FREE_SYNC,
            "resilience @Bulkhead(10) on a def",
            ours_bulkhead_sync,
            kind="sync",
            baseline="g()",
            ours=True,
            key="bulkhead.free.sync",
        ),
        Case(
            FREE_SYNC,
            "threading.BoundedSemaphore(10)",
            threading_semaphore,
            kind="sync",
            baseline="g()",
            key="threading.semaphore",
        ),
        Case(
            POOL,
            "resilience await PoolBulkhead(4).call(g)",
            ours_pool,
            ours=True,
            key="pool_bulkhead.call",
        ),
        Case(
            POOL,
            "anyio.to_thread.run_sync(g)  (shared pool)",
            anyio_to_thread,
            key="anyio.to_thread",
        ),
        Case(
            POOL,
            "loop.run_in_executor(ThreadPoolExecutor(4), g)",
            asyncio_executor,
            backends=ASYNCIO_ONLY,
            key="asyncio.run_in_executor",
        ),
    ]
