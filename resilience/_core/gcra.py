"""The generic cell rate algorithm (GCRA), sans-I/O: exact rate limits in O(1).

One number per key, its *theoretical arrival time* (TAT): when the limit
would be exactly used up if every admitted slot had arrived at the limit's
rate. With the emission interval ``T = per / rate`` and the tolerance
``tau = burst * T``, a request of ``cost`` slots at time ``now`` moves the TAT
to ``new = max(tat, now) + cost * T`` and is admitted when ``new - now <= tau``.
Then in any closed interval of length ``W`` at most ``burst + rate * W / per``
slots are admitted, and exactly ``burst`` pass at one instant after a rest.

A request over the limit may instead *reserve* its slots, to be used once
``new - now - tau`` seconds have passed: the caller waits exactly that long
(computed, never polled). A reservation whose caller leaves is given back
if no later reservation was made after it; otherwise it is lost, never
shared between two calls.

Nothing here reads a clock: callers pass ``now``, and ``origin``, a reading
taken when the table was made. Times are kept relative to it, so the
comparisons stay exact to well below a nanosecond for years of uptime; a
permit due at ``t`` is granted at ``t``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from typing import Any

from .source import snippet

__all__ = ["ADMIT", "CELL", "RateCell", "RateTable"]

# Comparisons forgive this fraction of an emission interval: the rounding of
# ``n * T`` against ``now``, never a whole slot.
_SLACK = 1e-9
# The admission test, as source written once: RateTable.decide is compiled
# from it, and so is a limiter's fast path (resilience._ratelimit_inline). {table}:
# the RateTable, {cell}: its RateCell, {now}: the reading, {step}: the
# call's cost times the emission interval, {ok}: set True when admitted (the
# TAT then moved on), False otherwise (nothing changed), {x}: a prefix for
# locals. The rounding of a whole slot's worth is forgiven by _reach; the
# rest of the decision (the reading's own rounding, waits, refusals) is
# RateTable._late's.
ADMIT = """\
{x}t = {now} - {table}._origin
{x}a = {cell}.tat
{x}n = ({x}a if {x}a > {x}t else {x}t) + {step}
{ok} = {x}n - {x}t <= {table}._reach
if {ok}:
    {cell}.tat = {x}n"""
"""The GCRA admission test as source, placeholders as the comment above says.

Example::

    source = snippet(RATE_ADMIT, "", table="t", cell="c", now="n", step="s", ok="ok", x="_")
"""

# A key's cell, most recently used now, as source written once: the table's
# cell_for is compiled from it, and so is the ASGI middleware's per-client
# fast path. {table}: the RateTable, {cells}: its dict, {key}, {now}, {cell}:
# the local that gets the cell. The table stays within max_keys: cells that
# have fully recovered go first (they hold nothing a fresh cell would not),
# then the least recently used.
CELL = """\
{cell} = {cells}.pop({key}, None)
if {cell} is None:
    {cell} = {table}._new_cell({key}, {now})
else:
    {cells}[{key}] = {cell}"""
"""A key's cell in a rate table as source, placeholders as the comment above says.

Example::

    source = snippet(RATE_CELL, "", table="t", cells="t.cells", key="k", now="n", cell="c")
