"""The protocols between a policy (a RateLimiter, a CircuitBreaker) and a
store it shares with other processes (resilience.contrib.redis)."""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .breaker import CircuitBreaker
    from .ratelimit import RateLimiter

__all__ = ["BreakerBackend", "BreakerStore", "RateBackend", "RateStore"]


class RateStore(Protocol):
    """Where a :class:`~resilience.RateLimiter` given ``backend=`` takes its
    decisions. ``key`` is the call's key, None for an unkeyed limiter.

    ``decide`` (and ``decide_sync``) answer ``(answer, ahead)``. The answer
    is the limiter's own table's: ``0.0`` admitted, seconds ``> 0`` reserved
    (the caller waits that long), ``< 0`` refused (``-answer`` is the
    retry-after; ``-math.inf``: never); ``max_wait`` is the longest the call
    may wait. ``ahead`` is the limit's state after the decision: how many
    seconds its theoretical arrival time is past now (``0.0``: rested, or
    unknown). This process's own copy of the limit follows it, so that
    ``quota()`` and the ASGI ``RateLimit`` fields tell the shared limit, and
    a store that stops answering is taken over from there. None instead of
    the pair: the store could not answer in time, and this process's own
    limit decides.
    ``refused`` repeats a refusal the store gave recently (the seconds left,
    ``now`` being the limiter's clock), so that a key over its limit costs
    no round trip, or says None. ``push_back`` pauses
    the limit everywhere the store reaches (``RateLimiter.push_back``: the
    other side sent ``Retry-After``); it is called from the caller's code
    and must not wait on the store.

    Example::

        class Store:
            def refused(self, key, now): return None
            async def decide(self, key, cost, max_wait): return 0.0, 0.0
            def decide_sync(self, key, cost, max_wait): return 0.0, 0.0
            def push_back(self, key, seconds): pass
    """

    def refused(self, key: Hashable, now: float) -> float | None: ...

    def push_back(self, key: Hashable, seconds: float) -> None: ...

    async def decide(
        self, key: Hashable, cost: int, max_wait: float
    ) -> tuple[float, float] | None: ...

    def decide_sync(
        self, key: Hashable, cost: int, max_wait: float
    ) -> tuple[float, float] | None: ...


class RateBackend(Protocol):
    """What ``RateLimiter(backend=...)`` takes: it makes each limiter's store.

    Example::

        limiter = RateLimiter(100, name="api", backend=RedisBackend(client))
    """

    def rate_store(self, limiter: RateLimiter) -> RateStore: ...


class BreakerStore(Protocol):
    """Where a :class:`~resilience.CircuitBreaker` given ``backend=`` shares its state.

    The store works in the background (no call waits on it): it collects
    the breaker's counts and trials, publishes its transitions and applies
    the shared state to it (see ``resilience.contrib.redis``). ``start``
    is called on the breaker's first call (and raises if it cannot run
    there); ``control`` publishes a manual control already applied here.
    """

    def start(self) -> None: ...

    def control(self, operation: str) -> None: ...


class BreakerBackend(Protocol):
    """What ``CircuitBreaker(backend=...)`` takes: it makes each breaker's store."""

    def breaker_store(self, breaker: CircuitBreaker) -> BreakerStore: ...
