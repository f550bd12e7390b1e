"""The responses the middleware sends itself: fixed texts, built once."""

from __future__ import annotations

from typing import Final

from ._limit import whole_seconds
from ._request import Message, Request, Scope, Send

__all__ = ["Answers", "fixed_response"]

# Outcomes that the middleware answers itself (0: none).
_SHED: Final = 1  # no permit: 503 with the configured Retry-After
_OPEN: Final = 2  # the breaker is open: 503, Retry-After from the breaker
_TIMED_OUT: Final = 3  # 504
_LIMITED: Final = 4  # refused by a rate limiter: 429
_FAILED: Final = 5  # the rate limit's key function raised: 500

_Response = tuple[Message, Message, Message]


def fixed_response(
    status: int, body: bytes, content_type: bytes, retry_after: int | None = None
) -> _Response:
    """The start message and body message (and HEAD's empty body) of a
    response the middleware sends itself: built once, sent as is."""
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    start = {"type": "http.response.start", "status": status, "headers": headers}
    return start, {"type": "http.response.body", "body": body}, {"type": "http.response.body"}


def _response(status: int, reason: str, json: bool, retry_after: int | None) -> _Response:
    """A fixed error response, never with exception text."""
    if json:
        return fixed_response(
            status, b'{"detail":"' + reason.encode() + b'"}', b"application/json", retry_after
        )
    return fixed_response(status, reason.encode(), b"text/plain; charset=utf-8", retry_after)


class Answers:
    """The middleware's own responses, by outcome."""

    __slots__ = ("_by_outcome", "_retry_after")

    def __init__(self, json: bool, retry_after: int) -> None:
        self._retry_after = retry_after
        self._by_outcome: dict[int, _Response] = {
            _SHED: _response(503, "Service Unavailable", json, retry_after),
            _OPEN: _response(503, "Service Unavailable", json, None),
            _TIMED_OUT: _response(504, "Gateway Timeout", json, None),
            _LIMITED: _response(429, "Too Many Requests", json, None),
            _FAILED: _response(500, "Internal Server Error", json, None),
        }

    async def send(self, outcome: int, request: Request, scope: Scope, send: Send) -> None:
        start, body, empty = self._by_outcome[outcome]
        if outcome in (_OPEN, _LIMITED):
            # When the breaker lets a trial through, or the limiter the
            # request (None: forced open, or a refusal without a time).
            wait = request.retry_after
            seconds = self._retry_after if wait is None else max(1, whole_seconds(wait))
            limit = request.limit if outcome == _LIMITED else None
            if limit is not None:  # ours, with the RateLimit fields
                extra = limit.refusal_headers(seconds)
            else:
                extra = [(b"retry-after", b"%d" % seconds)]
            start = {**start, "headers": [*start["headers"], *extra]}
        await send(start)
        await send(empty if scope.get("method") == "HEAD" else body)
