"""What a saga counts: runs, steps and compensations by outcome, with the
seconds they took (exported by :mod:`resilience.saga`).

The counters are plain lists of ints and floats, bumped by a run as it goes
(:mod:`resilience._saga_state`) and read whole only when someone asks
(``saga.stats``, a Prometheus scrape), as every policy's counters are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "CANCELLED",
    "COMPENSATED",
    "COMPENSATION_FAILED",
    "COMPENSATION_OUTCOMES",
    "COMPLETED",
    "FAILED",
    "RUN_COMPENSATED",
    "RUN_COMPLETED",
    "RUN_FAILED",
    "RUN_OUTCOMES",
    "STEP_KEYS",
    "STEP_OUTCOMES",
    "SagaStatistics",
    "SagaStepStatistics",
    "Tally",
    "statistics",
]

# What happens to a step: its action's three outcomes, then its compensation's two.
COMPLETED, FAILED, CANCELLED, COMPENSATED, COMPENSATION_FAILED = range(5)
STEP_OUTCOMES = ("completed", "failed", "cancelled")
"""The outcomes of a step's action, as metric labels."""
COMPENSATION_OUTCOMES = ("compensated", "failed")
"""The outcomes of a step's compensation, as metric labels."""
STEP_KEYS = (*STEP_OUTCOMES, "compensated", "compensation_failed")
"""What a step's tally holds, by index (the keys of its ``seconds``)."""

RUN_COMPLETED, RUN_COMPENSATED, RUN_FAILED = range(3)
RUN_OUTCOMES = ("completed", "compensated", "failed")
"""How a run ends, as metric labels (the run states that are final)."""


class Tally:
    """Counts and seconds by outcome index, for a run or one step."""

    __slots__ = ("counts", "seconds")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.seconds = [0.0] * size


@dataclass(frozen=True, slots=True)
class SagaStepStatistics:
    """One step's totals in one :class:`~resilience.saga.Saga`, since it was created.

    ``seconds`` holds the time spent, added up, by outcome: ``"completed"``,
    ``"failed"`` and ``"cancelled"`` for the action (under its policy, so
    retries included), ``"compensated"`` and ``"compensation_failed"`` for
    the compensation.

    Example::

        charge = saga.stats.steps["charge"]
        print(f"{charge.failed} charges failed, {charge.compensated} were refunded")
        mean = charge.seconds["completed"] / charge.completed if charge.completed else 0.0
    """

    completed: int
    failed: int
    cancelled: int
    compensated: int
    compensations_failed: int
    seconds: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class SagaStatistics:
    """Running totals of a :class:`~resilience.saga.Saga` since it was created.

    ``seconds`` holds the runs' durations added up by how they ended
    (``"completed"``, ``"compensated"``, ``"failed"``); ``steps`` the totals
    of each step, by name.

    Example::

        stats = saga.stats
        if stats.failed:
            print(f"{stats.failed} runs could not be compensated")
    """

    running: int
    """Runs in progress now."""
    completed: int
    """Runs whose every step succeeded."""
    compensated: int
    """Runs that failed (or were cancelled) and were wholly compensated."""
    failed: int
    """Runs in which a compensation failed: each needs a human."""
    cancelled: int
    """Runs cancelled while running (counted in compensated or failed as well)."""
    steps_completed: int
    steps_failed: int
    steps_cancelled: int
    compensations: int
    """Compensations that succeeded."""
    compensations_failed: int
    seconds: Mapping[str, float]
    steps: Mapping[str, SagaStepStatistics]


def statistics(
    running: int, cancelled: int, runs: Tally, steps: dict[str, Tally]
) -> SagaStatistics:
    """A frozen snapshot of a saga's counters."""
    per_step = {}
    totals = [0] * len(STEP_KEYS)
    for name, tally in steps.items():
        counts = tally.counts
        for index, count in enumerate(counts):
            totals[index] += count
        per_step[name] = SagaStepStatistics(
            completed=counts[COMPLETED],
            failed=counts[FAILED],
            cancelled=counts[CANCELLED],
            compensated=counts[COMPENSATED],
            compensations_failed=counts[COMPENSATION_FAILED],
            seconds=MappingProxyType(dict(zip(STEP_KEYS, tally.seconds, strict=True))),
        )
    return SagaStatistics(
        running=running,
        completed=runs.counts[RUN_COMPLETED],
        compensated=runs.counts[RUN_COMPENSATED],
        failed=runs.counts[RUN_FAILED],
        cancelled=cancelled,
        steps_completed=totals[COMPLETED],
        steps_failed=totals[FAILED],
        steps_cancelled=totals[CANCELLED],
        compensations=totals[COMPENSATED],
        compensations_failed=totals[COMPENSATION_FAILED],
        seconds=MappingProxyType(dict(zip(RUN_OUTCOMES, runs.seconds, strict=True))),
        steps=MappingProxyType(per_step),
    )
