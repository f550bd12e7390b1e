from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest

import resilience
from resilience import BulkheadFullError, BulkheadStatistics, PoolBulkhead, Timeout
from resilience.events import BulkheadRejected, Event
from resilience.testing import FakeClock


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def snapshot(pool: PoolBulkhead) -> tuple[int, int, int]:
    stats = pool.stats
    return stats.in_flight, stats.waiting, stats.rejected


def worker_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"resilience-{name}-")]


class Blocker:
    """Blocking work that holds a worker thread until released."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inside = 0
        self.peak = 0
        self.ran: list[object] = []
        self.release = threading.Event()
        self.threads: set[str] = set()

    def work(self, tag: object = None) -> object:
        with self.lock:
            self.inside += 1
            self.peak = max(self.peak, self.inside)
            self.ran.append(tag)
            self.threads.add(threading.current_thread().name)
        try:
            assert self.release.wait(5), "never released"
        finally:
            with self.lock:
                self.inside -= 1
        return tag


@pytest.fixture
def pool_factory() -> Iterator[Callable[..., PoolBulkhead]]:
    pools: list[PoolBulkhead] = []

    def make(*args: Any, **kwargs: Any) -> PoolBulkhead:
        pool = PoolBulkhead(*args, **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


# Async callers -----------------------------------------------------------------


async def test_runs_on_a_worker_thread_and_returns_the_result(
    pool_factory: Callable[..., PoolBulkhead],
) -> None:
    pool = pool_factory(2, name="files")

    def where(a: int, *, b: int) -> tuple[str, int]:
        return threading.current_thread().name, a + b

    name, total = await pool.call(where, 1, b=2)
    assert name == "resilience-files-1"
    assert total == 3
    assert snapshot(pool) == (0, 0, 0)


async def test_exceptions_reach_the_async_caller(pool_factory: Callable[..., PoolBulkhead]) -> None:
    pool = pool_factory(1)

    def boom() -> None:
        raise KeyError("bad")

    with pytest.raises(KeyError, match="bad"):
        await pool.call(boom)
    assert await pool.call(lambda: 5) == 5  # the worker survived
    assert snapshot(pool) == (0, 0, 0)


async def test_never_more_than_workers_at_once(pool_factory: Callable[..., PoolBulkhead]) -> None:
    pool = pool_factory(3, queue=20, name="cpu")
    blocker = Blocker()
    results: list[object] = []

    async def one(i: int) -> None:
        results.append(await pool.call(blocker.work, i))

    async with anyio.create_task_group() as tg:
        for i in range(12):
            tg.start_soon(one, i)
        await anyio.to_thread.run_sync(wait_until, lambda: pool.stats.in_flight == 3)
        assert pool.stats == BulkheadStatistics(
            in_flight=3, waiting=9, rejected=0, capacity=3, max_waiting=20
        )
        blocker.release.set()
    assert blocker.peak == 3
    assert sorted(results) == list(range(12))  # type: ignore[type-var]
    assert len(blocker.threads) == 3
    assert len(worker_threads("cpu")) == 3


async def test_rejects_beyond_the_queue_at_the_exact_boundary(
    pool_factory: Callable[..., PoolBulkhead],
) -> None:
    pool = pool_factory(1, queue=2, name="legacy")
    events: list[Event] = []
    pool.add_listener(events.append)
    blocker = Blocker()
    async with anyio.create_task_group() as tg:
        for i in range(3):  # 1 runs, 2 queue: exactly full
            tg.start_soon(pool.call, blocker.work, i)
            await anyio.wait_all_tasks_blocked()  # submitted in this order
        await anyio.to_thread.run_sync(wait_until, lambda: pool.stats.in_flight == 1)
        assert snapshot(pool) == (1, 2, 0)
        errors = []
        for _ in range(2):
            with pytest.raises(BulkheadFullError) as info:
                await pool.call(blocker.work, "rejected")
            errors.append(info.value)
        blocker.release.set()
    assert errors[0] is not errors[1]
    assert (errors[0].name, errors[0].capacity) == ("legacy", 1)
    assert events == [BulkheadRejected("legacy", 1, False)] * 2
    assert blocker.ran == [0, 1, 2]
    assert snapshot(pool) == (0, 0, 2)


async def test_event_loop_stays_responsive_while_workers_block(
    pool_factory: Callable[..., PoolBulkhead],
) -> None:
    pool = pool_factory(2, queue=2)
    blocker = Blocker()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        for _ in range(50):
            ticks += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(pool.call, blocker.work, i)
        await anyio.to_thread.run_sync(wait_until, lambda: pool.stats.in_flight == 2)
        # Both workers are blocked, and the loop still runs other tasks.
        with anyio.fail_after(5):
            await ticker()
        assert ticks == 50
        assert blocker.inside == 2
        blocker.release.set()
    assert sorted(blocker.ran) == [0, 1, 2, 3]  # type: ignore[type-var]


async def test_cancelled_caller_stops_waiting_at_once_while_the_thread_finishes(
    pool_factory: Callable[..., PoolBulkhead],
) -> None:
    pool = pool_factory(1, queue=1)
    blocker = Blocker()
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.call, blocker.work, "running")
            await anyio.to_thread.run_sync(wait_until, lambda: pool.stats.in_flight == 1)
            tg.start_soon(pool.call, blocker.work, "queued")
            await anyio.wait_all_tasks_blocked()
            assert snapshot(pool) == (1, 1, 0)
            scope.cancel()
    # Gave up at once: the worker is still busy, the queued call is dropped.
    assert scope.cancelled_caught
    assert snapshot(pool) == (1, 0, 0)
    blocker.release.set()
    await anyio.to_thread.run_sync(wait_until, lambda: pool.stats.in_flight == 0)
    assert blocker.ran == ["running"]
    assert await pool.call(lambda: "free again") == "free again"


async def test_timeout_bounds_blocking_code_run_in_the_pool(
    pool_factory: Callable[..., PoolBulkhead],
) -> None:
    clock = FakeClock()
    pool = pool_factory(1)
    blocker = Blocker()
    policy = Timeout(2.0, clock=clock) | pool
    errors: list[BaseException] = []

    async def timed() -> None:
        try:
            await policy.call(blocker.work)  # type: ignore[arg-type]
        except resilience.TimeoutError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(timed)
        await anyio.to_thread.run_sync(wait_until, lambda: pool.stats.in_flight == 1)
        clock.advance(2.0)
    assert len(errors) == 1
    assert pool.stats.in_flight == 1  # the thread is still working
    blocker.release.set()
    await anyio.to_thread.run_sync(wait_until, lambda: pool.stats.in_flight == 0)


async def test_async_functions_are_refused(pool_factory: Callable[..., PoolBulkhead]) -> None:
    pool = pool_factory(1, name="p")

    async def fetch() -> int:
        return 1

    with pytest.raises(TypeError, match=r"cannot wrap the async function .*fetch.*use Bulkhead"):
        pool(fetch)
    with pytest.raises(TypeError, match="use Bulkhead"):
        await pool.call(fetch)  # type: ignore[unused-coroutine]
    # A plain callable that returns a coroutine is caught on the worker,
    # and the coroutine is closed (no "never awaited" warning).
    with pytest.raises(TypeError, match="returned an awaitable"):
        await pool.call(lambda: fetch())  # type: ignore[unused-coroutine]
    assert snapshot(pool) == (0, 0, 0)


# Sync callers ------------------------------------------------------------------


def test_sync_call_and_decorator_run_on_the_pool(
    pool_factory: Callable[..., PoolBulkhead],
) -> None:
    pool = pool_factory(2, name="sync")

    @pool
    def where(x: int) -> tuple[str, int]:
        """Doc."""
        return threading.current_thread().name, x * 2

    assert where.__name__ == "where"
    assert where.__doc__ == "Doc."
    name, value = where(21)
    assert name.startswith("resilience-sync-")
    assert value == 42
    with pytest.raises(ZeroDivisionError):
        pool.call_sync(lambda: 1 / 0)


def test_sync_callers_share_the_bound(pool_factory: Callable[..., PoolBulkhead]) -> None:
    pool = pool_factory(2, queue=3)
    blocker = Blocker()
    outcomes: list[object] = []

    def caller(i: int) -> None:
        try:
            outcomes.append(pool.call_sync(blocker.work, i))
        except BulkheadFullError:
            outcomes.append("full")

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(5)]
    for thread in threads:
        thread.start()
    wait_until(lambda: pool.stats.in_flight == 2 and pool.stats.waiting == 3)
    with pytest.raises(BulkheadFullError):
        pool.call_sync(blocker.work, "sixth")
    blocker.release.set()
    for thread in threads:
        thread.join(5)
    assert sorted(outcomes) == list(range(5))  # type: ignore[type-var]
    assert blocker.peak == 2
    assert snapshot(pool) == (0, 0, 1)


def test_a_worker_calling_its_own_pool_runs_inline(
    pool_factory: Callable[..., PoolBulkhead],
) -> None:
    pool = pool_factory(1)

    def outer() -> tuple[str, str]:
        return threading.current_thread().name, pool.call_sync(
            lambda: threading.current_thread().name
        )

    first, second = pool.call_sync(outer)
    assert first == second  # no deadlock on the single worker


# Lifecycle ---------------------------------------------------------------------


def test_workers_start_lazily_and_close_stops_them() -> None:
    pool = PoolBulkhead(3, name="lazy")
    assert worker_threads("lazy") == []
    assert pool.call_sync(lambda: 1) == 1
    assert len(worker_threads("lazy")) == 1  # one call, one thread
    pool.close()
    assert pool.closed
    assert worker_threads("lazy") == []
    with pytest.raises(RuntimeError, match="closed"):
        pool.call_sync(lambda: 1)
    pool.close()  # idempotent


def test_context_manager_lets_accepted_calls_finish() -> None:
    blocker = Blocker()
    results: list[object] = []
    with PoolBulkhead(1, queue=1, name="ctx") as pool:
        threads = [
            threading.Thread(target=lambda i=i: results.append(pool.call_sync(blocker.work, i)))
            for i in range(2)
        ]
        for thread in threads:
            thread.start()
        wait_until(lambda: pool.stats.in_flight == 1 and pool.stats.waiting == 1)
        blocker.release.set()
    for thread in threads:
        thread.join(5)
    assert sorted(results) == [0, 1]  # type: ignore[type-var]
    assert worker_threads("ctx") == []


def test_a_pool_nobody_references_stops_its_threads() -> None:
    pool = PoolBulkhead(2, name="dropped")
    pool.call_sync(lambda: None)
    threads = worker_threads("dropped")
    assert len(threads) == 1
    del pool
    gc.collect()
    threads[0].join(5)
    assert not threads[0].is_alive()


def test_process_exits_cleanly_without_close() -> None:
    script = textwrap.dedent(
        """
        import asyncio
        from resilience import PoolBulkhead

        pool = PoolBulkhead(4, queue=4)
        print(pool.call_sync(lambda: "sync"))
        print(asyncio.run(pool.call(lambda: "async")))
        keep = pool  # still referenced at exit, never closed
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["sync", "async"]
    assert done.stderr == ""


# Configuration -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "words"),
    [
        ((0,), {}, ValueError, "workers must be >= 1, got 0"),
        ((-1,), {}, ValueError, "workers"),
        ((1.5,), {}, TypeError, "workers must be an int"),
        ((1,), {"queue": -1}, ValueError, "queue must be >= 0, got -1"),
        ((1,), {"queue": None}, TypeError, "queue must be an int"),
    ],
)
def test_bad_configuration_is_refused_naming_the_parameter(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        PoolBulkhead(*args, **kwargs)


def test_properties_and_repr(pool_factory: Callable[..., PoolBulkhead]) -> None:
    pool = pool_factory(4, queue=8, name="img")
    assert (pool.workers, pool.queue, pool.name) == (4, 8, "img")
    assert pool.stats == BulkheadStatistics(
        in_flight=0, waiting=0, rejected=0, capacity=4, max_waiting=8
    )
    assert "img" in repr(pool)
    assert PoolBulkhead(1).name.startswith("pool_bulkhead-")
