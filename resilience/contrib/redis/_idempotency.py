"""IdempotencyMiddleware's keys on Redis: one script per step, fenced leases."""

from __future__ import annotations

import hashlib
import logging
import math
from typing import Any

from resilience import CircuitBreaker, CircuitOpenError, Clock
from resilience.contrib.asgi import Claim, Completed, IdempotencyRecord, InFlight, Lease
from resilience.lowlevel import check_seconds, running_loop

from ._backend import _ASYNC_CLIENTS, _STORE_ERRORS, RedisBackend, _not_on_trio
from ._idempotency_scripts import (
    IDEMPOTENCY_CLAIM,
    IDEMPOTENCY_COMPLETE,
    IDEMPOTENCY_RELEASE,
    IDEMPOTENCY_RENEW,
)

__all__ = ["RedisIdempotencyStore", "StoreUnavailableError"]

_logger = logging.getLogger("resilience")
_SHAS = {
    script: hashlib.sha1(script.encode()).hexdigest()
    for script in (IDEMPOTENCY_CLAIM, IDEMPOTENCY_RENEW, IDEMPOTENCY_COMPLETE, IDEMPOTENCY_RELEASE)
}
_MIN_LEASE = 0.001  # Redis expires keys by the millisecond
# A key whose record cannot be read is claimed again; something that keeps
# writing garbage there is a store fault, not a loop.
_CORRUPT_TRIES = 3


class StoreUnavailableError(ConnectionError):
    """Redis did not answer within ``store_timeout`` (or failed, or its
    breaker is open after failures in a row): the step was not taken. The
    middleware answers 503 (fails closed) unless configured to fail open.
    Its ``__cause__`` is why: the ``TimeoutError``, the redis-py or OS
    error, or the store breaker's ``CircuitOpenError``.

    Example::

        try:
            claim = await store.claim(key, fingerprint, 10.0)
        except StoreUnavailableError:
            ...  # what IdempotencyMiddleware does: 503 with Retry-After
    """


