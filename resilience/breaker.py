"""CircuitBreaker: stop calling a dependency that keeps failing, and try it again later."""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from ._clock import Clock
from ._core.breaker import REJECTED, BreakerMachine, CircuitBreakerStatistics
from ._core.windows import CountWindow, TimeWindow, Window
from ._matchers import ExceptionFilter
from ._outcomes import FAILED, IGNORED, Outcomes
from ._plan import Inline
from ._store import BreakerBackend, BreakerStore
from ._validate import count, optional_seconds, rate, seconds
from .errors import CircuitOpenError
from .events import CallRejected, CircuitState, StateChanged, global_listeners
from .policy import Policy

__all__ = ["BreakerBackend", "BreakerStore", "CircuitBreaker", "CircuitBreakerStatistics"]

P = ParamSpec("P")
T = TypeVar("T")

_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN

# How a call is timed: not at all (CLOSED, count window, no slow-call
# detection), at its end only (time window), or at both ends (slow calls).
_UNTIMED = 0
_END = 1
_BOTH = 2

_UNLOCKED = contextlib.nullcontext()

_DEFAULT_WINDOW = CountWindow(100)
_DEFAULTS: dict[str, Any] = {}  # CircuitBreaker's keyword defaults, filled below the class

_fresh_error = CircuitOpenError._fresh


