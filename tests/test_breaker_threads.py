"""The sync shell from many threads at once: no count is lost, no permit is leaked."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from resilience import CircuitBreaker, CircuitOpenError, CircuitState, CountWindow
from resilience.testing import FakeClock

THREADS = 8
CALLS = 2_000


class Boom(Exception):
    pass


def test_counts_are_exact_under_many_threads() -> None:
    # Never trips (half the calls fail, the threshold is all of them), so every call runs.
    breaker = CircuitBreaker(window=CountWindow(10_000), failure_rate=1.0, minimum_calls=10_000)

    def work(i: int) -> None:
        if i % 4 == 0:
            raise Boom
        if i % 4 == 1:
            raise KeyError

    def worker(offset: int) -> None:
        for i in range(CALLS):
            try:
                breaker.call_sync(work, i + offset)
            except (Boom, KeyError):
                pass

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = breaker.stats
    total = THREADS * CALLS
    # record=(Exception,) by default: Boom and KeyError are both failures.
    failures = sum(1 for t in range(THREADS) for i in range(CALLS) if (i + t) % 4 in (0, 1))
    assert (stats.failed_total, stats.successful_total) == (failures, total - failures)
    assert stats.calls == min(total, 10_000)
    assert stats.state is CircuitState.CLOSED


def test_half_open_lets_exactly_n_threads_through() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(half_open_calls=3, open_duration=5.0, clock=clock)
    breaker.open()
    clock.advance(5.0)
    inside = threading.Semaphore(0)
    release = threading.Event()

    def trial() -> str:
        inside.release()
        release.wait(10)
        return "ok"

    def attempt() -> str:
        try:
            return breaker.call_sync(trial)
        except CircuitOpenError:
            return "rejected"

    with ThreadPoolExecutor(max_workers=12) as pool:
        futures = [pool.submit(attempt) for _ in range(12)]
        for _ in range(3):
            assert inside.acquire(timeout=10)
        # The three trials hold their permits: everyone else was turned away.
        rejected = [f.result(timeout=10) for f in futures if f.done()]
        assert rejected.count("rejected") == len(rejected)
        release.set()
        results = [f.result(timeout=10) for f in futures]
    assert results.count("ok") == 3
    assert results.count("rejected") == 9
    assert breaker.state is CircuitState.CLOSED
    assert breaker.stats.rejected == 9


@pytest.mark.parametrize("half_open_calls", [1, 4])
def test_threads_tripping_and_recovering_keep_the_books_straight(half_open_calls: int) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        minimum_calls=5,
        open_duration=1.0,
        half_open_calls=half_open_calls,
        clock=clock,
    )
    lock = threading.Lock()
    ran = 0

    def work(fail: bool) -> None:
        nonlocal ran
        with lock:
            ran += 1
        if fail:
            raise Boom

    def worker(seed: int) -> None:
        for i in range(1_000):
            if seed == 0 and i % 50 == 0:
                clock.advance(1.0)
            try:
                breaker.call_sync(work, (i * 7 + seed) % 3 == 0)
            except (Boom, CircuitOpenError):
                pass

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = breaker.stats
    # Every call either ran (and was recorded once) or was rejected.
    assert stats.successful_total + stats.failed_total == ran
    assert ran + stats.rejected == 6_000
    assert 0 <= stats.calls <= 100
    # The machine never leaked a half-open permit: it can still recover.
    clock.advance(10.0)
    breaker.close()
    assert breaker.call_sync(lambda: "ok") == "ok"
