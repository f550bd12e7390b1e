"""What an IdempotencyMiddleware counts and tells: plain counters read at
scrape time, and events for the rare moments (a lease taken over or lost,
the store failing)."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from dataclasses import dataclass

from resilience.events import Event

__all__ = [
    "IdempotencyLeaseLost",
    "IdempotencyLeaseTakenOver",
    "IdempotencyStats",
    "IdempotencyStoreFailed",
]

_live: weakref.WeakSet[IdempotencyStats] = weakref.WeakSet()


class IdempotencyStats:
    """One :class:`IdempotencyMiddleware`'s counters (plain ints, read by the
    Prometheus collector at scrape time).

    - ``ran``: keyed requests that ran (the key was new, expired, released,
      or taken over from a lease that ran out);
    - ``replayed``: answered with the stored response;
    - ``conflicts``: answered 409, the first with the key still running;
    - ``mismatches``: answered 422, the key reused for another request;
    - ``invalid``: answered 400 (key missing where required, malformed, too
      long) or 413 (body over ``max_body``);
    - ``stored``: responses written to the store;
    - ``taken_over``: leases taken over after their holder stopped renewing;
    - ``fenced``: holders that lost their lease, whose response was then
      refused by the store (they could not overwrite the new holder's);
    - ``store_errors``: store calls that raised;
    - ``unavailable``: answered 503 because the store was down (fail closed);
    - ``unprotected``: run without a key check because the store was down
      (``fail_open=True``).

    Example::

        middleware = IdempotencyMiddleware(app, name="orders")
        ...
        assert middleware.stats.replayed == 1
    """

    __slots__ = (
        "__weakref__",
        "conflicts",
        "fenced",
        "invalid",
        "mismatches",
        "name",
        "ran",
        "replayed",
        "store_errors",
        "stored",
        "taken_over",
        "unavailable",
        "unprotected",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.ran = self.replayed = self.conflicts = self.mismatches = self.invalid = 0
        self.stored = self.taken_over = self.fenced = 0
        self.store_errors = self.unavailable = self.unprotected = 0
        _live.add(self)

    @staticmethod
    def live() -> Iterator[IdempotencyStats]:
        """The counters of every middleware still alive (held weakly: a
        middleware nothing references drops out).

        Example::

            for stats in IdempotencyStats.live():
                print(stats.name, stats.replayed)
        """
        return iter(list(_live))

    def __repr__(self) -> str:
        return (
            f"<IdempotencyStats {self.name!r} ran={self.ran} replayed={self.replayed} "
            f"conflicts={self.conflicts} mismatches={self.mismatches} stored={self.stored}>"
        )


@dataclass(frozen=True, slots=True)
class IdempotencyStoreFailed(Event):
    """A store call (``operation``: claim, renew, complete, release) raised
    ``exception``. On ``claim`` the request was answered 503
    (``failed_open`` False) or run without a key check (True).

    Example::

        middleware.add_listener(
            lambda e: isinstance(e, IdempotencyStoreFailed) and alert(e.operation)
        )
    """

    operation: str
    exception: BaseException
    failed_open: bool


@dataclass(frozen=True, slots=True)
class IdempotencyLeaseTakenOver(Event):
    """A request claimed a key whose lease had run out (its holder crashed,
    stalled, or lost the store), and runs it again.

    Example::

        seen: list[IdempotencyLeaseTakenOver] = []
        middleware.add_listener(seen.append)
    """


@dataclass(frozen=True, slots=True)
class IdempotencyLeaseLost(Event):
    """A running request found its lease gone (it ran out and, perhaps,
    another request took the key over): its response is not stored, and
    cannot overwrite the new holder's.

    Example::

        middleware.add_listener(
            lambda e: isinstance(e, IdempotencyLeaseLost) and log.warning("%s", e)
        )
    """
