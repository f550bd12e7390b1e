from __future__ import annotations

import gc
import itertools
import threading
import time
from collections.abc import Iterator

import anyio
import anyio.lowlevel
import httpx
import pytest
import sniffio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from resilience import (
    Bulkhead,
    BulkheadFullError,
    CircuitBreaker,
    CircuitOpenError,
    Fallback,
    Hedge,
    Pipeline,
    Policy,
    PoolBulkhead,
    RateLimitedError,
    RateLimiter,
    Retry,
    Saga,
    Step,
    Timeout,
    TimeoutError,
    _observe,
    backoff,
)
from resilience.contrib.asgi import IdempotencyMiddleware, ResilienceMiddleware
from resilience.contrib.httpx import AsyncResilientTransport
from resilience.contrib.prometheus import METRIC_NAMES, Instrumentation, instrument
from resilience.testing import FakeClock
from tests.contrib.idempotency_app import Orders

_ids = itertools.count()

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def unique(prefix: str) -> str:
    """Names of their own: other tests' live policies appear in every scrape."""
    return f"{prefix}-{next(_ids)}-{time.monotonic_ns()}"


def scrape(registry: CollectorRegistry, name: str | None = None) -> Series:
    """``{(sample name, other labels sorted): value}``, for one policy name (or all)."""
    found: Series = {}
    text = generate_latest(registry).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = dict(sample.labels)
            if name is not None and labels.pop("name", None) != name:
                continue
            key = (sample.name, tuple(sorted(labels.items())))
            assert key not in found, f"duplicate series {key}"
            found[key] = sample.value
    return found


def states(series: Series) -> dict[str, float]:
    return {
        dict(labels)["state"]: value
        for (sample, labels), value in series.items()
        if sample == "resilience_circuit_breaker_state"
    }


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = instrument(registry)
    yield registry
    metrics.close()


class Boom(Exception):
    pass


def _fail() -> None:
    raise Boom


def _ignored() -> None:
    raise KeyError("not counted")


# Circuit breaker -------------------------------------------------------------------


def test_breaker_through_its_states(registry: CollectorRegistry) -> None:
    clock = FakeClock()
    name = unique("payments")
    breaker = CircuitBreaker(
        name,
        minimum_calls=4,
        failure_rate=0.5,
        open_duration=10,
        slow_call_duration=1.0,
        ignore=(KeyError,),
        clock=clock,
    )
    series = scrape(registry, name)
    assert states(series) == {
        "closed": 1,
        "open": 0,
        "half_open": 0,
        "forced_open": 0,
        "disabled": 0,
    }
    assert not any(s == "resilience_circuit_breaker_transitions_total" for s, _ in series)

    breaker.call_sync(lambda: 1)
    with pytest.raises(KeyError):
        breaker.call_sync(_ignored)
    breaker.call_sync(lambda: clock.advance(2))  # a slow success
    for _ in range(2):
        with pytest.raises(Boom):
            breaker.call_sync(_fail)
    with pytest.raises(CircuitOpenError):
        breaker.call_sync(lambda: 1)
    series = scrape(registry, name)
    assert states(series)["open"] == 1
    assert sum(states(series).values()) == 1
    assert series == {
        **series,
        ("resilience_circuit_breaker_calls_total", (("outcome", "success"),)): 2,
        ("resilience_circuit_breaker_calls_total", (("outcome", "failure"),)): 2,
        ("resilience_circuit_breaker_calls_total", (("outcome", "ignored"),)): 1,
        ("resilience_circuit_breaker_calls_total", (("outcome", "rejected"),)): 1,
        ("resilience_circuit_breaker_slow_calls_total", ()): 1,
        (
            "resilience_circuit_breaker_transitions_total",
            (("from_state", "closed"), ("to_state", "open")),
        ): 1,
    }

    # The scrape itself applies the time-based move to half-open.
    clock.advance(10)
    assert states(scrape(registry, name))["half_open"] == 1
    breaker.call_sync(lambda: 1)  # the trial succeeds
    assert states(scrape(registry, name))["closed"] == 1

    breaker.force_open()
    with pytest.raises(CircuitOpenError):
        breaker.call_sync(lambda: 1)
    assert states(scrape(registry, name))["forced_open"] == 1
    breaker.disable()
    series = scrape(registry, name)
    assert states(series) == {
        "closed": 0,
        "open": 0,
        "half_open": 0,
        "forced_open": 0,
        "disabled": 1,
    }
    transitions = {
        (dict(labels)["from_state"], dict(labels)["to_state"]): value
        for (sample, labels), value in series.items()
        if sample == "resilience_circuit_breaker_transitions_total"
    }
    assert transitions == {
        ("closed", "open"): 1,
        ("open", "half_open"): 1,
        ("half_open", "closed"): 1,
        ("closed", "forced_open"): 1,
        ("forced_open", "disabled"): 1,
    }
    assert series[("resilience_circuit_breaker_calls_total", (("outcome", "success"),))] == 3
    assert series[("resilience_circuit_breaker_calls_total", (("outcome", "rejected"),))] == 2


