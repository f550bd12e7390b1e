"""Saga: a run of three async steps that all succeed, two of them with a
compensation (registered, never called), against awaiting the three
functions and collecting their results in a dict by hand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .cases import Case

__all__ = ["cases"]

GROUP = "saga, three async steps, all succeed"
BASELINE = "three awaits into a dict"

Target = Callable[[], Any]


async def reserve(ctx: Any) -> int:
    return 1


async def charge(ctx: Any) -> int:
    return 2


async def ship(ctx: Any) -> int:
    return 3


async def undo(ctx: Any, result: Any) -> None:
    return None


def baseline() -> Target:
    async def target() -> dict[str, int]:
        return {
            "reserve": await reserve(None),
            "charge": await charge(None),
            "ship": await ship(None),
        }

    return target


def ours() -> Target:
    from resilience.saga import Saga, Step

    saga = Saga(
        "order",
        [
            Step("reserve", reserve, compensate=undo),
            Step("charge", charge, compensate=undo),
            Step("ship", ship),
        ],
    )
    return saga.run


def cases() -> list[Case]:
    return [
        Case(GROUP, BASELINE, baseline, key="saga.baseline"),
        Case(
            GROUP,
            "resilience Saga.run (3 steps)",
            ours,
            ours=True,
            key="saga.three",
            baseline=BASELINE,
        ),
    ]
