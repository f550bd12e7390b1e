"""The circuit breaker's statistics: the snapshot type, and how it is read
from a :class:`~resilience._core.breaker.BreakerMachine` (sans-I/O: the
shell passes the time and holds the lock)."""

from __future__ import annotations

from dataclasses import dataclass

from resilience.events import CircuitState

from .breaker import BreakerMachine

__all__ = ["CircuitBreakerStatistics", "snapshot"]


@dataclass(frozen=True, slots=True)
class CircuitBreakerStatistics:
    """A snapshot of a :class:`CircuitBreaker`.

    ``calls``, ``failures``, ``slow_calls``, ``failure_rate`` and
    ``slow_call_rate`` describe the current window (rates are 0.0 when it is
    empty). Everything else is a running total since the breaker was
    created: ``rejected`` and the ``*_total`` counters (what metrics read),
    and ``transitions``, the number of state changes by ``(from, to)``.

    Example::

        stats = breaker.stats
        print(f"{stats.state.value}: {stats.failures}/{stats.calls} failed "
              f"({stats.failure_rate:.0%}), {stats.rejected} rejected so far")
    """

    state: CircuitState
    calls: int
    failures: int
    slow_calls: int
    failure_rate: float
    slow_call_rate: float
    rejected: int
    successful_total: int
    """Calls recorded as successes (including exceptions neither recorded nor ignored)."""
    failed_total: int
    """Calls recorded as failures (a recorded exception or a ``failure_result``)."""
    ignored_total: int
    """Calls that raised an exception matched by ``ignore``."""
    slow_total: int
    """Calls that took at least ``slow_call_duration`` (successful or failed)."""
    transitions: dict[tuple[CircuitState, CircuitState], int]


def snapshot(core: BreakerMachine, now: float) -> CircuitBreakerStatistics:
    """The statistics at ``now``, after the transitions time alone causes
    (which leaves them in ``core.changes`` for the shell to report)."""
    state = core.poll(now)
    calls, failures, slow = core.window.totals(now)
    return CircuitBreakerStatistics(
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