async def test_breaker_async_calls_are_counted(registry: CollectorRegistry) -> None:
    name = unique("async-breaker")
    breaker = CircuitBreaker(name, consecutive_failures=1, clock=FakeClock())

    async def ok() -> int:
        return 1

    async def fail() -> int:
        raise Boom

    await breaker.call(ok)
    with pytest.raises(Boom):
        await breaker.call(fail)
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)
    series = scrape(registry, name)
    assert states(series)["open"] == 1
    outcomes = {
        dict(labels)["outcome"]: value
        for (sample, labels), value in series.items()
        if sample == "resilience_circuit_breaker_calls_total"
    }
    assert outcomes == {"success": 1, "failure": 1, "ignored": 0, "rejected": 1}


# Retry ------------------------------------------------------------------------------


def test_retry_outcomes_and_attempts(registry: CollectorRegistry) -> None:
    name = unique("retry")
    retry = Retry(3, backoff=backoff.fixed(1.0), on=Boom, name=name, clock=FakeClock())
    flaky = iter([Boom(), None])

    def once_then_ok() -> int:
        error = next(flaky)
        if error is not None:
            raise error
        return 1

    def wrong() -> None:
        raise ValueError("not retried")

    retry.call_sync(lambda: 1)
    retry.call_sync(once_then_ok)
    with pytest.raises(Boom):
        retry.call_sync(_fail)
    with pytest.raises(ValueError, match="not retried"):
        retry.call_sync(wrong)
    assert scrape(registry, name) == {
        ("resilience_retry_calls_total", (("outcome", "success_without_retry"),)): 1,
        ("resilience_retry_calls_total", (("outcome", "success_with_retry"),)): 1,
        ("resilience_retry_calls_total", (("outcome", "failed_without_retry"),)): 1,
        ("resilience_retry_calls_total", (("outcome", "failed_with_retry"),)): 1,
        # 4 calls and 1 + 2 retries: every attempt, the first ones included.
        ("resilience_retry_attempts_total", ()): 7,
    }


# Bulkheads --------------------------------------------------------------------------


async def _until(condition: object) -> None:
    for _ in range(1000):
        if condition():  # type: ignore[operator]
            return
        await anyio.lowlevel.checkpoint()
    raise AssertionError("condition never became true")


async def test_bulkhead_saturation(registry: CollectorRegistry) -> None:
    name = unique("db")
    bulkhead = Bulkhead(2, max_waiting=1, name=name)
    release = anyio.Event()

    async def hold() -> None:
        await release.wait()

    async def ok() -> int:
        return 1

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(bulkhead.call, hold)
        await _until(lambda: bulkhead.stats.waiting == 1)
        with pytest.raises(BulkheadFullError):
            await bulkhead.call(ok)
        assert scrape(registry, name) == {
            ("resilience_bulkhead_in_flight", ()): 2,
            ("resilience_bulkhead_waiting", ()): 1,
            ("resilience_bulkhead_capacity", ()): 2,
            ("resilience_bulkhead_rejected_total", ()): 1,
        }
        release.set()
    bulkhead.resize(5)
    assert scrape(registry, name) == {
        ("resilience_bulkhead_in_flight", ()): 0,
        ("resilience_bulkhead_waiting", ()): 0,
        ("resilience_bulkhead_capacity", ()): 5,
        ("resilience_bulkhead_rejected_total", ()): 1,
    }


