"""Delay schedules for :class:`~resilience.Retry`, named as users know them.

Each takes ``jitter=None | "full" | "equal" | "decorrelated"`` and never
returns more than its cap:

- ``full``: uniform between 0 and the delay (AWS "full jitter"; Envoy's choice);
- ``equal``: half the delay plus uniform up to the other half;
- ``decorrelated``: uniform between the initial delay and three times the
  previous one, capped.

Example::

    from resilience import Retry, backoff

    Retry(5, backoff=backoff.exponential(initial=1, multiplier=2, cap=60))
    # waits 1, 2, 4, 8 seconds between the five attempts
"""

from __future__ import annotations

import random

from ._core.backoff import Backoff, Exponential, Fixed, Immediate, Jitter, Linear

__all__ = [
    "Backoff",
    "Exponential",
    "Fixed",
    "Immediate",
    "Jitter",
    "Linear",
    "exponential",
    "fixed",
    "immediate",
    "linear",
]


def immediate() -> Immediate:
    """Retry at once, with no wait (and no yield to the event loop).

    Example::

        Retry(3, backoff=backoff.immediate())
    """
    return Immediate()


def fixed(delay: float, *, jitter: Jitter = None, rng: random.Random | None = None) -> Fixed:
    """Wait ``delay`` seconds between attempts.

    Example::

        backoff.fixed(0.5, jitter="equal")   # between 0.25 and 0.5 s
    """
    return Fixed(delay, jitter=jitter, rng=rng)


def linear(
    initial: float,
    step: float,
    *,
    cap: float = float("inf"),
    jitter: Jitter = None,
    rng: random.Random | None = None,
) -> Linear:
    """Wait ``initial``, then ``step`` seconds more after each failure, up to ``cap``.

    Example::

        backoff.linear(1, 0.5, cap=3)        # 1, 1.5, 2, 2.5, 3, 3, ...
    """
    return Linear(initial, step, cap=cap, jitter=jitter, rng=rng)


def exponential(
    initial: float = 0.1,
    multiplier: float = 2.0,
    *,
    cap: float = 30.0,
    jitter: Jitter = None,
    rng: random.Random | None = None,
) -> Exponential:
    """Wait ``initial``, then ``multiplier`` times longer after each failure, up to ``cap``.

    Example::

        backoff.exponential(initial=1, multiplier=2, cap=60)   # 1, 2, 4, ..., 32, 60, 60
    """
    return Exponential(initial, multiplier, cap=cap, jitter=jitter, rng=rng)
