"""The policy model: one protocol that every policy (and a pipeline) shares.

A policy wraps a call. It can be used three ways:

- as a decorator on ``async def`` or plain ``def`` functions (the shell is
  picked once, at decoration, with :func:`inspect.iscoroutinefunction`);
- directly: ``await policy.call(fn, *args, **kwargs)`` for anything that
  returns an awaitable, ``policy.call_sync(fn, *args, **kwargs)`` for plain
  callables;
- composed: ``outer | inner`` or ``Pipeline(outer, ..., inner)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, TypeVar, overload

from . import _registry
from ._clock import SYSTEM_CLOCK, Clock
from ._listeners import EventSource
from ._plan import COROUTINE as _COROUTINE
from ._plan import FUNCTION as _FUNCTION
from ._plan import Plan, _set_base_call, refuse_async, run_call

if TYPE_CHECKING:
    from .pipeline import Pipeline

__all__ = ["Policy"]

P = ParamSpec("P")
T = TypeVar("T")


class Policy(EventSource):
    """Base class of every policy.

    A subclass takes one of the two shapes of :mod:`resilience.lowlevel`: a
    guard (``admit``, ``wait``, ``wait_sync``, ``settle``) or a flow
    (``start``), and then :meth:`call`, :meth:`call_sync` and decorating
    work as they are, through a compiled :class:`~resilience.lowlevel.Plan`.
    A policy of neither shape overrides :meth:`call` and :meth:`call_sync`
    and wraps the rest of a chain through them. A subclass that cannot run
    synchronously sets ``sync_unsupported`` to the reason (one that cannot
    wrap ``async def``, ``async_unsupported``), and decorating such a
    function with it, or with a pipeline holding it, fails at once.

    Example::

        retry = Retry(3)

        @retry
        async def fetch() -> bytes: ...

        data = await retry.call(client.get, url)
    """

    __slots__ = ("__weakref__", "_async_run", "_clock", "_name", "_plan")

    _kind: ClassVar[str] = "policy"
    sync_unsupported: ClassVar[str | None] = None
    """Why this kind of policy cannot run plain (sync) calls, or None if it can."""
    async_unsupported: ClassVar[str | None] = None
    """Why this kind of policy cannot run ``async def`` calls, or None if it can."""

    def __init__(self, *, name: str | None = None, clock: Clock | None = None) -> None:
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"clock must provide now(), sleep() and sleep_sync(), got {clock!r}")
        self._name = name if name is not None else _registry.generated_name(self._kind)
        self._clock: Clock = clock if clock is not None else SYSTEM_CLOCK
        self._listeners = ()
        self._plan: Plan | None = None
        self._async_run: Callable[..., Any] | None = None  # the plan's async runner, once made
        _registry.register(self)

    @property
    def name(self) -> str:
        """The name used in events, errors and metric labels."""
        return self._name

    @property
    def clock(self) -> Clock:
        """The clock this policy reads and sleeps on."""
        return self._clock

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``await fn(*args, **kwargs)`` under this policy."""
        run = self._async_run
        if run is None:
            run = self._async_run = self._own_plan().runner()
        if fn.__class__ is _FUNCTION and fn.__code__.co_flags & _COROUTINE:
            # An ``async def``: what run_call would find, without its frame.
            return await run(fn, *args, **kwargs)  # type: ignore[no-any-return]
        result: T = await run_call(self, run, fn, args, kwargs)
        return result

    def call_sync(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` under this policy, in the calling thread."""
        refuse_async(self, fn)
        result: T = self._own_plan().runner(sync=True)(fn, *args, **kwargs)
        return result

    def _own_plan(self) -> Plan:
        plan = self._plan
        if plan is None:
            plan = self._plan = Plan((self,))
        return plan

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, T]], /
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...

    @overload
    def __call__(self, fn: Callable[P, T], /) -> Callable[P, T]: ...

    def __call__(self, fn: Callable[P, Any], /) -> Callable[P, Any]:
        """Decorate ``fn``: every call of it runs under this policy."""
        if not callable(fn):
            raise TypeError(f"{type(self).__name__} decorates a callable, got {fn!r}")
        return self._own_plan().decorate(fn, sync=not inspect.iscoroutinefunction(fn))

    def _check_sync(self, fn: object) -> None:
        """Raise at decoration time if this policy cannot wrap plain calls."""
        if self.sync_unsupported is not None:
            raise TypeError(
                f"{type(self).__name__} {self._name!r} cannot wrap the plain function "
                f"{getattr(fn, '__qualname__', fn)!r}: {self.sync_unsupported}"
            )

    def _check_async(self, fn: object) -> None:
        """Raise at decoration time if this policy cannot wrap ``async def``."""
        if self.async_unsupported is not None:
            raise TypeError(
                f"{type(self).__name__} {self._name!r} cannot wrap the async function "
                f"{getattr(fn, '__qualname__', fn)!r}: {self.async_unsupported}"
            )

    def __or__(self, other: Policy) -> Pipeline:
        """``outer | inner``: the same as ``Pipeline(outer, inner)``."""
        from .pipeline import Pipeline

        if not isinstance(other, Policy):
            return NotImplemented
        return Pipeline(self, other)

    # Events ---------------------------------------------------------------

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name!r}>"


_set_base_call(Policy.call, Policy.call_sync)
