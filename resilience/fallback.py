"""Fallback: answer with a substitute when the call fails."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from ._clock import Clock
from ._matchers import ExceptionFilter, exception_matcher, result_predicate
from ._plan import refuse_async, run_call
from .events import FallbackUsed
from .policy import Policy

__all__ = ["Fallback"]

P = ParamSpec("P")
T = TypeVar("T")

_MISSING: Any = object()


class Fallback(Policy):
    """Replace a failure (or an unwanted result) with a substitute.

    Give exactly one of:

    - ``value``: returned as is;
    - ``handler``: called with the exception (or, for a result rejected by
      ``on_result``, with that result); sync or async. An async handler works
      only on async calls.

    ``on`` picks the exceptions it handles (types or a predicate; default any
    :class:`Exception`; cancellation is never handled). ``on_result`` is a
    predicate that makes a returned value fall back too.

    Example::

        @Fallback(handler=lambda exc: cached_rates())
        async def fetch_rates() -> Rates: ...

        quote = Fallback(value=None, on=CircuitOpenError)
    """

    __slots__ = ("_handler", "_handler_is_async", "_handles", "_on_result", "_uses", "_value")

    _kind = "fallback"

    def __init__(
        self,
        value: Any = _MISSING,
        *,
        handler: Callable[[Any], Any] | None = None,
        on: ExceptionFilter = (Exception,),
        on_result: Callable[[Any], bool] | None = None,
        name: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        if (value is _MISSING) == (handler is None):
            raise ValueError("give exactly one of value= or handler=")
        if handler is not None and not callable(handler):
            raise TypeError(f"handler must be callable, got {handler!r}")
        super().__init__(name=name, clock=clock)
        self._value = value
        self._handler = handler
        self._handler_is_async = handler is not None and inspect.iscoroutinefunction(handler)
        self._handles = exception_matcher("on", on)
        self._on_result = result_predicate("on_result", on_result)
        self._uses = 0

    @property
    def uses(self) -> int:
        """How many times the substitute has been used."""
        return self._uses

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        # A callable that returns no awaitable fails before the fallback can hide it.
        result: T = await run_call(self, self._recover, fn, args, kwargs)
        return result

    async def _recover(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        try:
            result = await fn(*args, **kwargs)
        except Exception as exc:
            if not self._handles(exc):
                raise
            substitute = self._substitute(exc, exc)
        else:
            if self._on_result is None or not self._on_result(result):
                return result
            substitute = self._substitute(None, result)
        if self._handler_is_async:
            substitute = await substitute
        value: T = substitute
        return value

    def call_sync(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        refuse_async(self, fn)
        if self._handler_is_async:
            raise TypeError(
                f"Fallback {self._name!r} has an async handler and cannot serve "
                f"the plain call {fn!r}"
            )
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            if not self._handles(exc):
                raise
            return self._substitute(exc, exc)  # type: ignore[no-any-return]
        if self._on_result is None or not self._on_result(result):
            return result
        return self._substitute(None, result)  # type: ignore[no-any-return]

    def _check_sync(self, fn: object) -> None:
        if self._handler_is_async:
            raise TypeError(
                f"Fallback {self._name!r} has an async handler and cannot wrap the plain "
                f"function {getattr(fn, '__qualname__', fn)!r}"
            )

    def _substitute(self, exc: BaseException | None, outcome: object) -> Any:
        """The fallback value, or the handler's return (an awaitable if it is async)."""
        self._uses += 1
        if self._observed():
            self._emit(FallbackUsed(self._name, exc, None if exc is not None else outcome))
        if self._handler is None:
            return self._value
        return self._handler(outcome)
