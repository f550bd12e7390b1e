"""The in-process idempotency store: bounded, expiring, on a policy clock."""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict

from resilience import Clock, SystemClock
from resilience.lowlevel import check_count

from ._idempotency_store import Claim, Completed, IdempotencyRecord, InFlight, Lease
from ._settings import wrong

__all__ = ["MemoryIdempotencyStore"]

_SYSTEM_CLOCK = SystemClock()
# What an entry costs besides its body and headers (the entry, the key, the
# record object): counted so that many tiny records are bounded too.
_OVERHEAD = 256


class _Entry:
    """A key's state: a lease (``record`` None) or a stored response."""

    __slots__ = ("fingerprint", "record", "size", "token", "until")

    def __init__(self, token: int, fingerprint: str, until: float) -> None:
        self.token = token
        self.fingerprint = fingerprint
        self.until = until
        self.record: IdempotencyRecord | None = None
        self.size = _OVERHEAD


class MemoryIdempotencyStore:
    """The keys of one process: the default store of
    :class:`IdempotencyMiddleware`, and the reference for the
    :class:`IdempotencyStore` contract.

    Bounded: at most ``max_keys`` keys and about ``max_bytes`` of stored
    bodies and headers. When full, expired entries go first, then the
    oldest stored responses (a retry of an evicted key runs again, as after
    its expiry); live leases are never evicted, so a store full of running
    requests refuses a new claim (``RuntimeError``, which the middleware
    treats as a store that is down). A response larger than ``max_bytes``
    is evicted as soon as it is stored: keep ``max_bytes`` well above the
    middleware's ``max_body``. Expired entries are dropped as new ones
    arrive, never kept for ever.

    ``clock`` gives the time of leases and expiry (a
    :class:`~resilience.testing.FakeClock` in tests). Safe to share between
    threads and event loops: each method is one step under a lock.

    Example::

        store = MemoryIdempotencyStore(max_keys=50_000, clock=FakeClock())
        app = IdempotencyMiddleware(app, store=store)
    """

    __slots__ = ("_bytes", "_clock", "_entries", "_lock", "_tokens", "max_bytes", "max_keys")

    def __init__(
        self,
        *,
        max_keys: int = 10_000,
        max_bytes: int = 64 << 20,
        clock: Clock | None = None,
    ) -> None:
        self.max_keys = check_count("max_keys", max_keys, 1)
        self.max_bytes = check_count("max_bytes", max_bytes, 1)
        if clock is not None and not isinstance(clock, Clock):
            raise wrong("clock", clock, "a clock (now(), sleep(), sleep_sync()) or None")
        self._clock: Clock = clock if clock is not None else _SYSTEM_CLOCK
        # Least recently written first: leases, then records, as they come.
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        # One counter for every key: a token is never given twice.
        self._tokens = itertools.count(1)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """The keys held, expired ones not yet dropped included."""
        return len(self._entries)

    async def claim(self, key: str, fingerprint: str, lease: float) -> Claim:
        """See :class:`IdempotencyStore`."""
        now = self._clock.now()
        with self._lock:
            entries = self._entries
            entry = entries.get(key)
            taken_over = False
            if entry is not None:
                if entry.until > now:
                    record = entry.record
                    if record is not None:
                        return Completed(record, entry.until - now)
                    return InFlight(entry.fingerprint, entry.until - now)
                taken_over = entry.record is None
                self._drop(key, entry)
            self._make_room(now, claiming=True)
            token = next(self._tokens)
            entries[key] = _Entry(token, fingerprint, now + lease)
            self._bytes += _OVERHEAD
            return Lease(token, taken_over)

    async def renew(self, key: str, token: int, lease: float) -> bool:
        """See :class:`IdempotencyStore`."""
        now = self._clock.now()
        with self._lock:
            entry = self._live(key, token, now)
            if entry is None:
                return False
            entry.until = now + lease
            return True

    async def complete(
        self, key: str, token: int, record: IdempotencyRecord, expiry: float
    ) -> bool:
        """See :class:`IdempotencyStore`."""
        now = self._clock.now()
        size = _OVERHEAD + len(record.body) + sum(len(n) + len(v) for n, v in record.headers)
        with self._lock:
            entry = self._live(key, token, now)
            if entry is None:
                return False
            entry.record = record
            entry.until = now + expiry
            self._bytes += size - entry.size
            entry.size = size
            self._entries.move_to_end(key)
            if self._bytes > self.max_bytes:
                self._make_room(now, claiming=False)
            return True

    async def release(self, key: str, token: int) -> bool:
        """See :class:`IdempotencyStore`."""
        now = self._clock.now()
        with self._lock:
            entry = self._live(key, token, now)
            if entry is None:
                return False
            self._drop(key, entry)
            return True

    def _live(self, key: str, token: int, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None or entry.record is not None or entry.token != token or entry.until <= now:
            return None
        return entry

    def _drop(self, key: str, entry: _Entry) -> None:
        del self._entries[key]
        self._bytes -= entry.size

    def _make_room(self, now: float, *, claiming: bool) -> None:
        """Drop expired entries from the front, then evict the oldest stored
        responses until the store is within its bounds (with room for one
        more key when ``claiming``); live leases are passed over, never
        evicted."""
        entries = self._entries
        # A few expired entries per call: the table never fills with them.
        for _ in range(2):
            if not entries:
                break
            key, entry = next(iter(entries.items()))
            if entry.until <= now:
                self._drop(key, entry)
            elif entry.record is None:
                entries.move_to_end(key)  # a long-running lease: not in the way
            else:
                break
        extra = _OVERHEAD if claiming else 0
        keys = self.max_keys - 1 if claiming else self.max_keys
        if len(entries) <= keys and self._bytes + extra <= self.max_bytes:
            return
        leases: list[tuple[str, _Entry]] = []
        while entries and (
            len(entries) + len(leases) > keys or self._bytes + extra > self.max_bytes
        ):
            key, entry = entries.popitem(last=False)
            if entry.record is None and entry.until > now:
                leases.append((key, entry))  # live: set aside, put back below
            else:
                self._bytes -= entry.size
        for key, entry in leases:
            entries[key] = entry
        if claiming and len(entries) > keys:
            raise RuntimeError(
                f"MemoryIdempotencyStore is full of running requests (max_keys={self.max_keys})"
            )

    def __repr__(self) -> str:
        return f"<MemoryIdempotencyStore keys={len(self._entries)} max_keys={self.max_keys}>"
