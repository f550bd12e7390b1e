"""What a call's outcome counts as, for a circuit breaker: ``record``,
``ignore``, ``failure_result``, and the rules for cancellation and for this
library's own rejections."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._matchers import ExceptionFilter, exception_matcher, exception_types, result_predicate
from .errors import BulkheadFullError, CircuitOpenError, RateLimitedError

__all__ = ["FAILED", "IGNORED", "NOTHING", "SUCCEEDED", "Outcomes"]

SUCCEEDED = 0
FAILED = 1
IGNORED = 2  # matched by `ignore`, or our own rejection: counted as ignored
NOTHING = 3  # cancellation and the like: not recorded at all

# Our own rejections, raised by policies inside a breaker: not recorded
# unless `record` names them (shedding load is not the dependency failing).
_REJECTIONS = (CircuitOpenError, BulkheadFullError, RateLimitedError)


class Outcomes:
    """The breaker's classifier, validated at construction."""

    __slots__ = ("failure_result", "is_ignored", "is_recorded", "recorded_rejections")

    def __init__(
        self,
        record: ExceptionFilter,
        ignore: ExceptionFilter,
        failure_result: Callable[[Any], bool] | None,
    ) -> None:
        self.is_recorded = exception_matcher("record", record)
        self.is_ignored = None
        if ignore != ():
            self.is_ignored = exception_matcher("ignore", ignore)
            if isinstance(record, tuple | type) and isinstance(ignore, tuple | type):
                both = set(exception_types("record", record)) & set(
                    exception_types("ignore", ignore)
                )
                if both:
                    names = ", ".join(sorted(t.__name__ for t in both))
                    raise ValueError(
                        f"ignore and record must not name the same exception type, "
                        f"got {names} in both"
                    )
        self.failure_result = result_predicate("failure_result", failure_result)
        self.recorded_rejections: tuple[type[BaseException], ...] = _REJECTIONS
        if isinstance(record, tuple | type):  # else the predicate decides
            self.recorded_rejections = tuple(
                t for t in exception_types("record", record) if issubclass(t, _REJECTIONS)
            )

    def classify(self, error: BaseException | None, result: object) -> int:
        """SUCCEEDED, FAILED, IGNORED or NOTHING. Runs user predicates, which may raise."""
        if error is None:
            predicate = self.failure_result
            return FAILED if predicate is not None and predicate(result) else SUCCEEDED
        if not isinstance(error, Exception):
            return NOTHING  # cancellation, KeyboardInterrupt, SystemExit
        if self.is_ignored is not None and self.is_ignored(error):
            return IGNORED
        if isinstance(error, _REJECTIONS) and not isinstance(error, self.recorded_rejections):
            return IGNORED
        return FAILED if self.is_recorded(error) else SUCCEEDED
