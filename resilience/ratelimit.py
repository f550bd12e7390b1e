"""RateLimiter: at most ``rate`` calls per ``per`` seconds, exactly (GCRA)."""

from __future__ import annotations

import datetime
import math
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from . import _ratelimit_shared as _shared
from . import _validate
from ._clock import Clock
from ._core.gcra import RateCell, RateTable
from ._deadline import _current as _current_deadline
from ._protocol import WAIT
from ._ratelimit_inline import INLINE
from ._ratelimit_shared import SHARED, UNKEYED
from ._store import RateBackend, RateStore
from .errors import RateLimitedError
from .events import RateLimitRejected, RateLimitWaited
from .policy import Policy

__all__ = ["RateLimiter", "RateLimiterStatistics"]

_fresh_refusal = RateLimitedError._fresh
_NO_KEY: Any = object()


@dataclass(frozen=True, slots=True)
class RateLimiterStatistics:
    """Running totals of a :class:`RateLimiter` since it was created.

    Example::

        stats = limiter.stats
        print(f"{stats.admitted} admitted ({stats.waited} waited), {stats.rejected} refused")
    """

    admitted: int
    """Calls let through, at once or after a wait."""
    waited: int
    """Of those, the calls that waited for their slot."""
    rejected: int
    """Calls refused at once."""
    wait_seconds: float
    """The waits, added up."""
    keys: int
    """Keys held now (a keyed limiter; at most ``max_keys``)."""


class _Pending(threading.local):
    """The reservation that ``admit`` made and ``wait`` waits out: admit and
    wait run back to back in one task and thread, with nothing between.
    (cell, now, seconds); with a shared store (key, SHARED, max_wait)."""

    reservation: tuple[Any, Any, float] | None = None