def test_pool_bulkhead(registry: CollectorRegistry) -> None:
    name = unique("legacy")
    started = threading.Event()
    release = threading.Event()

    def block() -> None:
        started.set()
        release.wait(10)

    with PoolBulkhead(1, name=name) as pool:
        caller = threading.Thread(target=pool.call_sync, args=(block,))
        caller.start()
        assert started.wait(10)
        with pytest.raises(BulkheadFullError):
            pool.call_sync(lambda: 1)
        assert scrape(registry, name) == {
            ("resilience_bulkhead_in_flight", ()): 1,
            ("resilience_bulkhead_waiting", ()): 0,
            ("resilience_bulkhead_capacity", ()): 1,
            ("resilience_bulkhead_rejected_total", ()): 1,
        }
        release.set()
        caller.join(10)


# Timeout and fallback ---------------------------------------------------------------


async def test_timeouts(registry: CollectorRegistry) -> None:
    clock = FakeClock()
    name = unique("timeout")
    timeout = Timeout(1.0, name=name, clock=clock)

    async def too_slow() -> None:
        clock.advance(2)
        await anyio.lowlevel.checkpoint()

    async def quick() -> int:
        return 1

    await timeout.call(quick)
    for _ in range(2):
        with pytest.raises(TimeoutError):
            await timeout.call(too_slow)
    assert scrape(registry, name) == {
        ("resilience_timeouts_total", ()): 2,
        ("resilience_timeout_seconds", ()): 1.0,  # the limit in force
    }


async def test_hedges_and_an_adaptive_timeouts_limit(registry: CollectorRegistry) -> None:
    from resilience import Hedge, LatencyTracker

    clock = FakeClock()
    name = unique("hedge")
    calls = {"n": 0}

    async def first_fails() -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("reset")
        return 1

    hedge = Hedge(2, delay=10.0, name=name, clock=clock)
    assert await hedge.call(first_fails) == 1  # the failure started the hedge, which won
    assert scrape(registry, name) == {
        ("resilience_hedge_calls_total", ()): 1,
        ("resilience_hedges_total", ()): 1,
        ("resilience_hedge_wins_total", ()): 1,
        ("resilience_hedge_cancelled_total", ()): 0,
    }
    tracker = LatencyTracker(clock=clock)
    for _ in range(200):
        tracker.record(0.1)
    adaptive = Timeout.adaptive(
        tracker, multiplier=2.0, min_samples=10, name=unique("t"), clock=clock
    )

    async def quick() -> int:
        return 1

    await adaptive.call(quick)
    limit = scrape(registry, adaptive.name)[("resilience_timeout_seconds", ())]
    assert limit == pytest.approx(0.2, rel=0.05)


def test_fallbacks(registry: CollectorRegistry) -> None:
    name = unique("fallback")
    fallback = Fallback(0, name=name)
    assert fallback.call_sync(_fail) == 0
    assert fallback.call_sync(lambda: 1) == 1
    assert scrape(registry, name) == {("resilience_fallbacks_total", ()): 1}


# Names and lifetimes ----------------------------------------------------------------


def test_unnamed_policies_get_stable_generated_names(registry: CollectorRegistry) -> None:
    retry = Retry(2)
    assert retry.name.startswith("retry-")
    retry.call_sync(lambda: 1)
    first = scrape(registry, retry.name)
    assert first[("resilience_retry_attempts_total", ())] == 1
    assert scrape(registry, retry.name) == first
    other = Retry(2)
    assert other.name != retry.name
    assert scrape(registry, other.name)[("resilience_retry_attempts_total", ())] == 0


