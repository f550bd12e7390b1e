"""Sagas in Prometheus: runs, steps and compensations by outcome, and their
durations as summaries, read at scrape time like every policy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from resilience.contrib.prometheus import instrument
from resilience.saga import Parallel, Saga, SagaCompensated, SagaContext, Step
from resilience.testing import FakeClock

from .test_prometheus import scrape, unique


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    registry = CollectorRegistry()
    with instrument(registry):
        yield registry


class Declined(Exception):
    pass


def steps(clock: FakeClock) -> list[Any]:
    async def reserve(ctx: SagaContext) -> str:
        await clock.sleep(2)
        return "r1"

    async def release(ctx: SagaContext, result: Any) -> None:
        await clock.sleep(1)

    async def charge(ctx: SagaContext) -> None:
        await clock.sleep(0.5)
        if ctx.input == "decline":
            raise Declined

    async def label(ctx: SagaContext) -> str:
        return "l1"

    return [
        Step("reserve", reserve, compensate=release),
        Parallel(Step("charge", charge), Step("label", label)),
    ]


async def test_runs_steps_and_compensations_by_outcome(registry: CollectorRegistry) -> None:
    clock = FakeClock()
    name = unique("order")
    saga = Saga(name, steps(clock), clock=clock)
    await saga.run("ok")
    with pytest.raises(SagaCompensated):
        await saga.run("decline")
    series = scrape(registry, name)

    def value(sample: str, **labels: str) -> float:
        return series[(sample, tuple(sorted(labels.items())))]

    assert value("resilience_saga_runs_total", outcome="completed") == 1
    assert value("resilience_saga_runs_total", outcome="compensated") == 1
    assert value("resilience_saga_runs_total", outcome="failed") == 0
    assert value("resilience_saga_running") == 0
    assert value("resilience_saga_cancelled_total") == 0
    assert value("resilience_saga_steps_total", step="reserve", outcome="completed") == 2
    assert value("resilience_saga_steps_total", step="charge", outcome="failed") == 1
    assert value("resilience_saga_steps_total", step="charge", outcome="completed") == 1
    assert value("resilience_saga_compensations_total", step="reserve", outcome="compensated") == 1
    # The run that completed: 2 + 0.5 s; the compensated one: 2 + 0.5 + the 1 s undo.
    assert value("resilience_saga_run_duration_seconds_count", outcome="completed") == 1
    assert value("resilience_saga_run_duration_seconds_sum", outcome="completed") == 2.5
    assert value("resilience_saga_run_duration_seconds_sum", outcome="compensated") == 3.5
    assert (
        value("resilience_saga_step_duration_seconds_sum", step="reserve", outcome="completed") == 4
    )
    assert (
        value(
            "resilience_saga_compensation_duration_seconds_sum",
            step="reserve",
            outcome="compensated",
        )
        == 1
    )
    # Steps without a compensation have no compensation series.
    assert not [key for key in series if "compensation" in key[0] and ("step", "label") in key[1]]


async def test_sagas_sharing_a_name_are_summed(registry: CollectorRegistry) -> None:
    name = unique("shared-saga")
    first = Saga(name, [Step("only", lambda ctx: 1)])
    second = Saga(name, [Step("only", lambda ctx: 1)])
    first.run_sync()
    second.run_sync()
    second.run_sync()
    series = scrape(registry, name)
    assert series[("resilience_saga_runs_total", (("outcome", "completed"),))] == 3
    assert (
        series[("resilience_saga_steps_total", (("outcome", "completed"), ("step", "only")))] == 3
    )
