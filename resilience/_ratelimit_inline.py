"""The rate limiter's guard as source: compiled into ``RateLimiter.admit``
and ``settle`` (:mod:`resilience.ratelimit`) and inline into every plan that
runs a limiter, so that its common case runs in the plan's own frame."""

from __future__ import annotations

from ._core.gcra import ADMIT
from ._core.source import snippet
from ._plan import Inline
from .errors import RateLimitedError

__all__ = ["INLINE"]

# The GCRA admission test (written once in resilience._core.gcra), on the
# limiter's own cell, its clock and its cost's step.
_FAST = snippet(
    ADMIT,
    "            ",
    table="{t}b",
    cell="{g}._cell",
    now="{g}._now()",
    step="{g}._step",
    ok="{t}",
    x="{t}",
)
INLINE = Inline(
    # The key function sees the call's arguments: a plan passes them.
    # The common case first: unkeyed, never waiting, no threads, admitted.
    # Anything else, a refusal included, is decided again by _take (a
    # refusal leaves the limit as it was).
    admit="""
        {t} = False
        if {g}._plain:
            {t}b = {g}._table
"""
    + _FAST
    + """
        if {t}:
            {g}._admitted += 1
        else:
            {t} = {g}._take({args}, {kwargs})
            if {t}.__class__ is {n}Refused:
                raise {t}
            {wait}
    """,
    settle="""
        pass
    """,
    names={"Refused": RateLimitedError},
)
