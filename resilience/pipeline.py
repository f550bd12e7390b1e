"""Pipeline: several policies composed into one, outermost first."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar, overload

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

    __slots__ = ("_head", "_head_sync", "_policies", "_rest", "_rest_sync")

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
        # Each policy calls the next one's bound `call` with the remaining
        # chain as leading arguments, so a call through the pipeline builds
        # no closure: head(p1.call, p2.call, fn, *args) -> p1.call(p2.call, fn, *args) ...
        self._head = flat[0].call
        self._rest = tuple(p.call for p in flat[1:])
        self._head_sync = flat[0].call_sync
        self._rest_sync = tuple(p.call_sync for p in flat[1:])

    @property
    def policies(self) -> tuple[Policy, ...]:
        """The composed policies, outermost first."""
        return self._policies

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        head: Any = self._head
        result: T = await head(*self._rest, fn, *args, **kwargs)
        return result

    def call_sync(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        head: Any = self._head_sync
        result: T = head(*self._rest_sync, fn, *args, **kwargs)
        return result

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, T]], /
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...

    @overload
    def __call__(self, fn: Callable[P, T], /) -> Callable[P, T]: ...

    def __call__(self, fn: Callable[P, Any], /) -> Callable[P, Any]:
        """Decorate ``fn``: every call of it runs through the pipeline.

        The async wrapper calls the outermost policy directly, as :meth:`call`
        would: one coroutine frame fewer per call.
        """
        if (
            not callable(fn)
            or not inspect.iscoroutinefunction(fn)
            or type(self).call is not _PIPELINE_CALL
        ):
            # Plain functions; or call() is wrapped (a subclass, or the
            # Prometheus duration histogram): decorate through call().
            return super().__call__(fn)
        self._check_async(fn)
        head: Any = self._head
        rest = self._rest

        @functools.wraps(fn)
        async def pipeline_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            return await head(*rest, fn, *args, **kwargs)

        return pipeline_wrapper

    def _check_sync(self, fn: object) -> None:
        for policy in self._policies:
            policy._check_sync(fn)

    def _check_async(self, fn: object) -> None:
        for policy in self._policies:
            policy._check_async(fn)

    def __repr__(self) -> str:
        inner = " | ".join(repr(p) for p in self._policies)
        return f"<Pipeline {self._name!r}: {inner}>"


_PIPELINE_CALL = Pipeline.call
