"""Bulkheads: limit how much of the process one dependency can occupy.

Two isolation styles, both policies like the others:

- :class:`Bulkhead`, semaphore isolation: at most ``max_concurrent`` calls
  run at once, a bounded number wait in FIFO order, the rest are rejected.
  It costs almost nothing when a permit is free.
- :class:`PoolBulkhead`, thread isolation (Hystrix style): blocking callables
  run on a small pool of threads that belongs to the bulkhead alone, with a
  bounded queue in front of it.

Both report their in-flight, waiting and rejected counts through ``stats``
and raise a fresh :class:`~resilience.BulkheadFullError` on each rejection.

Thread safety. Counters are plain ints and the free-permit path takes no
lock. Every read-modify-write of a counter below is a run of bytecodes with
no call in it; CPython (3.11, 3.12, with the GIL) only switches threads at
calls, backward jumps and function entry, so such a run is atomic with
respect to other threads. The lock orders the slow paths (the wait queue,
handing over permits, resizing) among themselves. Free-threaded builds are
not supported by this scheme.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar, ParamSpec, TypeVar

from ._clock import Clock, SystemClock
from ._protocol import WAIT
from .errors import BulkheadFullError
from .events import BulkheadRejected
from .policy import Policy

__all__ = ["Bulkhead", "BulkheadStatistics", "PoolBulkhead"]

P = ParamSpec("P")
T = TypeVar("T")

_get_running_loop = asyncio._get_running_loop
_get_ident = threading.get_ident

_trio_module: ModuleType | None = None


def _trio() -> ModuleType:
    """trio, imported on first use: ``import resilience`` must not need it."""
    global _trio_module
    if _trio_module is None:
        import trio

        _trio_module = trio
    return _trio_module


@dataclass(frozen=True, slots=True)
class BulkheadStatistics:
    """A snapshot of a :class:`Bulkhead` or :class:`PoolBulkhead`.

    Example::

        stats = bulkhead.stats
        print(f"{stats.in_flight}/{stats.capacity} busy, {stats.waiting} waiting")
    """

    in_flight: int
    """Calls holding a permit now (for a pool: threads busy with a call,
    including calls whose caller has stopped waiting)."""
    waiting: int
    """Callers waiting for a permit (for a pool: calls queued for a thread)."""
    rejected: int
    """Calls rejected since creation, at once or when their wait ran out."""
    capacity: int
    """``max_concurrent`` (its current value after :meth:`Bulkhead.resize`),
    or a pool's ``workers``."""
    max_waiting: int
    """How many callers may wait: ``max_waiting``, or a pool's ``queue``."""


