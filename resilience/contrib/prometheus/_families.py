"""The metric families: one table that the collector, ``describe()`` and the docs all read."""

from __future__ import annotations

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    SummaryMetricFamily,
)
from prometheus_client.utils import floatToGoString

from resilience import CircuitState

__all__ = [
    "DEFAULT_BUCKETS",
    "DURATION_OUTCOMES",
    "FAMILIES",
    "HISTOGRAM",
    "HISTOGRAM_HELP",
    "METRIC_NAMES",
    "Series",
    "family",
    "le",
]

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
"""Upper bounds (seconds) of the duration histogram's buckets, as prometheus_client's.

Example::

    instrument(durations=True, buckets=(*DEFAULT_BUCKETS, 30.0, 60.0))
"""

DURATION_OUTCOMES = ("success", "failure", "rejected", "timeout")
"""The ``outcome`` label values of ``resilience_call_duration_seconds``.

Example::

    for outcome in DURATION_OUTCOMES:   # "success", "failure", "rejected", "timeout"
        print(f'resilience_call_duration_seconds_count{{outcome="{outcome}"}}')
"""

_STATES = tuple(CircuitState)
_BREAKER_OUTCOMES = ("success", "failure", "ignored", "rejected")
_RETRY_OUTCOMES = (
    "success_without_retry",
    "success_with_retry",
    "failed_without_retry",
    "failed_with_retry",
)

# name -> (type, help, label names). The single source of the families: the
# collector, describe() and the docs table are all read from here.
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "resilience_circuit_breaker_state": (
        "gauge",
        "Circuit breakers of this name in this state: 1 for the current state, "
        "0 for the others (more only if several live breakers share a name).",
        ("name", "state"),
    ),
    "resilience_circuit_breaker_transitions": (
        "counter",
        "Circuit breaker state changes by from_state and to_state "
        "(a pair appears once it has happened).",
        ("name", "from_state", "to_state"),
    ),
    "resilience_circuit_breaker_calls": (
        "counter",
        "Calls through a circuit breaker by outcome: success, failure (recorded as a "
        "failure), ignored (an ignored exception), rejected (not run: breaker open).",
        ("name", "outcome"),
    ),
    "resilience_circuit_breaker_slow_calls": (
        "counter",
        "Calls that took at least the breaker's slow_call_duration (successful or failed).",
        ("name",),
    ),
    "resilience_retry_calls": (
        "counter",
        "Finished calls through a retry policy by outcome "
        "(with_retry: more than one attempt was made).",
        ("name", "outcome"),
    ),
    "resilience_retry_attempts": (
        "counter",
        "Attempts made by a retry policy, first attempts included: finished calls plus "
        "retries (a call still running counts only its retries so far). "
        "Retries = attempts - calls.",
        ("name",),
    ),
    "resilience_bulkhead_in_flight": (
        "gauge",
        "Calls holding a bulkhead permit now (for a pool bulkhead: busy worker threads).",
        ("name",),
    ),
    "resilience_bulkhead_waiting": (
        "gauge",
        "Callers waiting for a bulkhead permit now (for a pool bulkhead: queued calls).",
        ("name",),
    ),
    "resilience_bulkhead_capacity": (
        "gauge",
        "A bulkhead's max_concurrent (its current value after resize), or a pool's workers.",
        ("name",),
    ),
    "resilience_bulkhead_rejected": (
        "counter",
        "Calls a bulkhead rejected, at once or when their wait ran out.",
        ("name",),
    ),
    "resilience_rate_limiter_admitted": (
        "counter",
        "Calls a rate limiter let through, at once or after a wait.",
        ("name",),
    ),
    "resilience_rate_limiter_waited": (
        "counter",
        "Calls a rate limiter let through after making them wait for their slot.",
        ("name",),
    ),
    "resilience_rate_limiter_rejected": (
        "counter",
        "Calls a rate limiter refused (RateLimitedError). Keyed limiters are labelled "
        "by the limiter's name only, never by key.",
        ("name",),
    ),
    "resilience_rate_limiter_wait_seconds": (
        "counter",
        "Seconds the calls a rate limiter admitted after a wait spent waiting, added up.",
        ("name",),
    ),
    "resilience_timeouts": (
        "counter",
        "Calls a timeout policy cancelled because their time was up.",
        ("name",),
    ),
    "resilience_timeout_seconds": (
        "gauge",
        "The limit a timeout policy applies now (an adaptive timeout's moves).",
        ("name",),
    ),
    "resilience_hedge_calls": (
        "counter",
        "Calls made through a hedge policy.",
        ("name",),
    ),
    "resilience_hedges": (
        "counter",
        "Attempts a hedge policy started besides the first (its extra load).",
        ("name",),
    ),
    "resilience_hedge_wins": (
        "counter",
        "Calls whose answer came from a hedged attempt, not the first.",
        ("name",),
    ),
    "resilience_hedge_cancelled": (
        "counter",
        "Attempts a hedge policy cancelled because another answered first.",
        ("name",),
    ),
    "resilience_fallbacks": (
        "counter",
        "Failures (or rejected results) a fallback policy replaced with its substitute.",
        ("name",),
    ),
    "resilience_idempotency_requests": (
        "counter",
        "Keyed requests through an IdempotencyMiddleware by outcome: ran, replayed (the "
        "stored response), conflict (409, still running), mismatch (422, another request's "
        "key), invalid (400 or 413), unavailable (503, store down), unprotected (store down, "
        "run unchecked: fail_open).",
        ("name", "outcome"),
    ),
    "resilience_idempotency_stored": (
        "counter",
        "Responses an IdempotencyMiddleware stored for replay.",
        ("name",),
    ),
    "resilience_idempotency_lease_takeovers": (
        "counter",
        "Keys claimed from a lease that had run out (its holder crashed, stalled or died).",
        ("name",),
    ),
    "resilience_idempotency_fenced": (
        "counter",
        "Requests that lost their lease while running: their response was not stored.",
        ("name",),
    ),
    "resilience_idempotency_store_errors": (
        "counter",
        "Calls to an IdempotencyMiddleware's store that raised.",
        ("name",),
    ),
    "resilience_saga_runs": (
        "counter",
        "Finished saga runs by outcome: completed (every step succeeded), compensated "
        "(a step failed or the run was cancelled, and every compensation succeeded), "
        "failed (a compensation failed: the run needs a human).",
        ("name", "outcome"),
    ),
    "resilience_saga_running": (
        "gauge",
        "Saga runs in progress now.",
        ("name",),
    ),
    "resilience_saga_cancelled": (
        "counter",
        "Saga runs cancelled while running (also counted in resilience_saga_runs_total).",
        ("name",),
    ),
    "resilience_saga_steps": (
        "counter",
        "Saga step actions by outcome: completed, failed, cancelled (under the step's "
        "policy: one per step run, whatever its retries).",
        ("name", "step", "outcome"),
    ),
    "resilience_saga_compensations": (
        "counter",
        "Saga compensations by outcome: compensated, failed (after the compensation "
        "policy's retries).",
        ("name", "step", "outcome"),
    ),
    "resilience_saga_run_duration_seconds": (
        "summary",
        "Duration of finished saga runs by outcome, compensation included.",
        ("name", "outcome"),
    ),
    "resilience_saga_step_duration_seconds": (
        "summary",
        "Duration of saga step actions by outcome, under the step's policy.",
        ("name", "step", "outcome"),
    ),
    "resilience_saga_compensation_duration_seconds": (
        "summary",
        "Duration of saga compensations by outcome, under the compensation policy.",
        ("name", "step", "outcome"),
    ),
}

