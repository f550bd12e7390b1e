"""The breaker against a small reference model of its rules, for thousands of steps.

The model is written from the rules in the design notes, as plainly as
possible (lists, no running totals, no epochs). Calls are sequential: each
completes before the next starts, and may take time (the fake clock is
advanced inside the call), so slow calls and half-open timeouts are covered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from resilience import CircuitBreaker, CircuitOpenError, CircuitState, CountWindow, TimeWindow
from resilience.events import Event, StateChanged
from resilience.testing import FakeClock

S = CircuitState


class Boom(Exception):
    pass


class Ignored(Exception):
    pass


@dataclass
class Config:
    count: int | None
    seconds: int | None
    failure_rate: float
    minimum_calls: int
    slow_call_duration: float | None
    slow_call_rate: float
    consecutive_failures: int | None
    open_duration: float
    open_duration_max: float | None
    half_open_calls: int
    half_open_max_wait: float | None


@dataclass
class Model:
    cfg: Config
    state: S = S.CLOSED
    outcomes: list[tuple[float, bool, bool]] = field(default_factory=list)
    streak: int = 0
    open_for: float = 0.0
    opened_at: float = 0.0
    half_open_at: float = 0.0
    issued: int = 0
    trials: list[tuple[bool, bool]] = field(default_factory=list)
    rejected: int = 0
    changes: list[tuple[S, S]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.open_for = self.cfg.open_duration

    def move(self, new: S) -> None:
        if new is not self.state:
            self.changes.append((self.state, new))
        self.state = new

    def to_open(self, at: float, grow: bool) -> None:
        if grow and self.cfg.open_duration_max is not None:
            self.open_for = min(self.open_for * 2, self.cfg.open_duration_max)
        self.opened_at = at
        self.move(S.OPEN)

    def to_closed(self) -> None:
        self.outcomes = []
        self.streak = 0
        self.open_for = self.cfg.open_duration
        self.move(S.CLOSED)

    def poll(self, now: float) -> None:
        while True:
            if self.state is S.OPEN and now >= self.opened_at + self.open_for:
                self.half_open_at = now
                self.issued = 0
                self.trials = []
                self.move(S.HALF_OPEN)
            elif (
                self.state is S.HALF_OPEN
                and self.cfg.half_open_max_wait is not None
                and now >= self.half_open_at + self.cfg.half_open_max_wait
            ):
                self.to_open(self.half_open_at + self.cfg.half_open_max_wait, grow=True)
            else:
                return

    def window(self, now: float) -> list[tuple[float, bool, bool]]:
        if self.cfg.count is not None:
            return self.outcomes[-self.cfg.count :]
        assert self.cfg.seconds is not None
        newest = max([math.floor(now)] + [math.floor(t) for t, _, _ in self.outcomes])
        return [o for o in self.outcomes if math.floor(o[0]) > newest - self.cfg.seconds]

    def minimum(self) -> int:
        if self.cfg.count is not None:
            return min(self.cfg.minimum_calls, self.cfg.count)
        return self.cfg.minimum_calls

    def too_bad(self, calls: int, failures: int, slow: int) -> bool:
        return failures / calls >= self.cfg.failure_rate or slow / calls >= self.cfg.slow_call_rate

    def retry_after(self, now: float) -> float | None:
        if self.state is S.OPEN:
            return max(0.0, self.opened_at + self.open_for - now)
        return None

    def call(self, start: float, duration: float, kind: str) -> str:
        """Returns "rejected" or "ran"."""
        self.poll(start)
        if self.state in (S.OPEN, S.FORCED_OPEN):
            self.rejected += 1
            return "rejected"
        if self.state is S.DISABLED:
            return "ran"
        if self.state is S.HALF_OPEN:
            if self.issued >= self.cfg.half_open_calls:
                self.rejected += 1
                return "rejected"
            self.issued += 1
            admitted_in = S.HALF_OPEN
        else:
            admitted_in = S.CLOSED
        end = start + duration
        slow = self.cfg.slow_call_duration is not None and duration >= self.cfg.slow_call_duration
        if kind == "ignored":
            if admitted_in is S.HALF_OPEN and self.state is S.HALF_OPEN:
                self.issued -= 1
            return "ran"
        failed = kind == "fail"
        if admitted_in is S.CLOSED:
            self.outcomes.append((end, failed, slow))
            self.streak = self.streak + 1 if failed else 0
            window = self.window(end)
            calls = len(window)
            failures = sum(f for _, f, _ in window)
            slows = sum(s for _, _, s in window)
            if (
                self.cfg.consecutive_failures is not None
                and self.streak >= self.cfg.consecutive_failures
            ) or (calls >= self.minimum() and self.too_bad(calls, failures, slows)):
                self.to_open(end, grow=False)
            return "ran"
        self.poll(end)
        if self.state is not S.HALF_OPEN:
            return "ran"  # the round timed out meanwhile
        self.trials.append((failed, slow))
        if len(self.trials) >= self.cfg.half_open_calls:
            n = len(self.trials)
            if self.too_bad(n, sum(f for f, _ in self.trials), sum(s for _, s in self.trials)):
                self.to_open(end, grow=True)
            else:
                self.to_closed()
        return "ran"


configs = st.builds(
    Config,
    count=st.one_of(st.none(), st.integers(1, 8)),
    seconds=st.integers(1, 6),
    failure_rate=st.sampled_from([0.2, 0.3, 0.5, 0.75, 1.0]),
    minimum_calls=st.integers(1, 6),
    slow_call_duration=st.one_of(st.none(), st.sampled_from([0.5, 1.0, 2.0])),
    slow_call_rate=st.sampled_from([0.25, 0.5, 1.0]),
    consecutive_failures=st.one_of(st.none(), st.integers(1, 4)),
    open_duration=st.sampled_from([1.0, 2.5, 5.0]),
    open_duration_max=st.one_of(st.none(), st.sampled_from([5.0, 12.0])),
    half_open_calls=st.integers(1, 3),
    half_open_max_wait=st.one_of(st.none(), st.sampled_from([0.5, 3.0])),
)


class BreakerMachineTest(RuleBasedStateMachine):
    """Drives a real breaker (sync shell, or async on asyncio) and the model in step."""

    breaker: CircuitBreaker
    model: Model
    clock: FakeClock
    events: list[Event]

    @initialize(cfg=configs)
    def setup(self, cfg: Config) -> None:
        if cfg.open_duration_max is not None and cfg.open_duration_max < cfg.open_duration:
            cfg.open_duration_max = cfg.open_duration
        self.clock = FakeClock()
        window = CountWindow(cfg.count) if cfg.count is not None else TimeWindow(cfg.seconds or 1)
        if cfg.count is None:
            assert cfg.seconds is not None
        else:
            cfg.seconds = None
        self.breaker = CircuitBreaker(
            "model",
            window=window,
            failure_rate=cfg.failure_rate,
            minimum_calls=cfg.minimum_calls,
            slow_call_duration=cfg.slow_call_duration,
            slow_call_rate=cfg.slow_call_rate,
            consecutive_failures=cfg.consecutive_failures,
            open_duration=cfg.open_duration,
            open_duration_max=cfg.open_duration_max,
            half_open_calls=cfg.half_open_calls,
            half_open_max_wait=cfg.half_open_max_wait,
            ignore=(Ignored,),
            clock=self.clock,
        )
        self.events = []
        self.breaker.add_listener(self.events.append)
        self.model = Model(cfg)

    @rule(seconds=st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, 5.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(
        kind=st.sampled_from(["ok", "ok", "fail", "fail", "ignored"]),
        # Multiples of 1/4: every sum of times is exact in binary floating
        # point, so "took at least slow_call_duration" is never a rounding matter.
        duration=st.sampled_from([0.0, 0.0, 0.25, 1.0, 2.0, 4.0]),
    )
    def call(self, kind: str, duration: float) -> None:
        now = self.clock.now()
        expected = self.model.call(now, duration, kind)
        retry_after = self.model.retry_after(now)
        clock = self.clock

        def work() -> str:
            clock.advance(duration)
            if kind == "fail":
                raise Boom
            if kind == "ignored":
                raise Ignored
            return "ok"

        rejection: CircuitOpenError | None = None
        try:
            self.breaker.call_sync(work)
        except (Boom, Ignored):
            pass
        except CircuitOpenError as exc:
            rejection = exc
        assert ("rejected" if rejection else "ran") == expected
        if rejection is not None:
            assert rejection.retry_after == retry_after

    # The same rule twice: calls are what most steps should be.
    call_again = call

    @rule(op=st.sampled_from(["open", "close", "force_open", "disable", "reset"]))
    def manual(self, op: str) -> None:
        model = self.model
        if op == "open":
            model.to_open(self.clock.now(), grow=False)
        elif op == "close":
            if model.state is not S.CLOSED:
                model.to_closed()
        elif op == "force_open":
            model.move(S.FORCED_OPEN)
        elif op == "disable":
            model.move(S.DISABLED)
        else:
            model.to_closed()
        getattr(self.breaker, op)()

    @invariant()
    def agrees(self) -> None:
        if not hasattr(self, "model"):
            return
        now = self.clock.now()
        self.model.poll(now)
        stats = self.breaker.stats
        assert stats.state is self.model.state
        window = self.model.window(now)
        assert stats.calls == len(window)
        assert stats.failures == sum(f for _, f, _ in window)
        assert stats.slow_calls == sum(s for _, _, s in window)
        assert stats.rejected == self.model.rejected
        seen = [(e.old_state, e.new_state) for e in self.events if isinstance(e, StateChanged)]
        assert seen == self.model.changes


BreakerMachineTest.TestCase.settings = settings(
    max_examples=300, stateful_step_count=50, deadline=None
)
test_breaker_matches_the_model = BreakerMachineTest.TestCase


def test_model_smoke() -> None:
    """The model itself follows the documented example: 2 of 4 failed trips."""
    cfg: dict[str, Any] = {
        "count": 10,
        "seconds": None,
        "failure_rate": 0.5,
        "minimum_calls": 4,
        "slow_call_duration": None,
        "slow_call_rate": 1.0,
        "consecutive_failures": None,
        "open_duration": 5.0,
        "open_duration_max": None,
        "half_open_calls": 1,
        "half_open_max_wait": None,
    }
    model = Model(Config(**cfg))
    for kind in ("ok", "ok", "fail", "fail"):
        model.call(0.0, 0.0, kind)
    assert model.state is S.OPEN
    assert model.call(4.9, 0.0, "ok") == "rejected"
    assert model.call(5.0, 0.0, "ok") == "ran"
    assert model.state is S.CLOSED