def test_a_collected_policy_leaves_the_next_scrape(registry: CollectorRegistry) -> None:
    name = unique("short-lived")
    breaker = CircuitBreaker(name)
    assert scrape(registry, name)
    del breaker
    gc.collect()
    assert scrape(registry, name) == {}


def test_policies_sharing_a_name_are_summed(registry: CollectorRegistry) -> None:
    name = unique("shared")
    first, second = Bulkhead(2, name=name), Bulkhead(3, name=name)
    assert first is not second
    assert scrape(registry, name)[("resilience_bulkhead_capacity", ())] == 5


def test_only_exported_names_appear(registry: CollectorRegistry) -> None:
    breaker = CircuitBreaker()
    breaker.open()  # a transition pair appears once it has happened
    keep = [breaker, Retry(), Bulkhead(1), Timeout(1), Fallback(0), RateLimiter(1), Hedge()]
    saga = Saga(unique("saga"), [Step("reserve", lambda ctx: 1, compensate=lambda ctx, r: None)])
    keys = IdempotencyMiddleware(Orders(), name=unique("keys"))
    emitted = {sample for sample, _ in scrape(registry)}
    assert emitted == METRIC_NAMES - {
        "resilience_call_duration_seconds_bucket",
        "resilience_call_duration_seconds_sum",
        "resilience_call_duration_seconds_count",
    }
    assert keep
    assert saga
    assert keys


def test_series_stay_bounded_with_many_hosts(registry: CollectorRegistry) -> None:
    """5,000 distinct hosts through per-host breakers: the series follow the
    table's bound (max_hosts=50), not the traffic (a hundred times the bound
    proves it as well as 10^5 hosts did, in a fiftieth of the time)."""
    template = unique("api")
    transport = AsyncResilientTransport(
        httpx.MockTransport(lambda request: httpx.Response(200)),
        breaker=CircuitBreaker(template),
        max_hosts=50,
    )

    async def drive() -> None:
        for n in range(5_000):
            request = httpx.Request("GET", f"http://h{n}.example:8080/")
            response = await transport.handle_async_request(request)
            await response.aclose()

    anyio.run(drive)
    gc.collect()
    series = scrape(registry)
    breakers = {
        dict(labels)["name"]
        for sample, labels in _with_names(registry)
        if sample == "resilience_circuit_breaker_state"
        and dict(labels)["name"].startswith(f"{template}:")
    }
    assert len(breakers) == 50
    assert "http://h4999.example:8080" in {name.split(":", 1)[1] for name in breakers}
    per_breaker = sum(
        1
        for sample, labels in _with_names(registry)
        if dict(labels)["name"].startswith(f"{template}:")
    )
    # 5 states + 4 outcomes + slow calls per breaker; no transitions happened.
    assert per_breaker == 50 * 10
    assert len(series) < 5_000


def _with_names(registry: CollectorRegistry) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    text = generate_latest(registry).decode()
    return [
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


# instrument() and close() -----------------------------------------------------------


def test_instrument_twice_and_undo() -> None:
    registry = CollectorRegistry()
    name = unique("twice")
    keep = Timeout(1.0, name=name)
    metrics = instrument(registry)
    assert isinstance(metrics, Instrumentation)
    assert instrument(registry) is metrics
    with pytest.raises(ValueError, match="durations=False"):
        instrument(registry, durations=True)
    expected = {("resilience_timeouts_total", ()): 0, ("resilience_timeout_seconds", ()): 1.0}
    assert scrape(registry, name) == expected
    metrics.close()
    metrics.close()  # a second close does nothing
    assert metrics.closed
    assert scrape(registry) == {}
    again = instrument(registry)
    assert again is not metrics
    assert scrape(registry, name) == expected
    again.close()
    assert keep


def test_registries_are_independent() -> None:
    name = unique("two-registries")
    keep = Fallback(0, name=name)
    with instrument(CollectorRegistry()) as first, instrument(CollectorRegistry()) as second:
        assert first is not second
        assert scrape(first.registry, name) == scrape(second.registry, name) != {}
        first.close()
        assert scrape(first.registry, name) == {}
        assert scrape(second.registry, name) != {}
    assert keep


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="CollectorRegistry"):
        instrument(object())  # type: ignore[arg-type]
    for buckets in ((), (1.0, 0.5), (float("nan"),)):
        with pytest.raises(ValueError, match="buckets"):
            instrument(CollectorRegistry(), durations=True, buckets=buckets)