HISTOGRAM = "resilience_call_duration_seconds"
HISTOGRAM_HELP = (
    "Duration of calls through a policy, seen from its caller: success (returned), "
    "rejected (CircuitOpenError or BulkheadFullError), timeout (resilience.TimeoutError), "
    "failure (any other exception). Opt-in: instrument(durations=True)."
)

_SAMPLE_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "summary": ("_count", "_sum")}

METRIC_NAMES: frozenset[str] = frozenset(
    {name + suffix for name, (kind, _, _) in FAMILIES.items() for suffix in _SAMPLE_SUFFIXES[kind]}
    | {f"{HISTOGRAM}_bucket", f"{HISTOGRAM}_sum", f"{HISTOGRAM}_count"}
)
"""Every sample name the exporter can emit (the histogram's only with ``durations=True``).

Example::

    assert "resilience_retry_attempts_total" in METRIC_NAMES
"""


def le(bound: float) -> str:
    """A bucket bound as the ``le`` label, formatted as prometheus_client does."""
    text: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
    return text


def family(name: str) -> CounterMetricFamily | GaugeMetricFamily | SummaryMetricFamily:
    kind, help_text, labels = FAMILIES[name]
    if kind == "counter":
        return CounterMetricFamily(name, help_text, labels=labels)
    if kind == "summary":
        return SummaryMetricFamily(name, help_text, labels=labels)
    return GaugeMetricFamily(name, help_text, labels=labels)


class Series:
    """Samples of one family keyed by label values. Several live policies may
    share a name; their values are summed so a scrape never holds the same
    series twice (Prometheus rejects duplicate series). A summary's value is
    its sum of seconds, beside a count."""

    __slots__ = ("counts", "values")

    def __init__(self) -> None:
        self.values: dict[tuple[str, ...], float] = {}
        self.counts: dict[tuple[str, ...], int] = {}

    def add(self, labels: tuple[str, ...], value: float) -> None:
        self.values[labels] = self.values.get(labels, 0) + value

    def observed(self, labels: tuple[str, ...], count: int, seconds: float) -> None:
        """A summary's ``count`` observations adding up to ``seconds``."""
        self.counts[labels] = self.counts.get(labels, 0) + count
        self.add(labels, seconds)
