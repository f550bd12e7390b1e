"""Our policies as Temporal's activity options: a :class:`~resilience.Retry`
becomes a ``RetryPolicy``, a :class:`~resilience.Timeout` an activity
timeout; what has no Temporal equivalent is refused, or dropped with a
warning when ``strict=False``.

Pure and deterministic: workflow code calls it (every replay too).
"""

from __future__ import annotations

import math
import sys
import warnings
from datetime import timedelta
from typing import TypedDict

from temporalio.common import RetryPolicy

from resilience import Pipeline, Policy, Retry, Timeout
from resilience.adaptive import AdaptiveTimeout
from resilience.backoff import Exponential, Fixed, Immediate, Linear
from resilience.timeout import DeadlineGuard

__all__ = [
    "DEFAULT_START_TO_CLOSE",
    "ActivityOptions",
    "TemporalConversionWarning",
    "activity_options",
    "retry_policy",
]

DEFAULT_START_TO_CLOSE = timedelta(seconds=30)
"""The limit of one attempt of an activity whose policy has no Timeout.

Example::

    activity_options(Retry(3))["start_to_close_timeout"]   # DEFAULT_START_TO_CLOSE: 30 s
"""

# Our Retry never retries these whatever its on= says (they ask the caller to
# back off); Temporal matches the type names of the failures exactly.
_NEVER_RETRIED = ["BulkheadFullError", "CircuitOpenError", "RateLimitedError"]


class TemporalConversionWarning(UserWarning):
    """A part of a policy that Temporal cannot express was dropped
    (``strict=False``).

    Example::

        import warnings
        warnings.simplefilter("error", TemporalConversionWarning)  # refuse instead
    """


class ActivityOptions(TypedDict):
    """The options of ``workflow.execute_activity`` a policy converts to
    (pass them as keyword arguments).

    Example::

        options = activity_options(Retry(3, backoff=backoff.exponential(1, 2, cap=10))
                                   | Timeout(5))
        await workflow.execute_activity(charge, order, **options)
    """

    retry_policy: RetryPolicy
    start_to_close_timeout: timedelta | None
    schedule_to_close_timeout: timedelta | None


class _Conversion:
    """One policy's conversion: where it stands (for the messages), whether
    a problem raises or warns, and whether the activity applies ``on=``."""

    __slots__ = ("on_in_activity", "quiet", "strict", "where")

    def __init__(self, where: str, strict: bool, on_in_activity: bool, quiet: bool = False) -> None:
        if not isinstance(strict, bool):
            raise TypeError(f"strict must be True or False, got {strict!r}")
        self.where = where
        self.strict = strict
        self.on_in_activity = on_in_activity
        self.quiet = quiet

    def problem(self, kind: type[Exception], what: str, dropped: str) -> None:
        if self.strict:
            raise kind(f"{self.where}: {what} (strict=False drops it: {dropped})")
        if not self.quiet:
            warnings.warn(
                f"{self.where}: {what}; dropped: {dropped}",
                TemporalConversionWarning,
                stacklevel=_outside(),
            )


def _outside() -> int:
    """The stack level of the first caller outside this package: what a
    warning points at (the user's call, however deep the conversion was)."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith(__package__ or "-"):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def _schedule(retry: Retry, conv: _Conversion) -> tuple[float, float, float] | None:
    """(initial, coefficient, maximum) in seconds, or None for Temporal's default."""
    schedule = retry.backoff
    default = "Temporal's default schedule (1 s, doubling, up to 100 s)"
    if isinstance(schedule, Immediate):
        conv.problem(
            ValueError,
            "backoff=immediate(): Temporal waits between attempts (an initial_interval "
            "of 0 means its default, 1 s); use backoff.fixed(0.001) for next to no wait",
            default,
        )
        return None
    if isinstance(schedule, Exponential):
        initial, coefficient, maximum = schedule.initial, schedule.multiplier, schedule.cap
    elif isinstance(schedule, Fixed):
        initial, coefficient, maximum = schedule.seconds, 1.0, schedule.seconds
    elif isinstance(schedule, Linear):
        what = f"backoff={schedule!r}: Temporal's schedules are exponential"
        conv.problem(ValueError, what, default)
        return None
    else:
        conv.problem(
            ValueError,
            f"backoff={schedule!r}: only exponential() and fixed() schedules have a "
            "Temporal equivalent",
            default,
        )
        return None
    if initial <= 0:
        conv.problem(
            ValueError,
            f"backoff={schedule!r} starts at 0 s: Temporal reads an initial_interval of 0 "
            "as its default (1 s)",
            default,
        )
        return None
    if schedule.jitter is not None and not _is_default(schedule):
        conv.problem(
            ValueError,
            f"backoff={schedule!r}: jitter={schedule.jitter!r} has no Temporal equivalent "
            "(its retry intervals are not randomised)",
            "the jitter (the schedule is kept without it)",
        )
    return initial, coefficient, maximum


