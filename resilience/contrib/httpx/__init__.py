"""httpx transports that retry, break circuits, time out and limit concurrency.

Example::

    import httpx
    from resilience import Bulkhead, CircuitBreaker, Retry, Timeout, backoff
    from resilience.contrib.httpx import AsyncResilientTransport

    client = httpx.AsyncClient(
        transport=AsyncResilientTransport(
            retry=Retry(3, backoff=backoff.exponential(0.1, cap=2, jitter="full")),
            breaker=CircuitBreaker("api", failure_rate=0.5, minimum_calls=20),
            timeout=Timeout(2.0),
            bulkhead=Bulkhead(100),
        )
    )

Policies apply in this order, outermost first: retry, your own ``policies=``,
the rate limiter (one per host by default), the circuit breaker (one per host
by default), the per-attempt timeout, the
bulkhead, then the wrapped transport. The attempt is one compiled
:class:`~resilience.lowlevel.Plan` per host; the retry loop drives a
:class:`~resilience.lowlevel.RetryRun`.
"""

from resilience.contrib import _extras

with _extras.needs_extra(__name__, "httpx"):
    import httpx as _httpx  # noqa: F401

from ._errors import (
    HTTPBulkheadFullError,
    HTTPCircuitOpenError,
    HTTPRateLimitedError,
    HTTPTimeoutError,
)
from ._rules import IDEMPOTENT_METHODS, RETRYABLE_STATUSES, parse_retry_after
from ._transport import AsyncResilientTransport, ResilientTransport

__all__ = [
    "IDEMPOTENT_METHODS",
    "RETRYABLE_STATUSES",
    "AsyncResilientTransport",
    "HTTPBulkheadFullError",
    "HTTPCircuitOpenError",
    "HTTPRateLimitedError",
    "HTTPTimeoutError",
    "ResilientTransport",
    "parse_retry_after",
]
