from __future__ import annotations

import math
import random

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from resilience import backoff

delays = st.floats(min_value=0, max_value=1e6, allow_nan=False)
jitters = st.sampled_from([None, "full", "equal", "decorrelated"])


def run(schedule: backoff.Backoff, n: int) -> list[float]:
    out, previous = [], 0.0
    for attempt in range(1, n + 1):
        previous = schedule.delay(attempt, previous)
        out.append(previous)
    return out


def test_exponential_doubles_then_holds_at_the_cap() -> None:
    schedule = backoff.exponential(initial=1, multiplier=2, cap=60)
    assert run(schedule, 9) == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_exponential_survives_huge_attempt_numbers() -> None:
    assert backoff.exponential(1, 10, cap=5).delay(10_000, 5) == 5


def test_fixed_linear_and_immediate() -> None:
    assert run(backoff.fixed(0.5), 3) == [0.5, 0.5, 0.5]
    assert run(backoff.linear(1, 0.5, cap=2), 5) == [1, 1.5, 2, 2, 2]
    assert run(backoff.immediate(), 3) == [0, 0, 0]


@given(
    initial=delays,
    multiplier=st.floats(min_value=1, max_value=100),
    extra=delays,
    jitter=jitters,
    seed=st.integers(0, 2**32),
)
def test_exponential_never_above_its_cap(
    initial: float, multiplier: float, extra: float, jitter: backoff.Jitter, seed: int
) -> None:
    # From 0, decorrelated jitter could never wait: refused at construction.
    assume(not (jitter == "decorrelated" and initial == 0))
    cap = initial + extra
    schedule = backoff.exponential(
        initial, multiplier, cap=cap, jitter=jitter, rng=random.Random(seed)
    )
    for value in run(schedule, 40):
        assert 0 <= value <= cap


@given(initial=delays, step=delays, extra=delays)
def test_without_jitter_schedules_never_decrease(initial: float, step: float, extra: float) -> None:
    cap = initial + extra
    for schedule in (
        backoff.exponential(initial, 1.5, cap=cap),
        backoff.linear(initial, step, cap=cap),
        backoff.fixed(initial),
    ):
        values = run(schedule, 30)
        assert values == sorted(values)


@given(
    initial=st.floats(min_value=0.001, max_value=100),
    attempt=st.integers(1, 30),
    seed=st.integers(),
)
def test_jitter_stays_within_its_bounds(initial: float, attempt: int, seed: int) -> None:
    cap = initial * 50
    rng = random.Random(seed)
    plain = backoff.exponential(initial, cap=cap).delay(attempt, 0.0)
    full = backoff.exponential(initial, cap=cap, jitter="full", rng=rng).delay(attempt, 0.0)
    equal = backoff.exponential(initial, cap=cap, jitter="equal", rng=rng).delay(attempt, 0.0)
    assert 0 <= full <= plain
    assert plain / 2 <= equal <= plain


@given(initial=st.floats(min_value=0.001, max_value=10), previous=delays, seed=st.integers())
def test_decorrelated_jitter_lies_between_initial_and_three_times_previous(
    initial: float, previous: float, seed: int
) -> None:
    cap = 1000.0
    schedule = backoff.exponential(initial, cap=cap, jitter="decorrelated", rng=random.Random(seed))
    value = schedule.delay(3, previous)
    assert initial <= value <= min(cap, max(initial, previous * 3))


def test_jitter_actually_varies() -> None:
    schedule = backoff.fixed(1.0, jitter="full", rng=random.Random(1))
    assert len({schedule.delay(1, 0.0) for _ in range(20)}) > 10


@pytest.mark.parametrize(
    ("build", "param"),
    [
        (lambda: backoff.fixed(-1), "delay"),
        (lambda: backoff.fixed(math.nan), "delay"),
        (lambda: backoff.linear(-1, 1), "initial"),
        (lambda: backoff.linear(1, -1), "step"),
        (lambda: backoff.linear(2, 1, cap=1), "cap"),
        (lambda: backoff.exponential(-0.5), "initial"),
        (lambda: backoff.exponential(1, 0.5), "multiplier"),
        (lambda: backoff.exponential(2, cap=1), "cap"),
        (lambda: backoff.exponential(1, cap=math.inf), "cap"),
        (lambda: backoff.fixed(1, jitter="sideways"), "jitter"),  # type: ignore[arg-type]
    ],
)
def test_bad_input_names_the_parameter(build: object, param: str) -> None:
    with pytest.raises(ValueError, match=param):
        build()  # type: ignore[operator]


def test_non_numbers_are_type_errors() -> None:
    with pytest.raises(TypeError, match="delay"):
        backoff.fixed("1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="multiplier"):
        backoff.exponential(1, True)


def test_repr_shows_the_configuration() -> None:
    assert repr(backoff.exponential(1, 3, cap=9)) == "exponential(1.0, 3.0, cap=9.0, jitter=None)"