class RateLimiter(Policy):
    """``rate`` calls per ``per`` seconds on average, with bursts of up to ``burst``.

    The generic cell rate algorithm keeps one number per key and is exact:
    in any closed interval of ``W`` seconds at most ``burst + rate * W / per``
    slots are admitted, and after a rest exactly ``burst`` calls pass at once
    (``burst`` defaults to ``rate``, rounded up).

    - Over the limit, a call whose slot frees up within ``max_wait`` seconds
      waits exactly that long (computed, no polling; a wait equal to
      ``max_wait`` is within it; ``math.inf`` waits as long as needed) and
      runs; any other is refused at once with a fresh
      :class:`~resilience.RateLimitedError` carrying ``retry_after``. A
      caller never waits only to be refused.
    - ``cost``: the slots one call uses (at most ``burst``).
    - ``key``: a function of the call's arguments that picks a limit of its
      own per key; at most ``max_keys`` keys are kept (recovered ones go
      first, then the least recently used).
    - A cancelled wait gives its slot back when no later call reserved
      after it. Retry never retries a refusal, and a breaker does not record
      it: it is this library's own rejection, not the dependency failing.

    Example::

        limiter = RateLimiter(10, per=1.0, burst=20, max_wait=0.5, name="search")

        @limiter
        async def search(query: str) -> list[str]: ...

        per_user = RateLimiter(5, per=60, key=lambda user, *rest: user)
    """

    __slots__ = (
        "_admitted",
        "_backend",
        "_cell",
        "_cost",
        "_key",
        "_lock",
        "_max_keys",
        "_max_wait",
        "_now",
        "_pending",
        "_plain",
        "_plain_keyed",
        "_rejected",
        "_shared",
        "_step",
        "_store",
        "_table",
        "_wait_seconds",
        "_waited",
        "burst",
        "per",
        "rate",
    )

    _kind = "rate_limiter"

    def __init__(
        self,
        rate: float,
        per: float = 1.0,
        *,
        burst: int | None = None,
        max_wait: float = 0.0,
        cost: int = 1,
        key: Callable[..., Hashable] | None = None,
        max_keys: int = 10_000,
        name: str | None = None,
        clock: Clock | None = None,
        backend: RateBackend | None = None,
    ) -> None:
        if backend is not None:
            if not callable(getattr(backend, "rate_store", None)):
                raise TypeError(
                    f"backend must be a shared store such as RedisBackend, got {backend!r}"
                )
            if name is None:
                raise ValueError(
                    "a RateLimiter given a backend needs a name: processes share a limit by name"
                )
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise TypeError(f"rate must be a number of calls, got {rate!r}")
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a finite number > 0, got {rate!r}")
        per = _validate.seconds("per", per)
        if burst is None:
            burst = math.ceil(rate)
        _validate.count("burst", burst, 1)
        if isinstance(max_wait, datetime.timedelta):
            max_wait = max_wait.total_seconds()
        if isinstance(max_wait, bool) or not isinstance(max_wait, int | float):
            raise TypeError(f"max_wait must be a number of seconds, got {max_wait!r}")
        if not max_wait >= 0:  # NaN fails too
            raise ValueError(
                f"max_wait must be >= 0 (math.inf: as long as needed), got {max_wait!r}"
            )
        _validate.count("cost", cost, 1)
        if cost > burst:
            raise ValueError(f"cost must be <= burst ({burst}): it could never pass, got {cost!r}")
        if key is not None and not callable(key):
            raise TypeError(f"key must be a function of the call's arguments or None, got {key!r}")
        _validate.count("max_keys", max_keys, 1)
        super().__init__(name=name, clock=clock)
        self.rate = rate
        self.per = per
        self.burst = burst
        self._max_wait = float(max_wait)
        self._max_keys = max_keys
        self._cost = cost
        self._key = key
        self._now = self._clock.now
        self._table = RateTable(
            rate=rate, per=per, burst=burst, max_keys=max_keys, origin=self._now()
        )
        self._cell = self._table.cell
        self._pending = _Pending()
        self._lock = threading.Lock()
        # Without a lock until threads may use it (a sync runner compiled with it).
        self._shared = False
        self._backend = backend
        # Decisions taken elsewhere (a shared store), or None: this table's.
        self._store: RateStore | None = None if backend is None else backend.rate_store(self)
        self._plain = key is None and not max_wait and self._store is None
        # The same, for a limit keyed by its caller (the ASGI middleware's).
        self._plain_keyed = not max_wait and self._store is None
        self._step = cost * self._table.interval  # the TAT's move per call
        self._admitted = self._waited = self._rejected = 0
        self._wait_seconds = 0.0

    @property
    def stats(self) -> RateLimiterStatistics:
        return RateLimiterStatistics(
            admitted=self._admitted,
            waited=self._waited,
            rejected=self._rejected,
            wait_seconds=self._wait_seconds,
            keys=len(self._table),
        )

    def derive(self, *, name: str | None = None) -> RateLimiter:
        """A new limiter with this one's settings, listeners and backend, in
        its own state (per-host limiters are made this way; with a backend,
        each shares its own name's limit across processes).

        Example::

            template = RateLimiter(10, name="api")
            per_host = template.derive(name="api:https://a.example:443")
        """
        derived = RateLimiter(
            self.rate,
            self.per,
            burst=self.burst,
            max_wait=self._max_wait,
            cost=self._cost,
            key=self._key,
            max_keys=self._max_keys,
            name=name,
            clock=self._clock,
            backend=self._backend,
        )
        derived._listeners = self._listeners
        return derived

    @property
    def keyed(self) -> bool:
        """Whether the limit is per key (``key=``)."""
        return self._key is not None

    @property
    def max_wait(self) -> float:
        """The longest a call waits for its slot, in seconds (0: never waits)."""
        return self._max_wait

    @property
    def max_keys(self) -> int:
        """How many keys' limits are held at most."""
        return self._max_keys

    def push_back(self, seconds: float) -> None:
        """Admit nothing (unkeyed) for ``seconds`` from now: the other side
        asked for it (a ``Retry-After`` on 429 or 503). Later slots follow at
        the usual rate. With a ``backend=``, every process sharing the limit
        is pushed back too (see the store's docs for how soon).

        Example::

            limiter.push_back(30.0)   # the server said: come back in 30 s
        """
        seconds = _validate.seconds("seconds", seconds)
        if self._key is not None:
            raise TypeError(
                f"RateLimiter {self._name!r} is keyed: push_back applies to one limit, "
                "and a keyed limiter has one per key"
            )
        with self._lock:
            # The store decides while it answers; this table, when it does not.
            self._table.push_back(self._table.cell, self._clock.now(), seconds)
        if self._store is not None:
            self._store.push_back(None, seconds)

    # The guard --------------------------------------------------------------

    admit: Callable[[], object]
    settle: Callable[[object, BaseException | None, object], BaseException | None]

    def _take(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
        """Admit (True), reserve a slot to wait for (WAIT), or refuse."""
        key = self._key
        if key is not None:
            return self._take_key(key(*args, **kwargs))  # user code: outside the lock
        return self._take_one(False)

    def _take_one(self, local: bool) -> object:
        """:meth:`_take` for the limiter's one limit (``local``: here, even
        with a shared store)."""
        if self._store is not None and not local:
            return _shared.take(self, UNKEYED)
        max_wait = self._max_wait
        if max_wait:
            max_wait = self._within_deadline(max_wait)
        if self._shared:
            with self._lock:
                now = self._now()
                decision = self._table.decide(self._cell, now, self._cost, max_wait)
        else:
            now = self._now()
            decision = self._table.decide(self._cell, now, self._cost, max_wait)
        if decision == 0.0:
            self._admitted += 1
            return True
        return self._verdict(self._cell, now, decision)

    def _take_key(self, key: Hashable, local: bool = False) -> object:
        """:meth:`_take` for the limit of ``key`` (whatever this limiter's own
        ``key=``: the ASGI middleware picks keys from the request). The
        ticket is the key's cell, which the middleware reads for its
        ``RateLimit`` header."""
        if self._store is not None and not local:
            return _shared.take(self, key)
        max_wait = self._max_wait
        if max_wait:
            max_wait = self._within_deadline(max_wait)
        table = self._table
        if self._shared:
            with self._lock:
                now = self._now()
                cell = table.cell_for(key, now)
                decision = table.decide(cell, now, self._cost, max_wait)
        else:
            now = self._now()
            cell = table.cell_for(key, now)
            decision = table.decide(cell, now, self._cost, max_wait)
        if decision == 0.0:
            self._admitted += 1
            return cell
        return self._verdict(cell, now, decision)

    def _within_deadline(self, max_wait: float) -> float:
        # Never reserve a slot the caller would be cut off before: under
        # overload such slots would be lost, and nobody admitted.
        limit = _current_deadline.get()
        if limit is None:
            return max_wait
        return min(max_wait, max(0.0, limit.remaining()))

    def _verdict(self, cell: RateCell | None, now: float, decision: float) -> object:
        """A decision other than "at once": wait for a reserved slot (WAIT),
        or a refusal, returned for the caller to raise (from the plan's own
        frame: a raise through the frames between costs more than the rest)."""
        if decision > 0.0:
            self._pending.reservation = (cell, now, decision)
            return WAIT
        self._rejected += 1
        retry_after = None if decision == -math.inf else -decision
        if self._observed():
            self._emit(RateLimitRejected(self._name, retry_after))
        return _fresh_refusal(self._name, retry_after)

    def _reserved_cell(self) -> RateCell | None:
        """The cell of the slot :meth:`admit` just reserved (before :meth:`wait`);
        when a shared store decides, this process's copy of the key's limit,
        which the store's answer brings up to date."""
        reservation = self._pending.reservation
        assert reservation is not None
        if reservation[1] is SHARED:
            return _shared.local_cell(self, reservation[0])
        cell: RateCell | None = reservation[0]
        return cell

    def quota(self, key: Hashable = _NO_KEY) -> tuple[int, float]:
        """The calls that could pass at once now, and the seconds until one
        more could (``math.inf`` when the limit is fully rested): what the
        ASGI middleware's ``RateLimit`` header tells clients. Reading it
        takes nothing.

        Give ``key`` for one key's limit: on a keyed limiter, and on one the
        ASGI middleware keys by client address. A key it does not hold (never
        seen, or forgotten) is fully rested.

        Example::

            calls, seconds = limiter.quota()
            print(f"{calls} now, one more in {seconds:.2f} s")
            per_client.quota("203.0.113.7")
        """
        table = self._table
        if key is _NO_KEY:
            if self._key is not None:
                raise TypeError(f"RateLimiter {self._name!r} is keyed: quota() needs the key")
            cell: RateCell | None = table.cell
        else:
            cell = table.peek(key)
        if cell is None:
            cell = RateCell()
        return table.available(cell, self._now(), self._cost)

    def _threads(self) -> None:
        """A sync runner was compiled with this limiter: take the lock from now on."""
        self._shared = True
        self._plain = self._plain_keyed = False

    def _reserved(self) -> tuple[Any, Any, float]:
        pending = self._pending
        reservation = pending.reservation
        if reservation is None:
            raise RuntimeError(f"RateLimiter {self._name!r}: wait() without an admit() that asked")
        pending.reservation = None
        return reservation

    def _waited_for(self, cell: RateCell | None, seconds: float) -> object:
        self._admitted += 1
        self._waited += 1
        self._wait_seconds += seconds
        if self._observed():
            self._emit(RateLimitWaited(self._name, seconds))
        return cell

    async def wait(self) -> object:
        """Wait out the slot that :meth:`admit` reserved (on the clock); with
        a shared store, ask it first."""
        cell, now, seconds = self._reserved()
        if now is SHARED:
            return await _shared.decide(self, cell, seconds)
        try:
            await self._clock.sleep(seconds)
        except BaseException:
            with self._lock:  # rare: the lock whether or not threads share it
                self._table.give_back(cell, now, self._cost, seconds)
            raise
        return self._waited_for(cell, seconds)

    def wait_sync(self) -> object:
        """Wait out the reserved slot in this thread (on the clock); with a
        shared store, ask it first."""
        cell, now, seconds = self._reserved()
        if now is SHARED:
            return _shared.decide_sync(self, cell, seconds)
        try:
            self._clock.sleep_sync(seconds)
        except BaseException:
            with self._lock:  # rare: the lock whether or not threads share it
                self._table.give_back(cell, now, self._cost, seconds)
            raise
        return self._waited_for(cell, seconds)

    def __repr__(self) -> str:
        return f"<RateLimiter {self._name!r} {self.rate:g}/{self.per:g}s burst={self.burst}>"


# One source for the guard (resilience._ratelimit_inline): these methods, and plans inline.
RateLimiter._inline_source = INLINE  # type: ignore[attr-defined]
RateLimiter.admit = INLINE.method(
    "admit",
    """Admit (the ticket), ask to :meth:`wait` for a reserved slot (WAIT), or
    raise a fresh :class:`~resilience.RateLimitedError`. A keyed limiter
    needs the call's arguments: run it through a plan (decorators, pipelines,
    ``call``), which passes them.""",
)
RateLimiter.settle = INLINE.method("settle", """Nothing to give back: a slot is used once taken.""")
