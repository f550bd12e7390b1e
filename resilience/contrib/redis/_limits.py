"""A RateLimiter's limit shared on Redis: one script per decision, refusals
remembered here until their retry-after."""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from ._scripts import PAUSE_MAX_US

if TYPE_CHECKING:
    from resilience import RateLimiter

    from ._backend import RedisBackend

__all__ = ["RedisRateStore"]

_logger = logging.getLogger("resilience")
# A wait "as long as needed" (math.inf), as microseconds Lua can hold.
_FOREVER_US = 10**15
# Keys whose corrupt values were logged, per store: once each, and bounded.
_LOGGED = 1000


def _text(key: Hashable) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bytes):
        return key.decode("utf-8", "backslashreplace")
    return repr(key)


class RedisRateStore:
    """The :class:`~resilience.lowlevel.RateStore` of one limiter on a
    :class:`RedisBackend` (``RateLimiter(backend=...)`` makes it).

    Keys are ``{<prefix>:rl:<name>[:<key>]}``: the braces make the whole key
    its own hash tag, so each decision touches one slot of a cluster, and
    the keys of a keyed limiter spread over the nodes. Times are whole
    microseconds; the emission interval is rounded up, so the shared limit
    never admits more than the local one would.

    Example::

        store = RedisBackend(client).rate_store(limiter)
    """

    __slots__ = (
        "_backend",
        "_base",
        "_interval",
        "_logged",
        "_max_keys",
        "_max_wait",
        "_now",
        "_refusals",
        "_tolerance",
    )

    def __init__(self, backend: RedisBackend, limiter: RateLimiter) -> None:
        self._backend = backend
        self._base = f"{backend.prefix}:rl:{limiter.name}"
        self._interval = math.ceil(limiter.per / limiter.rate * 1e6)
        self._tolerance = limiter.burst * self._interval
        self._now = limiter.clock.now
        self._max_keys = limiter.max_keys
        self._max_wait = limiter.max_wait
        # key -> when its last refusal ends (the limiter's clock).
        self._refusals: dict[Hashable, float] = {}
        self._logged: set[str] = set()

    def redis_key(self, key: Hashable) -> str:
        """The Redis key holding ``key``'s limit (None: the limiter's one limit)."""
        tag = self._base if key is None else f"{self._base}:{_text(key)}"
        return "{" + tag + "}"

    def refused(self, key: Hashable, now: float) -> float | None:
        until = self._refusals.get(key)
        if until is None:
            return None
        if now >= until:
            del self._refusals[key]
            return None
        return until - now

    async def decide(self, key: Hashable, cost: int, max_wait: float) -> tuple[float, float] | None:
        name = self.redis_key(key)
        return self._answer(
            key, name, await self._backend.evaluate(name, self._args(cost, max_wait))
        )

    def decide_sync(self, key: Hashable, cost: int, max_wait: float) -> tuple[float, float] | None:
        name = self.redis_key(key)
        return self._answer(
            key, name, self._backend.evaluate_sync(name, self._args(cost, max_wait))
        )

    def _args(self, cost: int, max_wait: float) -> tuple[int, ...]:
        wait = _FOREVER_US if max_wait == math.inf else math.floor(max_wait * 1e6)
        return (self._interval, self._tolerance, cost, min(wait, _FOREVER_US))

    def _answer(
        self, key: Hashable, name: str, reply: list[Any] | None
    ) -> tuple[float, float] | None:
        if reply is None:
            return None
        status, micros, corrupt, ahead_us = (int(part) for part in reply)
        ahead = max(0, ahead_us) / 1e6
        if corrupt and name not in self._logged and len(self._logged) < _LOGGED:
            self._logged.add(name)
            _logger.warning(
                "rate limit %r: Redis held no sane arrival time at %r; it was overwritten",
                self._base,
                name,
            )
        if status == 0:
            return 0.0, ahead
        seconds = micros / 1e6
        if status == 1:
            return seconds, ahead
        self._refuse(key, self._now() + seconds)
        return -seconds, ahead

    def push_back(self, key: Hashable, seconds: float) -> None:
        # Every process from its next decision on. Here, a pause longer than
        # a call may wait is also remembered as a refusal Redis gave (no
        # round trip until it ends); a shorter one Redis makes calls wait out.
        if seconds > self._max_wait:
            self._refuse(key, self._now() + seconds)
        pause = min(math.ceil(seconds * 1e6), PAUSE_MAX_US)
        self._backend.push_back(self.redis_key(key), (pause, self._interval, self._tolerance))

    def _refuse(self, key: Hashable, until: float) -> None:
        refusals = self._refusals
        if key not in refusals:
            if len(refusals) >= self._max_keys:
                del refusals[next(iter(refusals))]  # the oldest; each ends by itself anyway
        elif refusals[key] > until:
            return
        refusals[key] = until

    def __repr__(self) -> str:
        return f"<RedisRateStore {self._base!r}>"
