"""RedisBackend: the connection, the scripts, and the store's own breaker."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio
import redis.cluster
from redis.exceptions import NoScriptError, RedisError

from resilience import CircuitBreaker, CircuitOpenError, Clock
from resilience.lowlevel import check_seconds, running_loop

from ._scripts import GCRA, PUSH_BACK

if TYPE_CHECKING:
    from resilience import RateLimiter

    from ._breakers import RedisBreakerStore
    from ._limits import RedisRateStore

__all__ = ["RedisBackend"]

_logger = logging.getLogger("resilience")
_ASYNC_CLIENTS = (redis.asyncio.Redis, redis.asyncio.RedisCluster)
_SYNC_CLIENTS = (redis.Redis, redis.cluster.RedisCluster)
# What a store call may fail with: Redis's errors, the socket's, our timeout.
_STORE_ERRORS = (RedisError, OSError, TimeoutError)
_PUSH_BACK_SHA = hashlib.sha1(PUSH_BACK.encode()).hexdigest()
# Loading the scripts is not a call's business: its own, longer, timeout.
_LOAD_TIMEOUT = 5.0
_LOAD_RETRY = 1.0


class RedisBackend:
    """State shared by many processes on Redis or Redis Cluster.

    Give it as ``backend=`` to a :class:`~resilience.RateLimiter` (with a
    ``name``: processes share a limit by name). Each decision is one Lua
    script (``EVALSHA``) on Redis's clock, never the client's.

    - ``client``: a ``redis.asyncio.Redis`` or ``redis.asyncio.RedisCluster``
      (asyncio; redis-py's asyncio client does not run on trio, and a call
      on trio fails with a clear error), or a sync ``redis.Redis`` /
      ``redis.cluster.RedisCluster`` for ``call_sync`` (bounded by the
      client's own ``socket_timeout``).
    - ``prefix``: the namespace of every key (each key also expires).
    - ``store_timeout``: the longest a call waits for Redis (asyncio), in
      seconds, whatever the client's settings (redis-py 8's defaults can
      hold one call for about a minute). Past it the call is decided by
      this process's own limit, and a breaker in front of the store stops
      asking Redis for a second after three failures in a row.
    - The scripts are loaded in the background on first use, outside any
      call's timeout; until they are, decisions are local.
    - ``clock``: the store breaker's (a FakeClock in tests).
    - ``breaker_name``: the store breaker's name in events and metrics;
      ``<prefix>:redis`` by default.

    Example::

        backend = RedisBackend(redis.asyncio.Redis(host="redis"), prefix="shop")
        limiter = RateLimiter(100, name="payments-api", backend=backend)
    """

    __slots__ = (
        "_client",
        "_guard",
        "_is_async",
        "_lock",
        "_next_load",
        "_pushes",
        "_sha",
        "_task",
        "prefix",
        "store_timeout",
        "sync_interval",
    )

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = "resilience",
        sync_interval: float = 0.25,
        store_timeout: float = 0.05,
        clock: Clock | None = None,
        breaker_name: str | None = None,
    ) -> None:
        if isinstance(client, _ASYNC_CLIENTS):
            is_async = True
        elif isinstance(client, _SYNC_CLIENTS):
            is_async = False
        else:
            raise TypeError(
                "client must be a redis.asyncio.Redis, redis.asyncio.RedisCluster, "
                f"redis.Redis or redis.cluster.RedisCluster, got {client!r}"
            )
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {prefix!r}")
        if not prefix or "{" in prefix or "}" in prefix:
            # Braces would change the keys' hash tags on a cluster.
            raise ValueError(f"prefix must be a non-empty str without braces, got {prefix!r}")
        self._client = client
        self._is_async = is_async
        self.prefix = prefix
        """The namespace of every key."""
        self.sync_interval = check_seconds("sync_interval", sync_interval)
        """How often shared state is read again (breakers; not used by limits)."""
        self.store_timeout = check_seconds("store_timeout", store_timeout)
        """The longest an asyncio call waits for Redis."""
        self._sha: str | None = None
        self._next_load = -math.inf
        self._task: Any = None  # the loading task or thread
        self._pushes: set[asyncio.Task[Any]] = set()  # push backs on their way
        self._lock = threading.Lock()
        # In front of the store: Redis down, a call pays store_timeout at
        # most three times, then nothing for a second.
        if breaker_name is not None:
            if not isinstance(breaker_name, str):
                raise TypeError(f"breaker_name must be a str or None, got {breaker_name!r}")
            if not breaker_name:
                raise ValueError("breaker_name must be a non-empty str, got ''")
        self._guard = CircuitBreaker(
            f"{prefix}:redis" if breaker_name is None else breaker_name,
            consecutive_failures=3,
            open_duration=1.0,
            record=_STORE_ERRORS,
            clock=clock,
        )

    @property
    def client(self) -> Any:
        return self._client

    @property
    def breaker(self) -> CircuitBreaker:
        """The breaker in front of the store: open while Redis does not answer."""
        return self._guard

    def rate_store(self, limiter: RateLimiter) -> RedisRateStore:
        """The shared store of one limiter (what ``RateLimiter(backend=)`` asks)."""
        from ._limits import RedisRateStore

        return RedisRateStore(self, limiter)

    def breaker_store(self, breaker: CircuitBreaker) -> RedisBreakerStore:
        """The shared state of one breaker (what ``CircuitBreaker(backend=)`` asks)."""
        from ._breakers import RedisBreakerStore

        return RedisBreakerStore(self, breaker)

    # The scripts --------------------------------------------------------

    @property
    def loaded(self) -> bool:
        """Whether the scripts are loaded (until then, decisions are local)."""
        return self._sha is not None

    async def ready(self) -> bool:
        """Load the scripts now (they load by themselves on first use) and
        wait for that attempt (at most 5 s); True once they are loaded.

        Example::

            if not await backend.ready():
                log.warning("Redis unreachable: limits are per process for now")
        """
        self._start_loading()
        task = self._task
        if isinstance(task, asyncio.Task):
            await asyncio.wait((task,))
        return self._sha is not None

    def ready_sync(self, timeout: float = _LOAD_TIMEOUT) -> bool:
        """:meth:`ready` for a sync client.

        Example::

            backend.ready_sync()
        """
        self._start_loading()
        task = self._task
        if isinstance(task, threading.Thread):
            task.join(timeout)
        return self._sha is not None

    def _loaded(self) -> str | None:
        """The script's SHA, or None (and its loading under way) until loaded."""
        sha = self._sha
        if sha is None:
            self._start_loading()
        return sha

    def _start_loading(self) -> None:
        now = time.monotonic()
        with self._lock:
            if self._task is not None or now < self._next_load:
                return
            self._next_load = now + _LOAD_RETRY
            if self._is_async:
                loop = running_loop()
                if loop is None:
                    raise _not_on_trio()
                self._task = loop.create_task(self._load())
            else:
                self._task = threading.Thread(target=self._load_sync, daemon=True)
                self._task.start()

    async def _load(self) -> None:
        try:
            async with asyncio.timeout(_LOAD_TIMEOUT):
                self._sha = await self._client.script_load(GCRA)
        except _STORE_ERRORS as exc:
            _logger.warning("RedisBackend %r: cannot load its scripts yet: %s", self.prefix, exc)
        finally:
            self._task = None

    def _load_sync(self) -> None:
        try:
            self._sha = self._client.script_load(GCRA)
        except _STORE_ERRORS as exc:
            _logger.warning("RedisBackend %r: cannot load its scripts yet: %s", self.prefix, exc)
        finally:
            self._task = None

    # One script call ---------------------------------------------------------

    async def run_script(
        self,
        script: str,
        sha: str,
        keys: tuple[str, ...],
        args: tuple[Any, ...],
        *,
        raise_error: bool = False,
    ) -> list[Any] | None:
        """Run ``script`` (``EVALSHA``; ``EVAL``, which loads it, on NOSCRIPT)
        within ``store_timeout``, behind the store breaker; None when Redis
        cannot answer (the caller decides on its own state), or with
        ``raise_error`` why not: the breaker's CircuitOpenError, or the
        Redis, OS or timeout error."""
        guard = self._guard
        try:
            ticket = guard.admit()
        except CircuitOpenError:
            if raise_error:
                raise
            return None
        error: BaseException | None = None
        reply = None
        try:
            async with asyncio.timeout(self.store_timeout):
                try:
                    reply = await self._client.evalsha(sha, len(keys), *keys, *args)
                except NoScriptError:  # flushed, or a new or restarted node
                    reply = await self._client.eval(script, len(keys), *keys, *args)
        except _STORE_ERRORS as exc:
            error = exc
        except BaseException:  # cancelled: the store did not fail
            guard.settle(ticket, None, None)
            raise
        guard.settle(ticket, error, reply)
        if error is None:
            return reply
        if raise_error:
            raise error
        return None

    def run_script_sync(
        self, script: str, sha: str, keys: tuple[str, ...], args: tuple[Any, ...]
    ) -> list[Any] | None:
        """:meth:`run_script` with the sync client (its socket timeout bounds it;
        no ``raise_error``: nothing sync asks why yet)."""
        guard = self._guard
        try:
            ticket = guard.admit()
        except CircuitOpenError:
            return None
        error: BaseException | None = None
        reply = None
        try:
            try:
                reply = self._client.evalsha(sha, len(keys), *keys, *args)
            except NoScriptError:
                reply = self._client.eval(script, len(keys), *keys, *args)
        except _STORE_ERRORS as exc:
            error = exc
        guard.settle(ticket, error, reply)
        return None if error is not None else reply

    # One rate-limit decision ----------------------------------------------

    async def evaluate(self, key: str, args: tuple[int, ...]) -> list[Any] | None:
        """Run the GCRA script on ``key``; None when Redis cannot answer in
        time, or the script is not loaded yet (decide here)."""
        if not self._is_async:
            raise TypeError(
                f"RedisBackend {self.prefix!r} has a sync client: async calls need a "
                "redis.asyncio client"
            )
        if running_loop() is None:
            raise _not_on_trio()
        sha = self._loaded()
        if sha is None:
            return None
        return await self.run_script(GCRA, sha, (key,), args)

    def evaluate_sync(self, key: str, args: tuple[int, ...]) -> list[Any] | None:
        """:meth:`evaluate` with the sync client."""
        if self._is_async:
            raise TypeError(
                f"RedisBackend {self.prefix!r} has an asyncio client: plain calls need a "
                "sync redis.Redis client"
            )
        sha = self._loaded()
        if sha is None:
            return None
        return self.run_script_sync(GCRA, sha, (key,), args)

    def push_back(self, key: str, args: tuple[int, ...]) -> None:
        """Run the PUSH_BACK script on ``key``, without waiting for it on
        asyncio: a task of the running loop sends it (a sync client sends
        it at once). Redis not answering is the store breaker's business;
        outside an asyncio loop an asyncio client sends nothing."""
        if not self._is_async:
            self.run_script_sync(PUSH_BACK, _PUSH_BACK_SHA, (key,), args)
            return
        loop = running_loop()
        if loop is None:
            return
        task = loop.create_task(self.run_script(PUSH_BACK, _PUSH_BACK_SHA, (key,), args))
        self._pushes.add(task)  # held until done: a task only the loop holds can vanish
        task.add_done_callback(self._pushes.discard)

    def __repr__(self) -> str:
        return f"<RedisBackend {self.prefix!r} client={self._client!r}>"


def _not_on_trio() -> RuntimeError:
    return RuntimeError(
        "RedisBackend: redis-py's asyncio client runs on asyncio only, and this call "
        "runs on another event loop (trio?); use it from asyncio"
    )
