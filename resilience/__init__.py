"""resilience: composable resilience policies for async and sync Python.

Example::

    from resilience import Retry, Timeout, backoff

    policy = Retry(3, backoff=backoff.exponential(0.1, cap=2)) | Timeout(1.0)

    @policy
    async def fetch(url: str) -> bytes: ...
"""

from . import backoff, events, testing
from ._clock import Clock, SystemClock
from ._core.budget import RetryBudget
from ._core.windows import CountWindow, TimeWindow
from ._deadline import Deadline, current_deadline, deadline
from ._version import __version__
from .breaker import CircuitBreaker, CircuitBreakerStatistics
from .bulkhead import Bulkhead, BulkheadStatistics
from .errors import (
    BulkheadFullError,
    CircuitOpenError,
    RateLimitedError,
    ResilienceError,
    TimeoutError,
)
from .events import CircuitState
from .fallback import Fallback
from .hedge import Hedge, HedgeStatistics
from .latency import LatencyStatistics, LatencyTracker
from .pipeline import Pipeline
from .policy import Policy
from .pool import PoolBulkhead
from .ratelimit import RateLimiter, RateLimiterStatistics
from .retry import Retry, RetryStatistics
from .saga import (
    Parallel,
    Saga,
    SagaCompensated,
    SagaCompensationError,
    SagaContext,
    SagaError,
    SagaStatistics,
    SagaStepStatistics,
    Step,
)
from .timeout import Timeout, TimeoutStatistics

__all__ = [
    "Bulkhead",
    "BulkheadFullError",
    "BulkheadStatistics",
    "CircuitBreaker",
    "CircuitBreakerStatistics",
    "CircuitOpenError",
    "CircuitState",
    "Clock",
    "CountWindow",
    "Deadline",
    "Fallback",
    "Hedge",
    "HedgeStatistics",
    "LatencyStatistics",
    "LatencyTracker",
    "Parallel",
    "Pipeline",
    "Policy",
    "PoolBulkhead",
    "RateLimitedError",
    "RateLimiter",
    "RateLimiterStatistics",
    "ResilienceError",
    "Retry",
    "RetryBudget",
    "RetryStatistics",
    "Saga",
    "SagaCompensated",
    "SagaCompensationError",
    "SagaContext",
    "SagaError",
    "SagaStatistics",
    "SagaStepStatistics",
    "Step",
    "SystemClock",
    "TimeWindow",
    "Timeout",
    "TimeoutError",
    "TimeoutStatistics",
    "__version__",
    "backoff",
    "current_deadline",
    "deadline",
    "events",
    "testing",
]