class RedisIdempotencyStore:
    """An :class:`~resilience.contrib.asgi.IdempotencyStore` on Redis or
    Redis Cluster, shared by every process that uses the same ``prefix``:
    a retry that reaches another server process is still replayed, and a
    duplicate running in another process is still told apart.

    - ``client``: a ``redis.asyncio.Redis`` or ``redis.asyncio.RedisCluster``
      (asyncio only: redis-py's asyncio client does not run on trio).
    - ``prefix``: the namespace of the keys, without braces.
    - ``store_timeout``: the longest one step waits for Redis, in seconds.
      Past it the step raises :class:`StoreUnavailableError` (a
      ``ConnectionError``) and the middleware fails closed (503) by
      default; after three failures in a row a breaker in front of Redis
      fails the steps at once for a second, so an outage costs no waiting.
    - ``clock``: that breaker's clock (a FakeClock in tests). Leases and
      expiry run on Redis's own clock (``TIME``), which every process shares.

    Each step (claim, renew, complete, release) is one Lua script, so one
    round trip: a request with a key costs a claim and a complete or release,
    plus a renewal per third of its lease while it runs; a replay or a
    conflict costs the claim alone. Two keys per idempotency key, in one
    cluster slot (``{<prefix>:idem:<key>}`` and ``...:fence``), and both
    expire: a lease a lease after its deadline, a record with its expiry,
    the fencing counter no sooner than the entry. Tokens are Redis's time in
    microseconds when the key is claimed, or the counter plus one if that is
    larger, so they keep growing even after the counter has expired.

    Example::

        import redis.asyncio
        from resilience.contrib.redis import RedisIdempotencyStore

        store = RedisIdempotencyStore(redis.asyncio.Redis(host="redis"), prefix="shop")
        app = IdempotencyMiddleware(app, store=store)
    """

    __slots__ = ("_backend", "_corrupt_logged", "prefix")

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = "resilience",
        store_timeout: float = 0.25,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(client, _ASYNC_CLIENTS):
            raise TypeError(
                "client must be a redis.asyncio.Redis or redis.asyncio.RedisCluster "
                f"(the middleware is async), got {client!r}"
            )
        check_seconds("store_timeout", store_timeout)
        # The backend checks the prefix, bounds each script by store_timeout,
        # keeps the breaker in front of Redis and falls back to EVAL on NOSCRIPT.
        # Its breaker has a name of its own: a RedisBackend with the same
        # prefix would otherwise add its series to this one's in metrics.
        self._backend = RedisBackend(
            client,
            prefix=prefix,
            store_timeout=store_timeout,
            clock=clock,
            breaker_name=f"{prefix}:idempotency:redis",
        )
        self.prefix = prefix
        """The namespace of every key."""
        self._corrupt_logged = False

    @property
    def client(self) -> Any:
        """The redis-py client."""
        return self._backend.client

    @property
    def breaker(self) -> CircuitBreaker:
        """The breaker in front of Redis, named ``<prefix>:idempotency:redis``
        (a :class:`RedisBackend`'s is ``<prefix>:redis``): open while Redis
        does not answer."""
        return self._backend.breaker

    @property
    def store_timeout(self) -> float:
        """The longest one step waits for Redis."""
        return self._backend.store_timeout

    def redis_keys(self, key: str) -> tuple[str, str]:
        """The entry's and the fencing counter's Redis keys for ``key``
        (one hash tag: one cluster slot)."""
        if "{" in key or "}" in key:
            # The middleware's keys are hex digests; braces would move the tag.
            raise ValueError(f"key must be a digest without braces, got {key!r}")
        tag = f"{{{self.prefix}:idem:{key}}}"
        return tag, tag + ":fence"

    async def claim(self, key: str, fingerprint: str, lease: float) -> Claim:
        """See :class:`~resilience.contrib.asgi.IdempotencyStore`."""
        lease_us = _micros(lease)
        drop = ""
        for _ in range(_CORRUPT_TRIES):
            reply = await self._run(IDEMPOTENCY_CLAIM, key, (fingerprint, lease_us, drop))
            kind = int(reply[0])
            if kind == 0:
                if int(reply[3]):
                    self._log_corrupt(key, None)
                return Lease(int(reply[1]), taken_over=bool(int(reply[2])))
            if kind == 1:
                return InFlight(_text(reply[1]), max(0, int(reply[2])) / 1e6)
            try:
                record = IdempotencyRecord.decode(_bytes(reply[1]))
            except ValueError as exc:
                # Treated as absent: claimed again, dropping that record only
                # (one completed meanwhile by another holder is kept).
                self._log_corrupt(key, exc)
                drop = _text(reply[3])
                continue
            return Completed(record, max(0, int(reply[2])) / 1e3)
        raise StoreUnavailableError(
            f"RedisIdempotencyStore {self.prefix!r}: {self.redis_keys(key)[0]!r} keeps "
            "holding records that cannot be read"
        )

    async def renew(self, key: str, token: int, lease: float) -> bool:
        """See :class:`~resilience.contrib.asgi.IdempotencyStore`."""
        reply = await self._run(IDEMPOTENCY_RENEW, key, (token, _micros(lease)))
        return bool(int(reply))

    async def complete(
        self, key: str, token: int, record: IdempotencyRecord, expiry: float
    ) -> bool:
        """See :class:`~resilience.contrib.asgi.IdempotencyStore`."""
        expiry_ms = max(1, math.ceil(check_seconds("expiry", expiry) * 1e3))
        reply = await self._run(IDEMPOTENCY_COMPLETE, key, (token, record.encode(), expiry_ms))
        return bool(int(reply))

    async def release(self, key: str, token: int) -> bool:
        """See :class:`~resilience.contrib.asgi.IdempotencyStore`."""
        return bool(int(await self._run(IDEMPOTENCY_RELEASE, key, (token,))))

    async def _run(self, script: str, key: str, args: tuple[Any, ...]) -> Any:
        if running_loop() is None:
            raise _not_on_trio()
        try:
            return await self._backend.run_script(
                script, _SHAS[script], self.redis_keys(key), args, raise_error=True
            )
        except CircuitOpenError as exc:
            why = "the store's breaker is open after its failures"
            error: BaseException = exc
        except _STORE_ERRORS as exc:
            why = f"within {self.store_timeout} s" if isinstance(exc, TimeoutError) else repr(exc)
            error = exc
        raise StoreUnavailableError(
            f"RedisIdempotencyStore {self.prefix!r}: Redis did not answer ({why})"
        ) from error

    def _log_corrupt(self, key: str, exc: ValueError | None) -> None:
        # Once per store: a corrupt entry is overwritten, not worth a log line each.
        if not self._corrupt_logged:
            self._corrupt_logged = True
            _logger.warning(
                "RedisIdempotencyStore %r: an entry under %r was not ours (%s); overwritten",
                self.prefix,
                self.redis_keys(key)[0],
                exc or "not an entry",
            )

    def __repr__(self) -> str:
        return f"<RedisIdempotencyStore {self.prefix!r} client={self.client!r}>"


def _micros(seconds: float) -> int:
    value = check_seconds("lease", seconds)
    return math.ceil(max(value, _MIN_LEASE) * 1e6)


def _bytes(value: bytes | str) -> bytes:
    # A client made with decode_responses=True hands back str.
    return value.encode() if isinstance(value, str) else value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
