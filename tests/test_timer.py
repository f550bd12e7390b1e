"""The asyncio fast path of Timeout: one shared timer per policy and loop."""

from __future__ import annotations

import asyncio

import pytest

import resilience
from resilience import Timeout
from resilience._timer import DeadlineQueue

pytestmark = pytest.mark.parametrize("anyio_backend", ["asyncio"])


def queue_of(timeout: Timeout) -> DeadlineQueue:
    queue: DeadlineQueue = timeout._cache[2]
    return queue


async def test_concurrent_calls_each_get_their_own_deadline() -> None:
    timeout = Timeout(0.05)

    async def work(i: int) -> int:
        await asyncio.sleep(10 if i % 2 else 0)
        return i

    results = await asyncio.gather(
        *(timeout.call(work, i) for i in range(100)), return_exceptions=True
    )
    timed_out = [r for r in results if isinstance(r, resilience.TimeoutError)]
    assert len(timed_out) == 50
    assert [r for r in results if isinstance(r, int)] == list(range(0, 100, 2))
    queue = queue_of(timeout)
    assert queue.live == 0
    assert len(queue.entries) == 0


async def test_the_timer_rearms_for_a_later_call_after_the_first_one_left() -> None:
    timeout = Timeout(0.1)
    loop = asyncio.get_running_loop()
    first = asyncio.ensure_future(timeout.call(asyncio.sleep, 0))
    await asyncio.sleep(0.05)
    started = loop.time()
    with pytest.raises(resilience.TimeoutError):
        await timeout.call(asyncio.sleep, 10)
    elapsed = loop.time() - started
    assert 0.09 <= elapsed < 1.0
    assert await first is None


async def test_finished_entries_behind_a_slow_call_are_compacted() -> None:
    timeout = Timeout(30)
    release = asyncio.Event()
    slow = asyncio.ensure_future(timeout.call(release.wait))
    await asyncio.sleep(0)
    for _ in range(10_000):
        await timeout.call(asyncio.sleep, 0)
    queue = queue_of(timeout)
    assert queue.live == 1
    assert len(queue.entries) <= 2 + 256
    release.set()
    assert await slow is True
    assert len(queue.entries) == 0


async def test_each_event_loop_gets_its_own_timer() -> None:
    timeout = Timeout(0.05)

    def in_another_loop() -> None:
        async def main() -> None:
            with pytest.raises(resilience.TimeoutError):
                await timeout.call(asyncio.sleep, 10)

        asyncio.run(main())

    await asyncio.to_thread(in_another_loop)
    with pytest.raises(resilience.TimeoutError):
        await timeout.call(asyncio.sleep, 10)
    assert timeout.stats.timeouts == 2
