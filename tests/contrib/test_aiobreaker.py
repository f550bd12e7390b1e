from __future__ import annotations

import gc
from datetime import timedelta

import pytest

aiobreaker = pytest.importorskip("aiobreaker")

from resilience import CircuitOpenError, CircuitState, Retry, backoff  # noqa: E402
from resilience.contrib.aiobreaker import AiobreakerPolicy  # noqa: E402
from resilience.events import CallRejected, Event, StateChanged  # noqa: E402


class Boom(Exception):
    pass


async def fail() -> None:
    raise Boom


async def ok() -> str:
    return "ok"


def wrap(fail_max: int = 2, seconds: float = 60) -> tuple[AiobreakerPolicy, list[Event]]:
    breaker = aiobreaker.CircuitBreaker(
        fail_max=fail_max, timeout_duration=timedelta(seconds=seconds), name="legacy"
    )
    policy = AiobreakerPolicy(breaker)
    events: list[Event] = []
    policy.add_listener(events.append)
    return policy, events


@pytest.fixture
def anyio_backend() -> str:
    # aiobreaker is asyncio-only (it sleeps with asyncio.sleep).
    return "asyncio"


async def test_success_and_failure_pass_through() -> None:
    policy, events = wrap(fail_max=3)
    assert policy.name == "legacy"
    assert await policy.call(ok) == "ok"
    with pytest.raises(Boom):
        await policy.call(fail)
    assert policy.state is CircuitState.CLOSED
    stats = policy.stats
    assert (stats.successful_total, stats.failed_total, stats.rejected) == (1, 1, 0)
    assert events == []


async def test_the_tripping_failure_raises_itself_and_later_calls_are_rejected() -> None:
    policy, events = wrap(fail_max=2, seconds=60)
    with pytest.raises(Boom):
        await policy.call(fail)
    # aiobreaker would raise its CircuitBreakerError here; we raise the failure.
    with pytest.raises(Boom) as info:
        await policy.call(fail)
    assert not isinstance(info.value.__cause__, aiobreaker.CircuitBreakerError)
    assert policy.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError) as first:
        await policy.call(ok)
    with pytest.raises(CircuitOpenError) as second:
        await policy.call(ok)
    assert first.value is not second.value
    assert first.value.name == "legacy"
    assert first.value.retry_after is not None
    assert 59.0 < first.value.retry_after <= 60.0
    assert isinstance(first.value.__cause__, aiobreaker.CircuitBreakerError)
    assert [e for e in events if isinstance(e, StateChanged)] == [
        StateChanged("legacy", CircuitState.CLOSED, CircuitState.OPEN)
    ]
    rejected = [e for e in events if isinstance(e, CallRejected)]
    assert [e.state for e in rejected] == [CircuitState.OPEN, CircuitState.OPEN]
    assert policy.stats.rejected == 2
    assert policy.stats.transitions == {(CircuitState.CLOSED, CircuitState.OPEN): 1}


async def test_recovery_through_half_open_emits_our_events() -> None:
    policy, events = wrap(fail_max=1)
    with pytest.raises(Boom):
        await policy.call(fail)
    # Time travel the aiobreaker's own way: move its opening back.
    storage = policy.breaker._state_storage
    storage.opened_at = storage.opened_at - timedelta(seconds=61)
    assert await policy.call(ok) == "ok"
    assert policy.state is CircuitState.CLOSED
    assert [(e.old_state, e.new_state) for e in events if isinstance(e, StateChanged)] == [
        (CircuitState.CLOSED, CircuitState.OPEN),
        (CircuitState.OPEN, CircuitState.HALF_OPEN),
        (CircuitState.HALF_OPEN, CircuitState.CLOSED),
    ]


async def test_a_retry_outside_stops_at_the_open_breaker() -> None:
    policy, _ = wrap(fail_max=2)
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        raise Boom

    with pytest.raises(CircuitOpenError):
        await (Retry(5, backoff=backoff.immediate()) | policy).call(flaky)
    assert calls == 2


async def test_decorator() -> None:
    policy, _ = wrap()

    @policy
    async def handler(x: int) -> int:
        return x * 2

    assert await handler(21) == 42


def test_sync_calls() -> None:
    policy, _ = wrap(fail_max=1)

    def boom() -> None:
        raise Boom

    assert policy.call_sync(lambda: 5) == 5
    with pytest.raises(Boom):
        policy.call_sync(boom)
    with pytest.raises(CircuitOpenError):
        policy.call_sync(lambda: 5)


def test_same_state_changes_are_not_events() -> None:
    policy, events = wrap()
    policy.breaker.close()  # aiobreaker notifies CLOSED -> CLOSED
    assert events == []


def test_generated_name_and_bad_input() -> None:
    policy = AiobreakerPolicy(aiobreaker.CircuitBreaker())
    assert policy.name.startswith("aiobreaker-")
    assert repr(policy) == f"<AiobreakerPolicy {policy.name!r} closed>"
    with pytest.raises(TypeError, match=r"breaker must be an aiobreaker\.CircuitBreaker"):
        AiobreakerPolicy(object())  # type: ignore[arg-type]


def test_the_aiobreaker_does_not_keep_the_policy_alive() -> None:
    breaker = aiobreaker.CircuitBreaker(fail_max=1)
    AiobreakerPolicy(breaker)
    gc.collect()
    breaker.open()  # the listener finds no policy and does nothing
    assert breaker.current_state is aiobreaker.CircuitBreakerState.OPEN
