"""A circuit breaker's commonest outcome, as source written once.

:meth:`BreakerMachine.success <resilience._core.breaker.BreakerMachine.success>`
is compiled from it, and so is the breaker's settle
(:mod:`resilience._breaker_guard`), which plans run inline on every call: a
success that is not slow, of a call admitted in CLOSED, recorded in a
CountWindow without a frame either (the frames of success() and record()
were about 1k of the 5.3k instructions a decorated call added). Only valid
when slow calls are not detected (so the window holds none).
"""

from __future__ import annotations

from .source import snippet
from .windows import COUNT_RECORD

__all__ = ["SUCCESS", "SUCCESS_METHOD"]

SUCCESS = (
    "{m}.successful_total += 1\n"
    "if {permit} == {m}.epoch:  # still CLOSED: the epoch of the admission\n"
    "    {m}.streak = 0\n"
    "    {w} = {m}.window\n"
    "    if {w}.__class__ is {count}:\n"
    + snippet(COUNT_RECORD, "        ", w="{w}", code="{present}")
    + "\n    else:\n"
    "        {w}.record({now}, False, False)\n"
    "    if {w}._failures and {m}._rate_trips({now}):\n"
    "        {tripped}"
)
"""The statements of a success, placeholders as follows. {m}: the machine;
{permit} and {now}: as ``success()``'s; {w}, {i}, {o}: locals; {count}: the
class CountWindow; {present}: its PRESENT; {tripped}: what a trip runs."""

SUCCESS_METHOD = (
    "def success(self, permit, now):\n"
    + snippet(
        SUCCESS,
        "    ",
        m="self",
        permit="permit",
        now="now",
        w="w",
        i="i",
        o="o",
        count="CountWindow",
        present="PRESENT",
        tripped="return True",
    )
    + "\n    return False\n"
)
"""``BreakerMachine.success(permit, now)``: True when the caller has follow-up work."""
