"""State shared across processes on Redis and Redis Cluster (extra ``redis``).

A :class:`RedisBackend` given as ``backend=`` to a
:class:`~resilience.RateLimiter` makes every process that shares the
limiter's name obey one limit: each decision is one Lua script on Redis's
clock; a refusal is remembered locally until its retry-after, so a key
over its limit costs no round trip; while Redis does not answer within
``store_timeout``, each process decides by its own copy of the limit (so an
outage admits up to N times the limit for N processes).

Example::

    import redis.asyncio
    from resilience import RateLimiter
    from resilience.contrib.redis import RedisBackend

    backend = RedisBackend(redis.asyncio.Redis(host="localhost"), prefix="shop")
    limiter = RateLimiter(100, per=1.0, name="partner-api", backend=backend)

The same backend given as ``backend=`` to a
:class:`~resilience.CircuitBreaker` (over a ``TimeWindow``) shares its state
with every breaker of that name: outcomes are counted locally and merged
on Redis every ``sync_interval``, so a breaker that opens in one process is
seen open by the others within about that interval (docs/redis.md).

A :class:`RedisIdempotencyStore` keeps ``IdempotencyMiddleware``'s keys
(``resilience.contrib.asgi``) for every server process: leases with fencing
tokens and stored responses, one script per step, failing closed when Redis
does not answer.
"""

from resilience.contrib import _extras

with _extras.needs_extra(__name__, "redis"):
    import redis as _redis  # noqa: F401

from ._backend import RedisBackend
from ._breakers import RedisBreakerStore
from ._idempotency import RedisIdempotencyStore, StoreUnavailableError
from ._limits import RedisRateStore

__all__ = [
    "RedisBackend",
    "RedisBreakerStore",
    "RedisIdempotencyStore",
    "RedisRateStore",
    "StoreUnavailableError",
]
