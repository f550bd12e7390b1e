"""The exception hierarchy: everything this library raises on its own account.

Every error derives from :class:`ResilienceError`, so one ``except`` clause
catches them all. A rejection always raises a fresh instance: a shared
instance would grow its traceback on every raise.

Example::

    from resilience import CircuitOpenError, ResilienceError

    try:
        await fetch(url)
    except CircuitOpenError as exc:      # rejected without calling
        retry_later(exc.retry_after)
    except ResilienceError:              # any other rejection or timeout of ours
        raise
"""

from __future__ import annotations

import builtins

__all__ = [
    "BulkheadFullError",
    "CircuitOpenError",
    "RateLimitedError",
    "ResilienceError",
    "TimeoutError",
]


class ResilienceError(Exception):
    """Base class of every error raised by a resilience policy.

    Example::

        try:
            await pipeline.call(fetch)
        except resilience.ResilienceError as exc:
            log.warning("rejected by %s", exc.name)
    """

    name: str

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        self.name = name

    def __reduce__(self) -> tuple[object, ...]:
        # Errors cross processes (multiprocessing, task queues, log handlers):
        # rebuilt from their type, args and fields, not through the
        # keyword-only constructors, so every subclass pickles and copies.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class CircuitOpenError(ResilienceError):
    """A circuit breaker rejected the call without running it.

    ``retry_after`` is the number of seconds until the breaker lets a trial
    call through (``None`` when it is forced open and will not by itself).

    Example::

        try:
            await breaker.call(fetch)
        except CircuitOpenError as exc:
            print(f"{exc.name} is open, next trial in {exc.retry_after}s")
    """

    retry_after: float | None

    def __init__(self, *, name: str, retry_after: float | None) -> None:
        # The message is built only if someone reads it (__str__): an open
        # breaker under load raises thousands of these a second and most are
        # caught without being printed.
        super().__init__("", name=name)
        self.args = ()
        self.retry_after = retry_after

    @classmethod
    def _fresh(cls, name: str, retry_after: float | None) -> CircuitOpenError:
        """What the constructor builds, without its ``__init__`` chain: the
        breaker's rejection path, where that chain costs more than the rest."""
        error = cls.__new__(cls)
        error.name = name
        error.retry_after = retry_after
        return error

    def __str__(self) -> str:
        if self.retry_after is None:
            return f"circuit breaker {self.name!r} is open"
        return f"circuit breaker {self.name!r} is open; next trial in {self.retry_after:.3f}s"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, retry_after={self.retry_after!r})"


def _rebuild(
    cls: type[ResilienceError], args: tuple[object, ...], fields: dict[str, object]
) -> object:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(fields)
    return error


class RateLimitedError(ResilienceError):
    """A rate limiter refused the call without running it.

    ``retry_after`` is the number of seconds until a call of the same cost
    would pass (``None`` when none ever can: a cost above the burst).

    Example::

        try:
            await limiter.call(fetch)
        except RateLimitedError as exc:
            wait = math.ceil(exc.retry_after)
            return Response(status_code=429, headers={"Retry-After": str(wait)})
    """

    retry_after: float | None

    def __init__(self, *, name: str, retry_after: float | None) -> None:
        # The message is built only if someone reads it (__str__), as for
        # CircuitOpenError: a key over its limit is refused again and again.
        super().__init__("", name=name)
        self.args = ()
        self.retry_after = retry_after

    @classmethod
    def _fresh(cls, name: str, retry_after: float | None) -> RateLimitedError:
        """What the constructor builds, without its ``__init__`` chain."""
        error = cls.__new__(cls)
        error.name = name
        error.retry_after = retry_after
        return error

    def __str__(self) -> str:
        wait = "never" if self.retry_after is None else f"in {self.retry_after:.3f}s"
        return f"rate limiter {self.name!r} refused the call; it would pass {wait}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, retry_after={self.retry_after!r})"


class BulkheadFullError(ResilienceError):
    """A bulkhead had no free permit and no room in its wait queue (or the
    wait ran out), so the call was rejected without running.

    Example::

        try:
            await bulkhead.call(fetch)
        except BulkheadFullError as exc:
            return Response(status_code=503)
    """

    def __init__(self, *, name: str, capacity: int) -> None:
        super().__init__(f"bulkhead {name!r} is full (capacity {capacity})", name=name)
        self.capacity = capacity


class TimeoutError(ResilienceError, builtins.TimeoutError):
    """A :class:`~resilience.Timeout` cancelled the work because its limit passed.

    It is also a builtin :class:`TimeoutError`, so existing ``except
    TimeoutError`` clauses keep working.

    Example::

        try:
            await Timeout(2.0).call(fetch)
        except TimeoutError as exc:
            print(exc.name, exc.seconds)
    """

    seconds: float

    def __init__(self, *, name: str, seconds: float) -> None:
        super().__init__(f"{name!r} timed out after {seconds:g}s", name=name)
        self.seconds = seconds