class CircuitBreaker(Policy):
    """Stop calling a failing dependency for a while, then try it again carefully.

    CLOSED, it runs every call and records its outcome in a sliding
    ``window`` (the last N calls, :class:`CountWindow`, or the last N
    seconds, :class:`TimeWindow`). Once the window holds ``minimum_calls``
    calls, it trips to OPEN when the share of failures reaches
    ``failure_rate`` or the share of slow calls (lasting at least
    ``slow_call_duration``) reaches ``slow_call_rate``; with
    ``consecutive_failures=N`` it also trips after N failures in a row.

    OPEN, it rejects every call with a fresh :class:`CircuitOpenError`
    (carrying ``retry_after``) for ``open_duration`` seconds, doubling on
    each failed trial round up to ``open_duration_max`` when that is set.
    Then it is HALF_OPEN: exactly ``half_open_calls`` trial calls run, the
    others are rejected, and when all trials are done the same thresholds
    decide between CLOSED (with an empty window) and OPEN again. If the
    trials take longer than ``half_open_max_wait``, it reopens.

    - ``record``: exception types (or a predicate) that count as failures;
      an exception that matches neither ``record`` nor ``ignore`` counts as
      a success.
    - ``ignore``: exceptions that count as nothing at all (a half-open trial
      that raises one gives its permit back).
    - ``failure_result``: a predicate on the returned value that makes it a
      failure (``lambda r: r.status_code >= 500``); the value is still returned.
    - Cancellation, ``KeyboardInterrupt`` and ``SystemExit`` count as
      nothing and give a half-open permit back.

    Manual control: :meth:`open`, :meth:`close`, :meth:`force_open`,
    :meth:`disable`, :meth:`reset`. :attr:`state` and :attr:`stats` are
    readable at any time. Every state change emits a ``StateChanged``
    event, every rejection a ``CallRejected``.

    ``backend`` (a ``resilience.contrib.redis.RedisBackend``) shares the
    breaker's state with every breaker of the same ``name`` on it, in any
    process: it needs a name and a :class:`TimeWindow` (ValueError
    otherwise; ``consecutive_failures`` counts one process's calls and is
    refused too). Calls still make no round trip: outcomes are counted here
    and flushed every ``sync_interval`` by a background task (on asyncio;
    a daemon thread with a sync client), which trips the shared breaker on
    every process's window, hands out the half-open trials
    (``half_open_calls`` in total), publishes manual controls and applies
    the shared state here, so a breaker opened elsewhere is seen within
    about ``sync_interval``. While Redis cannot be reached, the breaker
    decides on its own state. An asyncio client runs on asyncio only: on
    trio, a call fails with a clear RuntimeError.

    Sync calls (:meth:`call_sync`, decorated plain functions) are safe from
    many threads. Async calls on an event loop take no lock until the
    breaker serves sync calls (a sync call, a decorated plain function, a
    sync pipeline or transport holding it); from then on every step does.

    Example::

        breaker = CircuitBreaker("payments", failure_rate=0.5, minimum_calls=20,
                                 open_duration=10, ignore=(InvalidCard,))

        @breaker
        async def charge(order: Order) -> Receipt: ...

        try:
            await charge(order)
        except CircuitOpenError as exc:
            raise ServiceUnavailable(retry_after=exc.retry_after) from exc
    """

    __slots__ = (
        "_config",
        "_core",
        "_fast",
        "_idle",
        "_lock",
        "_now",
        "_outcomes",
        "_plain",
        "_shared",
        "_slow_after",
        "_store",
        "_timing",
    )

    _kind = "circuit_breaker"

    def __init__(
        self,
        name: str | None = None,
        *,
        failure_rate: float = 0.5,
        window: Window = _DEFAULT_WINDOW,
        minimum_calls: int = 10,
        slow_call_duration: float | None = None,
        slow_call_rate: float = 1.0,
        consecutive_failures: int | None = None,
        open_duration: float = 30.0,
        open_duration_max: float | None = None,
        half_open_calls: int = 1,
        half_open_max_wait: float | None = None,
        record: ExceptionFilter = (Exception,),
        ignore: ExceptionFilter = (),
        failure_result: Callable[[Any], bool] | None = None,
        clock: Clock | None = None,
        backend: BreakerBackend | None = None,
    ) -> None:
        if not isinstance(window, CountWindow | TimeWindow):
            raise TypeError(f"window must be a CountWindow or a TimeWindow, got {window!r}")
        if backend is not None:
            _check_backend(backend, name, window, consecutive_failures)
        failure_rate = rate("failure_rate", failure_rate)
        slow_call_rate = rate("slow_call_rate", slow_call_rate)
        minimum = count("minimum_calls", minimum_calls, 1)
        half_open = count("half_open_calls", half_open_calls, 1)
        consecutive = None
        if consecutive_failures is not None:
            consecutive = count("consecutive_failures", consecutive_failures, 1)
        slow_after = optional_seconds("slow_call_duration", slow_call_duration)
        duration = seconds("open_duration", open_duration)
        duration_max = optional_seconds("open_duration_max", open_duration_max)
        if duration_max is not None and duration_max < duration:
            raise ValueError(
                f"open_duration_max must be >= open_duration ({duration!r}), "
                f"got {open_duration_max!r}"
            )
        max_wait = optional_seconds("half_open_max_wait", half_open_max_wait)
        outcomes = Outcomes(record, ignore, failure_result)
        super().__init__(name=name, clock=clock)
        # As given, for derive(); only what differs from the defaults, since
        # a process may hold thousands of breakers (one per host).
        given = {
            "failure_rate": failure_rate,
            "minimum_calls": minimum_calls,
            "slow_call_duration": slow_call_duration,
            "slow_call_rate": slow_call_rate,
            "consecutive_failures": consecutive_failures,
            "open_duration": open_duration,
            "open_duration_max": open_duration_max,
            "half_open_calls": half_open_calls,
            "half_open_max_wait": half_open_max_wait,
            "record": record,
            "ignore": ignore,
            "failure_result": failure_result,
            "clock": clock,
            "backend": backend,
        }
        self._config: dict[str, Any] = {
            key: value for key, value in given.items() if value is not _DEFAULTS[key]
        }
        # The breaker keeps its own empty copy: the window passed in (or the
        # shared default) is only its shape.
        self._core = BreakerMachine(
            window=window._empty_copy(),
            failure_rate=failure_rate,
            minimum_calls=minimum,
            slow_call_rate=slow_call_rate,
            consecutive_failures=consecutive,
            open_duration=duration,
            open_duration_max=duration_max,
            half_open_calls=half_open,
            half_open_max_wait=max_wait,
        )
        self._now = self._clock.now
        self._slow_after = slow_after
        if slow_after is not None:
            self._timing = _BOTH
        elif isinstance(window, TimeWindow):
            self._timing = _END
        else:
            self._timing = _UNTIMED
        self._outcomes = outcomes
        self._lock = threading.Lock()
        # Without a lock until threads may use it: see _threads().
        self._shared = False
        # The fast path: CLOSED, no start time to read, no lock to take.
        self._fast = self._timing != _BOTH
        # ...and a success needs no classifying (no failure_result), the one
        # test the hot path of settle makes besides the ticket's type.
        self._plain = self._fast and outcomes.failure_result is None
        # With a backend, calls take the slow path until its background
        # work runs (the first call starts it): see _sharing().
        self._store: BreakerStore | None = None
        self._idle = False
        if backend is not None:
            self._store = backend.breaker_store(self)
            self._sharing(False)

    @property
    def store(self) -> BreakerStore | None:
        """The shared store given by ``backend`` (None without one)."""
        return self._store

    def _sharing(self, running: bool) -> None:
        """The store's background work started (running) or ended: calls
        take the fast path again, or the slow one, which starts it."""
        self._idle = not running
        self._fast = running and not self._shared and self._timing != _BOTH

    def derive(self, *, name: str | None = None, **overrides: Any) -> CircuitBreaker:
        """A new breaker with this one's configuration and listeners, in its own
        state (CLOSED, empty window, zero totals); ``overrides`` replace
        constructor arguments. Per-host breakers are made this way.

        Example::

            template = CircuitBreaker("api", failure_rate=0.3)
            per_host = {host: template.derive(name=f"api:{host}") for host in hosts}
            strict = template.derive(name="api-strict", failure_rate=0.1)
        """
        config = {"window": self._core.window._empty_copy(), **self._config, **overrides}
        derived = CircuitBreaker(name, **config)
        derived._listeners = self._listeners
        return derived

    # Reading ------------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """The state now (time-based transitions are applied on reading)."""
        core = self._core
        with self._lock:
            state = core.poll(self._now())
            changes = core.take_changes()
        if changes:
            self._report(changes)
        return state

    @property
    def stats(self) -> CircuitBreakerStatistics:
        """The current window and the running totals (see :class:`CircuitBreakerStatistics`)."""
        core = self._core
        with self._lock:
            now = self._now()
            state = core.poll(now)
            calls, failures, slow = core.window.totals(now)
            stats = CircuitBreakerStatistics(
                state=state,
                calls=calls,
                failures=failures,
                slow_calls=slow,
                failure_rate=failures / calls if calls else 0.0,
                slow_call_rate=slow / calls if calls else 0.0,
                rejected=core.rejected_total,
                successful_total=core.successful_total,
                failed_total=core.failed_total,
                ignored_total=core.ignored_total,
                slow_total=core.slow_total,
                transitions=dict(core.transitions),
            )
            changes = core.take_changes()
        if changes:
            self._report(changes)
        return stats

    # Manual control -----------------------------------------------------------

    def open(self) -> None:
        """Open now, for the current open duration; then half-open as usual.

        Example::

            breaker.open()   # e.g. the dependency announced maintenance
        """
        self._control("open", self._core.open, self._now())

    def close(self) -> None:
        """Close with an empty window (nothing happens if already closed).

        Example::

            breaker.close()
        """
        self._control("close", self._core.close)

    def force_open(self) -> None:
        """Reject every call until :meth:`close`, :meth:`reset` or :meth:`disable`.

        Example::

            breaker.force_open()   # retry_after is None: it will not reopen by itself
        """
        self._control("force_open", self._core.force_open)

    def disable(self) -> None:
        """Let every call through and record nothing, until :meth:`close` or :meth:`reset`.

        Example::

            breaker.disable()
        """
        self._control("disable", self._core.disable)

    def reset(self) -> None:
        """Closed with an empty window, whatever the state (running totals are kept).

        Example::

            breaker.reset()
        """
        self._control("reset", self._core.reset)

    def _control(self, name: str, operation: Callable[..., None], *args: float) -> None:
        """A manual state change: apply it under the lock (and publish it to
        the shared store), then report it."""
        with self._lock:
            operation(*args)
            changes = self._core.take_changes()
            if self._store is not None:
                self._store.control(name)
        self._report(changes)

    # The guard ------------------------------------------------------------------
    #
    # admit and settle are compiled from _INLINE (below the class), which
    # plans also compile into their brackets: the closed path (a permit that
    # is the machine's epoch, read without a lock; a success recorded with
    # no time reading) is written there once. Everything else is a call to
    # _admit_slow / _settle_slow.

    admit: Callable[[], object]
    settle: Callable[[object, BaseException | None, object], BaseException | None]

    async def wait(self) -> object:
        raise AssertionError("CircuitBreaker.admit never asks to wait")

    def wait_sync(self) -> object:
        raise AssertionError("CircuitBreaker.admit never asks to wait")

    def _settle_slow(
        self, ticket: Any, error: BaseException | None, result: object
    ) -> BaseException | None:
        if ticket.__class__ is int:
            permit: int = ticket
            start = 0.0
            timing = self._timing
        else:
            permit, start, timing = ticket
            if permit < 0:
                return error  # disabled: nothing to record
        try:
            outcome = self._outcomes.classify(error, result)
        except Exception as exc:
            # A user predicate raised: the call still settles (as a failure),
            # then the predicate's exception propagates.
            self._record(permit, FAILED, start, timing)
            return exc
        self._record(permit, outcome, start, timing)
        return error

    def _threads(self) -> None:
        """A sync runner was compiled with this breaker: threads may use it,
        so from now on every step takes the lock (Plan calls this)."""
        self._shared = True
        self._fast = self._plain = False

    def _admit_slow(self) -> object:
        if self._idle:
            self._store.start()  # type: ignore[union-attr]
        if self._shared:
            return self._admit()
        core = self._core
        if core.state is _CLOSED:
            if self._fast:
                return core.epoch
            return (core.epoch, self._now(), _BOTH)
        now = self._now()
        if core.state is _OPEN and now < core.trial_at:
            core.rejected_total += 1  # acquire() would say REJECTED
            raise self._rejection(now)
        permit = core.acquire(now)
        if permit == REJECTED:
            raise self._rejection(now)
        if core.changes:
            self._report(core.take_changes())
        return (permit, now, _BOTH if self._slow_after is not None else _END)

    def _admit(self) -> tuple[int, float, int]:
        """Under the lock: ``(permit, start, timing)``; raises when rejected."""
        core = self._core
        with self._lock:
            if core.state is _CLOSED:
                timing = self._timing
                return core.epoch, self._now() if timing == _BOTH else 0.0, timing
            now = self._now()
            permit = core.acquire(now)
            changes = core.take_changes()
            state = core.state
            retry_after = core.retry_after(now)
        if changes:
            self._report(changes)
        if permit == REJECTED:
            if self._observed():
                self._emit(CallRejected(self._name, state, retry_after))
            raise self._open_error(retry_after)
        return permit, now, _BOTH if self._slow_after is not None else _END

    def _record(self, permit: int, outcome: int, start: float, timing: int) -> None:
        core = self._core
        with self._lock if self._shared else _UNLOCKED:
            if outcome >= IGNORED:
                core.release(permit, outcome == IGNORED)
                return
            end = self._now() if timing else None
            slow = timing == _BOTH and end - start >= self._slow_after  # type: ignore[operator]
            if not core.record(permit, outcome == FAILED, slow, end):
                return
            if core.trip_due:
                core.trip(self._now())
            changes = core.take_changes()
        self._report(changes)

    def _follow_up(self) -> None:
        core = self._core
        if core.trip_due:
            core.trip(self._now())
        self._report(core.take_changes())

    def _rejection(self, now: float) -> CircuitOpenError:
        """Unlocked: the error for a call just refused by ``acquire(now)``.

        A fresh CircuitOpenError each time (a shared one would grow its
        traceback on every raise), equal to ``CircuitOpenError(name=,
        retry_after=)`` but built without that constructor's three-level
        ``__init__`` chain, which alone costs more than the rest of a
        rejection (the tests check that both agree). Inlined for the same
        reason: this is the path an open breaker serves at full load.
        """
        core = self._core
        state = core.state
        if state is _OPEN:
            retry_after: float | None = core.trial_at - now
            if retry_after < 0.0:  # type: ignore[operator]
                retry_after = 0.0
            error = _fresh_error(self._name, retry_after)
        else:
            retry_after = None
            error = _fresh_error(self._name, None)
        if self._listeners or global_listeners:
            self._report(core.take_changes())
            self._emit(CallRejected(self._name, state, retry_after))
        elif core.changes:
            core.changes.clear()
        return error

    def _open_error(self, retry_after: float | None) -> CircuitOpenError:
        """What ``CircuitOpenError(name=self.name, retry_after=retry_after)``
        builds (the sync shell's rejection; see :meth:`_rejection`)."""
        return _fresh_error(self._name, retry_after)

    def _report(self, changes: list[tuple[CircuitState, CircuitState]]) -> None:
        if changes and self._observed():
            name = self._name
            for old, new in changes:
                self._emit(StateChanged(name, old, new))

    def __repr__(self) -> str:
        core = self._core
        return f"<CircuitBreaker {self._name!r} {core.state.value} window={core.window!r}>"


