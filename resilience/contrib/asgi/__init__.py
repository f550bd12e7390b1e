"""ASGI middleware: load shedding, request timeouts, a circuit breaker and
deadline propagation for any ASGI application (:class:`ResilienceMiddleware`),
and idempotency keys that make POST retries safe
(:class:`IdempotencyMiddleware`, with its :class:`IdempotencyStore` protocol
and :class:`MemoryIdempotencyStore`).

Example::

    from starlette.applications import Starlette
    from resilience import CircuitBreaker
    from resilience.contrib.asgi import ResilienceMiddleware

    app = Starlette(routes=routes)
    app.add_middleware(
        ResilienceMiddleware,
        max_concurrent=100,
        max_waiting=50,
        timeout=5.0,
        breaker=CircuitBreaker("api", failure_rate=0.5, minimum_calls=50),
        exclude_paths=("/health", "/metrics"),
        deadline_header="X-Request-Timeout",
        name="api",
    )

Per HTTP request, outermost first: the rate limit (``rate_limit=``, per
client), your own ``policies=``, the bulkhead (``max_concurrent``,
``max_waiting``), the circuit breaker, then the application under the
request's time budget. Lifespan and websocket scopes, and paths under
``exclude_paths``, go straight to the application.

What the timeout covers. The budget (``timeout``, or a shorter one asked for
in ``deadline_header``) starts when the request reaches the middleware,
queueing for a permit included. The application must start its response
within the budget, and after that it must hand the server each further
message of the response within the budget of the previous one: it is a
*progress* limit, so a stream that keeps sending is never cut, while one that
stalls is. Time spent blocked in ``send`` (a slow client) counts. Once the
response is complete the budget no longer applies: work done after it
(Starlette background tasks) runs unbounded and sees no deadline.

When the budget runs out:

- while queued for a permit: 503 with ``Retry-After`` (the app never ran);
- before the response started: the app is cancelled, 504;
- after it started: the app is cancelled and the middleware raises
  :class:`resilience.TimeoutError`, which is how ASGI tells a server that a
  response cannot be finished. uvicorn (h11 and httptools alike) logs
  "Exception in ASGI application" and closes the connection, so the client
  sees a truncated body (a protocol error), never a short response that
  passes as complete. Hypercorn and Daphne do the same.
"""

from ._idempotency import IdempotencyMiddleware
from ._idempotency_memory import MemoryIdempotencyStore
from ._idempotency_stats import (
    IdempotencyLeaseLost,
    IdempotencyLeaseTakenOver,
    IdempotencyStats,
    IdempotencyStoreFailed,
)
from ._idempotency_store import (
    Claim,
    Completed,
    IdempotencyRecord,
    IdempotencyStore,
    InFlight,
    Lease,
)
from ._middleware import DEFAULT_FAILURE_STATUSES, ResilienceMiddleware
from ._request import ServerErrorResponse

__all__ = [
    "DEFAULT_FAILURE_STATUSES",
    "Claim",
    "Completed",
    "IdempotencyLeaseLost",
    "IdempotencyLeaseTakenOver",
    "IdempotencyMiddleware",
    "IdempotencyRecord",
    "IdempotencyStats",
    "IdempotencyStore",
    "IdempotencyStoreFailed",
    "InFlight",
    "Lease",
    "MemoryIdempotencyStore",
    "ResilienceMiddleware",
    "ServerErrorResponse",
]
