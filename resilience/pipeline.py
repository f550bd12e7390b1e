"""Pipeline: several policies composed into one, outermost first."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from ._plan import COROUTINE as _COROUTINE
from ._plan import FUNCTION as _FUNCTION
from ._plan import Plan, refuse_async, run_call
from .policy import Policy

__all__ = ["Pipeline"]

P = ParamSpec("P")
T = TypeVar("T")


class Pipeline(Policy):
    """Policies applied in order, the first one outermost.

    ``Pipeline(fallback, retry, breaker, timeout)`` runs the call inside the
    timeout, inside the breaker, inside the retry, inside the fallback.
    ``retry | breaker`` builds the same as ``Pipeline(retry, breaker)``, and
    nested pipelines are flattened. A pipeline is itself a policy: it
    decorates, calls and composes like any other.

    The recommended order, outermost first::

        Fallback > total Timeout > Retry > CircuitBreaker > per-attempt Timeout > Bulkhead

    Example::

        policy = Retry(3) | CircuitBreaker("payments") | Timeout(2.0)

        @policy
        async def charge(order_id: str) -> Receipt: ...
    """

    __slots__ = ("_policies",)

    _kind = "pipeline"

    def __init__(self, *policies: Policy, name: str | None = None) -> None:
        flat: list[Policy] = []
        for policy in policies:
            if isinstance(policy, Pipeline):
                flat.extend(policy.policies)
            elif isinstance(policy, Policy):
                flat.append(policy)
            else:
                raise TypeError(f"policies must be Policy instances, got {policy!r}")
        if not flat:
            raise ValueError("policies must name at least one policy, got none")
        super().__init__(name=name)
        self._policies: tuple[Policy, ...] = tuple(flat)

    @property
    def policies(self) -> tuple[Policy, ...]:
        """The composed policies, outermost first."""
        return self._policies

    def _own_plan(self) -> Plan:
        plan = self._plan
        if plan is None:
            plan = self._plan = Plan(self._policies, owner=self)
        return plan

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        run = self._async_run
        if run is None:
            run = self._async_run = self._own_plan().runner()
        if fn.__class__ is _FUNCTION and fn.__code__.co_flags & _COROUTINE:
            return await run(fn, *args, **kwargs)  # type: ignore[no-any-return]
        result: T = await run_call(self, run, fn, args, kwargs, self._policies[-1])
        return result

    def call_sync(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        refuse_async(self, fn)
        result: T = self._own_plan().runner(sync=True)(fn, *args, **kwargs)
        return result

    def _check_sync(self, fn: object) -> None:
        for policy in self._policies:
            policy._check_sync(fn)

    def _check_async(self, fn: object) -> None:
        for policy in self._policies:
            policy._check_async(fn)

    def __repr__(self) -> str:
        inner = " | ".join(repr(p) for p in self._policies)
        return f"<Pipeline {self._name!r}: {inner}>"
