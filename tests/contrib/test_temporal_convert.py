"""resilience.contrib.temporal without a server: our policies converted to
Temporal's RetryPolicy and activity timeouts, what is refused (and dropped
with strict=False), the activities a saga gives a worker, and the public
face."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from datetime import timedelta
from typing import Any, get_type_hints

import pytest

if os.environ.get("CI") != "true":  # under CI a missing temporalio fails the run
    pytest.importorskip("temporalio")

from temporalio.common import RetryPolicy

from resilience import (
    Bulkhead,
    CircuitBreaker,
    LatencyTracker,
    Retry,
    RetryBudget,
    SagaContext,
    Timeout,
    backoff,
)
from resilience.contrib import temporal
from resilience.contrib.temporal import (
    DEFAULT_START_TO_CLOSE,
    TemporalConversionWarning,
    activities,
    activity_options,
    retry_policy,
    run,
)
from resilience.saga import Parallel, Saga, Step
from tests import temporal_sagas
from tests.test_public_api import has_example, isort_key, public_names

S = timedelta(seconds=1)
NEVER = ["BulkheadFullError", "CircuitOpenError", "RateLimitedError"]


# retry_policy ------------------------------------------------------------------


def test_an_exponential_schedule_is_temporals_own() -> None:
    policy = retry_policy(Retry(4, backoff=backoff.exponential(1.5, 3.0, cap=60)))
    assert policy == RetryPolicy(
        initial_interval=1.5 * S,
        backoff_coefficient=3.0,
        maximum_interval=60 * S,
        maximum_attempts=4,
        non_retryable_error_types=NEVER,
    )


def test_a_fixed_schedule_has_a_coefficient_of_one() -> None:
    policy = retry_policy(Retry(3, backoff=backoff.fixed(2.0)))
    assert (policy.initial_interval, policy.backoff_coefficient, policy.maximum_interval) == (
        2 * S,
        1.0,
        2 * S,
    )


def test_the_default_schedules_convert_without_their_jitter() -> None:
    # Retry's default (0.1 s doubling to 5 s, full jitter): nobody asked for the jitter.
    policy = retry_policy(Retry(3))
    assert (policy.initial_interval, policy.backoff_coefficient, policy.maximum_interval) == (
        0.1 * S,
        2.0,
        5 * S,
    )


def test_one_attempt_never_waits_so_any_schedule_will_do() -> None:
    policy = retry_policy(Retry(1, backoff=backoff.linear(1, 1, jitter="full")))
    assert policy == RetryPolicy(maximum_attempts=1)


# Each case builds its policy when it runs: a live policy at collection time
# would show in the Prometheus exporter's and the benchmarks' counts.
@pytest.mark.parametrize(
    ("make", "bad"),
    [
        (
            lambda: Retry(3, backoff=backoff.exponential(1, 2, cap=9, jitter="equal")),
            "jitter='equal'",
        ),
        (
            lambda: Retry(3, backoff=backoff.fixed(1, jitter="decorrelated")),
            "jitter='decorrelated'",
        ),
        (lambda: Retry(3, backoff=backoff.immediate()), "backoff=immediate()"),
        (lambda: Retry(3, backoff=backoff.fixed(0)), "starts at 0 s"),
        (lambda: Retry(3, backoff=backoff.linear(1, 2)), "Temporal's schedules are exponential"),
        (lambda: Retry(3, on_result=lambda r: r is None), "on_result="),
        (lambda: Retry(3, budget=RetryBudget()), "budget="),
        (lambda: Retry(3, on=ConnectionError), "on=<class 'ConnectionError'> retries only some"),
        (lambda: Retry(3, on=lambda e: True), "retries only some exceptions"),
    ],
)
def test_what_temporal_cannot_express_is_refused_by_name(
    make: Callable[[], Retry], bad: str
) -> None:
    retry = make()
    with pytest.raises(ValueError, match=r"strict=False drops it") as caught:
        retry_policy(retry)
    assert bad in str(caught.value)
    assert repr(retry.name) in str(caught.value)


def test_a_schedule_of_ones_own_is_refused() -> None:
    class Doubling:
        def delay(self, attempt: int, previous: float) -> float:
            return 2.0**attempt

    with pytest.raises(ValueError, match=r"only exponential\(\) and fixed\(\) schedules"):
        retry_policy(Retry(3, backoff=Doubling()))


def test_strict_false_drops_with_a_warning() -> None:
    jittery = Retry(3, backoff=backoff.exponential(1, 2, cap=9, jitter="equal"))
    dropped = "jitter='equal'.*dropped: the jitter"
    with pytest.warns(TemporalConversionWarning, match=dropped) as got:
        policy = retry_policy(jittery, strict=False)
    assert got[0].filename == __file__  # it points at the call, not into the package
    assert (policy.initial_interval, policy.maximum_interval) == (1 * S, 9 * S)
    with pytest.warns(TemporalConversionWarning, match="Temporal's default schedule"):
        policy = retry_policy(Retry(3, backoff=backoff.linear(1, 2)), strict=False)
    assert policy.initial_interval == 1 * S  # Temporal's default, as the warning says
    assert policy.maximum_attempts == 3


def test_retry_policy_takes_a_retry() -> None:
    with pytest.raises(TypeError, match="retry must be a resilience Retry, got <Timeout"):
        retry_policy(Timeout(1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="strict must be True or False, got 'no'"):
        retry_policy(Retry(3), strict="no")  # type: ignore[arg-type]


# activity_options ----------------------------------------------------------------


def test_no_policy_is_one_attempt_of_thirty_seconds() -> None:
    assert activity_options(None) == {
        "retry_policy": RetryPolicy(maximum_attempts=1),
        "start_to_close_timeout": DEFAULT_START_TO_CLOSE,
        "schedule_to_close_timeout": None,
    }
    assert DEFAULT_START_TO_CLOSE == 30 * S


def test_a_timeout_alone_limits_the_one_attempt() -> None:
    options = activity_options(Timeout(5))
    assert options["start_to_close_timeout"] == 5 * S
    assert options["retry_policy"] == RetryPolicy(maximum_attempts=1)


def test_a_timeout_inside_the_retry_limits_each_attempt_and_outside_the_call() -> None:
    fast = backoff.exponential(1, 2, cap=10)
    inner = activity_options(Retry(3, backoff=fast) | Timeout(4))
    assert (inner["start_to_close_timeout"], inner["schedule_to_close_timeout"]) == (4 * S, None)
    both = activity_options(Timeout(120) | Retry(3, backoff=fast) | Timeout(4))
    assert (both["start_to_close_timeout"], both["schedule_to_close_timeout"]) == (4 * S, 120 * S)
    # With only a total limit, each attempt may use all of it.
    outer = activity_options(Timeout(50) | Retry(3, backoff=fast))
    assert (outer["start_to_close_timeout"], outer["schedule_to_close_timeout"]) == (50 * S, 50 * S)
    # A Retry without a Timeout: each attempt gets the default 30 s.
    plain = activity_options(Retry(3, backoff=fast))
    assert (plain["start_to_close_timeout"], plain["schedule_to_close_timeout"]) == (30 * S, None)
    assert plain["retry_policy"].maximum_attempts == 3


def test_max_elapsed_is_a_total_limit() -> None:
    options = activity_options(Timeout(90) | Retry(3, max_elapsed=40) | Timeout(60))
    assert options["schedule_to_close_timeout"] == 40 * S
    assert options["start_to_close_timeout"] == 40 * S  # no attempt outlives the whole


@pytest.mark.parametrize(
    ("make", "bad"),
    [
        (lambda: Retry(3) | CircuitBreaker("payments"), "<CircuitBreaker 'payments'"),
        (lambda: Bulkhead(4) | Retry(3), "<Bulkhead"),
        (lambda: Retry(3) | Retry(2), "is a second Retry"),
        (lambda: Timeout.adaptive(LatencyTracker()), "its limit moves"),
    ],
)
def test_other_policies_are_refused_by_name(make: Callable[[], Any], bad: str) -> None:
    with pytest.raises(TypeError, match=r"^charge: ") as caught:
        activity_options(make(), name="charge")
    assert bad in str(caught.value)


def test_other_policies_are_dropped_with_strict_false() -> None:
    with pytest.warns(TemporalConversionWarning, match="CircuitBreaker 'pay'.*dropped: the policy"):
        options = activity_options(
            Retry(3) | CircuitBreaker("pay") | Timeout(2), strict=False, name="charge"
        )
    assert options["retry_policy"].maximum_attempts == 3
    assert options["start_to_close_timeout"] == 2 * S


def test_activity_options_takes_a_policy() -> None:
    with pytest.raises(TypeError, match="must be a Policy"):
        activity_options("Retry(3)")  # type: ignore[arg-type]


# activities ----------------------------------------------------------------------


async def reserve(ctx: SagaContext) -> str:
    return f"r-{ctx.input}"


async def release(ctx: SagaContext, reserved: str) -> None:
    pass


def charge(ctx: SagaContext) -> str:
    return "ch"


def refund(ctx: SagaContext, charged: str) -> None:
    pass


def test_activities_are_named_after_the_saga_and_step() -> None:
    saga = Saga(
        "order",
        [
            Step("reserve", reserve, compensate=release),
            Parallel(Step("charge", charge, compensate=refund), Step("ship", reserve)),
        ],
    )
    defined = activities(saga, input_type=int)
    names = [fn.__temporal_activity_definition.name for fn in defined]  # type: ignore[attr-defined]
    assert names == [
        "order.reserve",
        "order.reserve.compensate",
        "order.charge",
        "order.charge.compensate",
        "order.ship",
    ]
    # The plain steps are plain activities (a worker runs them in its executor).
    kinds = [fn.__temporal_activity_definition.is_async for fn in defined]  # type: ignore[attr-defined]
    assert kinds == [True, True, False, False, True]
    # The input is decoded as the type given; the results as JSON values.
    hints = get_type_hints(defined[0])
    assert hints["input"] is int
    assert hints["results"] == dict[str, Any]


def test_a_policy_temporal_cannot_run_is_refused_naming_the_step() -> None:
    saga = Saga("order", [Step("charge", reserve, policy=Retry(3) | CircuitBreaker("pay"))])
    with pytest.raises(TypeError, match=r"^policy of step 'charge': <CircuitBreaker 'pay'"):
        activities(saga)
    saga = Saga(
        "order",
        [
            Step(
                "charge",
                reserve,
                compensate=release,
                compensate_policy=Retry(3, backoff=backoff.fixed(1, jitter="full")),
            )
        ],
    )
    with pytest.raises(ValueError, match=r"^compensate_policy of step 'charge': .*jitter='full'"):
        activities(saga)
    saga = Saga(
        "order",
        [Step("charge", reserve, compensate=release)],
        compensate_policy=Retry(3, backoff=backoff.linear(1, 1)),
    )
    with pytest.raises(
        ValueError, match=r"^compensate_policy of saga 'order' \(for step 'charge'\)"
    ):
        activities(saga)


def test_activities_with_strict_false_warn_at_the_worker_and_drop() -> None:
    saga = Saga("order", [Step("charge", reserve, policy=Retry(3) | CircuitBreaker("pay"))])
    with pytest.warns(TemporalConversionWarning, match="policy of step 'charge'") as got:
        defined = activities(saga, strict=False)
    assert got[0].filename == __file__
    assert len(defined) == 1


def test_activity_names_that_collide_are_refused() -> None:
    saga = Saga(
        "order",
        [Step("pay", reserve, compensate=release), Step("pay.compensate", reserve)],
    )
    with pytest.raises(ValueError, match=r"'order.pay.compensate', already the compensation"):
        activities(saga)


def test_activities_takes_a_saga() -> None:
    with pytest.raises(TypeError, match="saga must be a resilience Saga, got 'order'"):
        activities("order")  # type: ignore[arg-type]


async def test_run_outside_a_workflow_says_where_it_belongs() -> None:
    # On trio as on asyncio: run() belongs in a workflow, on the worker's asyncio loop.
    saga = Saga("order", [Step("reserve", reserve)])
    with pytest.raises(RuntimeError, match=r"inside a Temporal workflow .* await saga.run"):
        await run(saga, 1)


# The public face -------------------------------------------------------------------


def test_the_face_exports_its_public_names_each_with_an_example() -> None:
    assert temporal.__all__ == sorted(temporal.__all__, key=isort_key)
    assert set(temporal.__all__) == public_names(temporal)
    for name in temporal.__all__:
        value = getattr(temporal, name)
        if callable(value) and getattr(value, "__module__", "").startswith("resilience"):
            assert has_example(value.__doc__), name


def test_a_missing_temporalio_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['temporalio'] = None\n"
        "try:\n    import resilience.contrib.temporal\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 'pip install "resilience-policies[temporal]"' in out.stdout


def test_no_warning_when_everything_converts() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        activity_options(Timeout(60) | Retry(5, backoff=backoff.exponential(1, 2, cap=30)))


def test_a_missing_test_server_fails_under_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true: a missing real component"):
        temporal_sagas.server_path()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="temporal-test-server not found"):
        temporal_sagas.server_path()