"""

# How many of the least recently used keys eviction looks at for a recovered one.
_SCAN = 8


class RateCell:
    """The GCRA state of one limit (one key)."""

    __slots__ = ("tat",)

    def __init__(self) -> None:
        self.tat = -math.inf


class RateTable:
    """The limit's settings and its cells: one unkeyed, or one per key.

    ``decide(key, now, cost, max_wait)`` returns the seconds to wait before
    the slots are usable (0.0: at once; they are taken either way), or a
    negative number: refused, and ``-result`` is the time until a call of
    this cost would be admitted (``math.inf`` if it never can be).
    """

    __slots__ = (
        "_cells",
        "_cost_limit",
        "_interval",
        "_max_keys",
        "_origin",
        "_reach",
        "_slack",
        "_tolerance",
        "cell",
    )

    def __init__(
        self, *, rate: float, per: float, burst: int, max_keys: int, origin: float
    ) -> None:
        self._interval = per / rate
        self._tolerance = burst * self._interval
        self._slack = _SLACK * self._interval
        # How far ahead of now the TAT may be taken at once: the tolerance,
        # and the rounding of ``n * T``.
        self._reach = self._tolerance + self._slack
        self._cost_limit = burst
        self._max_keys = max_keys
        self._origin = origin
        self.cell = RateCell()
        """The unkeyed limit's cell."""
        self._cells: dict[Hashable, RateCell] = {}

    @property
    def interval(self) -> float:
        """Seconds per slot (``per / rate``)."""
        return self._interval

    cell_for: Callable[[Hashable, float], RateCell]

    def _new_cell(self, key: Hashable, now: float) -> RateCell:
        """A fresh cell for ``key``, most recently used; room made first."""
        cells = self._cells
        if len(cells) >= self._max_keys:
            self._evict(now - self._origin)
        cell = cells[key] = RateCell()
        return cell

    def _evict(self, t: float) -> None:
        # A recovered cell among the least recently used few, else the least
        # recently used: bounded work per new key, whatever the table's size.
        cells = self._cells
        victim = None
        for index, (key, cell) in enumerate(cells.items()):
            if victim is None:
                victim = key
            if cell.tat <= t:
                victim = key
                break
            if index == _SCAN - 1:
                break
        del cells[victim]

    decide: Callable[[RateCell, float, int, float], float]

    def _late(
        self, cell: RateCell, now: float, cost: int, max_wait: float, new: float, wait: float
    ) -> float:
        if cost > self._cost_limit:
            return -math.inf  # more than a burst can ever hold
        # The caller's own reading is a float too: a permit due at t, asked
        # for at a reading of t, must not miss by its rounding.
        slack = self._slack + 4.0 * math.ulp(now)
        if wait <= slack:
            cell.tat = new
            return 0.0
        if wait <= max_wait + slack:
            cell.tat = new  # reserved: usable once the wait is over
            return wait
        return -wait

    def available(self, cell: RateCell, now: float, cost: int) -> tuple[int, float]:
        """How many calls of ``cost`` slots could pass at once at ``now``, and
        the seconds until one more could (``math.inf`` once fully rested)."""
        used = cell.tat - (now - self._origin)
        if used <= self._slack:
            return self._cost_limit // cost, math.inf
        free = (self._tolerance - used) / self._interval  # slots; < 0 when pushed back
        calls = max(0, math.floor(free / cost + _SLACK))
        return calls, ((calls + 1) * cost - free) * self._interval

    def peek(self, key: Hashable) -> RateCell | None:
        """The key's cell, if the table holds one (not counted as a use)."""
        return self._cells.get(key)

    def give_back(self, cell: RateCell, now: float, cost: int, wait: float) -> None:
        """A reservation made at ``now`` with this ``wait`` was not used: give
        it back, unless a later reservation was made after it."""
        reserved = now - self._origin + wait + self._tolerance
        if abs(cell.tat - reserved) <= self._slack + 4.0 * math.ulp(now):
            cell.tat -= cost * self._interval

    def follow(self, cell: RateCell, now: float, ahead: float) -> None:
        """``cell`` as a shared store has it: its arrival time ``ahead``
        seconds past ``now`` (never earlier than this copy already has it:
        answers to calls in flight together can arrive in any order)."""
        tat = now - self._origin + ahead
        if tat > cell.tat:
            cell.tat = tat

    def push_back(self, cell: RateCell, now: float, seconds: float) -> None:
        """Admit nothing of ``cell`` before ``now + seconds`` (never earlier
        than it already would)."""
        tat = now - self._origin + seconds + self._tolerance - self._interval
        if tat > cell.tat:
            cell.tat = tat

    def __len__(self) -> int:
        return len(self._cells)


def _compile_decide() -> Callable[..., float]:
    body = snippet(
        ADMIT,
        "    ",
        table="self",
        cell="cell",
        now="now",
        step="cost * self._interval",
        ok="ok",
        x="_",
    )
    source = (
        "def decide(self, cell, now, cost, max_wait):\n"
        f"{body}\n"
        "    if ok:\n"
        "        return 0.0\n"
        "    return self._late(cell, now, cost, max_wait, _n, _n - _t - self._tolerance)\n"
    )
    namespace: dict[str, Any] = {}
    exec(source, {}, namespace)  # our own text
    decide: Callable[..., float] = namespace["decide"]
    decide.__doc__ = """Take ``cost`` slots of ``cell`` at ``now``, at once or after a wait
        of at most ``max_wait``; or refuse (see the class docstring)."""
    return decide


RateTable.decide = _compile_decide()


def _compile_cell_for() -> Callable[..., RateCell]:
    body = snippet(
        CELL, "    ", table="self", cells="self._cells", key="key", now="now", cell="cell"
    )
    namespace: dict[str, Any] = {}
    exec(f"def cell_for(self, key, now):\n{body}\n    return cell\n", {}, namespace)
    cell_for: Callable[..., RateCell] = namespace["cell_for"]
    cell_for.__doc__ = """The key's cell, most recently used now (the table stays within
        ``max_keys``: recovered cells go first, then the least recently used)."""
    return cell_for


RateTable.cell_for = _compile_cell_for()
