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

Metric families (label values come only from policy names; see docs/metrics.md):

================================================ ========= ==========================
metric                                           type      labels
================================================ ========= ==========================
``resilience_circuit_breaker_state``             gauge     name, state
``resilience_circuit_breaker_transitions_total`` counter   name, from_state, to_state
``resilience_circuit_breaker_calls_total``       counter   name, outcome
``resilience_circuit_breaker_slow_calls_total``  counter   name
``resilience_retry_calls_total``                 counter   name, outcome
``resilience_retry_attempts_total``              counter   name
``resilience_bulkhead_in_flight``                gauge     name
``resilience_bulkhead_waiting``                  gauge     name
``resilience_bulkhead_capacity``                 gauge     name
``resilience_bulkhead_rejected_total``           counter   name
``resilience_timeouts_total``                    counter   name
``resilience_fallbacks_total``                   counter   name
``resilience_call_duration_seconds``             histogram name, outcome (opt-in)
================================================ ========= ==========================
"""

from __future__ import annotations

import bisect
import functools
import math
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from resilience import _registry
from resilience.breaker import CircuitBreaker
from resilience.bulkhead import Bulkhead, PoolBulkhead
from resilience.errors import BulkheadFullError, CircuitOpenError, TimeoutError
from resilience.events import CircuitState
from resilience.fallback import Fallback
from resilience.pipeline import Pipeline
from resilience.policy import Policy
from resilience.retry import Retry
from resilience.timeout import Timeout

__all__ = [
    "DEFAULT_BUCKETS",
    "DURATION_OUTCOMES",
    "METRIC_NAMES",
    "Instrumentation",
    "ResilienceCollector",
    "instrument",
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
"""Upper bounds (seconds) of the duration histogram's buckets, as prometheus_client's."""

DURATION_OUTCOMES = ("success", "failure", "rejected", "timeout")
"""The ``outcome`` label values of ``resilience_call_duration_seconds``."""

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
_FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
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
    "resilience_timeouts": (
        "counter",
        "Calls a timeout policy cancelled because their time was up.",
        ("name",),
    ),
    "resilience_fallbacks": (
        "counter",
        "Failures (or rejected results) a fallback policy replaced with its substitute.",
        ("name",),
    ),
}

_HISTOGRAM = "resilience_call_duration_seconds"
_HISTOGRAM_HELP = (
    "Duration of calls through a policy, seen from its caller: success (returned), "
    "rejected (CircuitOpenError or BulkheadFullError), timeout (resilience.TimeoutError), "
    "failure (any other exception). Opt-in: instrument(durations=True)."
)

METRIC_NAMES: frozenset[str] = frozenset(
    {f"{name}_total" if kind == "counter" else name for name, (kind, _, _) in _FAMILIES.items()}
    | {f"{_HISTOGRAM}_bucket", f"{_HISTOGRAM}_sum", f"{_HISTOGRAM}_count"}
)
"""Every sample name the exporter can emit (the histogram's only with ``durations=True``)."""


def _le(bound: float) -> str:
    """A bucket bound as the ``le`` label, formatted as prometheus_client does."""
    text: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
    return text


def _family(name: str) -> CounterMetricFamily | GaugeMetricFamily:
    kind, help_text, labels = _FAMILIES[name]
    if kind == "counter":
        return CounterMetricFamily(name, help_text, labels=labels)
    return GaugeMetricFamily(name, help_text, labels=labels)


class _Series:
    """Samples of one family keyed by label values. Several live policies may
    share a name; their values are summed so a scrape never holds the same
    series twice (Prometheus rejects duplicate series)."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: dict[tuple[str, ...], float] = {}

    def add(self, labels: tuple[str, ...], value: float) -> None:
        self.values[labels] = self.values.get(labels, 0) + value


# Durations (opt-in) ---------------------------------------------------------


class _Histogram:
    __slots__ = ("counts", "total")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size  # per bucket, not cumulative; the last is +Inf
        self.total = 0.0


class _Durations:
    """One registry's duration histograms, per live policy and outcome.

    Keyed by ``id(policy)`` because a dict lookup by int is the cheapest thing
    a timed call can do; a finalizer drops the entry when the policy is
    collected, before its id can be reused. Updates are plain list and float
    increments with no call in between (atomic under the GIL, as the
    bulkheads' counters).
    """

    __slots__ = ("bounds", "finalizers", "series")

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = tuple(buckets)
        self.series: dict[int, dict[str, _Histogram]] = {}
        self.finalizers: list[weakref.finalize[Any, Any]] = []

    def observe(self, policy: Policy, outcome: str, seconds: float) -> None:
        key = id(policy)
        per_outcome = self.series.get(key)
        if per_outcome is None:
            per_outcome = self.series[key] = {}
            self.finalizers.append(weakref.finalize(policy, self.series.pop, key, None))
        histogram = per_outcome.get(outcome)
        if histogram is None:
            histogram = per_outcome[outcome] = _Histogram(len(self.bounds) + 1)
        histogram.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        histogram.total += seconds

    def close(self) -> None:
        for finalizer in self.finalizers:
            finalizer.detach()
        self.finalizers.clear()
        self.series.clear()


# The stores the timed methods feed; a tuple replaced as a whole, so a call
# iterating it never sees it change under its feet.
_stores: tuple[_Durations, ...] = ()
_patch_lock = threading.Lock()
_originals: dict[tuple[type, str], Any] = {}
_perf_counter = time.perf_counter


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, CircuitOpenError | BulkheadFullError):
        return "rejected"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "failure"


def _observe(policy: Policy, outcome: str, seconds: float) -> None:
    for store in _stores:
        store.observe(policy, outcome, seconds)


def _timed_call(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(original)
    async def call(self: Policy, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        start = _perf_counter()
        try:
            result = await original(self, fn, *args, **kwargs)
        except Exception as exc:
            _observe(self, _outcome(exc), _perf_counter() - start)
            raise
        # Cancellation and other BaseExceptions are no outcome: not observed.
        # The success path loops inline: one call fewer on the common case.
        seconds = _perf_counter() - start
        for store in _stores:
            store.observe(self, "success", seconds)
        return result

    return call


def _timed_call_sync(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def call_sync(self: Policy, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        start = _perf_counter()
        try:
            result = original(self, fn, *args, **kwargs)
        except Exception as exc:
            _observe(self, _outcome(exc), _perf_counter() - start)
            raise
        seconds = _perf_counter() - start
        for store in _stores:
            store.observe(self, "success", seconds)
        return result

    return call_sync


def _decorate_through_call(self: Policy, fn: Any, /) -> Any:
    # Bulkhead and CircuitBreaker decorators inline their call paths for
    # speed, which would bypass the timed call(); while durations are on,
    # decorate through call()/call_sync() like every other policy.
    return Policy.__call__(self, fn)


# Our policies' shells. Patched on the class, not per instance: the policies
# have __slots__, and the cost must stay off them when durations are off.
_TIMED_CLASSES: tuple[type[Policy], ...] = (
    Retry,
    CircuitBreaker,
    Timeout,
    Bulkhead,
    PoolBulkhead,
    Fallback,
    Pipeline,
)
_INLINED_DECORATORS: tuple[type[Policy], ...] = (Bulkhead, CircuitBreaker)


def _patch() -> None:
    Policy._inline = False
    for cls in _TIMED_CLASSES:
        for attr, wrap in (("call", _timed_call), ("call_sync", _timed_call_sync)):
            original = cls.__dict__[attr]
            _originals[cls, attr] = original
            setattr(cls, attr, wrap(original))
    for cls in _INLINED_DECORATORS:
        _originals[cls, "__call__"] = cls.__dict__["__call__"]
        setattr(cls, "__call__", _decorate_through_call)  # noqa: B010


def _unpatch() -> None:
    Policy._inline = True
    for (cls, attr), original in _originals.items():
        setattr(cls, attr, original)
    _originals.clear()


def _add_store(store: _Durations) -> None:
    global _stores
    with _patch_lock:
        if not _stores:
            _patch()
        _stores = (*_stores, store)


def _remove_store(store: _Durations) -> None:
    global _stores
    with _patch_lock:
        if store not in _stores:
            return
        _stores = tuple(s for s in _stores if s is not store)
        if not _stores:
            _unpatch()
    store.close()


# The collector ----------------------------------------------------------------


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
        self._policies = policies if policies is not None else _registry.live_policies
        self._durations: _Durations | None = None

    def describe(self) -> list[Metric]:
        """The families, without samples: lets the registry spot name clashes
        without running a whole collection at registration."""
        families: list[Metric] = [_family(name) for name in _FAMILIES]
        if self._durations is not None:
            families.append(HistogramMetricFamily(_HISTOGRAM, _HISTOGRAM_HELP, labels=()))
        return families

    def collect(self) -> Iterator[Metric]:
        series = {name: _Series() for name in _FAMILIES}
        durations = self._durations
        timed: list[tuple[str, dict[str, _Histogram]]] = []
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
            elif isinstance(policy, Timeout):
                series["resilience_timeouts"].add((name,), policy.stats.timeouts)
            elif isinstance(policy, Fallback):
                series["resilience_fallbacks"].add((name,), policy.uses)
            if durations is not None:
                per_outcome = durations.series.get(id(policy))
                if per_outcome:
                    timed.append((name, dict(per_outcome)))
        for family_name, values in series.items():
            family = _family(family_name)
            for labels, value in sorted(values.values.items()):
                family.add_metric(labels, value)
            yield family
        if durations is not None:
            yield self._histogram(durations.bounds, timed)

    @staticmethod
    def _read_breaker(breaker: CircuitBreaker, name: str, series: dict[str, _Series]) -> None:
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
    def _histogram(
        bounds: tuple[float, ...], timed: list[tuple[str, dict[str, _Histogram]]]
    ) -> HistogramMetricFamily:
        merged: dict[tuple[str, str], tuple[list[int], float]] = {}
        for name, per_outcome in timed:
            for outcome, histogram in per_outcome.items():
                counts, total = merged.get((name, outcome), ([0] * (len(bounds) + 1), 0.0))
                merged[name, outcome] = (
                    [a + b for a, b in zip(counts, histogram.counts, strict=True)],
                    total + histogram.total,
                )
        family = HistogramMetricFamily(_HISTOGRAM, _HISTOGRAM_HELP, labels=("name", "outcome"))
        les = [_le(bound) for bound in bounds] + ["+Inf"]
        for labels, (counts, total) in sorted(merged.items()):
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for le, count in zip(les, counts, strict=True):
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric(labels, buckets, total)
        return family


# instrument() -----------------------------------------------------------------


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
        store: _Durations | None,
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
            _remove_store(self._store)

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
      histogram (labels ``name``, ``outcome``), which times every call: two
      clock reads, a bucket increment and one more frame (about 1 µs). It
      times calls made through ``call()``/``call_sync()``, pipelines built
      and functions decorated after this call; see the metrics docs.
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
        store = _Durations(bounds) if durations else None
        collector._durations = store
        registry.register(collector)  # raises if another collector owns these names
        if store is not None:
            _add_store(store)
        handle = _instrumented[registry] = Instrumentation(registry, collector, store)
    return handle
