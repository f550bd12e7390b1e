"""Prometheus metrics for every policy, read at scrape time.

:func:`instrument` registers one custom collector. At each scrape it walks the
policies alive at that moment and reads the plain counters they keep anyway
(``stats``), so a call pays nothing for being measured. Only the opt-in
latency histogram (``durations=True``) does work per call.

Example::

    import prometheus_client
    from resilience.contrib.prometheus import instrument

    instrument()                          # the default registry
    prometheus_client.start_http_server(9100)

Metric families (label values come only from policy, saga, step and middleware names; see
docs/metrics.md):

================================================= ========== ==========================
metric                                            type       labels
================================================= ========== ==========================
``resilience_circuit_breaker_state``              gauge      name, state
``resilience_circuit_breaker_transitions_total``  counter    name, from_state, to_state
``resilience_circuit_breaker_calls_total``        counter    name, outcome
``resilience_circuit_breaker_slow_calls_total``   counter    name
``resilience_retry_calls_total``                  counter    name, outcome
``resilience_retry_attempts_total``               counter    name
``resilience_bulkhead_in_flight``                 gauge      name
``resilience_bulkhead_waiting``                   gauge      name
``resilience_bulkhead_capacity``                  gauge      name
``resilience_bulkhead_rejected_total``            counter    name
``resilience_rate_limiter_admitted_total``        counter    name
``resilience_rate_limiter_waited_total``          counter    name
``resilience_rate_limiter_rejected_total``        counter    name
``resilience_rate_limiter_wait_seconds_total``    counter    name
``resilience_timeouts_total``                     counter    name
``resilience_timeout_seconds``                    gauge      name
``resilience_hedge_calls_total``                  counter    name
``resilience_hedges_total``                       counter    name
``resilience_hedge_wins_total``                   counter    name
``resilience_hedge_cancelled_total``              counter    name
``resilience_fallbacks_total``                    counter    name
``resilience_idempotency_requests_total``         counter    name, outcome
``resilience_idempotency_stored_total``           counter    name
``resilience_idempotency_lease_takeovers_total``  counter    name
``resilience_idempotency_fenced_total``           counter    name
``resilience_idempotency_store_errors_total``     counter    name
``resilience_saga_runs_total``                    counter    name, outcome
``resilience_saga_running``                       gauge      name
``resilience_saga_cancelled_total``               counter    name
``resilience_saga_steps_total``                   counter    name, step, outcome
``resilience_saga_compensations_total``           counter    name, step, outcome
``resilience_saga_run_duration_seconds``          summary    name, outcome
``resilience_saga_step_duration_seconds``         summary    name, step, outcome
``resilience_saga_compensation_duration_seconds`` summary    name, step, outcome
``resilience_call_duration_seconds``              histogram  name, outcome (opt-in)
================================================= ========== ==========================
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Sequence

from resilience.contrib import _extras

with _extras.needs_extra(__name__, "prometheus"):
    from prometheus_client import REGISTRY, CollectorRegistry

from ._collector import ResilienceCollector
from ._durations import Durations, add_store, remove_store
from ._families import DEFAULT_BUCKETS, DURATION_OUTCOMES, METRIC_NAMES

__all__ = [
    "DEFAULT_BUCKETS",
    "DURATION_OUTCOMES",
    "METRIC_NAMES",
    "Instrumentation",
    "ResilienceCollector",
    "instrument",
]


class Instrumentation:
    """What :func:`instrument` returns: :meth:`close` undoes it.

    Also a context manager, for tests.

    Example::

        with instrument(CollectorRegistry(), durations=True) as metrics:
            ...
        assert metrics.closed
    """

    __slots__ = ("_collector", "_store", "closed", "durations", "registry")

    def __init__(
        self,
        registry: CollectorRegistry,
        collector: ResilienceCollector,
        store: Durations | None,
    ) -> None:
        self.registry = registry
        self.durations = store is not None
        self.closed = False
        self._collector = collector
        self._store = store

    @property
    def collector(self) -> ResilienceCollector:
        return self._collector

    def close(self) -> None:
        """Unregister the collector and, with durations, stop timing calls.
        Closing twice does nothing.

        Example::

            metrics = instrument()
            metrics.close()
        """
        with _instrumented_lock:
            if self.closed:
                return
            self.closed = True
            if _instrumented.get(self.registry) is self:
                del _instrumented[self.registry]
        self.registry.unregister(self._collector)
        if self._store is not None:
            remove_store(self._store)

    def __enter__(self) -> Instrumentation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        status = "closed" if self.closed else "open"
        return f"<Instrumentation {status} durations={self.durations}>"


_instrumented: weakref.WeakKeyDictionary[CollectorRegistry, Instrumentation] = (
    weakref.WeakKeyDictionary()
)
_instrumented_lock = threading.Lock()


def instrument(
    registry: CollectorRegistry = REGISTRY,
    *,
    durations: bool = False,
    buckets: Sequence[float] = DEFAULT_BUCKETS,
) -> Instrumentation:
    """Expose every policy, existing and future, to Prometheus through ``registry``.

    Policies need no change and pay nothing per call: a collector reads their
    counters at each scrape. Unnamed policies appear under their generated
    names (``retry-1``...); a policy that has been garbage-collected is gone
    from the next scrape.

    - ``durations=True`` adds the ``resilience_call_duration_seconds``
      histogram (labels ``name``, ``outcome``), which times every policy's
      span of every call: two clock reads and a bucket increment per policy.
      It is a call observer (:func:`resilience.lowlevel.add_observer`), so
      it times everything, whenever it was built or decorated.
    - ``buckets``: the histogram's upper bounds in seconds.

    Calling it again for the same registry returns the same
    :class:`Instrumentation` (a different ``durations`` raises
    ``ValueError``). :meth:`Instrumentation.close` undoes it.

    Example::

        from prometheus_client import start_http_server
        from resilience.contrib.prometheus import instrument

        metrics = instrument(durations=True)
        start_http_server(9100)
        ...
        metrics.close()
    """
    if not isinstance(registry, CollectorRegistry):
        raise TypeError(f"registry must be a prometheus_client CollectorRegistry, got {registry!r}")
    if isinstance(buckets, str | bytes) or not all(
        isinstance(b, int | float) and not isinstance(b, bool) for b in buckets
    ):
        raise TypeError(f"buckets must be a sequence of numbers, got {buckets!r}")
    bounds = tuple(float(b) for b in buckets)
    if bounds and bounds[-1] == math.inf:
        bounds = bounds[:-1]  # +Inf is always there
    if (
        not bounds
        or any(not math.isfinite(b) for b in bounds)
        or list(bounds) != sorted(set(bounds))
    ):
        raise ValueError(
            f"buckets must be finite, strictly increasing upper bounds, got {tuple(buckets)!r}"
        )
    with _instrumented_lock:
        existing = _instrumented.get(registry)
        if existing is not None:
            if existing.durations != durations:
                raise ValueError(
                    f"this registry is already instrumented with durations={existing.durations}; "
                    "close() that Instrumentation first to change it"
                )
            return existing
        collector = ResilienceCollector()
        store = Durations(bounds) if durations else None
        collector._durations = store
        registry.register(collector)  # raises if another collector owns these names
        if store is not None:
            add_store(store)
        handle = _instrumented[registry] = Instrumentation(registry, collector, store)
    return handle
