"""Our rejections as httpx errors too, so ``except httpx.TransportError`` keeps working."""

from __future__ import annotations

import httpx

from resilience import errors

__all__ = [
    "HTTPBulkheadFullError",
    "HTTPCircuitOpenError",
    "HTTPRateLimitedError",
    "HTTPTimeoutError",
    "translate",
]


class HTTPCircuitOpenError(errors.CircuitOpenError, httpx.TransportError):
    """The host's circuit breaker is open: both our
    :class:`~resilience.CircuitOpenError` and an :class:`httpx.TransportError`.

    Example::

        try:
            await client.get(url)
        except httpx.TransportError:   # catches this too
            ...
    """

    def __init__(self, source: errors.CircuitOpenError, request: httpx.Request) -> None:
        super().__init__(name=source.name, retry_after=source.retry_after)
        self.request = request


class HTTPBulkheadFullError(errors.BulkheadFullError, httpx.TransportError):
    """The bulkhead rejected the request: both our
    :class:`~resilience.BulkheadFullError` and an :class:`httpx.TransportError`.

    Example::

        except HTTPBulkheadFullError:
            return Response(503)
    """

    def __init__(self, source: errors.BulkheadFullError, request: httpx.Request) -> None:
        super().__init__(name=source.name, capacity=source.capacity)
        self.request = request


class HTTPRateLimitedError(errors.RateLimitedError, httpx.TransportError):
    """The host's rate limiter refused the request, which was never sent:
    both our :class:`~resilience.RateLimitedError` and an
    :class:`httpx.TransportError`.

    Example::

        except HTTPRateLimitedError as exc:
            await anyio.sleep(exc.retry_after or 1.0)
    """

    def __init__(self, source: errors.RateLimitedError, request: httpx.Request) -> None:
        super().__init__(name=source.name, retry_after=source.retry_after)
        self.request = request


class HTTPTimeoutError(errors.TimeoutError, httpx.TimeoutException):
    """The per-attempt timeout (or the deadline in force) fired: both our
    :class:`~resilience.TimeoutError` and an :class:`httpx.TimeoutException`.

    Example::

        except httpx.TimeoutException:   # catches this too
            ...
    """

    def __init__(self, source: errors.TimeoutError, request: httpx.Request) -> None:
        super().__init__(name=source.name, seconds=source.seconds)
        self.request = request


def translate(exc: Exception, request: httpx.Request) -> Exception | None:
    """The httpx-flavoured twin of one of our errors, or None to raise ``exc`` as it is."""
    if isinstance(exc, httpx.HTTPError):
        return None
    if isinstance(exc, errors.CircuitOpenError):
        return HTTPCircuitOpenError(exc, request)
    if isinstance(exc, errors.BulkheadFullError):
        return HTTPBulkheadFullError(exc, request)
    if isinstance(exc, errors.TimeoutError):
        return HTTPTimeoutError(exc, request)
    if isinstance(exc, errors.RateLimitedError):
        return HTTPRateLimitedError(exc, request)
    return None
