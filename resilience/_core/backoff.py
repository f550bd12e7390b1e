"""Delay schedules and jitter (sans-I/O).

A schedule maps the number of the attempt that just failed (1 for the first)
and the previous delay to the next delay. Schedules hold no per-call state, so
one instance serves every call of every policy that shares it.
"""

from __future__ import annotations

import datetime
import math
import random
from typing import Literal, Protocol, TypeAlias, runtime_checkable

__all__ = ["Backoff", "Exponential", "Fixed", "Immediate", "Jitter", "Linear"]

_SHARED_RANDOM = random.Random()

Jitter: TypeAlias = Literal["full", "equal", "decorrelated"] | None
"""How a schedule spreads its delays (``None``: not at all); see :mod:`resilience.backoff`.

Example::

    backoff.exponential(0.1, cap=5, jitter="full")
"""
_JITTERS = (None, "full", "equal", "decorrelated")


@runtime_checkable
class Backoff(Protocol):
    """A delay schedule: ``delay(attempt, previous)`` returns the seconds to
    wait after failed attempt number ``attempt`` (1-based); ``previous`` is
    the delay used before it (0.0 the first time).

    Example::

        class Doubling:
            def delay(self, attempt: int, previous: float) -> float:
                return 2.0 ** attempt
    """

    def delay(self, attempt: int, previous: float) -> float: ...


def _check_delay(param: str, value: float) -> float:
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{param} must be a number of seconds, got {value!r}")
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{param} must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_jitter(jitter: object) -> Jitter:
    if jitter not in _JITTERS:
        raise ValueError(f"jitter must be None, 'full', 'equal' or 'decorrelated', got {jitter!r}")
    return jitter  # type: ignore[return-value]


def _check_decorrelated(param: str, floor: float, jitter: object) -> None:
    """Decorrelated jitter grows from its floor: a floor of 0 would never wait."""
    if jitter == "decorrelated" and floor <= 0:
        raise ValueError(
            f"{param} must be > 0 with jitter='decorrelated' (every delay would be 0), "
            f"got {floor!r}"
        )


class _Schedule:
    """Shared jitter and cap handling; subclasses compute the raw delay."""

    __slots__ = ("_cap", "_floor", "_jitter", "_random")

    def __init__(self, *, floor: float, cap: float, jitter: Jitter, rng: random.Random | None):
        self._floor = floor
        self._cap = cap
        self._jitter = _check_jitter(jitter)
        # One shared generator unless one is given: a Random's state is 2.5 KB,
        # and its methods are safe to share between threads.
        self._random = (rng or _SHARED_RANDOM).random

    @property
    def cap(self) -> float:
        """No delay of this schedule is ever above this."""
        return self._cap

    @property
    def jitter(self) -> Jitter:
        """The jitter applied to each delay: None, "full", "equal" or "decorrelated"."""
        return self._jitter

    def _raw(self, attempt: int) -> float:
        raise NotImplementedError

    def delay(self, attempt: int, previous: float) -> float:
        jitter = self._jitter
        if jitter == "decorrelated":
            # AWS "decorrelated jitter": between the floor and three times the
            # previous delay; stateful through `previous`, capped.
            low = self._floor
            high = previous * 3.0
            if high < low:
                high = low
            value = low + (high - low) * self._random()
            return value if value < self._cap else self._cap
        base = self._raw(attempt)
        if base > self._cap:
            base = self._cap
        if jitter is None:
            return base
        if jitter == "full":
            return base * self._random()
        return base / 2.0 + base / 2.0 * self._random()  # "equal"


class Immediate(_Schedule):
    """No wait at all between attempts. Build with :func:`resilience.backoff.immediate`.

    Example::

        schedule = backoff.immediate()
        assert schedule.delay(1, 0.0) == 0.0
    """

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(floor=0.0, cap=0.0, jitter=None, rng=None)

    def delay(self, attempt: int, previous: float) -> float:
        return 0.0

    def __repr__(self) -> str:
        return "immediate()"


