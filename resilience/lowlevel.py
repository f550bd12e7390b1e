"""The protocol between policies and everything that runs them.

Every policy takes one of two shapes, and decorators, pipelines, the httpx
transports and the ASGI middleware run them all through :class:`Plan`:

- a :class:`Guard` (CircuitBreaker, Bulkhead, Timeout) brackets one attempt:
  ``admit()`` without awaiting (a ticket, a fresh rejection, or
  :data:`WAIT`), then exactly one ``settle(ticket, error, result)``;
- a :class:`Flow` (Retry) is a sans-I/O decision object: ``start()`` gives a
  run whose ``after(error, result)`` answers "stop" or "wait this long and
  try again" (:class:`RetryRun`).

A policy of neither shape (Fallback, PoolBulkhead, the aiobreaker adapter,
most user policies) overrides ``call``/``call_sync`` and wraps the rest of
the chain through them. Writing a policy of any of these kinds is supported:
it composes, runs inside the transports and the middleware (``policies=``),
and is observed like ours.

A guard may also declare its fast path once, as source (:class:`Inline`):
plans then compile it into their frame instead of calling ``admit`` and
``settle``, and the guard's own methods are compiled from the same source.
Our guards do; a user's guard needs nothing of the sort to run everywhere.

Observers (:func:`add_observer`) are told each policy's span of each call;
with none registered they cost one test per call. :class:`EventSource` is
how policies, sagas and the idempotency middleware hold their listeners:
the base for anything of yours that emits events.

The rate limiter's fast path is source too: :data:`RATE_ADMIT` (the GCRA
admission test) and :data:`RATE_CELL` (a key's cell, least recently used
last), placed with :func:`snippet`; the ASGI middleware compiles its
per-client limit from them rather than copying the arithmetic.

A :class:`~resilience.RateLimiter` given ``backend=`` takes its decisions
from a store shared with other processes: the backend (a
:class:`RateBackend`, such as ``resilience.contrib.redis.RedisBackend``)
makes one :class:`RateStore` per limiter. Implement the two protocols to
share limits on another store.

For integrations that keep a deadline of their own (the ASGI middleware's
moving request budget), :data:`deadline_var` is the context variable that
holds the deadline in force (:func:`resilience.current_deadline` reads it),
and :func:`running_loop` and :func:`current_task` are the cheap asyncio probes
the policies use (None on trio). :func:`check_count`, :func:`check_seconds`,
:func:`check_optional_seconds` and :func:`check_rate` check arguments as every
constructor of ours does: TypeError for a wrong type, ValueError for a wrong
value, naming both.

Example::

    from resilience import Policy
    from resilience.lowlevel import WAIT, Plan

    class InFlight(Policy):
        \"\"\"A guard that counts the calls in progress.\"\"\"

        def __init__(self) -> None:
            super().__init__(name="in-flight")
            self.count = 0

        def admit(self) -> object:
            self.count += 1
            return None

        async def wait(self) -> object: ...
        def wait_sync(self) -> object: ...

        def settle(self, ticket, error, result):
            self.count -= 1
            return error

    run = Plan([CircuitBreaker("api"), InFlight()]).runner()
    await run(fetch, url)
"""

from ._backend import current_task, running_loop
from ._core.gcra import ADMIT as RATE_ADMIT
from ._core.gcra import CELL as RATE_CELL
from ._core.source import snippet
from ._deadline import _current as deadline_var
from ._listeners import EventSource
from ._plan import Inline, Plan, add_observer, remove_observer
from ._protocol import WAIT, CallObserver, Flow, FlowRun, Guard
from ._registry import live_policies, live_sagas, mark_template
from ._store import RateBackend, RateStore
from ._validate import count as check_count
from ._validate import optional_seconds as check_optional_seconds
from ._validate import rate as check_rate
from ._validate import seconds as check_seconds
from .retry import RetryRun
from .timeout import DeadlineGuard

__all__ = [
    "RATE_ADMIT",
    "RATE_CELL",
    "WAIT",
    "CallObserver",
    "DeadlineGuard",
    "EventSource",
    "Flow",
    "FlowRun",
    "Guard",
    "Inline",
    "Plan",
    "RateBackend",
    "RateStore",
    "RetryRun",
    "add_observer",
    "check_count",
    "check_optional_seconds",
    "check_rate",
    "check_seconds",
    "current_task",
    "deadline_var",
    "live_policies",
    "live_sagas",
    "mark_template",
    "remove_observer",
    "running_loop",
    "snippet",
]
