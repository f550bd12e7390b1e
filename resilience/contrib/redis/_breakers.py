"""A CircuitBreaker's state shared on Redis.

Transitions are scripts; outcomes are counted here (the breaker's running
totals, so the closed path makes no round trip and pays nothing more) and
flushed into the shared window by a background task every
``sync_interval``, which reads the shared state back in the same script and
applies it to this process's breaker. No call ever waits on Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import threading
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from resilience import CircuitState, TimeWindow

from ._breaker_rounds import Rounds
from ._scripts import BREAKER_CONTROL, BREAKER_SYNC

if TYPE_CHECKING:
    from resilience import CircuitBreaker

    from ._backend import RedisBackend

__all__ = ["RedisBreakerStore"]

_logger = logging.getLogger("resilience")
_STATES = (
    CircuitState.CLOSED,
    CircuitState.OPEN,
    CircuitState.HALF_OPEN,
    CircuitState.FORCED_OPEN,
    CircuitState.DISABLED,
)
_CLOSED, _OPEN, _HALF_OPEN, _FORCED_OPEN, _DISABLED = _STATES
# What a process that knew the state tells a Redis that lost it.
_REPUBLISH = {_OPEN: "open", _FORCED_OPEN: "force_open", _DISABLED: "disable"}
_STATE_TTL_MS = 86_400_000
"""A breaker's state is forgotten after a day with no process using it."""
_MIN_LEASE = 10.0
"""Half-open trial permits not reported for this long (at least) are taken
as lost with their process and handed out again."""
_HOLD = 0.5
"""Half-open trial permits handed out here and not used for this long (at
least; 4 sync intervals if longer) are given back for other processes."""
_MAX_OPS = 16
_LOGGED: set[str] = set()  # keys whose corrupt values were logged (once per process)
_MAX_LOGGED = 1000


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


_SHAS = {BREAKER_SYNC: _sha(BREAKER_SYNC), BREAKER_CONTROL: _sha(BREAKER_CONTROL)}


