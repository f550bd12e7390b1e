"""PoolBulkhead: thread isolation, a dedicated bounded pool of worker threads."""

from __future__ import annotations

import inspect
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, ClassVar, ParamSpec, TypeVar

from . import _backend
from ._parking import AsyncioWaiter, ThreadWaiter, TrioWaiter, Waiter, trio_abort
from ._validate import count
from .bulkhead import BulkheadStatistics
from .errors import BulkheadFullError
from .events import BulkheadRejected
from .policy import Policy

__all__ = ["PoolBulkhead"]

P = ParamSpec("P")
T = TypeVar("T")

_get_ident = threading.get_ident

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
        waiter: Waiter,
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
    _runs_plain_callables = True  # `call` takes a blocking callable, not an awaitable
    async_unsupported: ClassVar[str] = (
        "a coroutine does not block a thread, so it gains nothing from a worker pool; "
        "use Bulkhead to limit async code, or give the pool the blocking function itself"
    )

    def __init__(self, workers: int, *, queue: int = 0, name: str | None = None) -> None:
        count("workers", workers, 1)
        count("queue", queue, 0)
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
        loop = _backend.running_loop()
        if loop is not None:
            waiter = AsyncioWaiter(loop)
            job = self._submit(fn, args, kwargs, waiter)
            try:
                await waiter.fut
            except BaseException:
                self._pool.abandon(job)
                raise
        else:
            trio_waiter = TrioWaiter()
            job = self._submit(fn, args, kwargs, trio_waiter)
            abandon = self._pool.abandon
            await _backend.trio().lowlevel.wait_task_rescheduled(trio_abort(lambda: abandon(job)))
        result: T = job.outcome()
        return result

    def call_sync(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on a worker; block until it returns."""
        self._check_blocking(fn)
        pool = self._pool
        if _get_ident() in pool.worker_idents:
            return fn(*args, **kwargs)
        waiter = ThreadWaiter()
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
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], waiter: Waiter
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
