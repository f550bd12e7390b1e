"""The background work of a :class:`RedisBreakerStore`: a round every
``sync_interval``, or at once when poked, on an asyncio task (a
``redis.asyncio`` client) or a daemon thread (a sync client).

The task or thread holds its store only while a round runs and a weak
reference otherwise, so a breaker no longer used is collected and its work
ends with it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from typing import Any, Protocol

__all__ = ["Rounds"]

_logger = logging.getLogger("resilience")
_JOIN_TIMEOUT = 1.0


class _Store(Protocol):
    """What the rounds run for (a RedisBreakerStore)."""

    async def _round(self) -> bool: ...

    def _round_sync(self) -> bool: ...

    def _ended(self) -> None: ...


class Rounds:
    """The task (or thread) running a store's rounds, and how to wake it."""

    __slots__ = ("_interval", "_label", "_loop", "_name", "_stopped", "_task", "_wake")

    def __init__(self, interval: float, name: str, label: str) -> None:
        self._interval = interval
        self._name = name  # the breaker's, for the log
        self._label = label  # the task's or the thread's name
        self._stopped = False
        self._task: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: Any = None

    @property
    def running(self) -> bool:
        return self._task is not None

    def start_task(self, loop: asyncio.AbstractEventLoop, ref: weakref.ref[_Store]) -> None:
        self._stopped = False
        self._loop = loop
        self._wake = asyncio.Event()
        self._task = loop.create_task(self._run(ref), name=self._label)

    def start_thread(self, ref: weakref.ref[_Store]) -> None:
        self._stopped = False
        self._wake = threading.Event()
        self._task = threading.Thread(
            target=self._run_thread, args=(ref,), daemon=True, name=self._label
        )
        self._task.start()

    def stop(self) -> None:
        self._stopped = True
        task = self._task
        if isinstance(task, asyncio.Task):
            task.cancel()
        elif task is not None:
            self.poke()
            if task is not threading.current_thread():
                task.join(_JOIN_TIMEOUT)

    async def aclose(self) -> None:
        task = self._task
        self.stop()
        if isinstance(task, asyncio.Task) and task is not asyncio.current_task():
            await asyncio.wait((task,))

    def poke(self) -> None:
        """Wake the background work now (a manual control to publish)."""
        wake = self._wake
        if wake is None:
            return
        if isinstance(wake, threading.Event):
            wake.set()
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if asyncio._get_running_loop() is loop:
            wake.set()
        else:
            loop.call_soon_threadsafe(wake.set)

    def _ended(self, ref: weakref.ref[_Store]) -> None:
        self._task = None
        store = ref()
        if store is not None:
            store._ended()

    async def _run(self, ref: weakref.ref[_Store]) -> None:
        try:
            while True:
                store = ref()
                if store is None or self._stopped:
                    return
                try:
                    await store._round()
                except Exception:  # pragma: no cover - a bug: logged, the task goes on
                    _logger.exception("circuit breaker %r: sharing round failed", self._name)
                del store
                wake = self._wake
                try:
                    async with asyncio.timeout(self._interval):
                        await wake.wait()
                except TimeoutError:
                    pass
                wake.clear()
        finally:
            self._ended(ref)

    def _run_thread(self, ref: weakref.ref[_Store]) -> None:
        """:meth:`_run` in a daemon thread, for a sync client."""
        try:
            while True:
                store = ref()
                if store is None or self._stopped:
                    return
                try:
                    store._round_sync()
                except Exception:  # pragma: no cover
                    _logger.exception("circuit breaker %r: sharing round failed", self._name)
                del store
                wake = self._wake
                wake.wait(self._interval)
                wake.clear()
        finally:
            self._ended(ref)