def _is_default(schedule: Exponential | Fixed) -> bool:
    """Retry's default schedule (exponential from 0.1 s, doubling, up to 5 s,
    full jitter), and the default compensation retry's (0.5 s to 8 s): nobody
    asked for their jitter, so they convert without it, silently."""
    return (
        isinstance(schedule, Exponential)
        and schedule.jitter == "full"
        and schedule.multiplier == 2.0
        and (schedule.initial, schedule.cap) in ((0.1, 5.0), (0.5, 8.0))
    )


def _on_is_everything(retry: Retry) -> bool:
    on = retry.on
    types = on if isinstance(on, tuple) else (on,)
    return any(t is Exception or t is BaseException for t in types)


def _retry_policy(retry: Retry, conv: _Conversion) -> RetryPolicy:
    if retry.on_result is not None:
        conv.problem(
            ValueError,
            f"on_result={retry.on_result!r}: Temporal retries failures, not results",
            "the result predicate (results are never retried)",
        )
    if retry.budget is not None:
        conv.problem(
            ValueError,
            f"budget={retry.budget!r}: a retry budget is shared in process; Temporal's "
            "retries are scheduled by its server",
            "the budget",
        )
    if not conv.on_in_activity and not _on_is_everything(retry):
        conv.problem(
            ValueError,
            f"on={retry.on!r} retries only some exceptions, and Temporal's RetryPolicy can "
            "only name the ones it never retries (non_retryable_error_types); the "
            "activities of resilience.contrib.temporal.activities() apply on= themselves",
            "the filter (every exception is retried)",
        )
    if retry.attempts == 1:
        return RetryPolicy(maximum_attempts=1)  # no wait ever happens: any schedule will do
    schedule = _schedule(retry, conv)
    if schedule is None:
        return RetryPolicy(
            maximum_attempts=retry.attempts, non_retryable_error_types=list(_NEVER_RETRIED)
        )
    initial, coefficient, maximum = schedule
    return RetryPolicy(
        initial_interval=_seconds(initial),
        backoff_coefficient=coefficient,
        maximum_interval=_seconds(maximum),
        maximum_attempts=retry.attempts,
        non_retryable_error_types=list(_NEVER_RETRIED),
    )


def retry_policy(retry: Retry, *, strict: bool = True) -> RetryPolicy:
    """Temporal's ``RetryPolicy`` for our :class:`~resilience.Retry`.

    - ``attempts`` is ``maximum_attempts``;
    - ``backoff.exponential(initial, multiplier, cap=...)`` is
      ``initial_interval``, ``backoff_coefficient`` and ``maximum_interval``;
      ``backoff.fixed(d)`` is ``d``, a coefficient of 1 and ``d``;
    - ``non_retryable_error_types`` names what our Retry never retries
      (``BulkheadFullError``, ``CircuitOpenError``, ``RateLimitedError``);
    - Retry's default schedule (0.1 s, doubling, up to 5 s, with full
      jitter) converts without its jitter.

    Refused with a ValueError that names the part (or, with
    ``strict=False``, dropped with a :class:`TemporalConversionWarning`):
    jitter (Temporal does not randomise its intervals), ``immediate()`` and
    schedules starting at 0 s (Temporal reads 0 as its 1 s default),
    ``linear()`` and schedules of your own, ``on_result``, a ``budget``,
    and an ``on=`` filter narrower than every exception (Temporal can only
    list the exceptions it never retries; the saga activities of
    :func:`activities` apply ``on=`` themselves). ``max_elapsed`` is a
    timeout: see :func:`activity_options`.

    Example::

        policy = retry_policy(Retry(4, backoff=backoff.exponential(1, 2, cap=30)))
        assert policy.maximum_attempts == 4 and policy.maximum_interval == timedelta(seconds=30)
    """
    if not isinstance(retry, Retry):
        raise TypeError(f"retry must be a resilience Retry, got {retry!r}")
    return _retry_policy(retry, _Conversion(f"Retry {retry.name!r}", strict, False))


