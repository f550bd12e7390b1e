"""Every live policy, held weakly, and stable generated names.

Exporters (Prometheus) read this set at scrape time, so a policy that nothing
else references drops out of the next scrape by itself.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .policy import Policy

_live: weakref.WeakSet[Policy] = weakref.WeakSet()
_counters: dict[str, itertools.count[int]] = {}


def register(policy: Policy) -> None:
    _live.add(policy)


def generated_name(kind: str) -> str:
    """``retry-1``, ``retry-2``, ...: stable for a given construction order."""
    counter = _counters.get(kind)
    if counter is None:
        counter = _counters[kind] = itertools.count(1)
    return f"{kind}-{next(counter)}"


def live_policies() -> Iterator[Policy]:
    """A snapshot of the policies alive now."""
    return iter(list(_live))
