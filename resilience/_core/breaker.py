"""The circuit breaker's state machine (sans-I/O).

It takes clock readings and outcomes and returns decisions; it never awaits,
sleeps or reads a clock. The shells (:mod:`resilience.breaker`) read the
clock, run the call, classify its outcome, and emit the events for the state
changes the machine reports in :attr:`BreakerMachine.changes`.

Permits. :meth:`BreakerMachine.acquire` answers a call with a permit: the
machine's current *epoch* (an int >= 0), ``REJECTED`` or ``UNRECORDED``
(disabled: run the call, report nothing). Every transition, and ``reset()``,
starts a new epoch. An outcome reported with an older epoch still counts in
the running totals but no longer touches the window or the half-open trials:
a call admitted before the breaker tripped, or a trial that completes after
the breaker reopened, cannot decide anything about the new period.

The rules are resilience4j's, as settled in the design notes:

- rates are compared with ``>=``; ``minimum_calls`` applies in CLOSED only;
- HALF_OPEN lets exactly ``half_open_calls`` trials through and decides on
  them, with the same thresholds, once all have completed; an ignored or
  cancelled trial returns its permit;
- OPEN lasts ``open_duration``; with ``open_duration_max`` the duration
  doubles each time a half-open round fails (including one that outlives
  ``half_open_max_wait``) and goes back to the base when the breaker closes;
- time-based transitions happen lazily, when a call or a reader asks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from resilience.events import CircuitState

from .source import method
from .success import SUCCESS_METHOD
from .windows import PRESENT, CountWindow, Window  # noqa: F401  (read by the compiled success)

__all__ = ["REJECTED", "UNRECORDED", "BreakerMachine", "BreakerRules"]

REJECTED = -1
"""Permit answer: the call must not run."""
UNRECORDED = -2
"""Permit answer (DISABLED): run the call and report nothing."""

_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN
_HALF_OPEN = CircuitState.HALF_OPEN
_FORCED_OPEN = CircuitState.FORCED_OPEN
_DISABLED = CircuitState.DISABLED
_NEVER = 2**62
"""A count no window or half-open round reaches: a rule left to a shared store."""


class BreakerRules(NamedTuple):
    """The settings a shared store decides by (:meth:`BreakerMachine.rules`)."""

    failure_rate: float
    minimum_calls: int
    slow_call_rate: float
    open_duration: float
    open_duration_max: float | None
    half_open_calls: int
    half_open_max_wait: float | None


class BreakerMachine:
    """State, window, half-open trials and running totals of one breaker.

    Not thread-safe by itself: the sync shell holds a lock around every
    method call; the async shell needs none on a single event loop.
    """

    __slots__ = (
        "_consecutive_limit",
        "_decide_at",
        "_failure_rate",
        "_half_open_calls",
        "_half_open_max_wait",
        "_local_rules",
        "_minimum_calls",
        "_open_duration",
        "_open_duration_max",
        "_slow_call_rate",
        "changes",
        "epoch",
        "failed_total",
        "half_open_at",
        "ignored_total",
        "open_for",
        "opened_at",
        "rejected_total",
        "shared",
        "slow_total",
        "state",
        "streak",
        "successful_total",
        "transitions",
        "trial_at",
        "trial_failures",
        "trial_quota",
        "trial_slow",
        "trials_done",
        "trials_issued",
        "trip_due",
        "window",
    )

    def __init__(
        self,
        *,
        window: Window,
        failure_rate: float,
        minimum_calls: int,
        slow_call_rate: float,
        consecutive_failures: int | None,
        open_duration: float,
        open_duration_max: float | None,
        half_open_calls: int,
        half_open_max_wait: float | None,
    ) -> None:
        self.window: Window = window
        self._failure_rate = failure_rate
        # A count window can never hold more calls than its size.
        if isinstance(window, CountWindow):
            minimum_calls = min(minimum_calls, window.size)
        self._minimum_calls = minimum_calls
        self._slow_call_rate = slow_call_rate
        # 0 disables the streak rule without a None test on the hot path.
        self._consecutive_limit = consecutive_failures or 0
        self._open_duration = open_duration
        self._open_duration_max = open_duration_max
        self._half_open_calls = half_open_calls
        self._half_open_max_wait = half_open_max_wait
        self._local_rules = (minimum_calls, half_open_max_wait)
        self.shared = False
        """Whether a shared store takes the decisions (see :meth:`share`)."""
        self.trial_quota = half_open_calls
        """The trials this machine may issue in a half-open round."""
        self._decide_at = half_open_calls

        self.state = _CLOSED
        self.epoch = 0
        self.changes: list[tuple[CircuitState, CircuitState]] = []
        """State changes not yet reported by the shell, oldest first."""
        self.trip_due = False
        """Set when an outcome reported without a time reading calls for a
        trip: the shell must then call :meth:`trip` with the time."""
        self.open_for = open_duration
        self.opened_at = 0.0
        self.trial_at = 0.0
        """In OPEN, ``opened_at + open_for``: the first time a call may be a trial.
        Before it, a shell may refuse a call itself (counting it in
        :attr:`rejected_total`) without calling :meth:`acquire`."""
        self.half_open_at = 0.0
        self.streak = 0
        self.trials_issued = 0
        self.trials_done = 0
        self.trial_failures = 0
        self.trial_slow = 0
        # Running totals since creation (metrics read them at scrape time).
        self.successful_total = 0
        self.failed_total = 0
        self.ignored_total = 0
        self.slow_total = 0
        self.rejected_total = 0
        self.transitions: dict[tuple[CircuitState, CircuitState], int] = {}

    # Transitions ------------------------------------------------------------

    def _move(self, new: CircuitState) -> None:
        old = self.state
        self.epoch += 1
        self.trip_due = False
        if new is old:
            return
        self.state = new
        key = (old, new)
        self.transitions[key] = self.transitions.get(key, 0) + 1
        self.changes.append(key)

    def _open_at(self, at: float, grow: bool) -> None:
        if grow and self._open_duration_max is not None:
            self.open_for = min(self.open_for * 2, self._open_duration_max)
        self.opened_at = at
        self.trial_at = at + self.open_for
        self._move(_OPEN)

    def _half_open_at(self, now: float) -> None:
        self.half_open_at = now
        # Shared, the round's trials are handed out by the store.
        self.trial_quota = 0 if self.shared else self._half_open_calls
        self.trials_issued = self.trials_done = 0
        self.trial_failures = self.trial_slow = 0
        self._move(_HALF_OPEN)

    def _close(self) -> None:
        self.window.clear()
        self.streak = 0
        self.open_for = self._open_duration
        self._move(_CLOSED)

    def poll(self, now: float) -> CircuitState:
        """Apply the transitions that time alone causes; return the state."""
        while True:
            state = self.state
            if state is _OPEN:
                if now < self.trial_at:
                    return state
                self._half_open_at(now)
            elif state is _HALF_OPEN and self._half_open_max_wait is not None:
                expiry = self.half_open_at + self._half_open_max_wait
                if now < expiry:
                    return state
                # The round failed by running out of time; the breaker has
                # been open since that moment, so the open period may
                # already be over too (hence the loop).
                self._open_at(expiry, grow=True)
            else:
                return state

    def trip(self, now: float) -> None:
        """CLOSED -> OPEN after an outcome that set :attr:`trip_due`."""
        if self.trip_due and self.state is _CLOSED:
            self._open_at(now, grow=False)
        self.trip_due = False

    # Calls -----------------------------------------------------------------

    def acquire(self, now: float) -> int:
        """A permit for a call starting at ``now``: an epoch, REJECTED or UNRECORDED."""
        state = self.state
        if state is _CLOSED:
            return self.epoch
        if state is _OPEN and now < self.trial_at:
            # The commonest answer outside CLOSED, without the poll() call.
            self.rejected_total += 1
            return REJECTED
        if state is _DISABLED:
            return UNRECORDED
        if state is not _FORCED_OPEN:
            state = self.poll(now)
            if state is _HALF_OPEN:
                if self.trials_issued < self.trial_quota:
                    self.trials_issued += 1
                    return self.epoch
            elif state is _CLOSED:  # pragma: no cover - time alone never closes
                return self.epoch
        self.rejected_total += 1
        return REJECTED

    def retry_after(self, now: float) -> float | None:
        """Seconds until a rejected caller could become a trial, if known.

        Known only in OPEN. In HALF_OPEN it depends on the trials in flight,
        and FORCED_OPEN does not end by itself: ``None``.
        """
        if self.state is _OPEN:
            left = self.trial_at - now
            return left if left > 0.0 else 0.0
        return None

    def record(self, permit: int, failed: bool, slow: bool, now: float | None) -> bool:
        """Report the outcome of a call admitted with ``permit``.

        ``now`` is the time the call ended. It may be ``None`` only for a
        permit issued in CLOSED with a :class:`CountWindow`, the one case
        where nothing but a trip needs the time: if the outcome calls for a
        trip, :attr:`trip_due` is set and the caller must call :meth:`trip`.

        Returns True when the caller has follow-up work: a trip to make or
        :attr:`changes` to report.
        """
        if failed:
            self.failed_total += 1
        else:
            self.successful_total += 1
        if slow:
            self.slow_total += 1
        if permit != self.epoch:
            return False
        state = self.state
        if state is _CLOSED:
            window = self.window
            # None only with a CountWindow, which ignores it (see the docstring).
            window.record(now, failed, slow)  # type: ignore[arg-type]
            if failed:
                self.streak += 1
                if self._consecutive_limit and self.streak >= self._consecutive_limit:
                    return self._trip(now)
            else:
                self.streak = 0
            calls = window._calls
            if calls >= self._minimum_calls:
                failures = window._failures
                slow_calls = window._slow
                if (failures and failures / calls >= self._failure_rate) or (
                    slow_calls and slow_calls / calls >= self._slow_call_rate
                ):
                    return self._trip(now)
            return False
        if state is _HALF_OPEN:
            assert now is not None, "a half-open outcome needs the time"
            if self.poll(now) is not _HALF_OPEN:
                # It outlived half_open_max_wait: the round is already over.
                return True
            self.trials_done += 1
            if failed:
                self.trial_failures += 1
            if slow:
                self.trial_slow += 1
            done = self.trials_done
            if done >= self._decide_at:
                if (self.trial_failures / done >= self._failure_rate) or (
                    self.trial_slow / done >= self._slow_call_rate
                ):
                    self._open_at(now, grow=True)
                else:
                    self._close()
                return True
        return False

    # success(permit, now): compiled from SUCCESS (.success), below the class.
    success: Callable[[int, float | None], bool]

    def _rate_trips(self, now: float | None) -> bool:
        """After a success, with failures in the window: trip if their rate calls for it."""
        window = self.window
        calls = window._calls
        if calls >= self._minimum_calls and window._failures / calls >= self._failure_rate:
            return self._trip(now)
        return False

    def _trip(self, now: float | None) -> bool:
        if now is None:
            self.trip_due = True
        else:
            self._open_at(now, grow=False)
        return True

    def release(self, permit: int, ignored: bool) -> None:
        """A call ended without an outcome to record: an ignored exception
        (``ignored``) or a cancellation. A half-open trial permit it held is
        returned, so another caller can run the trial instead."""
        if ignored:
            self.ignored_total += 1
        if permit == self.epoch and self.state is _HALF_OPEN:
            self.trials_issued -= 1

    # Manual control ---------------------------------------------------------

    def open(self, now: float) -> None:
        """OPEN now, for the current open duration (not a trip: no growth)."""
        self._open_at(now, grow=False)

    def close(self) -> None:
        """CLOSED with an empty window, unless already CLOSED."""
        if self.state is not _CLOSED:
            self._close()

    def force_open(self) -> None:
        self._move(_FORCED_OPEN)

    def disable(self) -> None:
        self._move(_DISABLED)

    def reset(self) -> None:
        """CLOSED with an empty window, whatever the state."""
        self._close()

    # Shared state ------------------------------------------------------------

    def rules(self) -> BreakerRules:
        minimum, max_wait = self._local_rules
        return BreakerRules(
            self._failure_rate,
            minimum,
            self._slow_call_rate,
            self._open_duration,
            self._open_duration_max,
            self._half_open_calls,
            max_wait,
        )

    def share(self, on: bool) -> None:
        """Leave to a shared store (on) the decisions it takes for every
        process, or take them here again (off, while it cannot be reached):
        the trip on the closed window, the end of a half-open round and
        ``half_open_max_wait``. Shared, a half-open round issues only the
        trials the store handed out (:attr:`trial_quota`); the window and
        the trials' outcomes are still counted here, for the store to collect."""
        if on is self.shared:
            return
        self.shared = on
        if on:
            self._minimum_calls = _NEVER
            self._half_open_max_wait = None
            self._decide_at = _NEVER
            self.trial_quota = self.trials_issued
        else:
            self._minimum_calls, self._half_open_max_wait = self._local_rules
            self._decide_at = self.trial_quota = self._half_open_calls

    def adopt(self, state: CircuitState, now: float, left: float, open_for: float) -> None:
        """Enter ``state`` as a shared store decided it: a new period (a new
        epoch) even when already in it. OPEN ends ``left`` seconds from
        ``now`` and lasts ``open_for``; HALF_OPEN starts with no trial to
        issue (the store hands them out)."""
        if state is _OPEN:
            self.open_for = open_for
            self.trial_at = now + left
            self.opened_at = self.trial_at - open_for
            self._move(_OPEN)
        elif state is _HALF_OPEN:
            self._half_open_at(now)
        elif state is _CLOSED:
            self._close()
        else:
            self._move(state)

    def hand_back(self, keep: bool) -> tuple[int, int, int, int]:
        """Shared: the trial permits not used yet, given back to the store
        unless ``keep``, and the trials done, failed and slow since the last
        call: ``(returned, done, failed, slow)``, zeroed here."""
        returned = 0
        if not keep:
            returned = max(self.trial_quota - self.trials_issued, 0)
            self.trial_quota -= returned
        done, failed, slow = self.trials_done, self.trial_failures, self.trial_slow
        self.trials_done = self.trial_failures = self.trial_slow = 0
        return returned, done, failed, slow

    def take_changes(self) -> list[tuple[CircuitState, CircuitState]]:
        """The state changes since the last call, for the shell to report."""
        changes = self.changes
        if not changes:
            return changes
        self.changes = []
        return changes


BreakerMachine.success = method(
    "success",
    SUCCESS_METHOD,
    globals(),
    BreakerMachine,
    """:meth:`record` for the commonest outcome, a success that is not slow,
    of a call admitted in CLOSED (the shells' fast path). Only valid when slow
    calls are not detected (so the window holds none).""",
)
