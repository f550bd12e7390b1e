"""Turn the user's ``on=`` argument (exception types or a predicate) into one predicate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

ExceptionTypes: TypeAlias = type[BaseException] | tuple[type[BaseException], ...]
ExceptionFilter: TypeAlias = ExceptionTypes | Callable[[BaseException], bool]


def exception_types(param: str, value: object) -> tuple[type[BaseException], ...]:
    """Validate ``value`` as an exception type or a tuple of them."""
    types = value if isinstance(value, tuple) else (value,)
    for item in types:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise TypeError(f"{param} must be an exception type or a tuple of them, got {value!r}")
    return types


def exception_matcher(
    param: str, value: object, *, never: tuple[type[BaseException], ...] = ()
) -> Callable[[BaseException], bool]:
    """``on=ValueError``, ``on=(OSError, TimeoutError)`` or ``on=lambda exc: ...``;
    exceptions of the ``never`` types are refused whatever ``value`` says."""
    if isinstance(value, tuple | type):
        types = exception_types(param, value)
        if never:
            return lambda exc: isinstance(exc, types) and not isinstance(exc, never)
        return lambda exc: isinstance(exc, types)
    if callable(value):
        predicate: Callable[[BaseException], bool] = value
        if never:
            return lambda exc: not isinstance(exc, never) and bool(predicate(exc))
        return predicate
    raise TypeError(
        f"{param} must be an exception type, a tuple of them or a predicate, got {value!r}"
    )


def result_predicate(param: str, value: object) -> Callable[[Any], bool] | None:
    if value is None:
        return None
    if not callable(value):
        raise TypeError(f"{param} must be a predicate on the result or None, got {value!r}")
    predicate: Callable[[Any], bool] = value
    return predicate