def _timeout_seconds(timeout: Timeout, conv: _Conversion) -> float | None:
    if isinstance(timeout, AdaptiveTimeout | DeadlineGuard):
        conv.problem(
            TypeError,
            f"{timeout!r}: its limit moves; Temporal's timeouts are fixed when the "
            "activity is scheduled",
            "the timeout",
        )
        return None
    return timeout.seconds


def convert(policy: Policy | None, conv: _Conversion) -> ActivityOptions:
    """The activity options of a step's ``policy`` (see :func:`activity_options`)."""
    if policy is None:
        return ActivityOptions(
            retry_policy=RetryPolicy(maximum_attempts=1),
            start_to_close_timeout=DEFAULT_START_TO_CLOSE,
            schedule_to_close_timeout=None,
        )
    if not isinstance(policy, Policy):
        raise TypeError(f"{conv.where}: must be a Policy (or a pipeline of them), got {policy!r}")
    retry: Retry | None = None
    outer: list[float] = []  # timeouts outside the Retry: the whole call
    inner: list[float] = []  # inside it: each attempt
    for part in policy.policies if isinstance(policy, Pipeline) else (policy,):
        if isinstance(part, Retry):
            if retry is None:
                retry = part
            else:
                conv.problem(
                    TypeError,
                    f"{part!r} is a second Retry; an activity has one RetryPolicy",
                    "the second Retry",
                )
        elif isinstance(part, Timeout):
            seconds = _timeout_seconds(part, conv)
            if seconds is not None:
                (outer if retry is None else inner).append(seconds)
        else:
            conv.problem(
                TypeError,
                f"{part!r} has no Temporal equivalent (an activity's options are a "
                "RetryPolicy and timeouts)",
                "the policy",
            )
    if retry is None:
        # One attempt: every timeout bounds it.
        limit = min(outer, default=math.inf)
        return ActivityOptions(
            retry_policy=RetryPolicy(maximum_attempts=1),
            start_to_close_timeout=DEFAULT_START_TO_CLOSE if limit == math.inf else _seconds(limit),
            schedule_to_close_timeout=None,
        )
    total = min(outer, default=math.inf)
    if retry.max_elapsed is not None:
        total = min(total, retry.max_elapsed)
    per_attempt = min(inner, default=math.inf)
    if per_attempt == math.inf:
        # With a total limit, each attempt may use what is left of it, as in process.
        per_attempt = DEFAULT_START_TO_CLOSE.total_seconds() if total == math.inf else total
    return ActivityOptions(
        retry_policy=_retry_policy(retry, conv),
        start_to_close_timeout=_seconds(min(per_attempt, total)),
        schedule_to_close_timeout=None if total == math.inf else _seconds(total),
    )


def activity_options(
    policy: Policy | None, *, strict: bool = True, name: str = "policy"
) -> ActivityOptions:
    """The ``workflow.execute_activity`` options for an activity run under
    ``policy`` (a policy or a pipeline of them).

    - a :class:`~resilience.Retry` becomes ``retry_policy``
      (:func:`retry_policy`); without one, ``maximum_attempts=1``;
    - a :class:`~resilience.Timeout` inside the Retry (after it in the
      pipeline) limits each attempt: ``start_to_close_timeout``; one outside
      it limits the whole call, retries and waits included:
      ``schedule_to_close_timeout``, and so does the Retry's
      ``max_elapsed`` (which, on Temporal, also stops an attempt in flight);
      without a Retry a Timeout limits the one attempt;
    - no Timeout at all: each attempt gets :data:`DEFAULT_START_TO_CLOSE`
      (30 s), and with only a total one, each attempt may use all of it.

    Any other policy (breaker, bulkhead, rate limiter, fallback, hedge, an
    adaptive timeout) has no Temporal equivalent: a TypeError names it, or
    with ``strict=False`` it is dropped with a warning. ``name`` is what the
    messages call the policy.

    Example::

        options = activity_options(Timeout(120) | Retry(5) | Timeout(10))  # default backoff
        assert options["start_to_close_timeout"] == timedelta(seconds=10)
        assert options["schedule_to_close_timeout"] == timedelta(seconds=120)
    """
    return convert(policy, _Conversion(name, strict, False))
