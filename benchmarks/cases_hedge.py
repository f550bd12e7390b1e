"""Hedge: a hedged call whose first attempt answers before the delay.

That is nearly every call of a hedged dependency (a p95 delay hedges about
one call in twenty), so its cost is what hedging adds to the traffic. The
delay is one second: no row ever starts a hedge. On asyncio the first
attempt runs in the caller's own task with an entry on the hedge's shared
timer; on trio every hedged call opens a task group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .cases import Case
from .cases_baseline import f

__all__ = ["cases"]

FIRST_ANSWERS = "hedge, first attempt answers before the delay"

Target = Callable[[], Any]


def ours_hedge() -> Target:
    from resilience import Hedge

    return Hedge(2, delay=1.0)(f)


def ours_hedge_quantile() -> Target:
    """delay='p95' with the tracker warmed on fast calls: the delay is read from it."""
    from resilience import Hedge

    hedge = Hedge(2, delay="p95", min_delay=1.0)
    for _ in range(200):
        hedge.tracker.record(0.001)
    return hedge(f)


def cases() -> list[Case]:
    return [
        Case(
            FIRST_ANSWERS,
            "resilience @Hedge(2, delay=1.0)",
            ours_hedge,
            ours=True,
            key="hedge.first",
        ),
        Case(
            FIRST_ANSWERS,
            "resilience @Hedge(2, delay='p95') (tracker warm, floor 1 s)",
            ours_hedge_quantile,
            ours=True,
            key="hedge.first.p95",
        ),
    ]
