"""Constructor arguments, checked one way everywhere: TypeError for a wrong
type, ValueError for a wrong value, each naming the parameter and the value.

``bool`` is never taken for a number, although it is an int to Python.
Seconds may also be given as a :class:`datetime.timedelta`.
"""

from __future__ import annotations

import datetime
import math

__all__ = ["count", "delay", "optional_seconds", "rate", "seconds"]


def _number(param: str, value: object, what: str, *, duration: bool = False) -> float:
    if duration and isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{param} must be {what}, got {value!r}")
    return float(value)


def count(param: str, value: object, minimum: int) -> int:
    """An int >= ``minimum``.

    Example::

        check_count("workers", 4, 1)      # 4
        check_count("workers", True, 1)   # TypeError: workers must be an int, got True
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{param} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{param} must be >= {minimum}, got {value!r}")
    return value


def seconds(param: str, value: object, *, or_none: str = "") -> float:
    """A finite number of seconds > 0 (or a timedelta).

    Example::

        check_seconds("timeout", timedelta(seconds=2))   # 2.0
        check_seconds("timeout", 0)   # ValueError: timeout must be a finite number > 0, got 0
    """
    number = _number(param, value, f"a number of seconds{or_none}", duration=True)
    if not (number > 0 and math.isfinite(number)):
        raise ValueError(f"{param} must be a finite number > 0{or_none}, got {value!r}")
    return number


def delay(param: str, value: object) -> float:
    """A finite number of seconds >= 0 (or a timedelta): a delay may be none.

    Example::

        delay("min_delay", 0)   # 0.0
    """
    number = _number(param, value, "a number of seconds", duration=True)
    if not (number >= 0 and math.isfinite(number)):
        raise ValueError(f"{param} must be a finite number >= 0, got {value!r}")
    return number


def optional_seconds(param: str, value: object) -> float | None:
    """None, or a finite number of seconds > 0.

    Example::

        check_optional_seconds("max_wait", None)   # None
    """
    return None if value is None else seconds(param, value, or_none=" or None")


def rate(param: str, value: object) -> float:
    """A share in (0, 1].

    Example::

        check_rate("failure_rate", 0.5)   # 0.5
    """
    number = _number(param, value, "a number in (0, 1]")
    if not 0 < number <= 1:
        raise ValueError(f"{param} must be in (0, 1], got {value!r}")
    return number
