"""Use an existing :class:`aiobreaker.CircuitBreaker` as a policy.

For code that already has aiobreaker breakers (and their Redis storage, say):
wrap one and it composes in a :class:`~resilience.Pipeline`, its rejections
raise our :class:`~resilience.CircuitOpenError` (so a :class:`~resilience.Retry`
stops at them), and its state changes become our ``StateChanged`` events
(and so metrics). The breaking rules stay aiobreaker's own.

Example::

    import aiobreaker
    from resilience import Retry
    from resilience.contrib.aiobreaker import AiobreakerPolicy

    legacy = aiobreaker.CircuitBreaker(fail_max=5, name="billing")
    policy = Retry(3) | AiobreakerPolicy(legacy)

    @policy
    async def charge(order_id: str) -> Receipt: ...
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn, ParamSpec, TypeVar

from resilience.contrib import _extras
from resilience.errors import CircuitOpenError
from resilience.events import CallRejected, CircuitState, StateChanged
from resilience.policy import Policy

with _extras.needs_extra(__name__, "aiobreaker"):
    import aiobreaker  # type: ignore[import-untyped]

__all__ = ["AiobreakerPolicy", "AiobreakerStatistics"]

P = ParamSpec("P")
T = TypeVar("T")

_STATES = {
    aiobreaker.CircuitBreakerState.CLOSED: CircuitState.CLOSED,
    aiobreaker.CircuitBreakerState.OPEN: CircuitState.OPEN,
    aiobreaker.CircuitBreakerState.HALF_OPEN: CircuitState.HALF_OPEN,
}


@dataclass(frozen=True, slots=True)
class AiobreakerStatistics:
    """Running totals of an :class:`AiobreakerPolicy` since it was created,
    named as in :class:`~resilience.CircuitBreakerStatistics`.

    Example::

        stats = policy.stats
        print(stats.state, stats.rejected, stats.failed_total)
    """

    state: CircuitState
    rejected: int
    successful_total: int
    failed_total: int
    transitions: dict[tuple[CircuitState, CircuitState], int]


def _utcnow() -> datetime:
    # aiobreaker stamps opened_at with the naive datetime.utcnow(); the same
    # clock, without the deprecated call.
    return datetime.now(UTC).replace(tzinfo=None)


class _Bridge(aiobreaker.CircuitBreakerListener):  # type: ignore[misc]
    """Listens on the aiobreaker and forwards to the policy, held weakly so the
    aiobreaker does not keep the policy (and its metric series) alive."""

    def __init__(self, policy: AiobreakerPolicy) -> None:
        self._policy = weakref.ref(policy)

    def state_change(self, breaker: Any, old: Any, new: Any) -> None:
        policy = self._policy()
        if policy is not None and old is not None:
            policy._changed(_STATES[old.state], _STATES[new.state])

    def success(self, breaker: Any) -> None:
        policy = self._policy()
        if policy is not None:
            policy._successes += 1

    def failure(self, breaker: Any, exception: BaseException) -> None:
        policy = self._policy()
        if policy is not None:
            policy._failures += 1


class AiobreakerPolicy(Policy):
    """An :class:`aiobreaker.CircuitBreaker` as a policy.

    - A call the aiobreaker rejects (open, timeout not elapsed) raises a
      fresh :class:`~resilience.CircuitOpenError` with the seconds until it
      lets a trial through; aiobreaker's ``CircuitBreakerError`` is its cause.
    - A call that ran and failed raises its own exception, also when it is
      the failure that opened the aiobreaker (aiobreaker itself would raise
      ``CircuitBreakerError`` instead), as our breaker does.
    - Its state changes are emitted as ``StateChanged`` events named after
      this policy; a change to the same state emits nothing.

    ``name`` defaults to the aiobreaker's name, else a generated one.

    Example::

        policy = AiobreakerPolicy(aiobreaker.CircuitBreaker(fail_max=3), name="search")
        result = await policy.call(search, "query")
    """

    __slots__ = ("_breaker", "_failures", "_rejected", "_successes", "_transitions")

    _kind = "aiobreaker"

    def __init__(self, breaker: aiobreaker.CircuitBreaker, *, name: str | None = None) -> None:
        if not isinstance(breaker, aiobreaker.CircuitBreaker):
            raise TypeError(f"breaker must be an aiobreaker.CircuitBreaker, got {breaker!r}")
        if name is None and isinstance(breaker.name, str) and breaker.name:
            name = breaker.name
        super().__init__(name=name)
        self._breaker = breaker
        self._rejected = 0
        self._successes = 0
        self._failures = 0
        self._transitions: dict[tuple[CircuitState, CircuitState], int] = {}
        breaker.add_listener(_Bridge(self))

    @property
    def breaker(self) -> aiobreaker.CircuitBreaker:
        """The wrapped aiobreaker."""
        return self._breaker

    @property
    def state(self) -> CircuitState:
        """The aiobreaker's state, as a :class:`~resilience.CircuitState`."""
        return _STATES[self._breaker.current_state]

    @property
    def stats(self) -> AiobreakerStatistics:
        return AiobreakerStatistics(
            state=self.state,
            rejected=self._rejected,
            successful_total=self._successes,
            failed_total=self._failures,
            transitions=dict(self._transitions),
        )

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            result: T = await self._breaker.call_async(fn, *args, **kwargs)
        except aiobreaker.CircuitBreakerError as exc:
            self._translate(exc)
        return result

    def call_sync(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            result: T = self._breaker.call(fn, *args, **kwargs)
        except aiobreaker.CircuitBreakerError as exc:
            self._translate(exc)
        return result

    def _translate(self, exc: aiobreaker.CircuitBreakerError) -> NoReturn:
        cause: BaseException | None = exc.__cause__
        if cause is not None:
            # The call ran and failed, and that failure opened the breaker:
            # the caller gets the failure itself, as it was raised.
            raise cause from cause.__cause__
        self._rejected += 1
        retry_after = self._retry_after()
        if self._observed():
            self._emit(CallRejected(self._name, self.state, retry_after))
        raise CircuitOpenError(name=self._name, retry_after=retry_after) from exc

    def _retry_after(self) -> float | None:
        breaker = self._breaker
        opened_at = breaker._state_storage.opened_at
        if opened_at is None:
            return None
        # Both sides in naive UTC: aiobreaker's own opens_at mixes in local time.
        left: float = (opened_at + breaker.timeout_duration - _utcnow()).total_seconds()
        return left if left > 0.0 else 0.0

    def _changed(self, old: CircuitState, new: CircuitState) -> None:
        if old is new:
            return
        key = (old, new)
        self._transitions[key] = self._transitions.get(key, 0) + 1
        if self._observed():
            self._emit(StateChanged(self._name, old, new))

    def __repr__(self) -> str:
        return f"<AiobreakerPolicy {self._name!r} {self.state.value}>"