def _check_backend(
    backend: object, name: str | None, window: Window, consecutive_failures: int | None
) -> None:
    if not callable(getattr(backend, "breaker_store", None)):
        raise TypeError(f"backend must be a shared store such as RedisBackend, got {backend!r}")
    if name is None:
        raise ValueError(
            "a CircuitBreaker given a backend needs a name: processes share a breaker by name"
        )
    if not isinstance(window, TimeWindow):
        raise ValueError(
            "a CircuitBreaker given a backend needs a TimeWindow: processes add up their "
            f"calls per second, not their last N calls; got {window!r}"
        )
    if consecutive_failures is not None:
        raise ValueError(
            "consecutive_failures counts one process's calls in a row and cannot be shared; "
            "a CircuitBreaker given a backend trips on its failure_rate"
        )


_DEFAULTS.update(
    (name, parameter.default)
    for name, parameter in inspect.signature(CircuitBreaker).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
)


_INLINE = Inline(
    admit="""
        {t} = {g}._core
        if {t}.state is {n}CLOSED and {g}._fast:
            {t} = {t}.epoch
        else:
            {t} = {g}._admit_slow()
    """,
    settle="""
        if {t}.__class__ is int and error is None and {g}._plain:
            if {g}._core.success({t}, {g}._now() if {g}._timing else None):
                {g}._follow_up()
        else:
            error = {g}._settle_slow({t}, error, result)
    """,
    names={"CLOSED": _CLOSED},
)
CircuitBreaker._inline_source = _INLINE  # type: ignore[attr-defined]
CircuitBreaker.admit = _INLINE.method(
    "admit",
    """A permit for one call (the ticket), or a fresh :class:`CircuitOpenError`.""",
)
CircuitBreaker.settle = _INLINE.method(
    "settle",
    """Record the call's outcome (classified by ``record``, ``ignore`` and
    ``failure_result``); cancellation records nothing and returns a half-open
    permit. A predicate that raises settles the call as a failure, and its
    exception propagates instead.""",
)
