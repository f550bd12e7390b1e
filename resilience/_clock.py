"""Clocks: where policies read the time and how they wait.

Policies never call ``time.monotonic`` or ``asyncio.sleep`` themselves; they
ask their clock. The system clock is monotonic; :class:`~resilience.testing.FakeClock`
replaces it in tests so that nothing waits for real.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, runtime_checkable

import anyio

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock", "TimerHandle"]

_get_running_loop = asyncio._get_running_loop


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


@runtime_checkable
class Clock(Protocol):
    """What a policy needs from a clock.

    ``now()`` is a monotonic reading in seconds. ``sleep`` and
    ``sleep_sync`` wait (or pretend to). A clock that can also run a
    callback at a given time (``call_at(when, callback)`` returning a handle
    with ``cancel()``) can drive a :class:`~resilience.Timeout`; the system
    clock uses the event loop's own timers instead.

    Example::

        class SlowMotion:
            def now(self) -> float: return time.monotonic() / 10
            async def sleep(self, seconds: float) -> None: await anyio.sleep(seconds * 10)
            def sleep_sync(self, seconds: float) -> None: time.sleep(seconds * 10)
    """

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    def sleep_sync(self, seconds: float) -> None: ...


class SystemClock:
    """``time.monotonic`` and real sleeps: the default clock of every policy.

    On asyncio it sleeps with ``asyncio.sleep`` directly; elsewhere (trio)
    through anyio.

    Example::

        clock = SystemClock()
        started = clock.now()
        clock.sleep_sync(0.1)
        assert clock.now() - started >= 0.1
    """

    __slots__ = ()

    now = staticmethod(time.monotonic)

    async def sleep(self, seconds: float) -> None:
        if _get_running_loop() is not None:
            await asyncio.sleep(seconds)
        else:
            await anyio.sleep(seconds)

    def sleep_sync(self, seconds: float) -> None:
        time.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()
