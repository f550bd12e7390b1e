"""The collector: every live policy read at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.metrics_core import HistogramMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from resilience import (
    Bulkhead,
    CircuitBreaker,
    CircuitState,
    Fallback,
    Hedge,
    Policy,
    PoolBulkhead,
    RateLimiter,
    Retry,
    Timeout,
)
from resilience.contrib.asgi import IdempotencyStats
from resilience.lowlevel import live_policies, live_sagas
from resilience.saga import Parallel, Saga

from . import _families
from ._durations import Durations, Histogram
from ._families import FAMILIES, HISTOGRAM, HISTOGRAM_HELP, Series

__all__ = ["ResilienceCollector"]

_STATES = tuple(CircuitState)
_RETRY_OUTCOMES = (
    "success_without_retry",
    "success_with_retry",
    "failed_without_retry",
    "failed_with_retry",
)
_RUN_OUTCOMES = ("completed", "compensated", "failed")
_STEP_OUTCOMES = ("completed", "failed", "cancelled")


class ResilienceCollector(Collector):
    """A ``prometheus_client`` collector that reads every live policy at scrape time.

    :func:`instrument` makes and registers one; build it yourself only to
    register it somewhere unusual (a custom registry wrapper). ``policies``
    returns the policies to read at each scrape (default: every live one,
    held weakly); the duration histogram is attached by :func:`instrument`.

    Example::

        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry()
        registry.register(ResilienceCollector())
        print(generate_latest(registry).decode())
    """

    def __init__(self, *, policies: Callable[[], Iterable[Policy]] | None = None) -> None:
        self._policies = policies if policies is not None else live_policies
        self._durations: Durations | None = None

    def describe(self) -> list[Metric]:
        """The families, without samples: lets the registry spot name clashes
        without running a whole collection at registration."""
        families: list[Metric] = [_families.family(name) for name in FAMILIES]
        if self._durations is not None:
            families.append(HistogramMetricFamily(HISTOGRAM, HISTOGRAM_HELP, labels=()))
        return families

    def collect(self) -> Iterator[Metric]:
        series = {name: Series() for name in FAMILIES}
        durations = self._durations
        timed: list[tuple[str, dict[str, Histogram]]] = []
        for policy in self._policies():
            name = policy.name
            if isinstance(policy, CircuitBreaker):
                self._read_breaker(policy, name, series)
            elif isinstance(policy, Retry):
                stats = policy.stats
                calls = series["resilience_retry_calls"]
                finished = 0
                for outcome in _RETRY_OUTCOMES:
                    count = getattr(stats, outcome)
                    finished += count
                    calls.add((name, outcome), count)
                series["resilience_retry_attempts"].add((name,), finished + stats.retries)
            elif isinstance(policy, Bulkhead | PoolBulkhead):
                bulkhead = policy.stats
                series["resilience_bulkhead_in_flight"].add((name,), bulkhead.in_flight)
                series["resilience_bulkhead_waiting"].add((name,), bulkhead.waiting)
                series["resilience_bulkhead_capacity"].add((name,), bulkhead.capacity)
                series["resilience_bulkhead_rejected"].add((name,), bulkhead.rejected)
            elif isinstance(policy, RateLimiter):
                limits = policy.stats
                series["resilience_rate_limiter_admitted"].add((name,), limits.admitted)
                series["resilience_rate_limiter_waited"].add((name,), limits.waited)
                series["resilience_rate_limiter_rejected"].add((name,), limits.rejected)
                series["resilience_rate_limiter_wait_seconds"].add((name,), limits.wait_seconds)
            elif isinstance(policy, Timeout):
                timeouts = policy.stats
                series["resilience_timeouts"].add((name,), timeouts.timeouts)
                series["resilience_timeout_seconds"].add((name,), timeouts.seconds)
            elif isinstance(policy, Hedge):
                hedges = policy.stats
                series["resilience_hedge_calls"].add((name,), hedges.calls)
                series["resilience_hedges"].add((name,), hedges.hedges)
                series["resilience_hedge_wins"].add((name,), hedges.won)
                series["resilience_hedge_cancelled"].add((name,), hedges.cancelled)
            elif isinstance(policy, Fallback):
                series["resilience_fallbacks"].add((name,), policy.uses)
            if durations is not None:
                per_outcome = durations.series.get(id(policy))
                if per_outcome:
                    timed.append((name, dict(per_outcome)))
        for saga in live_sagas():
            self._read_saga(saga, series)
        for keys in IdempotencyStats.live():
            self._read_idempotency(keys, series)
        for family_name, values in series.items():
            family = _families.family(family_name)
            if isinstance(family, SummaryMetricFamily):
                counts = values.counts
                for labels, value in sorted(values.values.items()):
                    family.add_metric(labels, counts[labels], value)
            else:
                for labels, value in sorted(values.values.items()):
                    family.add_metric(labels, value)
            yield family
        if durations is not None:
            yield self._histogram(durations.bounds, timed)

    @staticmethod
    def _read_breaker(breaker: CircuitBreaker, name: str, series: dict[str, Series]) -> None:
        stats = breaker.stats  # applies time-based transitions due by now
        state = series["resilience_circuit_breaker_state"]
        for each in _STATES:
            state.add((name, each.value), 1 if each is stats.state else 0)
        transitions = series["resilience_circuit_breaker_transitions"]
        for (old, new), count in stats.transitions.items():
            transitions.add((name, old.value, new.value), count)
        calls = series["resilience_circuit_breaker_calls"]
        calls.add((name, "success"), stats.successful_total)
        calls.add((name, "failure"), stats.failed_total)
        calls.add((name, "ignored"), stats.ignored_total)
        calls.add((name, "rejected"), stats.rejected)
        series["resilience_circuit_breaker_slow_calls"].add((name,), stats.slow_total)

    @staticmethod
    def _read_idempotency(stats: IdempotencyStats, series: dict[str, Series]) -> None:
        name = stats.name
        requests = series["resilience_idempotency_requests"]
        for outcome, count in (
            ("ran", stats.ran),
            ("replayed", stats.replayed),
            ("conflict", stats.conflicts),
            ("mismatch", stats.mismatches),
            ("invalid", stats.invalid),
            ("unavailable", stats.unavailable),
            ("unprotected", stats.unprotected),
        ):
            requests.add((name, outcome), count)
        series["resilience_idempotency_stored"].add((name,), stats.stored)
        series["resilience_idempotency_lease_takeovers"].add((name,), stats.taken_over)
        series["resilience_idempotency_fenced"].add((name,), stats.fenced)
        series["resilience_idempotency_store_errors"].add((name,), stats.store_errors)

    @staticmethod
    def _read_saga(saga: Saga, series: dict[str, Series]) -> None:
        stats = saga.stats
        name = saga.name
        series["resilience_saga_running"].add((name,), stats.running)
        series["resilience_saga_cancelled"].add((name,), stats.cancelled)
        runs = series["resilience_saga_runs"]
        run_seconds = series["resilience_saga_run_duration_seconds"]
        for outcome in _RUN_OUTCOMES:
            count = getattr(stats, outcome)
            runs.add((name, outcome), count)
            run_seconds.observed((name, outcome), count, stats.seconds[outcome])
        steps = series["resilience_saga_steps"]
        step_seconds = series["resilience_saga_step_duration_seconds"]
        undos = series["resilience_saga_compensations"]
        undo_seconds = series["resilience_saga_compensation_duration_seconds"]
        undoable = {
            step.name
            for entry in saga.steps
            for step in (entry.steps if isinstance(entry, Parallel) else (entry,))
            if step.compensate is not None
        }
        for step, each in stats.steps.items():
            for outcome in _STEP_OUTCOMES:
                count = getattr(each, outcome)
                steps.add((name, step, outcome), count)
                step_seconds.observed((name, step, outcome), count, each.seconds[outcome])
            if step not in undoable:
                continue  # nothing to undo: no series that could only ever read 0
            for outcome, count, key in (
                ("compensated", each.compensated, "compensated"),
                ("failed", each.compensations_failed, "compensation_failed"),
            ):
                undos.add((name, step, outcome), count)
                undo_seconds.observed((name, step, outcome), count, each.seconds[key])

    @staticmethod
    def _histogram(
        bounds: tuple[float, ...], timed: list[tuple[str, dict[str, Histogram]]]
    ) -> HistogramMetricFamily:
        merged: dict[tuple[str, str], tuple[list[int], float]] = {}
        for name, per_outcome in timed:
            for outcome, histogram in per_outcome.items():
                counts, total = merged.get((name, outcome), ([0] * (len(bounds) + 1), 0.0))
                merged[name, outcome] = (
                    [a + b for a, b in zip(counts, histogram.counts, strict=True)],
                    total + histogram.total,
                )
        family = HistogramMetricFamily(HISTOGRAM, HISTOGRAM_HELP, labels=("name", "outcome"))
        les = [_families.le(bound) for bound in bounds] + ["+Inf"]
        for labels, (counts, total) in sorted(merged.items()):
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for le, count in zip(les, counts, strict=True):
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric(labels, buckets, total)
        return family
