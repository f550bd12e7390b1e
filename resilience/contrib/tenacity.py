"""Use a tenacity ``wait_*`` strategy as a :class:`~resilience.Retry` schedule.

For teams moving from tenacity: keep the wait strategy you tuned, run it
under our Retry (and its budget, events and metrics).

Example::

    import tenacity
    from resilience import Retry
    from resilience.contrib.tenacity import from_tenacity

    wait = tenacity.wait_random_exponential(multiplier=0.5, max=20)
    retry = Retry(5, backoff=from_tenacity(wait))
"""

from __future__ import annotations

import math

from resilience.contrib import _extras

with _extras.needs_extra(__name__, "tenacity"):
    import tenacity

__all__ = ["TenacityBackoff", "from_tenacity"]


class TenacityBackoff:
    """Adapts a tenacity wait strategy to the :class:`~resilience.backoff.Backoff` protocol.

    Strategies see a ``RetryCallState`` whose ``attempt_number`` is the
    attempt that just failed and whose ``idle_for`` is the time slept so far
    (approximated from the previous delay); ``outcome`` is not available.
    :func:`from_tenacity` makes one.

    Example::

        schedule = TenacityBackoff(tenacity.wait_exponential(multiplier=0.5, max=20))
        schedule.delay(1, 0.0)   # 1.0: the delay after the first failed attempt
    """

    __slots__ = ("_wait",)

    def __init__(self, wait: tenacity.wait.wait_base) -> None:
        if not callable(wait):
            raise TypeError(f"wait must be a tenacity wait strategy, got {wait!r}")
        self._wait = wait

    def delay(self, attempt: int, previous: float) -> float:
        state = tenacity.RetryCallState(
            retry_object=None,  # type: ignore[arg-type]
            fn=None,
            args=(),
            kwargs={},
        )
        state.attempt_number = attempt
        state.idle_for = previous
        delay = float(self._wait(state))
        if not (delay >= 0 and math.isfinite(delay)):
            raise ValueError(
                f"tenacity strategy {self._wait!r} returned an invalid delay {delay!r}"
            )
        return delay

    def __repr__(self) -> str:
        return f"from_tenacity({self._wait!r})"


def from_tenacity(wait: tenacity.wait.wait_base) -> TenacityBackoff:
    """Wrap a tenacity wait strategy (``wait_fixed``, ``wait_exponential``,
    ``wait_random_exponential``, ``wait_chain``, sums of them ...) so that
    :class:`~resilience.Retry` can use it as its ``backoff``.

    Example::

        Retry(4, backoff=from_tenacity(tenacity.wait_fixed(1) + tenacity.wait_random(0, 1)))
    """
    return TenacityBackoff(wait)
