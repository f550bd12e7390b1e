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
    from .saga import Saga

_live: weakref.WeakSet[Policy] = weakref.WeakSet()
_templates: weakref.WeakSet[Policy] = weakref.WeakSet()
_counters: dict[str, itertools.count[int]] = {}
_sagas: weakref.WeakSet[Saga] = weakref.WeakSet()


def register(policy: Policy) -> None:
    _live.add(policy)


def register_saga(saga: Saga) -> None:
    _sagas.add(saga)


def generated_name(kind: str) -> str:
    """``retry-1``, ``retry-2``, ...: stable for a given construction order."""
    counter = _counters.get(kind)
    if counter is None:
        counter = _counters[kind] = itertools.count(1)
    return f"{kind}-{next(counter)}"


def mark_template(policy: Policy) -> None:
    """Leave ``policy`` out of what exporters read: it only serves as the
    template of the policies derived from it (a transport's per-host breaker
    template), which are read instead.

    Example::

        resilience.lowlevel.mark_template(template_breaker)
    """
    _templates.add(policy)


def live_policies() -> Iterator[Policy]:
    """A snapshot of the policies alive now (templates excluded).

    Example::

        breaker = CircuitBreaker("payments")
        assert "payments" in {policy.name for policy in resilience.lowlevel.live_policies()}
    """
    templates = _templates
    return iter([p for p in list(_live) if p not in templates])


def live_sagas() -> Iterator[Saga]:
    """A snapshot of the sagas alive now (a saga is not a policy: it runs them).

    Example::

        saga = Saga("order", [Step("reserve", reserve)])
        assert saga in list(resilience.lowlevel.live_sagas())
    """
    return iter(list(_sagas))
