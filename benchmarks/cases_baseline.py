"""Baselines: what every other row's overhead is measured against.

The helpers here (``f``, ``g``, ``f_fail``, ``Boom``) are the wrapped
callables every case module should use, so that all rows time the same work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .cases import Case

__all__ = ["Boom", "cases", "f", "f_fail", "g"]

GROUP = "baselines"


class Boom(Exception):
    """The failure raised by :func:`f_fail`."""


async def f() -> int:
    """The async work every success-path case wraps."""
    return 1


def g() -> int:
    """The sync work every sync case wraps."""
    return 1


async def f_fail() -> int:
    """The async work every failure-path case wraps: raises a fresh :class:`Boom`."""
    raise Boom


def _await_f() -> Callable[[], Any]:
    return f


def _g() -> Callable[[], Any]:
    return g


def _raise_caught() -> Callable[[], Any]:
    async def target() -> None:
        try:
            await f_fail()
        except Boom:
            pass

    return target


def _raise_caught_3() -> Callable[[], Any]:
    async def target() -> None:
        for _ in range(3):
            try:
                await f_fail()
            except Boom:
                pass

    return target


def cases() -> list[Case]:
    return [
        Case(GROUP, "await f()", _await_f, key="baseline.await"),
        Case(GROUP, "g()", _g, kind="sync", baseline="g()", key="baseline.sync"),
        Case(GROUP, "raise caught", _raise_caught, key="baseline.raise"),
        Case(GROUP, "3 x raise caught", _raise_caught_3, key="baseline.raise3"),
    ]