def test_durations_off_leaves_the_policies_untouched() -> None:
    before = {cls: dict(vars(cls)) for cls in (Retry, CircuitBreaker, Bulkhead, Timeout)}
    with instrument(CollectorRegistry()):
        after = {cls: dict(vars(cls)) for cls in (Retry, CircuitBreaker, Bulkhead, Timeout)}
    assert after == before


# Durations (opt-in) -----------------------------------------------------------------


def _histogram(series: Series) -> dict[str, float]:
    """``{outcome: count}`` of resilience_call_duration_seconds."""
    return {
        dict(labels)["outcome"]: value
        for (sample, labels), value in series.items()
        if sample == "resilience_call_duration_seconds_count"
    }


async def test_durations_histogram() -> None:
    clock = FakeClock()
    originals = {cls: dict(vars(cls)) for cls in (Retry, CircuitBreaker, Bulkhead, Timeout)}
    registry = CollectorRegistry()
    with instrument(registry, durations=True, buckets=(0.5, 1.0)) as metrics:
        assert metrics.durations
        retry_name, breaker_name = unique("d-retry"), unique("d-breaker")
        timeout_name, bulkhead_name = unique("d-timeout"), unique("d-bulkhead")
        retry = Retry(1, name=retry_name)
        breaker = CircuitBreaker(breaker_name, clock=clock)
        timeout = Timeout(1.0, name=timeout_name, clock=clock)
        bulkhead = Bulkhead(1, name=bulkhead_name)

        async def ok() -> int:
            return 1

        async def fail() -> int:
            raise Boom

        async def too_slow() -> None:
            clock.advance(2)
            await anyio.lowlevel.checkpoint()

        for _ in range(3):
            await retry.call(ok)
        with pytest.raises(Boom):
            await retry.call(fail)
        retry.call_sync(lambda: 1)
        breaker.force_open()
        with pytest.raises(CircuitOpenError):
            await breaker.call(ok)
        with pytest.raises(TimeoutError):
            await timeout.call(too_slow)

        @bulkhead  # decorated while durations are on: timed too
        async def limited() -> int:
            return 1

        await limited()

        series = scrape(registry, retry_name)
        assert _histogram(series) == {"success": 4, "failure": 1}
        buckets = {
            dict(labels)["le"]: value
            for (sample, labels), value in series.items()
            if sample == "resilience_call_duration_seconds_bucket"
            and dict(labels)["outcome"] == "success"
        }
        assert buckets == {"0.5": 4, "1.0": 4, "+Inf": 4}
        assert series[("resilience_call_duration_seconds_sum", (("outcome", "success"),))] >= 0
        assert _histogram(scrape(registry, breaker_name)) == {"rejected": 1}
        assert _histogram(scrape(registry, timeout_name)) == {"timeout": 1}
        assert _histogram(scrape(registry, bulkhead_name)) == {"success": 1}
        # Only the registry that asked for durations gets the histogram.
        with instrument(CollectorRegistry()) as plain:
            assert _histogram(scrape(plain.registry, retry_name)) == {}
    after = {cls: dict(vars(cls)) for cls in (Retry, CircuitBreaker, Bulkhead, Timeout)}
    assert after == originals
    assert scrape(registry) == {}


