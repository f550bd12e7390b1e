from __future__ import annotations

import anyio
import pytest

from resilience import CircuitOpenError, Fallback, Retry, backoff
from resilience.events import Event, FallbackUsed


async def fails() -> str:
    raise ConnectionError("down")


def fails_sync() -> str:
    raise ConnectionError("down")


async def test_value_replaces_a_failure() -> None:
    fallback = Fallback("cached")
    assert await fallback.call(fails) == "cached"
    assert fallback.call_sync(fails_sync) == "cached"
    assert fallback.uses == 2


async def test_success_passes_through_untouched() -> None:
    async def ok() -> str:
        return "fresh"

    assert await Fallback("cached").call(ok) == "fresh"


async def test_handler_receives_the_exception_sync_or_async() -> None:
    seen: list[BaseException] = []

    def handler(exc: BaseException) -> str:
        seen.append(exc)
        return f"handled {type(exc).__name__}"

    async def async_handler(exc: BaseException) -> str:
        await anyio.lowlevel.checkpoint()
        return f"async {exc}"

    assert await Fallback(handler=handler).call(fails) == "handled ConnectionError"
    assert isinstance(seen[0], ConnectionError)
    assert await Fallback(handler=async_handler).call(fails) == "async down"


async def test_on_limits_which_failures_fall_back() -> None:
    fallback = Fallback("x", on=CircuitOpenError)
    with pytest.raises(ConnectionError):
        await fallback.call(fails)

    async def rejected() -> str:
        raise CircuitOpenError(name="b", retry_after=1)

    assert await fallback.call(rejected) == "x"
    by_predicate = Fallback("y", on=lambda exc: "down" in str(exc))
    assert await by_predicate.call(fails) == "y"


async def test_on_result_replaces_an_unwanted_result() -> None:
    async def status() -> int:
        return 503

    seen: list[object] = []
    fallback = Fallback(handler=lambda r: seen.append(r) or 200, on_result=lambda r: r >= 500)
    assert await fallback.call(status) == 200
    assert seen == [503]


async def test_cancellation_is_never_handled() -> None:
    fallback = Fallback("nope", on=BaseException)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await fallback.call(anyio.sleep, 1)
        pytest.fail("cancellation was swallowed")  # pragma: no cover
    assert fallback.uses == 0


async def test_fallback_outside_retry_answers_once_retries_are_spent() -> None:
    retry = Retry(3, backoff=backoff.immediate())
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        raise ConnectionError

    policy = Fallback("default") | retry
    assert await policy.call(flaky) == "default"
    assert calls == 3


def test_event_on_use() -> None:
    fallback = Fallback(0, name="zero")
    events: list[Event] = []
    fallback.add_listener(events.append)
    fallback.call_sync(fails_sync)
    (event,) = events
    assert isinstance(event, FallbackUsed)
    assert event.name == "zero"
    assert isinstance(event.exception, ConnectionError)


def test_async_handler_cannot_serve_sync_calls() -> None:
    async def handler(exc: BaseException) -> int:
        return 1

    fallback = Fallback(handler=handler)
    with pytest.raises(TypeError, match="async handler"):

        @fallback
        def plain() -> int:
            return 0

    with pytest.raises(TypeError, match="async handler"):
        fallback.call_sync(fails_sync)


def test_exactly_one_of_value_and_handler() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Fallback()
    with pytest.raises(ValueError, match="exactly one"):
        Fallback(1, handler=lambda exc: 2)
    with pytest.raises(TypeError, match="handler"):
        Fallback(handler=3)  # type: ignore[arg-type]
    assert Fallback(None).call_sync(fails_sync) is None