class RedisBreakerStore:
    """The shared state of one :class:`~resilience.CircuitBreaker` on a
    :class:`RedisBackend` (``CircuitBreaker(backend=...)`` makes it;
    ``breaker.store`` is it).

    Keys (one hash tag per breaker, so both live in one cluster slot):
    ``{<prefix>:cb:<name>}``, a hash of the state (state, epoch, when it
    opened and for how long on Redis's clock, the half-open round), and
    ``{<prefix>:cb:<name>}:w``, the closed window's per-second counts of the
    current epoch. Both hold plain integers and expire (the state a day
    after the last process used it, the window with its seconds). A value
    that is not a sane integer is treated as absent and overwritten, and
    logged once per key per process. Processes sharing a breaker should
    share its settings: a value outside this process's (an open duration
    beyond its ``open_duration_max``) counts as corrupt.

    The background work is an asyncio task with a ``redis.asyncio`` client
    (started by the breaker's first call, which must run on asyncio: on
    trio it fails with a RuntimeError saying so) and a daemon thread with a
    sync client. Each round is one script, bounded by the backend's
    ``store_timeout`` and its store breaker (``backend.breaker``); while
    rounds fail, the breaker decides on its own state, and it shares again
    at the first round that succeeds. A state Redis lost (a restart) is
    told what this process knew (open, forced open, disabled), unless
    another process has changed it since.

    Example::

        breaker = CircuitBreaker("payments", window=TimeWindow(30), backend=backend)
        await breaker.store.refresh()   # one round now rather than within sync_interval
    """

    __slots__ = (
        "__weakref__",
        "_backend",
        "_birth",
        "_breaker",
        "_busy",
        "_connected",
        "_granted_at",
        "_head",
        "_hold",
        "_keys",
        "_last_ok",
        "_marks",
        "_ops",
        "_pending",
        "_rejected",
        "_round_lock",
        "_rounds",
        "_rules",
        "_seen",
        "_serial",
        "_window_seconds",
        "window",
    )

    def __init__(self, backend: RedisBackend, breaker: CircuitBreaker) -> None:
        core = breaker._core
        rules = core.rules()
        self._backend = backend
        self._breaker = breaker
        key = "{" + f"{backend.prefix}:cb:{breaker.name}" + "}"
        self._keys = (key, key + ":w")
        window = core.window
        assert isinstance(window, TimeWindow)  # CircuitBreaker checked it
        seconds = window.seconds
        width = math.ceil(seconds / 120)  # the TimeWindow's buckets (MAX_BUCKETS)
        self._window_seconds = seconds
        base = math.ceil(rules.open_duration * 1e6)
        longest = rules.open_duration_max or rules.open_duration
        self._head: tuple[int, ...] = (
            base,
            max(base, math.ceil(longest * 1e6)),
            rules.half_open_calls,
            _STATE_TTL_MS,
        )
        max_wait = rules.half_open_max_wait
        interval = backend.sync_interval
        self._hold = max(_HOLD, 4 * interval)
        self._granted_at = -math.inf
        self._rules: tuple[float | int, ...] = (
            rules.minimum_calls,
            rules.failure_rate,
            rules.slow_call_rate,
            width * 1_000_000,
            math.ceil(seconds / width),
            -1 if max_wait is None else math.ceil(max_wait * 1e6),
            math.ceil(max(_MIN_LEASE, 8 * interval) * 1e6),
        )
        self._seen = -1
        self._birth: int | None = None
        self._marks = (0, 0, 0)
        # Not yet reported: calls, failures, slow; trials done, failed, slow;
        # trial permits given back.
        self._pending = [0] * 7
        self._rejected = 0
        self._last_ok = breaker.clock.now()
        self._ops: deque[str] = deque(maxlen=_MAX_OPS)
        self._serial = 0
        self._connected: bool | None = None
        self._busy = False
        self._round_lock = threading.Lock()
        self._rounds = Rounds(interval, breaker.name, f"resilience-breaker-{key}")
        self.window = (0, 0, 0)
        """The shared window's ``(calls, failures, slow_calls)`` at the last round
        (all zero outside CLOSED): every process's calls, not only this one's."""

    @property
    def redis_keys(self) -> tuple[str, str]:
        """The state's key and the window's."""
        return self._keys

    @property
    def connected(self) -> bool:
        """Whether the last round reached Redis (if not, the breaker decides alone)."""
        return bool(self._connected)

    @property
    def running(self) -> bool:
        """Whether the background task (or thread) runs."""
        return self._rounds.running

    # Background work ------------------------------------------------------

    def start(self) -> None:
        """Start the background task (asyncio: on the running loop; a sync
        client: a daemon thread), if it does not run yet. The breaker calls
        this on its first call."""
        rounds = self._rounds
        if rounds.running:
            return
        if self._backend._is_async:
            loop = asyncio._get_running_loop()
            if loop is None:
                raise RuntimeError(
                    f"CircuitBreaker {self._breaker.name!r}: its RedisBackend has a "
                    "redis.asyncio client, which runs on asyncio only, and this call is "
                    "not on an asyncio loop (trio? a thread?); call it from asyncio "
                    "first, or give the backend a sync redis.Redis client"
                )
            rounds.start_task(loop, weakref.ref(self))
        else:
            self._breaker._threads()  # the thread and the calls: locked from now on
            rounds.start_thread(weakref.ref(self))
        self._breaker._sharing(True)

    def stop(self) -> None:
        """Stop the background work (a thread: waits for it, up to a second);
        the breaker goes on with its own state (and starts sharing again at
        its next call).

        Example::

            breaker.store.stop()
        """
        self._rounds.stop()

    async def aclose(self) -> None:
        """:meth:`stop`, and wait for the background task to end (before
        closing the client, say).

        Example::

            await breaker.store.aclose()
            await client.aclose()
        """
        await self._rounds.aclose()

    def _ended(self) -> None:
        """The background work ended (stopped, or its loop closed)."""
        self._breaker._sharing(False)

    def control(self, operation: str) -> None:
        """Publish a manual control (``open``, ``close``, ``force_open``,
        ``disable``, ``reset``) already applied to the breaker here."""
        self._ops.append(operation)
        self._serial += 1
        if not self._rounds.running:
            try:
                self.start()
            except RuntimeError:
                return  # published once the breaker runs on its loop
        self._rounds.poke()

    async def refresh(self) -> bool:
        """One round now (publish manual controls, report counts and trials,
        read the state back and apply it); True when Redis answered.

        Example::

            await breaker.store.refresh()
        """
        while self._busy:  # noqa: ASYNC110 - a background round, a few ms at most
            await asyncio.sleep(0.001)
        return await self._round()

    def refresh_sync(self) -> bool:
        """:meth:`refresh` with a sync client."""
        return self._round_sync()

    async def _round(self) -> bool:
        self._busy = True
        try:
            serial = self._serial
            while self._ops:
                reply = await self._call(BREAKER_CONTROL, (*self._head, self._ops[0]))
                if reply is None:
                    return self._failed()
                if self._ops:
                    self._ops.popleft()
                self._apply(reply, serial, synced=False)
            args = self._take()
            reply = await self._call(BREAKER_SYNC, args)
            if reply is None:
                return self._failed()
            self._apply(reply, serial, synced=True)
            return True
        finally:
            self._busy = False

    def _round_sync(self) -> bool:
        with self._round_lock:  # the thread's rounds and refresh_sync()
            return self._round_sync_locked()

    def _round_sync_locked(self) -> bool:
        self._busy = True
        try:
            serial = self._serial
            while self._ops:
                reply = self._call_sync(BREAKER_CONTROL, (*self._head, self._ops[0]))
                if reply is None:
                    return self._failed()
                if self._ops:
                    self._ops.popleft()
                self._apply(reply, serial, synced=False)
            args = self._take()
            reply = self._call_sync(BREAKER_SYNC, args)
            if reply is None:
                return self._failed()
            self._apply(reply, serial, synced=True)
            return True
        finally:
            self._busy = False

    async def _call(self, script: str, args: tuple[Any, ...]) -> list[Any] | None:
        """One script, bounded by store_timeout, behind the store's breaker."""
        return await self._backend.run_script(script, _SHAS[script], self._keys, args)

    def _call_sync(self, script: str, args: tuple[Any, ...]) -> list[Any] | None:
        """:meth:`_call` with the sync client (its socket timeout bounds it)."""
        return self._backend.run_script_sync(script, _SHAS[script], self._keys, args)

    # What a round sends and what it does with the answer ------------------

    def _take(self) -> tuple[Any, ...]:
        """The sync script's arguments: what happened here since the last
        report (kept in _pending until Redis has it)."""
        breaker = self._breaker
        core = breaker._core
        with breaker._lock:
            now = breaker._now()
            state = core.poll(now)
            changes = core.take_changes()
            totals = (core.successful_total + core.failed_total, core.failed_total, core.slow_total)
            pending = self._pending
            if now - self._last_ok > self._window_seconds:
                # Away for longer than the window: what it still holds, not
                # everything since the last report.
                pending[0:3] = core.window.totals(now)
            else:
                for i in range(3):
                    pending[i] += totals[i] - self._marks[i]
            self._marks = totals
            want = 0
            if core.shared:
                # Trial permits are kept a while for the calls to come, then given back.
                keep = now < self._granted_at + self._hold
                returned, done, failed, slow = core.hand_back(keep)
                pending[3] += done
                pending[4] += failed
                pending[5] += slow
                pending[6] += returned
                if state is _HALF_OPEN:
                    # Calls refused for want of a trial permit since the last round.
                    want = min(core.rejected_total - self._rejected, self._head[2])
            self._rejected = core.rejected_total
        breaker._report(changes)
        over = 1 if state is _HALF_OPEN else 0
        return (*self._head, self._seen, *pending, want, over, *self._rules)

    def _failed(self) -> bool:
        """Redis did not answer: the breaker decides alone until it does."""
        breaker = self._breaker
        with breaker._lock:
            breaker._core.share(False)
        if self._connected is not False:
            self._connected = False
            _logger.warning(
                "circuit breaker %r: Redis does not answer; deciding on this process's "
                "own state until it does",
                breaker.name,
            )
        return False

    def _apply(self, reply: list[Any], serial: int, *, synced: bool) -> None:
        st, epoch, left, open_for, grant, corrupt, birth, calls, failures, slow = (
            int(part) for part in reply
        )
        if corrupt:
            self._log_corrupt(corrupt)
        breaker = self._breaker
        core = breaker._core
        state = _STATES[st]
        again = False
        with breaker._lock:
            now = breaker._now()
            self._last_ok = now
            if synced:
                self._pending = [0] * 7
                self.window = (calls, failures, slow)
            core.share(True)
            local = core.state
            # A state born again: Redis lost it (restarted, expired, corrupt).
            lost = self._birth is not None and birth != self._birth
            self._birth = birth
            if serial != self._serial:
                # A manual control was made meanwhile: it is published first,
                # and this older answer is not applied over it.
                self._pending[6] += grant
            elif lost and epoch == birth and local in _REPUBLISH:
                # Tell it what this process knew, unless another process
                # has changed the new state already.
                self._ops.append(_REPUBLISH[local])
                self._serial += 1
                self._pending[6] += grant
                again = True
            else:
                if epoch != self._seen or (
                    local is not state and not (state is _OPEN and local is _HALF_OPEN)
                ):
                    core.adopt(state, now, left / 1e6, open_for / 1e6)
                self._seen = epoch
                if state is _HALF_OPEN and grant:
                    core.trial_quota += grant
                    self._granted_at = now
            changes = core.take_changes()
        breaker._report(changes)
        if not self._connected:
            if self._connected is False:
                _logger.warning("circuit breaker %r: Redis answers again; sharing", breaker.name)
            self._connected = True
        if again:
            self._rounds.poke()

    def _log_corrupt(self, corrupt: int) -> None:
        for bit, key in ((1, self._keys[0]), (2, self._keys[1])):
            if corrupt & bit and key not in _LOGGED and len(_LOGGED) < _MAX_LOGGED:
                _LOGGED.add(key)
                _logger.warning(
                    "circuit breaker %r: Redis held no sane breaker state at %r; "
                    "treated as absent and overwritten",
                    self._breaker.name,
                    key,
                )

    def __repr__(self) -> str:
        return f"<RedisBreakerStore {self._keys[0]!r}>"
