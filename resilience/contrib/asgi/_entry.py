"""The innermost guard of the middleware's chain: the request enters the app."""

from __future__ import annotations

from collections.abc import Callable

from resilience import CircuitBreaker, Timeout
from resilience.lowlevel import Inline

from ._request import _ENTERED, _LATE, _STARTED, ServerErrorResponse

__all__ = ["Entry"]


class Entry:
    """The innermost guard of the chain: the request leaves the queue and
    enters the app; the app's cancellation by the budget becomes the
    TimeoutError the breaker records, and a 5xx response (with a breaker) a
    ServerErrorResponse; the middleware handles both on the way out."""

    __slots__ = ("breaker", "failures", "timeout")

    _internal = True  # observers do not see its spans
    sync_unsupported = "an ASGI application is async"

    admit: Callable[[], object]
    settle: Callable[[object, BaseException | None, object], BaseException | None]

    def __init__(
        self, timeout: Timeout | None, breaker: CircuitBreaker | None, failures: frozenset[int]
    ) -> None:
        self.timeout = timeout
        self.breaker = breaker
        self.failures = failures

    async def wait(self) -> object:  # pragma: no cover - admit never waits
        return None

    def wait_sync(self) -> object:  # pragma: no cover - never run sync
        return None

    def _outside(self) -> object:
        raise RuntimeError("the middleware's entry guard runs only inside its own chain")


_SOURCE = Inline(
    # The app is called with (scope, receive, request.send): the request is
    # the bound method's __self__, read without a context variable.
    admit="""
        {t} = {args}[2].__self__
        {t}.state = {n}ENTERED
    """,
    settle="""
        if error is not None:
            if {t}.mode and {t}.expired():
                {t}.error = error = {g}.timeout.timed_out({t}.budget)
        elif {t}.state >= {n}STARTED:
            if {g}.breaker is not None and {t}.status in {g}.failures:
                error = {n}ServerErrorResponse({t}.status)
        elif {t}.state == {n}LATE and {t}.expired():
            {t}.error = error = {g}.timeout.timed_out({t}.budget)
    """,
    names={
        "ENTERED": _ENTERED,
        "LATE": _LATE,
        "STARTED": _STARTED,
        "ServerErrorResponse": ServerErrorResponse,
    },
)
Entry._inline_source = _SOURCE  # type: ignore[attr-defined]
Entry.admit = Entry._outside  # type: ignore[assignment]
_SOURCE.methods["admit"] = Entry._outside
Entry.settle = _SOURCE.method("settle", "A timeout or a 5xx response, as the breaker sees it.")