def test_durations_of_a_collected_policy_are_dropped() -> None:
    registry = CollectorRegistry()
    with instrument(registry, durations=True) as metrics:
        name = unique("d-gone")
        retry = Retry(1, name=name)
        retry.call_sync(lambda: 1)
        assert _histogram(scrape(registry, name)) == {"success": 1}
        store = metrics._store
        assert store is not None
        assert id(retry) in store.series
        key = id(retry)
        del retry
        gc.collect()
        assert key not in store.series
        assert scrape(registry, name) == {}


# Durations as a call observer --------------------------------------------------------


class Counting(Policy):
    """A user's guard: it counts the calls in progress."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name)
        self.running = 0

    def admit(self) -> object:
        self.running += 1
        return None

    async def wait(self) -> object:
        raise AssertionError("never waits")

    def wait_sync(self) -> object:
        raise AssertionError("never waits")

    def settle(self, ticket: object, error: BaseException | None, result: object) -> object:
        self.running -= 1
        return error


async def test_durations_time_what_was_built_before_instrument() -> None:
    names = [unique(kind) for kind in ("b-retry", "b-breaker", "b-user", "b-pipe")]
    retry = Retry(2, backoff=backoff.immediate(), name=names[0])
    breaker = CircuitBreaker(names[1])
    user = Counting(names[2])
    pipeline = Pipeline(retry, breaker, user, name=names[3])

    async def raw() -> int:
        return 1

    work = pipeline(raw)  # decorated before any instrumentation exists
    registry = CollectorRegistry()
    with instrument(registry, durations=True):
        assert await work() == 1
        assert await pipeline.call(raw) == 1
        for name in names:
            assert _histogram(scrape(registry, name)) == {"success": 2}, name
    assert _observe._observers == ()  # close() removed the observer


async def test_the_aiobreaker_adapter_is_timed_in_a_pipeline() -> None:
    aiobreaker = pytest.importorskip("aiobreaker")
    from resilience.contrib.aiobreaker import AiobreakerPolicy

    name = unique("b-aio")
    adapter = AiobreakerPolicy(aiobreaker.CircuitBreaker(name=name))

    @(Retry(1) | adapter)
    async def work() -> int:
        return 1

    registry = CollectorRegistry()
    with instrument(registry, durations=True):
        if sniffio.current_async_library() == "asyncio":  # aiobreaker is asyncio-only
            assert await work() == 1
            assert _histogram(scrape(registry, name)) == {"success": 1}


async def test_no_series_for_policies_the_user_did_not_create(registry: CollectorRegistry) -> None:
    template_name, timeout_name = unique("tmpl"), unique("web")
    template = CircuitBreaker(template_name)

    def ok(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200)

    transport = AsyncResilientTransport(httpx.MockTransport(ok), retry=Retry(2), breaker=template)
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get("https://a.test/")).status_code == 200

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        raise AssertionError("never called")

    ResilienceMiddleware(app, timeout=1.0, name=timeout_name)
    series = scrape(registry)
    names = {dict(labels).get("name") for _, labels in series}
    # The per-host breaker derived from the template is there; the template
    # itself and the transport's deadline guard are not.
    assert f"{template_name}:https://a.test:443" in names
    assert template_name not in names
    assert not [n for n in names if n and n.startswith("timeout-")]


def test_rate_limiter_counters(registry: CollectorRegistry) -> None:
    from resilience.lowlevel import WAIT

    clock = FakeClock()
    name = unique("rl")
    limiter = RateLimiter(1, max_wait=1.0, name=name, clock=clock)
    assert limiter.admit() is True
    assert limiter.admit() is WAIT  # reserves the next slot, 1 s away
    with pytest.raises(RateLimitedError):
        limiter.admit()  # 2 s away: refused at once
    limiter.wait_sync()
    series = scrape(registry, name)
    assert series[("resilience_rate_limiter_admitted_total", ())] == 2
    assert series[("resilience_rate_limiter_waited_total", ())] == 1
    assert series[("resilience_rate_limiter_rejected_total", ())] == 1
    assert series[("resilience_rate_limiter_wait_seconds_total", ())] == 1.0
