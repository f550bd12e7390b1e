"""Retry and Timeout: our policies against tenacity, stamina, backoff, hyx,
pyresilience and the raw timeout primitives (asyncio, anyio, trio).

Every peer is configured to match ours as closely as it allows: 3 attempts in
all; on the success path the first one succeeds; on the failure path all three
fail with no wait between them. Timeouts are 10 s and never fire.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from .cases import ALL_BACKENDS, ASYNCIO_ONLY, Case
from .cases_baseline import Boom, f, f_fail

__all__ = ["cases"]

RETRY_OK = "retry, first attempt succeeds"
RETRY_FAIL = "retry, 3 failed attempts, zero wait"
TIMEOUT = "timeout, not firing (10 s)"
PIPELINE = "retry + timeout, success"
RAISE3 = "3 x raise caught"

Target = Callable[[], Any]


# Ours ---------------------------------------------------------------------------


def ours_retry() -> Target:
    from resilience import Retry

    return Retry(3)(f)


def ours_retry_call() -> Target:
    from resilience import Retry

    call = Retry(3).call

    async def target() -> Any:
        return await call(f)

    return target


def ours_retry_fail() -> Target:
    from resilience import Retry, backoff

    wrapped = Retry(3, backoff=backoff.immediate())(f_fail)

    async def target() -> None:
        try:
            await wrapped()
        except Boom:
            pass

    return target


def ours_timeout() -> Target:
    from resilience import Timeout

    return Timeout(10)(f)


def ours_timeout_call() -> Target:
    from resilience import Timeout

    call = Timeout(10).call

    async def target() -> Any:
        return await call(f)

    return target


def ours_pipeline() -> Target:
    from resilience import Retry, Timeout

    return (Retry(3) | Timeout(10))(f)


# Retry peers ------------------------------------------------------------------------


def tenacity_retry() -> Target:
    import tenacity

    return tenacity.retry(
        stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_exponential(max=10)
    )(f)


def tenacity_retry_fail() -> Target:
    import tenacity

    wrapped = tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_none())(f_fail)

    async def target() -> None:
        try:
            await wrapped()
        except tenacity.RetryError:
            pass

    return target


def stamina_retry() -> Target:
    import stamina

    return stamina.retry(on=Exception, attempts=3)(f)


def _quiet_stamina() -> None:
    # stamina logs a warning per retry: pay for the record, not for writing it.
    log = logging.getLogger("stamina")
    if not any(isinstance(h, logging.NullHandler) for h in log.handlers):
        log.addHandler(logging.NullHandler())
    log.propagate = False


def stamina_retry_fail() -> Target:
    import stamina

    _quiet_stamina()
    wrapped = stamina.retry(
        on=Exception, attempts=3, wait_initial=0, wait_max=0, wait_jitter=0, timeout=None
    )(f_fail)

    async def target() -> None:
        try:
            await wrapped()
        except Boom:
            pass

    return target


def backoff_retry() -> Target:
    import backoff

    return backoff.on_exception(backoff.expo, Exception, max_tries=3)(f)


def backoff_retry_fail() -> Target:
    import backoff

    wrapped = backoff.on_exception(
        backoff.constant, Exception, interval=0, max_tries=3, jitter=None
    )(f_fail)

    async def target() -> None:
        try:
            await wrapped()
        except Boom:
            pass

    return target


def hyx_retry() -> Target:
    from hyx.retry import retry

    # hyx counts retries, not attempts: attempts=2 means 3 attempts in all.
    return retry(on=Exception, attempts=2)(f)


def hyx_retry_fail() -> Target:
    from hyx.retry import retry
    from hyx.retry.exceptions import MaxAttemptsExceeded

    wrapped = retry(on=Exception, attempts=2, backoff=0)(f_fail)

    async def target() -> None:
        try:
            await wrapped()
        except MaxAttemptsExceeded:
            pass

    return target


def pyresilience_retry() -> Target:
    from pyresilience import RetryConfig, resilient

    return resilient(retry=RetryConfig(max_attempts=3))(f)


def pyresilience_retry_fail() -> Target:
    from pyresilience import RetryConfig, resilient

    wrapped = resilient(retry=RetryConfig(max_attempts=3, delay=0, jitter=False))(f_fail)

    async def target() -> None:
        try:
            await wrapped()
        except Boom:
            pass

    return target


# Timeout peers and primitives ---------------------------------------------------------


def asyncio_timeout() -> Target:
    timeout = asyncio.timeout

    async def target() -> Any:
        async with timeout(10):
            return await f()

    return target


def asyncio_wait_for() -> Target:
    wait_for = asyncio.wait_for

    async def target() -> Any:
        return await wait_for(f(), 10)

    return target


def _inside(scope: Callable[[float], Any]) -> Target:
    """``await f()`` inside ``with scope(10):`` (a cancel scope that never fires)."""

    async def target() -> Any:
        with scope(10):
            return await f()

    return target


def anyio_fail_after() -> Target:
    import anyio

    return _inside(anyio.fail_after)


def anyio_move_on_after() -> Target:
    import anyio

    return _inside(anyio.move_on_after)


def trio_fail_after() -> Target:
    import trio

    return _inside(trio.fail_after)


def trio_move_on_after() -> Target:
    import trio

    return _inside(trio.move_on_after)


def hyx_timeout_decorator() -> Target:
    from hyx.timeout import timeout

    return timeout(10)(f)


def hyx_timeout_context() -> Target:
    from hyx.timeout import timeout

    async def target() -> Any:
        async with timeout(10):
            return await f()

    return target


def pyresilience_timeout() -> Target:
    from pyresilience import TimeoutConfig, resilient

    return resilient(timeout=TimeoutConfig(seconds=10))(f)


# Retry + timeout peers ------------------------------------------------------------------


def tenacity_asyncio_timeout() -> Target:
    import tenacity

    timeout = asyncio.timeout

    @tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_exponential(max=10))
    async def target() -> Any:
        async with timeout(10):
            return await f()

    return target


def tenacity_trio_fail_after() -> Target:
    import tenacity
    import trio

    fail_after = trio.fail_after

    @tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_exponential(max=10))
    async def target() -> Any:
        with fail_after(10):
            return await f()

    return target


def hyx_retry_timeout() -> Target:
    from hyx.retry import retry
    from hyx.timeout import timeout

    return retry(on=Exception, attempts=2)(timeout(10)(f))


def pyresilience_retry_timeout() -> Target:
    from pyresilience import RetryConfig, TimeoutConfig, resilient

    return resilient(retry=RetryConfig(max_attempts=3), timeout=TimeoutConfig(seconds=10))(f)


def floor_retry_timeout() -> Target:
    timeout = asyncio.timeout

    async def target() -> Any:
        for attempt in range(3):
            try:
                async with timeout(10):
                    return await f()
            except Exception:
                if attempt == 2:
                    raise
        return None

    return target


def cases() -> list[Case]:
    return [
        # Retry, success path.
        Case(RETRY_OK, "resilience @Retry(3)", ours_retry, ours=True, key="retry.success"),
        Case(
            RETRY_OK,
            "resilience await Retry(3).call(f)",
            ours_retry_call,
            ours=True,
            key="retry.success.call",
        ),
        Case(
            RETRY_OK,
            "tenacity @retry(stop_after_attempt(3), wait_exponential(max=10))",
            tenacity_retry,
            key="tenacity.retry.success",
        ),
        Case(
            RETRY_OK,
            "stamina @retry(on=Exception, attempts=3)",
            stamina_retry,
            key="stamina.retry.success",
        ),
        Case(
            RETRY_OK,
            "backoff @on_exception(expo, Exception, max_tries=3)",
            backoff_retry,
            backends=ASYNCIO_ONLY,
            key="backoff.retry.success",
        ),
        Case(
            RETRY_OK,
            "hyx @retry(on=Exception, attempts=2)  (3 attempts in all)",
            hyx_retry,
            backends=ASYNCIO_ONLY,
            key="hyx.retry.success",
        ),
        Case(
            RETRY_OK,
            "pyresilience @resilient(retry=RetryConfig(max_attempts=3))",
            pyresilience_retry,
            backends=ASYNCIO_ONLY,
            key="pyresilience.retry.success",
        ),
        # Retry, three failed attempts.
        Case(
            RETRY_FAIL,
            "resilience @Retry(3, backoff=immediate())",
            ours_retry_fail,
            baseline=RAISE3,
            ours=True,
            key="retry.three_failures",
        ),
        Case(
            RETRY_FAIL,
            "tenacity @retry(stop_after_attempt(3), wait_none()) -> RetryError",
            tenacity_retry_fail,
            baseline=RAISE3,
            key="tenacity.retry.three_failures",
        ),
        Case(
            RETRY_FAIL,
            "stamina @retry(attempts=3, zero wait; NullHandler logger)",
            stamina_retry_fail,
            baseline=RAISE3,
            key="stamina.retry.three_failures",
        ),
        Case(
            RETRY_FAIL,
            "backoff @on_exception(constant, interval=0, max_tries=3)",
            backoff_retry_fail,
            baseline=RAISE3,
            backends=ASYNCIO_ONLY,
            key="backoff.retry.three_failures",
        ),
        Case(
            RETRY_FAIL,
            "hyx @retry(attempts=2, backoff=0)  (3 attempts)",
            hyx_retry_fail,
            baseline=RAISE3,
            backends=ASYNCIO_ONLY,
            key="hyx.retry.three_failures",
        ),
        Case(
            RETRY_FAIL,
            "pyresilience RetryConfig(max_attempts=3, delay=0)",
            pyresilience_retry_fail,
            baseline=RAISE3,
            backends=ASYNCIO_ONLY,
            key="pyresilience.retry.three_failures",
        ),
        # Timeout, not firing.
        Case(TIMEOUT, "resilience @Timeout(10)", ours_timeout, ours=True, key="timeout.success"),
        Case(
            TIMEOUT,
            "resilience await Timeout(10).call(f)",
            ours_timeout_call,
            ours=True,
            key="timeout.success.call",
        ),
        Case(
            TIMEOUT,
            "async with asyncio.timeout(10)",
            asyncio_timeout,
            backends=ASYNCIO_ONLY,
            key="asyncio.timeout",
        ),
        Case(
            TIMEOUT,
            "await asyncio.wait_for(f(), 10)",
            asyncio_wait_for,
            backends=ASYNCIO_ONLY,
            key="asyncio.wait_for",
        ),
        Case(
            TIMEOUT,
            "with anyio.fail_after(10)",
            anyio_fail_after,
            backends=ALL_BACKENDS,
            key="anyio.fail_after",
        ),
        Case(
            TIMEOUT,
            "with anyio.move_on_after(10)",
            anyio_move_on_after,
            backends=ALL_BACKENDS,
            key="anyio.move_on_after",
        ),
        Case(
            TIMEOUT,
            "with trio.fail_after(10)",
            trio_fail_after,
            backends=("trio",),
            key="trio.fail_after",
        ),
        Case(
            TIMEOUT,
            "with trio.move_on_after(10)",
            trio_move_on_after,
            backends=("trio",),
            key="trio.move_on_after",
        ),
        Case(
            TIMEOUT,
            "hyx @timeout(10)",
            hyx_timeout_decorator,
            backends=ASYNCIO_ONLY,
            key="hyx.timeout",
        ),
        Case(
            TIMEOUT,
            "hyx async with timeout(10)",
            hyx_timeout_context,
            backends=ASYNCIO_ONLY,
            key="hyx.timeout.context",
        ),
        Case(
            TIMEOUT,
            "pyresilience @resilient(timeout=TimeoutConfig(seconds=10))",
            pyresilience_timeout,
            backends=ASYNCIO_ONLY,
            key="pyresilience.timeout",
        ),
        # Retry + timeout.
        Case(
            PIPELINE,
            "resilience @(Retry(3) | Timeout(10))",
            ours_pipeline,
            ours=True,
            key="pipeline.retry_timeout",
        ),
        Case(
            PIPELINE,
            "tenacity @retry over async with asyncio.timeout(10)",
            tenacity_asyncio_timeout,
            backends=ASYNCIO_ONLY,
            key="tenacity.retry_timeout",
        ),
        Case(
            PIPELINE,
            "tenacity @retry over with trio.fail_after(10)",
            tenacity_trio_fail_after,
            backends=("trio",),
            key="tenacity.retry_timeout.trio",
        ),
        Case(
            PIPELINE,
            "hyx @retry(attempts=2) over @timeout(10)",
            hyx_retry_timeout,
            backends=ASYNCIO_ONLY,
            key="hyx.retry_timeout",
        ),
        Case(
            PIPELINE,
            "pyresilience @resilient(retry, timeout)",
            pyresilience_retry_timeout,
            backends=ASYNCIO_ONLY,
            key="pyresilience.retry_timeout",
        ),
        Case(
            PIPELINE,
            "hand-rolled floor: for attempt in range(3) + asyncio.timeout(10)",
            floor_retry_timeout,
            backends=ASYNCIO_ONLY,
            key="floor.retry_timeout",
        ),
    ]
