"""A RateLimiter's decisions taken by a shared store (``backend=``).

A refusal the store told of recently is repeated here without a round trip;
any other call is reserved as a wait (WAIT), and the wait asks the store.
While the store does not answer, the limiter's own table decides, as if it
had no store.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from ._protocol import WAIT
from .errors import RateLimitedError

if TYPE_CHECKING:
    from ._core.gcra import RateCell
    from .ratelimit import RateLimiter

__all__ = ["SHARED", "UNKEYED", "decide", "decide_sync", "local_cell", "take"]

UNKEYED: Any = object()  # the limiter's one limit, in a shared-store reservation
SHARED: Any = object()  # a reservation's "now" when the shared store is to decide


def take(limiter: RateLimiter, key: Hashable) -> object:
    """A refusal the store told of, or a reservation for :func:`decide`."""
    store = limiter._store
    assert store is not None
    refused = store.refused(None if key is UNKEYED else key, limiter._now())
    if refused is not None:
        return limiter._verdict(None, 0.0, -refused)
    max_wait = limiter._max_wait
    if max_wait:
        max_wait = limiter._within_deadline(max_wait)
    limiter._pending.reservation = (key, SHARED, max_wait)
    return WAIT


async def decide(limiter: RateLimiter, key: Hashable, max_wait: float) -> object:
    """Ask the store, and wait out a slot it reserved (``limiter.wait()``)."""
    store = limiter._store
    assert store is not None
    decision = await store.decide(None if key is UNKEYED else key, limiter._cost, max_wait)
    ticket, seconds = _decided(limiter, key, decision)
    if ticket is WAIT:
        return await limiter.wait()
    if not seconds:
        return ticket
    await limiter._clock.sleep(seconds)  # reserved in the store: lost if cancelled
    return limiter._waited_for(None, seconds)


def decide_sync(limiter: RateLimiter, key: Hashable, max_wait: float) -> object:
    """:func:`decide` in this thread (``limiter.wait_sync()``)."""
    store = limiter._store
    assert store is not None
    decision = store.decide_sync(None if key is UNKEYED else key, limiter._cost, max_wait)
    ticket, seconds = _decided(limiter, key, decision)
    if ticket is WAIT:
        return limiter.wait_sync()
    if not seconds:
        return ticket
    limiter._clock.sleep_sync(seconds)
    return limiter._waited_for(None, seconds)


def local_cell(limiter: RateLimiter, key: Hashable, ahead: float | None = None) -> RateCell:
    """This process's copy of ``key``'s limit: it follows the store's
    answers (``quota()`` and the ASGI ``RateLimit`` fields read it), and it
    decides while the store does not answer. With ``ahead`` (a store's
    answer), the copy first takes the store's state."""
    if limiter._shared:
        with limiter._lock:
            return _cell(limiter, key, ahead)
    return _cell(limiter, key, ahead)


def _cell(limiter: RateLimiter, key: Hashable, ahead: float | None) -> RateCell:
    table = limiter._table
    now = limiter._now()
    cell = table.cell if key is UNKEYED else table.cell_for(key, now)
    if ahead is not None:
        table.follow(cell, now, ahead)
    return cell


def _decided(
    limiter: RateLimiter, key: Hashable, answer: tuple[float, float] | None
) -> tuple[object, float]:
    """The store's answer: the ticket (WAIT: wait locally, the store was
    unavailable), and the seconds of a slot reserved in the store."""
    if answer is None:  # unavailable: this process's own limit decides
        ticket = limiter._take_one(True) if key is UNKEYED else limiter._take_key(key, True)
        if ticket.__class__ is RateLimitedError:
            raise ticket
        return ticket, 0.0
    decision, ahead = answer
    local_cell(limiter, key, ahead)
    if decision == 0.0:
        limiter._admitted += 1
        return True, 0.0
    if decision > 0.0:
        return True, decision
    raise limiter._verdict(None, 0.0, decision)  # type: ignore[misc]  # a refusal
