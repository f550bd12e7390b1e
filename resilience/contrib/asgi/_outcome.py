"""What an exception out of the middleware's chain means: the answer the
middleware sends itself (:mod:`._answers`), none, or the exception again."""

from __future__ import annotations

import logging

from resilience.errors import BulkheadFullError, CircuitOpenError, RateLimitedError

from ._answers import _FAILED, _LIMITED, _OPEN, _SHED, _TIMED_OUT
from ._limit import KeyFailed, RequestLimit
from ._request import _COMPLETE, _QUEUED, _STARTED, Request, ServerErrorResponse

__all__ = ["outcome_of"]

_logger = logging.getLogger("resilience")


def outcome_of(request: Request, exc: BaseException, limit: RequestLimit | None) -> int:
    """What an exception out of the bulkhead, breaker and app means: the
    response the middleware sends itself, 0 for none, or re-raise it.
    ``limit``: the middleware's own rate limit, if any."""
    if isinstance(exc, ServerErrorResponse):
        return 0  # recorded by the breaker; the response went out already
    state = request.state
    if exc is getattr(request, "error", None):  # our timeout
        if state == _STARTED:
            raise exc  # the server closes the connection
        return 0 if state == _COMPLETE else _TIMED_OUT
    if state == _QUEUED:  # the app's own rejections propagate
        if isinstance(exc, BulkheadFullError):
            return _SHED
        if isinstance(exc, CircuitOpenError):
            request.retry_after = exc.retry_after
            return _OPEN
        if isinstance(exc, RateLimitedError):
            request.retry_after = exc.retry_after
            # Whose refusal: ours has the RateLimit fields, one among
            # `policies` only a Retry-After.
            request.limit = limit if limit and exc.name == limit.limiter.name else None
            return _LIMITED
        if isinstance(exc, KeyFailed):
            _logger.error("%s raised: answered 500", exc, exc_info=exc.__cause__)
            return _FAILED
    raise exc
