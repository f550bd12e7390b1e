"""CircuitBreaker: stop calling a dependency that keeps failing, and try it again later."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from . import _breaker_guard as _guard
from ._clock import Clock
from ._core.breaker import BreakerMachine
from ._core.breaker_stats import CircuitBreakerStatistics, snapshot
from ._core.windows import CountWindow, TimeWindow, Window
from ._matchers import ExceptionFilter
from ._outcomes import Outcomes
from ._store import BreakerBackend, BreakerStore
from ._validate import count, optional_seconds, rate, seconds
from .events import CircuitState, StateChanged
from .policy import Policy

__all__ = ["BreakerBackend", "BreakerStore", "CircuitBreaker", "CircuitBreakerStatistics"]

P = ParamSpec("P")
T = TypeVar("T")

_DEFAULT_WINDOW = CountWindow(100)
_DEFAULTS: dict[str, Any] = {}  # CircuitBreaker's keyword defaults, filled below the class


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
            self._timing = _guard.BOTH
        elif isinstance(window, TimeWindow):
            self._timing = _guard.END
        else:
            self._timing = _guard.UNTIMED
        self._outcomes = outcomes
        self._lock = threading.Lock()
        # Without a lock until threads may use it: see _threads().
        self._shared = False
        # The fast path: CLOSED, no start time to read, no lock to take.
        self._fast = self._timing != _guard.BOTH
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
        self._fast = running and not self._shared and self._timing != _guard.BOTH

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
            stats = snapshot(core, self._now())
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
    # admit and settle are compiled from the Inline source in _breaker_guard,
    # which plans also compile into their brackets; every path off the
    # closed one is a function there, held here as a method.

    admit: Callable[[], object]
    settle: Callable[[object, BaseException | None, object], BaseException | None]

    async def wait(self) -> object:
        raise AssertionError("CircuitBreaker.admit never asks to wait")

    def wait_sync(self) -> object:
        raise AssertionError("CircuitBreaker.admit never asks to wait")

    _admit_slow = _guard.admit_slow
    _settle_slow = _guard.settle_slow
    _admit = _guard.admit_locked
    _record = _guard.record
    _follow_up = _guard.follow_up
    _rejection = _guard.rejection
    _open_error = _guard.open_error

    def _threads(self) -> None:
        """A sync runner was compiled with this breaker: threads may use it,
        so from now on every step takes the lock (Plan calls this)."""
        self._shared = True
        self._fast = self._plain = False

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


CircuitBreaker._inline_source = _guard.INLINE  # type: ignore[attr-defined]
CircuitBreaker.admit = _guard.INLINE.method(
    "admit",
    """A permit for one call (the ticket), or a fresh :class:`CircuitOpenError`.""",
)
CircuitBreaker.settle = _guard.INLINE.method(
    "settle",
    """Record the call's outcome (classified by ``record``, ``ignore`` and
    ``failure_result``); cancellation records nothing and returns a half-open
    permit. A predicate that raises settles the call as a failure, and its
    exception propagates instead.""",
)
