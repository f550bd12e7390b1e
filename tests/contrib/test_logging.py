from __future__ import annotations

import logging

import anyio
import anyio.lowlevel
import pytest

from resilience import (
    Bulkhead,
    BulkheadFullError,
    CircuitBreaker,
    CircuitOpenError,
    Fallback,
    Retry,
    Timeout,
    TimeoutError,
    backoff,
    events,
)
from resilience.contrib.logging import EventLogger, log_events
from resilience.events import RetryScheduled, StateChanged
from resilience.testing import FakeClock

LOGGER = "tests.resilience.events"


class Boom(Exception):
    pass


def _fail() -> None:
    raise Boom("down")


@pytest.fixture
def caplog_all(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    return caplog


def records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


def test_breaker_transitions_and_rejections(caplog_all: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("pay", consecutive_failures=1, open_duration=5, clock=clock)
    with log_events(LOGGER, clock=clock, rejection_interval=10):
        with pytest.raises(Boom):
            breaker.call_sync(_fail)
        for _ in range(3):
            with pytest.raises(CircuitOpenError):
                breaker.call_sync(lambda: 1)
        clock.advance(5)
        breaker.call_sync(lambda: 1)
        clock.advance(6)  # past the interval: the next rejection is logged again
        breaker.force_open()
        with pytest.raises(CircuitOpenError):
            breaker.call_sync(lambda: 1)
    assert records(caplog_all) == [
        (logging.WARNING, "circuit breaker 'pay': closed -> open"),
        (logging.INFO, "circuit breaker 'pay' rejected a call (open, next trial in 5.000s)"),
        (logging.INFO, "circuit breaker 'pay': open -> half_open"),
        (logging.INFO, "circuit breaker 'pay': half_open -> closed"),
        (logging.WARNING, "circuit breaker 'pay': closed -> forced_open"),
        (
            logging.INFO,
            "circuit breaker 'pay' rejected a call (forced_open); "
            "2 more in the last 10s not logged",
        ),
    ]
    record = next(r for r in caplog_all.records if r.name == LOGGER)
    assert record.resilience_policy == "pay"  # type: ignore[attr-defined]
    assert isinstance(record.resilience_event, StateChanged)  # type: ignore[attr-defined]


def test_retries_timeouts_fallbacks(caplog_all: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    retry = Retry(2, backoff=backoff.fixed(0.5), name="fetch", clock=clock)
    with log_events(logging.getLogger(LOGGER)):
        with pytest.raises(Boom):
            retry.call_sync(_fail)
        assert Fallback(0, name="cache").call_sync(_fail) == 0
    assert records(caplog_all) == [
        (logging.INFO, "retry 'fetch': attempt 1 failed (Boom: down); next attempt in 0.500s"),
        (logging.WARNING, "retry 'fetch' gave up after 2 attempts (attempts): Boom: down"),
        (logging.INFO, "fallback 'cache' used instead of Boom: down"),
    ]


async def test_timeouts_and_bulkhead_rejections(caplog_all: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    timeout = Timeout(1.0, name="slow", clock=clock)
    bulkhead = Bulkhead(1, name="db")

    async def too_slow() -> None:
        clock.advance(2)
        await anyio.lowlevel.checkpoint()

    async def ok() -> int:
        return 1

    with log_events(LOGGER, rejection_interval=0):
        with pytest.raises(TimeoutError):
            await timeout.call(too_slow)
        release = anyio.Event()
        async with anyio.create_task_group() as tg:
            started = anyio.Event()

            async def hold() -> None:
                started.set()
                await release.wait()

            tg.start_soon(bulkhead.call, hold)
            await started.wait()
            for _ in range(2):
                with pytest.raises(BulkheadFullError):
                    await bulkhead.call(ok)
            release.set()
    assert records(caplog_all) == [
        (logging.WARNING, "timeout 'slow': cancelled after 1s"),
        (logging.INFO, "bulkhead 'db' rejected a call at once (capacity 1)"),
        (logging.INFO, "bulkhead 'db' rejected a call at once (capacity 1)"),
    ]


def test_levels_override_and_skip(caplog_all: pytest.LogCaptureFixture) -> None:
    retry = Retry(2, backoff=backoff.fixed(0), name="quiet", clock=FakeClock())
    handle = log_events(LOGGER, levels={RetryScheduled: logging.DEBUG, events.RetryExhausted: None})
    try:
        with pytest.raises(Boom):
            retry.call_sync(_fail)
    finally:
        handle.close()
    assert records(caplog_all) == [
        (logging.DEBUG, "retry 'quiet': attempt 1 failed (Boom: down); next attempt in 0.000s")
    ]


def test_one_policy_only_and_close(caplog_all: pytest.LogCaptureFixture) -> None:
    watched = Retry(2, backoff=backoff.fixed(0), name="watched", clock=FakeClock())
    other = Retry(2, backoff=backoff.fixed(0), name="other", clock=FakeClock())
    handle = log_events(LOGGER, policy=watched)
    assert isinstance(handle, EventLogger)
    for retry in (watched, other):
        with pytest.raises(Boom):
            retry.call_sync(_fail)
    handle.close()
    handle.close()
    assert handle.closed
    with pytest.raises(Boom):
        watched.call_sync(_fail)
    names = {r.resilience_policy for r in caplog_all.records if r.name == LOGGER}  # type: ignore[attr-defined]
    assert names == {"watched"}
    assert len(records(caplog_all)) == 2
    assert handle not in events.global_listeners


def test_a_disabled_level_costs_no_formatting(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger=LOGGER)
    breaker = CircuitBreaker("off", consecutive_failures=1, clock=FakeClock())
    with log_events(LOGGER) as handle:
        with pytest.raises(Boom):
            breaker.call_sync(_fail)
        with pytest.raises(CircuitOpenError):
            breaker.call_sync(lambda: 1)
        assert handle._rejections == {}  # not even rate-limit bookkeeping
    assert records(caplog) == []


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="logger"):
        log_events(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="policy"):
        log_events(policy="retry")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rejection_interval"):
        log_events(rejection_interval=-1)
    with pytest.raises(TypeError, match="Event types"):
        log_events(levels={int: logging.INFO})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match=r"levels\[StateChanged\]"):
        log_events(levels={StateChanged: "loud"})  # type: ignore[dict-item]
    assert not any(isinstance(listener, EventLogger) for listener in events.global_listeners)


def test_rate_limiter_waits_and_refusals(caplog_all: pytest.LogCaptureFixture) -> None:
    from resilience import RateLimitedError, RateLimiter

    clock = FakeClock()
    limiter = RateLimiter(1, max_wait=1.0, name="quota", clock=clock)
    with log_events(logging.getLogger(LOGGER)):
        limiter.call_sync(lambda: 1)
        limiter.call_sync(lambda: 1)  # waits 1 s
        limiter.admit()  # takes the next slot, 1 s away
        with pytest.raises(RateLimitedError):
            limiter.admit()
    assert records(caplog_all) == [
        (logging.DEBUG, "rate limiter 'quota': a call waited 1.000s for its slot"),
        (logging.INFO, "rate limiter 'quota' refused a call (it would pass in 2.000s)"),
    ]


async def test_hedge_events_are_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    from resilience import Hedge
    from resilience.contrib.logging import log_events
    from resilience.testing import FakeClock

    calls: list[int] = []

    async def first_fails() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("reset")
        return 1

    hedge = Hedge(2, delay=10.0, name="logged-hedge", clock=FakeClock())
    with caplog.at_level(logging.DEBUG, logger="resilience"), log_events():
        assert await hedge.call(first_fails) == 1
    texts = [r.getMessage() for r in caplog.records if "logged-hedge" in r.getMessage()]
    assert any("HedgeStarted" in t for t in texts)
    assert any("HedgeWon" in t for t in texts)


async def test_a_failed_compensation_is_logged_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from resilience import Retry, Saga, SagaCompensationError, Step, backoff
    from resilience.contrib.logging import log_events

    async def reserve(ctx: object) -> str:
        return "r-1"

    async def release(ctx: object, reservation: str) -> None:
        raise ConnectionError("inventory service down")

    async def charge(ctx: object) -> None:
        raise ValueError("card declined")

    saga = Saga(
        "logged-order",
        steps=[Step("reserve", reserve, compensate=release), Step("charge", charge)],
        compensate_policy=Retry(1, backoff=backoff.immediate()),
    )
    with (
        caplog.at_level(logging.DEBUG, logger="resilience"),
        log_events(),
        pytest.raises(SagaCompensationError),
    ):
        await saga.run(None)
    levels = {r.levelno for r in caplog.records if "logged-order" in r.getMessage()}
    assert logging.ERROR in levels  # the failed compensation: needs a human
    assert logging.WARNING in levels  # the failed step
