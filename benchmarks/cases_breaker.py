"""Circuit breaker: our CircuitBreaker against aiobreaker, pybreaker,
circuitbreaker and purgatory.

Every peer is left at its defaults except where a row says otherwise. On the
success path the breaker is closed and the wrapped call succeeds. On the
rejection path the breaker is open for far longer than the run, and the row's
overhead is measured against a bare ``raise`` caught (our rejection raises a
fresh exception each time; so do all peers but purgatory). The window-size
rows show that the cost per call does not depend on the window's size.
pybreaker has no asyncio support: its rows are sync, against ``g()``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from .cases import ASYNCIO_ONLY, Case
from .cases_baseline import Boom, f, f_fail, g

__all__ = ["cases"]

CLOSED = "circuit breaker, closed, success"
REJECTED = "circuit breaker, open, rejected call"
WINDOWS = "circuit breaker, window size (closed, success)"
MANY = "circuit breaker, breakers in use round-robin (closed, success)"
SYNC = "circuit breaker, sync (closed, success)"
SYNC_REJECTED = "circuit breaker, sync, open, rejected call"

RAISE = "raise caught"
SYNC_RAISE = "g() raising, caught (sync)"
LONG = 1e9  # seconds: "open for the whole run"

Target = Callable[[], Any]


class _SyncBoom(Exception):
    pass


def _g_fail() -> int:
    raise _SyncBoom


def sync_raise_caught() -> Target:
    def target() -> None:
        try:
            _g_fail()
        except _SyncBoom:
            pass

    return target


# Ours ---------------------------------------------------------------------------


def ours_closed() -> Target:
    from resilience import CircuitBreaker

    return CircuitBreaker()(f)


def ours_closed_call() -> Target:
    from resilience import CircuitBreaker

    call = CircuitBreaker().call

    async def target() -> Any:
        return await call(f)

    return target


def ours_closed_slow() -> Target:
    from resilience import CircuitBreaker

    return CircuitBreaker(slow_call_duration=10.0)(f)


def ours_rejected() -> Target:
    from resilience import CircuitBreaker, CircuitOpenError

    breaker = CircuitBreaker(open_duration=LONG)
    breaker.open()
    wrapped = breaker(f)

    async def target() -> None:
        try:
            await wrapped()
        except CircuitOpenError:
            pass

    return target


def ours_rejected_call() -> Target:
    from resilience import CircuitBreaker, CircuitOpenError

    breaker = CircuitBreaker(open_duration=LONG)
    breaker.open()
    call = breaker.call

    async def target() -> None:
        try:
            await call(f)
        except CircuitOpenError:
            pass

    return target


def ours_sync() -> Target:
    from resilience import CircuitBreaker

    call_sync = CircuitBreaker().call_sync

    def target() -> Any:
        return call_sync(g)

    return target


def ours_sync_rejected() -> Target:
    from resilience import CircuitBreaker, CircuitOpenError

    breaker = CircuitBreaker(open_duration=LONG)
    breaker.open()
    call_sync = breaker.call_sync

    def target() -> None:
        try:
            call_sync(g)
        except CircuitOpenError:
            pass

    return target


# Peers ----------------------------------------------------------------------------


def aiobreaker_decorator() -> Target:
    import aiobreaker

    return aiobreaker.CircuitBreaker(fail_max=5)(f)  # type: ignore[no-any-return]


def aiobreaker_call() -> Target:
    import aiobreaker

    call_async = aiobreaker.CircuitBreaker(fail_max=5).call_async

    async def target() -> Any:
        return await call_async(f)

    return target


def aiobreaker_rejected() -> Target:
    import aiobreaker

    breaker = aiobreaker.CircuitBreaker(fail_max=5, timeout_duration=timedelta(seconds=LONG))
    breaker.open()
    call_async = breaker.call_async

    async def target() -> None:
        try:
            await call_async(f)
        except aiobreaker.CircuitBreakerError:
            pass

    return target


def pybreaker_call() -> Target:
    import pybreaker

    call = pybreaker.CircuitBreaker(fail_max=5).call

    def target() -> Any:
        return call(g)

    return target


def pybreaker_rejected() -> Target:
    import pybreaker

    breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=LONG)
    breaker.open()
    call = breaker.call

    def target() -> None:
        try:
            call(g)
        except pybreaker.CircuitBreakerError:
            pass

    return target


def circuitbreaker_decorator() -> Target:
    import circuitbreaker

    return circuitbreaker.CircuitBreaker(failure_threshold=5)(f)  # type: ignore[no-any-return]


def circuitbreaker_rejected() -> Target:
    import circuitbreaker

    breaker = circuitbreaker.CircuitBreaker(failure_threshold=1, recovery_timeout=int(LONG))
    wrapped = breaker(f)
    # setup() cannot await: trip it the way one failed call would.
    breaker._CircuitBreaker__call_failed()  # type: ignore[attr-defined]
    assert breaker.opened, "circuitbreaker did not open"

    async def target() -> None:
        try:
            await wrapped()
        except circuitbreaker.CircuitBreakerError:
            pass

    return target


def purgatory_decorator() -> Target:
    from purgatory import AsyncCircuitBreakerFactory

    return AsyncCircuitBreakerFactory()("bench-closed")(f)  # type: ignore[no-any-return]


def purgatory_rejected() -> Target:
    from purgatory import AsyncCircuitBreakerFactory
    from purgatory.domain.model import OpenedState

    factory = AsyncCircuitBreakerFactory(default_threshold=1, default_ttl=LONG)
    wrapped = factory("bench-open")(f)
    failing = factory("bench-open")(f_fail)
    opened = False

    async def target() -> None:
        nonlocal opened
        if not opened:
            # Trip it on the first call (setup cannot await).
            try:
                await failing()
            except Boom:
                pass
            opened = True
        try:
            await wrapped()
        except OpenedState:
            pass

    return target


def cases() -> list[Case]:
    return [
        # Closed, success.
        Case(CLOSED, "resilience @CircuitBreaker()", ours_closed, ours=True, key="breaker.closed"),
        Case(
            CLOSED,
            "resilience await CircuitBreaker().call(f)",
            ours_closed_call,
            ours=True,
            key="breaker.closed.call",
        ),
        Case(
            CLOSED,
            "resilience @CircuitBreaker(slow_call_duration=10)  (two clock reads)",
            ours_closed_slow,
            ours=True,
            key="breaker.closed.slow",
        ),
        Case(
            CLOSED,
            "aiobreaker @CircuitBreaker(fail_max=5)",
            aiobreaker_decorator,
            backends=ASYNCIO_ONLY,
            key="aiobreaker.closed",
        ),
        Case(
            CLOSED,
            "aiobreaker await breaker.call_async(f)",
            aiobreaker_call,
            backends=ASYNCIO_ONLY,
            key="aiobreaker.closed.call",
        ),
        Case(
            CLOSED,
            "circuitbreaker @CircuitBreaker(failure_threshold=5)",
            circuitbreaker_decorator,
            backends=ASYNCIO_ONLY,
            key="circuitbreaker.closed",
        ),
        Case(
            CLOSED,
            "purgatory @AsyncCircuitBreakerFactory()(name)",
            purgatory_decorator,
            backends=ASYNCIO_ONLY,
            key="purgatory.closed",
        ),
        # Open, rejected.
        Case(
            REJECTED,
            "resilience open @CircuitBreaker: rejected call",
            ours_rejected,
            baseline=RAISE,
            ours=True,
            key="breaker.rejected",
        ),
        Case(
            REJECTED,
            "resilience open CircuitBreaker.call(f): rejected call",
            ours_rejected_call,
            baseline=RAISE,
            ours=True,
            key="breaker.rejected.call",
        ),
        Case(
            REJECTED,
            "aiobreaker open: rejected call",
            aiobreaker_rejected,
            baseline=RAISE,
            backends=ASYNCIO_ONLY,
            key="aiobreaker.rejected",
        ),
        Case(
            REJECTED,
            "circuitbreaker open: rejected call",
            circuitbreaker_rejected,
            baseline=RAISE,
            backends=ASYNCIO_ONLY,
            key="circuitbreaker.rejected",
        ),
        Case(
            REJECTED,
            "purgatory open: rejected call (re-raises one instance: traceback grows)",
            purgatory_rejected,
            baseline=RAISE,
            backends=ASYNCIO_ONLY,
            key="purgatory.rejected",
        ),
        # Window size: the same closed success path, four windows.
        Case(
            WINDOWS,
            "resilience @CircuitBreaker(window=CountWindow(100))",
            ours_window_count_100,
            ours=True,
            key="breaker.window.count100",
        ),
        Case(
            WINDOWS,
            "resilience @CircuitBreaker(window=CountWindow(10_000))",
            ours_window_count_10000,
            ours=True,
            key="breaker.window.count10000",
        ),
        Case(
            WINDOWS,
            "resilience @CircuitBreaker(window=TimeWindow(1))",
            ours_window_time_1,
            ours=True,
            key="breaker.window.time1",
        ),
        Case(
            WINDOWS,
            "resilience @CircuitBreaker(window=TimeWindow(3600))",
            ours_window_time_3600,
            ours=True,
            key="breaker.window.time3600",
        ),
        # Breakers in use: one call per breaker in turn.
        Case(
            MANY,
            "resilience 1 @CircuitBreaker(), called through the round-robin",
            ours_many_1,
            ours=True,
            key="breaker.many.1",
        ),
        Case(
            MANY,
            "resilience 10,000 @CircuitBreaker()s, round-robin",
            ours_many_10000,
            ours=True,
            key="breaker.many.10000",
        ),
        # Sync.
        Case(
            SYNC,
            "resilience breaker.call_sync(g)",
            ours_sync,
            kind="sync",
            baseline="g()",
            ours=True,
            key="breaker.sync",
        ),
        Case(
            SYNC,
            "pybreaker breaker.call(g)",
            pybreaker_call,
            kind="sync",
            baseline="g()",
            key="pybreaker.closed",
        ),
        Case(
            SYNC_REJECTED,
            SYNC_RAISE,
            sync_raise_caught,
            kind="sync",
            baseline="g()",
            key="baseline.sync_raise",
        ),
        Case(
            SYNC_REJECTED,
            "resilience open breaker.call_sync(g): rejected call",
            ours_sync_rejected,
            kind="sync",
            baseline=SYNC_RAISE,
            ours=True,
            key="breaker.sync.rejected",
        ),
        Case(
            SYNC_REJECTED,
            "pybreaker open: rejected call",
            pybreaker_rejected,
            kind="sync",
            baseline=SYNC_RAISE,
            key="pybreaker.rejected",
        ),
    ]


def _window_setup(kind: str, size: int) -> Callable[[], Target]:
    def setup() -> Target:
        from resilience import CircuitBreaker, CountWindow, TimeWindow

        window = CountWindow(size) if kind == "count" else TimeWindow(size)
        return CircuitBreaker(window=window)(f)

    return setup


ours_window_count_100 = _window_setup("count", 100)
ours_window_count_10000 = _window_setup("count", 10_000)
ours_window_time_1 = _window_setup("time", 1)
ours_window_time_3600 = _window_setup("time", 3600)


_MANY: dict[int, list[Target]] = {}


def _many_setup(count: int) -> Callable[[], Target]:
    def setup() -> Target:
        import itertools

        from resilience import CircuitBreaker

        # Built once and reused by every batch: 10,000 breakers are the
        # point, not their construction. Breakers are not bound to a loop.
        wrapped = _MANY.get(count)
        if wrapped is None:
            wrapped = _MANY[count] = [CircuitBreaker()(f) for _ in range(count)]
        following = itertools.cycle(wrapped).__next__

        async def target() -> Any:
            return await following()()

        return target

    return setup


ours_many_1 = _many_setup(1)
ours_many_10000 = _many_setup(10_000)
