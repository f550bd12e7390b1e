"""The middleware's rate limit: a guard keyed by the request, and the
``RateLimit-Policy`` / ``RateLimit`` response fields.

The fields are those of draft-ietf-httpapi-ratelimit-headers-11 (May 2026):

- ``RateLimit-Policy: "<name>";q=<quota>;w=<window>``: the limiter's long-run
  allowance, ``q`` requests per ``w`` whole seconds. ``w`` is the smallest
  whole number of seconds, from ``ceil(per)`` up, in which ``rate`` comes to
  a whole number of requests, and ``q`` is that number (rounded down when
  there is none within ten windows): ``RateLimiter(100, per=60)`` is
  ``q=100;w=60``, ``RateLimiter(2.5)`` is ``q=5;w=2``.
- ``RateLimit: "<name>";r=<remaining>;t=<seconds>``: ``r`` requests could
  pass at once now (at most ``burst``: a rested client may send a burst),
  and within ``t`` seconds (rounded up) no more than ``r`` can; ``t`` is left
  out when the limit is fully rested. A refusal says ``r=0`` and ``t`` equal
  to its ``Retry-After``, as the draft asks (``Retry-After`` not before the
  end of the effective window).

A request costing ``cost`` slots counts as one request of the quota unit
"requests" (``q``, ``r`` and ``t`` are in calls, not slots). No partition key
(``pk``) is sent: the key is the client's address or credential.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from resilience import RateLimitedError, RateLimiter
from resilience.lowlevel import RATE_ADMIT, RATE_CELL, WAIT, Inline, snippet

if TYPE_CHECKING:
    from ._request import Message, Request, Scope

__all__ = ["KeyFailed", "RequestLimit", "client_address"]

# Whole seconds, rounded up, forgiving the float rounding of a whole number.
_ROUNDING = 1e-9
_INF = math.inf
_ceil = math.ceil
# The RateLimit field values kept made (per middleware).
_STATES = 4096


def client_address(scope: Scope) -> Hashable:
    """The default key: the client's IP address, without its port (None
    when the server does not say, as over a Unix socket: one shared limit)."""
    client = scope.get("client")
    return client[0] if client else None


class KeyFailed(Exception):
    """The key function raised: the request is answered 500, and the cause
    logged, never sent."""


def _sf_string(text: str) -> bytes:
    """``text`` as a structured-field String (RFC 9651): quoted, with ``"``
    and ``\\`` escaped; characters outside printable ASCII become ``?``."""
    safe = "".join(c if " " <= c <= "~" else "?" for c in text)
    return b'"' + safe.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'


def _window(rate: float, per: float, cost: int) -> tuple[int, int]:
    """``(q, w)``: whole requests per whole seconds (see the module docstring)."""
    first = max(1, math.ceil(per - _ROUNDING))
    for window in range(first, 10 * first + 1):
        calls = rate * window / per / cost
        if abs(calls - round(calls)) < 1e-9 and round(calls) >= 1:
            return round(calls), window
    return max(0, math.floor(rate * first / per / cost)), first


def whole_seconds(seconds: float) -> int:
    """Seconds rounded up to a whole number (``Retry-After``, ``t``)."""
    return max(0, math.ceil(seconds - _ROUNDING))


class RequestLimit:
    """The outermost guard of the middleware's chain: the request's key
    (``key(scope)``) picks its limit in the limiter's table.

    The ticket is the key's cell. With ``headers``, the request keeps it, and
    its response start gets the two fields (see :meth:`stamp`).
    """

    __slots__ = (
        "available",
        "cells",
        "cost",
        "fast",
        "headers",
        "item",
        "key",
        "lim",
        "limiter",
        "now",
        "policy",
        "states",
        "step",
        "table",
    )

    _internal = True  # the limiter's own counters and events report it
    sync_unsupported = "an ASGI application is async"

    admit: Callable[[], object]
    settle: Callable[[object, BaseException | None, object], BaseException | None]

    def __init__(self, limiter: RateLimiter, headers: bool) -> None:
        self.limiter = limiter
        self.key: Callable[[Scope], Hashable] = (
            limiter._key if limiter._key is not None else client_address
        )
        self.headers = headers
        self.item = _sf_string(limiter.name)
        q, w = _window(limiter.rate, limiter.per, limiter._cost)
        self.policy = (b"ratelimit-policy", b"%s;q=%d;w=%d" % (self.item, q, w))
        # What stamp() and the fast path read per request, bound once.
        self.available = limiter._table.available
        self.now = limiter._now
        self.cost = limiter._cost
        self.states: dict[tuple[int, float], tuple[bytes, bytes]] = {}
        self.lim = limiter
        self.table = limiter._table
        self.cells = limiter._table._cells
        self.step = limiter._step
        # The default key (the client's address) is read in the compiled
        # fast path itself; a key function of the user's runs in take().
        self.fast = self.key is client_address

    def take(self, scope: Scope, request: Request) -> object:
        """Admit the request (its cell), ask to wait (WAIT), or refuse."""
        try:
            key = self.key(scope)
        except Exception as exc:
            raise KeyFailed(f"the key function of RateLimiter {self.limiter.name!r}") from exc
        ticket = self.limiter._take_key(key)
        if ticket.__class__ is RateLimitedError:
            raise ticket
        if self.headers:
            cell = self.limiter._reserved_cell() if ticket is WAIT else ticket
            if cell is not None:  # shared: this process's copy, which the store's answer updates
                request.limit = self
                request.cell = cell
        return ticket

    async def wait(self) -> object:
        return await self.limiter.wait()

    def wait_sync(self) -> object:  # pragma: no cover - never run sync
        return self.limiter.wait_sync()

    def stamp(self, message: Message, cell: Any) -> Message:
        """The response start with the two fields added (a copy: the app's
        own message and header list are left as they were)."""
        calls, seconds = self.available(cell, self.now(), self.cost)
        state = (calls, seconds if seconds == _INF else _ceil(seconds - _ROUNDING))
        field = self.states.get(state)
        if field is None:
            field = self._state(state)
        stamped: Message = message.copy()  # type: ignore[attr-defined]  # a dict
        stamped["headers"] = [*message.get("headers", ()), self.policy, field]
        return stamped

    def _state(self, state: tuple[int, float]) -> tuple[bytes, bytes]:
        """The ``RateLimit`` field for (calls, whole seconds): made once each
        (a client sees few distinct ones)."""
        calls, seconds = state
        if seconds == _INF:
            value = b"%s;r=%d" % (self.item, calls)
        else:
            value = b"%s;r=%d;t=%d" % (self.item, calls, max(0, int(seconds)))
        if len(self.states) >= _STATES:
            self.states.clear()
        field = self.states[state] = (b"ratelimit", value)
        return field

    def refusal_headers(self, retry_after: int) -> list[tuple[bytes, bytes]]:
        """``Retry-After`` and the two fields of a 429."""
        return [
            (b"retry-after", b"%d" % retry_after),
            self.policy,
            (b"ratelimit", b"%s;r=0;t=%d" % (self.item, retry_after)),
        ]

    def _outside(self) -> object:
        raise RuntimeError("the middleware's rate limit runs only inside its own chain")


# The common case, compiled into the middleware's chain: the default key,
# a limiter that never waits, has no shared store and no threads, and
# admits. The cell look-up and the admission test are the rate table's own
# source (resilience.lowlevel.RATE_CELL, RATE_ADMIT); anything else goes
# through take().
_CELL = snippet(
    RATE_CELL, "    ", table="{g}.table", cells="{g}.cells", key="{t}k", now="{t}w", cell="{t}c"
)
_ADMIT = snippet(
    RATE_ADMIT,
    "    ",
    table="{g}.table",
    cell="{t}c",
    now="{t}w",
    step="{g}.step",
    ok="{t}",
    x="{t}",
)
_SOURCE = Inline(
    # The app is called with (scope, receive, request.send).
    admit="""
{t}s = {args}[0]
{t}r = {args}[2].__self__
{t} = False
if {g}.fast and {g}.lim._plain_keyed:
    {t}k = {t}s.get("client")
    {t}k = {t}k[0] if {t}k else None
    {t}w = {g}.now()
"""
    + _CELL
    + "\n"
    + _ADMIT
    + """
if {t}:
    {g}.lim._admitted += 1
    {t} = {t}c
    if {g}.headers:
        {t}r.limit = {g}
        {t}r.cell = {t}c
else:
    {t} = {g}.take({t}s, {t}r)
    {wait}
""",
    settle="""
        pass
    """,
)
RequestLimit._inline_source = _SOURCE  # type: ignore[attr-defined]
RequestLimit.admit = RequestLimit._outside  # type: ignore[assignment]
_SOURCE.methods["admit"] = RequestLimit._outside
RequestLimit.settle = _SOURCE.method("settle", "Nothing to give back: a slot is used once taken.")
