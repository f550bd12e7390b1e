"""Constructor arguments, checked one way everywhere: TypeError for a wrong
type, ValueError for a wrong value, each naming the parameter and the value.

``bool`` is never taken for a number, although it is an int to Python.
"""

from __future__ import annotations

import math

__all__ = ["count", "optional_seconds", "rate", "seconds"]


def _number(param: str, value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{param} must be {what}, got {value!r}")
    return float(value)


def count(param: str, value: object, minimum: int) -> int:
    """An int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{param} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{param} must be >= {minimum}, got {value!r}")
    return value


def seconds(param: str, value: object, *, or_none: str = "") -> float:
    """A finite number of seconds > 0."""
    number = _number(param, value, f"a number{or_none}")
    if not (number > 0 and math.isfinite(number)):
        raise ValueError(f"{param} must be a finite number > 0{or_none}, got {value!r}")
    return number


def optional_seconds(param: str, value: object) -> float | None:
    """None, or a finite number of seconds > 0."""
    return None if value is None else seconds(param, value, or_none=" or None")


def rate(param: str, value: object) -> float:
    """A share in (0, 1]."""
    number = _number(param, value, "a number in (0, 1]")
    if not 0 < number <= 1:
        raise ValueError(f"{param} must be in (0, 1], got {value!r}")
    return number