def _check_count(parameter: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{parameter} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{parameter} must be >= {minimum}, got {value!r}")
    return value


# Parked callers -----------------------------------------------------------
#
# A caller that cannot go on at once parks on a waiter. The waiter's state
# changes only under the owner's lock; `wake()` resumes the caller, from any
# thread, and returns False when the caller can no longer be resumed (its
# event loop is closed or its trio run has ended).

_WAITING = 0
_GRANTED = 1  # the permit was handed over: the waiter owns it now
_EXPIRED = 2  # max_wait ran out before a permit came
_GONE = 3  # the caller left (cancelled) while waiting


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Waiter:
    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = _WAITING

    def wake(self) -> bool:
        raise NotImplementedError


class _AsyncioWaiter(_Waiter):
    __slots__ = ("fut", "loop", "thread")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.fut: asyncio.Future[None] = loop.create_future()
        self.thread = _get_ident()

    def wake(self) -> bool:
        try:
            if _get_ident() == self.thread:
                _resolve(self.fut)
            else:
                self.loop.call_soon_threadsafe(_resolve, self.fut)
        except RuntimeError:  # the loop is closed
            return False
        return True


class _TrioWaiter(_Waiter):
    __slots__ = ("task", "thread", "token")

    def __init__(self) -> None:
        super().__init__()
        lowlevel = _trio().lowlevel
        self.task = lowlevel.current_task()
        self.token = lowlevel.current_trio_token()
        self.thread = _get_ident()

    def wake(self) -> bool:
        trio = _trio()
        if _get_ident() == self.thread:
            # Only code of the same run can execute in this thread while the
            # task is parked, so rescheduling directly is allowed.
            trio.lowlevel.reschedule(self.task)
            return True
        try:
            self.token.run_sync_soon(trio.lowlevel.reschedule, self.task)
        except trio.RunFinishedError:
            return False
        return True


class _ThreadWaiter(_Waiter):
    __slots__ = ("lock",)

    def __init__(self) -> None:
        super().__init__()
        # A pre-acquired lock is the cheapest one-shot signal between threads.
        self.lock = threading.Lock()
        self.lock.acquire()

    def wake(self) -> bool:
        self.lock.release()
        return True


# Bulkhead -----------------------------------------------------------------


class Bulkhead(Policy):
    """Run at most ``max_concurrent`` calls at once; queue or reject the rest.

    - A call that finds a free permit takes it and runs, with no lock, no
      allocation and no yield to the event loop.
    - Otherwise it waits, in FIFO order, if fewer than ``max_waiting``
      callers are waiting already; for at most ``max_wait`` seconds when it
      is set (then it is rejected). Otherwise it is rejected at once.
      A rejection raises a fresh :class:`~resilience.BulkheadFullError`
      and emits :class:`~resilience.events.BulkheadRejected`.
    - Works on asyncio and trio (``await bulkhead.call(fn)`` or decorating
      an ``async def``) and in threads (``bulkhead.call_sync(fn)`` or
      decorating a plain ``def``); one bulkhead may serve all of them at once.
    - Cancelling a waiting caller, a running call, or a timeout around either
      never leaks a permit, and a permit is never handed to a caller that
      has gone.
    - :meth:`resize` changes the limit at runtime; calls in flight finish
      undisturbed.
    - ``clock``: with a clock that has ``call_at`` (such as
      :class:`~resilience.testing.FakeClock`) the ``max_wait`` expiry runs on
      that clock; otherwise on the event loop's timers.

    Example::

        db = Bulkhead(10, max_waiting=20, max_wait=0.5, name="db")

        @db
        async def query(sql: str) -> list[Row]: ...

        print(db.stats.in_flight, db.stats.waiting, db.stats.rejected)
    """

    __slots__ = (
        "_call_at",
        "_capacity",
        "_in_flight",
        "_lock",
        "_max_wait",
        "_max_waiting",
        "_rejected",
        "_waiters",
    )

    _kind = "bulkhead"

    def __init__(
        self,
        max_concurrent: int,
        *,
        max_waiting: int = 0,
        max_wait: float | None = None,
        name: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        _check_count("max_concurrent", max_concurrent, 1)
        _check_count("max_waiting", max_waiting, 0)
        if max_wait is not None:
            if isinstance(max_wait, bool) or not isinstance(max_wait, int | float):
                raise TypeError(f"max_wait must be a number or None, got {max_wait!r}")
            if not (max_wait > 0 and math.isfinite(max_wait)):
                raise ValueError(f"max_wait must be a finite number > 0 or None, got {max_wait!r}")
            if max_waiting == 0:
                # Nobody ever waits, so the setting would silently do nothing.
                raise ValueError(f"max_wait={max_wait!r} needs max_waiting >= 1, got max_waiting=0")
        call_at = None
        if max_wait is not None and clock is not None and not isinstance(clock, SystemClock):
            call_at = getattr(clock, "call_at", None)
            if not callable(call_at):
                raise TypeError(
                    f"clock must provide call_at(when, callback) to drive max_wait, got {clock!r}"
                )
        super().__init__(name=name, clock=clock)
        self._capacity = max_concurrent
        self._max_waiting = max_waiting
        self._max_wait: float | None = None if max_wait is None else float(max_wait)
        self._call_at: Callable[[float, Callable[[], object]], Any] | None = call_at
        self._in_flight = 0
        self._rejected = 0
        # Insertion-ordered, with O(1) removal of a caller that leaves.
        self._waiters: OrderedDict[_Waiter, None] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def max_concurrent(self) -> int:
        """The current limit (changed by :meth:`resize`)."""
        return self._capacity

    @property
    def max_waiting(self) -> int:
        return self._max_waiting

    @property
    def max_wait(self) -> float | None:
        return self._max_wait

    @property
    def stats(self) -> BulkheadStatistics:
        """Current in-flight and waiting counts, and rejections since creation."""
        return BulkheadStatistics(
            in_flight=self._in_flight,
            waiting=len(self._waiters),
            rejected=self._rejected,
            capacity=self._capacity,
            max_waiting=self._max_waiting,
        )

    def resize(self, max_concurrent: int) -> None:
        """Change the limit. Growing admits waiting callers at once; shrinking
        lets the calls in flight finish and admits no one until fewer than the
        new limit are running.

        Example::

            bulkhead.resize(bulkhead.max_concurrent * 2)
        """
        _check_count("max_concurrent", max_concurrent, 1)
        with self._lock:
            self._capacity = max_concurrent
            granted = self._grant_locked()
        for waiter in granted:
            self._wake(waiter)

    # The guard -------------------------------------------------------------

    def admit(self) -> object:
        """Take a free permit (the ticket), reject, or ask the caller to :meth:`wait`.

        A free permit is a check and an increment with no call between,
        atomic under the GIL (see the module docstring).
        """
        if self._in_flight < self._capacity:
            self._in_flight += 1
            return True
        if not self._max_waiting:
            self._acquire_nowait()  # no waiter to build just to reject
            return True
        return WAIT

    async def wait(self) -> object:
        """Wait for a permit (asyncio or trio), or raise BulkheadFullError."""
        await self._acquire_async()
        return True

    def wait_sync(self) -> object:
        """Wait for a permit in this thread, or raise BulkheadFullError."""
        self._acquire_sync()
        return True

    def settle(
        self, ticket: object, error: BaseException | None, result: object
    ) -> BaseException | None:
        """Give the permit back (to the first waiter, if any)."""
        self._in_flight -= 1
        if self._waiters:
            self._dispatch()
        return error

    # The slow path ---------------------------------------------------------

    async def _acquire_async(self) -> None:
        """Wait for a permit or raise BulkheadFullError; on return we hold one."""
        loop = _get_running_loop()
        if loop is not None:
            await self._wait_asyncio(loop)
        else:
            await self._wait_trio()

    async def _wait_asyncio(self, loop: asyncio.AbstractEventLoop) -> None:
        waiter = _AsyncioWaiter(loop)
        if self._enqueue(waiter):
            return
        timer: Any = None
        if self._max_wait is not None:
            if self._call_at is not None:
                expire = functools.partial(self._expire, waiter)
                timer = self._call_at(self._clock.now() + self._max_wait, expire)
            else:
                timer = loop.call_later(self._max_wait, self._expire, waiter)
        try:
            await waiter.fut
        except BaseException:
            self._abandon(waiter)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if waiter.state != _GRANTED:
            raise self._rejection(waited=True)

    async def _wait_trio(self) -> None:
        trio = _trio()
        waiter = _TrioWaiter()
        if self._enqueue(waiter):
            return

        def abort(_: object) -> Any:
            if self._leave(waiter):
                return trio.lowlevel.Abort.SUCCEEDED
            # Granted or expired already: its wake-up is on its way, and a
            # granted permit is kept; the cancellation lands at the next
            # checkpoint, inside the call, whose `finally` returns the permit.
            return trio.lowlevel.Abort.FAILED

        if self._max_wait is None:
            await trio.lowlevel.wait_task_rescheduled(abort)
        elif self._call_at is not None:
            timer = self._call_at(
                self._clock.now() + self._max_wait, functools.partial(self._expire, waiter)
            )
            try:
                await trio.lowlevel.wait_task_rescheduled(abort)
            finally:
                timer.cancel()
        else:
            with trio.move_on_after(self._max_wait):
                await trio.lowlevel.wait_task_rescheduled(abort)
            # The deadline's abort left the waiter _GONE: rejected below.
        if waiter.state != _GRANTED:
            raise self._rejection(waited=True)

    def _acquire_sync(self) -> None:
        waiter = _ThreadWaiter()
        if self._enqueue(waiter):
            return
        timer: Any = None
        timeout = -1.0
        if self._max_wait is not None:
            if self._call_at is not None:
                expire = functools.partial(self._expire, waiter)
                timer = self._call_at(self._clock.now() + self._max_wait, expire)
            else:
                timeout = self._max_wait
        try:
            if not waiter.lock.acquire(timeout=timeout) and not self._leave(waiter):
                # Granted at the last moment: its wake-up is on its way.
                waiter.lock.acquire()
        except BaseException:  # KeyboardInterrupt while waiting
            self._abandon(waiter)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if waiter.state != _GRANTED:
            raise self._rejection(waited=True)

    def _acquire_nowait(self) -> None:
        """No wait queue: take a permit freed since the caller looked, or reject.

        Load shedding rejects at high rates, so this builds no waiter.
        """
        with self._lock:
            if self._in_flight < self._capacity:
                self._in_flight += 1
                return
        raise self._rejection(waited=False)

    def _enqueue(self, waiter: _Waiter) -> bool:
        """Take a permit (True), queue ``waiter`` (False), or raise when full."""
        granted: list[_Waiter] = []
        with self._lock:
            if not self._waiters and self._in_flight < self._capacity:
                self._in_flight += 1
                return True
            if len(self._waiters) >= self._max_waiting:
                full = True
            else:
                full = False
                self._waiters[waiter] = None
                # A release in another thread may have happened after our
                # check above but before it could see this waiter: look again.
                granted = self._grant_locked()
        if full:
            raise self._rejection(waited=False)
        mine = False
        for other in granted:
            if other is waiter:
                mine = True  # not parked yet: nothing to wake
            else:
                self._wake(other)
        return mine

    def _grant_locked(self) -> list[_Waiter]:
        """Hand free permits to the first waiters; the caller holds the lock."""
        granted: list[_Waiter] = []
        waiters = self._waiters
        while waiters:
            # Check and increment with no call between: see the module docstring.
            if self._in_flight >= self._capacity:
                break
            self._in_flight += 1
            waiter = waiters.popitem(last=False)[0]
            waiter.state = _GRANTED
            granted.append(waiter)
        return granted

    def _dispatch(self) -> None:
        with self._lock:
            granted = self._grant_locked()
        for waiter in granted:
            self._wake(waiter)

    def _wake(self, waiter: _Waiter) -> None:
        if not waiter.wake():
            # Its loop or run is gone: the permit would never come back.
            self._release()

    def _release(self) -> None:
        self._in_flight -= 1
        if self._waiters:
            self._dispatch()

    def _expire(self, waiter: _Waiter) -> None:
        """max_wait ran out (a timer callback)."""
        with self._lock:
            if waiter.state != _WAITING:
                return
            waiter.state = _EXPIRED
            del self._waiters[waiter]
        waiter.wake()

    def _leave(self, waiter: _Waiter) -> bool:
        """The caller gives up: True if it was still waiting (and is now gone)."""
        with self._lock:
            if waiter.state != _WAITING:
                return False
            waiter.state = _GONE
            del self._waiters[waiter]
            return True

    def _abandon(self, waiter: _Waiter) -> None:
        """The caller is cancelled: leave the queue, or give back the permit
        that was handed over but never used."""
        if not self._leave(waiter) and waiter.state == _GRANTED:
            self._release()

    def _rejection(self, *, waited: bool) -> BulkheadFullError:
        self._rejected += 1
        if self._observed():
            self._emit(BulkheadRejected(self._name, self._capacity, waited))
        return BulkheadFullError(name=self._name, capacity=self._capacity)

    def __repr__(self) -> str:
        return (
            f"<Bulkhead {self._name!r} max_concurrent={self._capacity} "
            f"max_waiting={self._max_waiting} in_flight={self._in_flight}>"
        )


# PoolBulkhead -------------------------------------------------------------

_QUEUED = 0
_RUNNING = 1
_DONE = 2
_ABANDONED = 3  # the caller stopped waiting; the result is dropped


class _Job:
    __slots__ = ("args", "error", "fn", "kwargs", "result", "state", "waiter")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        waiter: _Waiter,
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.waiter = waiter
        self.state = _QUEUED
        self.result: Any = None
        self.error: BaseException | None = None

    def outcome(self) -> Any:
        error = self.error
        if error is not None:
            self.error = None  # no cycle through the traceback
            raise error
        return self.result


class _Pool:
    """What the worker threads hold: everything but the policy object, so a
    PoolBulkhead that nobody references can be collected (its finalizer then
    stops the threads)."""

    __slots__ = (
        "closed",
        "cond",
        "idle",
        "lock",
        "name",
        "queue",
        "queue_limit",
        "rejected",
        "running",
        "threads",
        "worker_idents",
        "workers",
    )

    def __init__(self, workers: int, queue_limit: int, name: str) -> None:
        self.workers = workers
        self.queue_limit = queue_limit
        self.name = name
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.queue: OrderedDict[_Job, None] = OrderedDict()
        self.running = 0
        self.idle = 0
        self.rejected = 0
        self.closed = False
        self.threads: list[threading.Thread] = []
        self.worker_idents: set[int] = set()

    def submit(self, job: _Job) -> bool:
        """Queue ``job`` for a worker; False when the pool and queue are full."""
        with self.lock:
            if self.closed:
                raise RuntimeError(f"PoolBulkhead {self.name!r} is closed")
            if self.running + len(self.queue) >= self.workers + self.queue_limit:
                self.rejected += 1
                return False
            self.queue[job] = None
            # Threads start lazily: a new one only when the queued jobs
            # outnumber the idle threads that could take them.
            if len(self.queue) > self.idle and len(self.threads) < self.workers:
                thread = threading.Thread(
                    target=self._work,
                    name=f"resilience-{self.name}-{len(self.threads) + 1}",
                    # A pool the user forgot to close must not keep the
                    # process alive; idle workers hold no work to lose.
                    daemon=True,
                )
                self.threads.append(thread)
                thread.start()
            else:
                self.cond.notify()
        return True

    def abandon(self, job: _Job) -> bool:
        """The caller stops waiting: True unless the result is already on its way."""
        with self.lock:
            if job.state == _QUEUED:
                del self.queue[job]
            elif job.state != _RUNNING:
                return job.state == _ABANDONED
            job.state = _ABANDONED
            return True

    def _work(self) -> None:
        ident = _get_ident()
        with self.lock:
            self.worker_idents.add(ident)
        queue = self.queue
        while True:
            with self.lock:
                while not queue:
                    if self.closed:
                        self.worker_idents.discard(ident)
                        self.threads.remove(threading.current_thread())
                        return
                    self.idle += 1
                    self.cond.wait()
                    self.idle -= 1
                job = queue.popitem(last=False)[0]
                job.state = _RUNNING
                self.running += 1
            try:
                result = job.fn(*job.args, **job.kwargs)
                if inspect.isawaitable(result):
                    if inspect.iscoroutine(result):
                        result.close()  # never awaited, and no warning about it
                    raise TypeError(
                        f"PoolBulkhead {self.name!r} runs blocking callables; "
                        f"{job.fn!r} returned an awaitable: use Bulkhead for async code"
                    )
                job.result = result
            except BaseException as exc:  # delivered to the caller, who re-raises it
                job.error = exc
            with self.lock:
                self.running -= 1
                deliver = job.state == _RUNNING
                if deliver:
                    job.state = _DONE
            if deliver:
                job.waiter.wake()
            else:
                job.result = job.error = None
            job.fn = job.args = job.kwargs = None  # type: ignore[assignment]
            del job

    def close(self, wait: bool = False) -> None:
        with self.lock:
            self.closed = True
            self.cond.notify_all()
            threads = list(self.threads)
        if wait:
            current = threading.current_thread()
            for thread in threads:
                if thread is not current:
                    thread.join()


class PoolBulkhead(Policy):
    """Run blocking callables on a dedicated pool of ``workers`` threads.

    The threads belong to this bulkhead alone, so one slow dependency cannot
    take the threads everyone else shares (the default asyncio and anyio
    pools). At most ``workers`` calls run at once; at most ``queue`` more
    wait for a thread; beyond that a call is rejected at once with a fresh
    :class:`~resilience.BulkheadFullError`.

    - From async code (asyncio or trio), ``await pool.call(fn, *args)`` runs
      ``fn`` on a worker and waits without blocking the event loop. A caller
      that is cancelled or timed out stops waiting at once; a call that had
      not started is dropped, one that had keeps its thread until it returns
      (``stats.in_flight`` counts it until then) and its result is discarded.
    - From sync code, ``pool.call_sync(fn, *args)`` or decorating a plain
      ``def`` blocks the calling thread until the worker is done. Called from
      one of the pool's own workers it runs inline (queuing would deadlock).
    - Decorating an ``async def`` raises ``TypeError``: a coroutine does not
      block a thread, so it belongs in a :class:`Bulkhead`; to limit a
      blocking helper, decorate the helper or pass it to ``pool.call``.
    - Workers start lazily, one per call that finds no idle worker, up to
      ``workers``. :meth:`close` (or leaving a ``with`` block) stops them
      after the accepted calls finish; they are daemon threads, so a process
      exits cleanly without it.
    - As the innermost policy of a pipeline it lets a :class:`Timeout` bound
      blocking code: ``await (Timeout(2) | pool).call(blocking_fn)``.

    Example::

        with PoolBulkhead(4, queue=16, name="legacy-db") as pool:
            rows = await pool.call(cursor.execute, "SELECT 1")

        @PoolBulkhead(2)
        def resize_image(data: bytes) -> bytes: ...
    """

    __slots__ = ("_finalizer", "_pool")

    _kind = "pool_bulkhead"
    _async_unsupported: ClassVar[str] = (
        "a coroutine does not block a thread, so it gains nothing from a worker pool; "
        "use Bulkhead to limit async code, or give the pool the blocking function itself"
    )

    def __init__(self, workers: int, *, queue: int = 0, name: str | None = None) -> None:
        _check_count("workers", workers, 1)
        _check_count("queue", queue, 0)
        super().__init__(name=name)
        self._pool = _Pool(workers, queue, self._name)
        self._finalizer = weakref.finalize(self, self._pool.close)

    @property
    def workers(self) -> int:
        return self._pool.workers

    @property
    def queue(self) -> int:
        return self._pool.queue_limit

    @property
    def closed(self) -> bool:
        return self._pool.closed

    @property
    def stats(self) -> BulkheadStatistics:
        """Busy threads (``in_flight``), queued calls, rejections since creation."""
        pool = self._pool
        return BulkheadStatistics(
            in_flight=pool.running,
            waiting=len(pool.queue),
            rejected=pool.rejected,
            capacity=pool.workers,
            max_waiting=pool.queue_limit,
        )

    async def call(  # type: ignore[override]
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run the blocking ``fn(*args, **kwargs)`` on a worker and await its result."""
        self._check_blocking(fn)
        loop = _get_running_loop()
        if loop is not None:
            waiter = _AsyncioWaiter(loop)
            job = self._submit(fn, args, kwargs, waiter)
            try:
                await waiter.fut
            except BaseException:
                self._pool.abandon(job)
                raise
        else:
            trio = _trio()
            trio_waiter = _TrioWaiter()
            job = self._submit(fn, args, kwargs, trio_waiter)

            def abort(_: object) -> Any:
                if self._pool.abandon(job):
                    return trio.lowlevel.Abort.SUCCEEDED
                return trio.lowlevel.Abort.FAILED  # done: the result is on its way

            await trio.lowlevel.wait_task_rescheduled(abort)
        result: T = job.outcome()
        return result

    def call_sync(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on a worker; block until it returns."""
        self._check_blocking(fn)
        pool = self._pool
        if _get_ident() in pool.worker_idents:
            return fn(*args, **kwargs)
        waiter = _ThreadWaiter()
        job = self._submit(fn, args, kwargs, waiter)
        try:
            waiter.lock.acquire()
        except BaseException:  # KeyboardInterrupt while waiting
            pool.abandon(job)
            raise
        result: T = job.outcome()
        return result

    def _check_blocking(self, fn: object) -> None:
        if inspect.iscoroutinefunction(fn):
            self._check_async(fn)

    def _submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], waiter: _Waiter
    ) -> _Job:
        job = _Job(fn, args, kwargs, waiter)
        if not self._pool.submit(job):
            if self._observed():
                self._emit(BulkheadRejected(self._name, self._pool.workers, False))
            raise BulkheadFullError(name=self._name, capacity=self._pool.workers)
        return job

    def close(self, *, wait: bool = True) -> None:
        """Accept no more calls; the workers exit once the accepted calls are
        done. With ``wait`` (the default), block until they have.

        Example::

            pool = PoolBulkhead(4)
            try:
                pool.call_sync(work)
            finally:
                pool.close()
        """
        self._pool.close(wait)

    def __enter__(self) -> PoolBulkhead:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        pool = self._pool
        return (
            f"<PoolBulkhead {self._name!r} workers={pool.workers} queue={pool.queue_limit} "
            f"busy={pool.running}{' closed' if pool.closed else ''}>"
        )