class Fixed(_Schedule):
    """The same delay every time. Build with :func:`resilience.backoff.fixed`.

    Example::

        schedule = backoff.fixed(2.0)
        assert [schedule.delay(n, 0.0) for n in (1, 2, 3)] == [2.0, 2.0, 2.0]
    """

    __slots__ = ("_delay",)

    def __init__(self, delay: float, *, jitter: Jitter = None, rng: random.Random | None = None):
        self._delay = _check_delay("delay", delay)
        # The floor of decorrelated jitter: it stays within [delay, delay].
        super().__init__(floor=self._delay, cap=self._delay, jitter=jitter, rng=rng)
        _check_decorrelated("delay", self._delay, jitter)

    @property
    def seconds(self) -> float:
        """The delay between attempts, before jitter."""
        return self._delay

    def _raw(self, attempt: int) -> float:
        return self._delay

    def __repr__(self) -> str:
        return f"fixed({self._delay!r}, jitter={self._jitter!r})"


class Linear(_Schedule):
    """``initial``, ``initial + step``, ``initial + 2 * step``, ... up to ``cap``.
    Build with :func:`resilience.backoff.linear`.

    Example::

        schedule = backoff.linear(1, 0.5, cap=2)
        assert [schedule.delay(n, 0.0) for n in (1, 2, 3, 4)] == [1.0, 1.5, 2.0, 2.0]
    """

    __slots__ = ("_initial", "_step")

    def __init__(
        self,
        initial: float,
        step: float,
        *,
        cap: float = math.inf,
        jitter: Jitter = None,
        rng: random.Random | None = None,
    ):
        self._initial = _check_delay("initial", initial)
        self._step = _check_delay("step", step)
        if cap != math.inf:
            cap = _check_delay("cap", cap)
        if cap < self._initial:
            raise ValueError(f"cap must be >= initial ({self._initial!r}), got {cap!r}")
        # Starting at 0, decorrelated jitter's floor is the first delay that is not.
        floor = self._initial if self._initial > 0 else min(self._step, cap)
        super().__init__(floor=floor, cap=cap, jitter=jitter, rng=rng)
        _check_decorrelated("step", floor, jitter)

    @property
    def initial(self) -> float:
        """The first delay, before jitter."""
        return self._initial

    @property
    def step(self) -> float:
        """What each failure adds to the delay."""
        return self._step

    def _raw(self, attempt: int) -> float:
        return self._initial + self._step * (attempt - 1)

    def __repr__(self) -> str:
        return (
            f"linear({self._initial!r}, {self._step!r}, cap={self._cap!r}, jitter={self._jitter!r})"
        )


class Exponential(_Schedule):
    """``initial * multiplier ** (attempt - 1)``, never above ``cap``.
    Build with :func:`resilience.backoff.exponential`.

    Example::

        schedule = backoff.exponential(1, 2, cap=5)
        assert [schedule.delay(n, 0.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    """

    __slots__ = ("_initial", "_multiplier")

    def __init__(
        self,
        initial: float,
        multiplier: float = 2.0,
        *,
        cap: float,
        jitter: Jitter = None,
        rng: random.Random | None = None,
    ):
        self._initial = _check_delay("initial", initial)
        if isinstance(multiplier, bool) or not isinstance(multiplier, int | float):
            raise TypeError(f"multiplier must be a number, got {multiplier!r}")
        if not (multiplier >= 1 and math.isfinite(multiplier)):
            raise ValueError(f"multiplier must be a finite number >= 1, got {multiplier!r}")
        self._multiplier = float(multiplier)
        cap = _check_delay("cap", cap)
        if cap < self._initial:
            raise ValueError(f"cap must be >= initial ({self._initial!r}), got {cap!r}")
        super().__init__(floor=self._initial, cap=cap, jitter=jitter, rng=rng)
        _check_decorrelated("initial", self._initial, jitter)

    @property
    def initial(self) -> float:
        """The first delay, before jitter."""
        return self._initial

    @property
    def multiplier(self) -> float:
        """What each failure multiplies the delay by."""
        return self._multiplier

    def _raw(self, attempt: int) -> float:
        try:
            return self._initial * self._multiplier ** (attempt - 1)
        except OverflowError:  # 0 stays 0, however many attempts
            return math.inf if self._initial > 0 else 0.0

    def __repr__(self) -> str:
        return (
            f"exponential({self._initial!r}, {self._multiplier!r}, cap={self._cap!r}, "
            f"jitter={self._jitter!r})"
        )
