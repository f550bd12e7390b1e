"""Plan: a chain of policies compiled once into the function that runs it.

Everything that runs policies runs them through a plan: decorators,
``Policy.call``, pipelines, the httpx transports and the ASGI middleware.

A chain is cut into segments, innermost first. A *bracket* is a run of
guards, optionally under one flow (a Retry), executed in one frame: the
flow's loop around the guards' ``admit``/``settle`` pairs around the call.
Any other policy *wraps* the rest of the chain through its own ``call``.
``Retry | CircuitBreaker | Timeout | Bulkhead`` is one bracket: one frame,
no closure and no object per call beyond the guards' tickets.

How a bracket is written and compiled: :mod:`resilience._codegen`; the
observers: :mod:`resilience._observe`.
"""

from __future__ import annotations

import functools
import inspect
import threading
import types
from collections.abc import Callable, Sequence
from typing import Any

from ._codegen import Inline, bracket_factory, inline_of
from ._observe import _notify, _perf, add_observer, remove_observer
from ._protocol import Flow, Guard

__all__ = ["Inline", "Plan", "add_observer", "remove_observer"]


def _is_guard(policy: object) -> bool:
    return isinstance(policy, Guard)


def _is_flow(policy: object) -> bool:
    return isinstance(policy, Flow)


def _timed(policy: Any, call: Callable[..., Any], sync: bool) -> Callable[..., Any]:
    """``call`` timed as ``policy``'s span (a wrapping policy, or a pipeline)."""
    if sync:

        def timed_sync(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            start = _perf()
            try:
                result = call(fn, *args, **kwargs)
            except BaseException as exc:
                _notify(policy, exc, _perf() - start)
                raise
            _notify(policy, None, _perf() - start)
            return result

        return timed_sync

    async def timed(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        start = _perf()
        try:
            result = await call(fn, *args, **kwargs)
        except BaseException as exc:
            _notify(policy, exc, _perf() - start)
            raise
        _notify(policy, None, _perf() - start)
        return result

    return timed


class Plan:
    """A chain of policies, outermost first, compiled into the function that runs it.

    - :meth:`runner` returns ``run(fn, *args, **kwargs)``: await it (or,
      with ``sync=True``, call it) to run ``fn`` under the whole chain.
    - :meth:`decorate` returns ``fn`` wrapped by the chain, in one frame
      when the chain is one bracket.

    Guards (:class:`~resilience.lowlevel.Guard`) next to each other, and one
    flow (:class:`~resilience.lowlevel.Flow`, a Retry) right outside them,
    run in one frame; any other policy runs the rest of the chain through
    its own ``call``/``call_sync``. Runners are compiled on first use and
    kept. ``owner`` (a Pipeline) is observed as one span around the chain.

    Example::

        plan = Plan([breaker, timeout, bulkhead])
        run = plan.runner()
        response = await run(send, request)
    """

    __slots__ = ("_lock", "_owner", "_policies", "_runners")

    def __init__(self, policies: Sequence[Any], *, owner: Any = None) -> None:
        policies = tuple(policies)
        if not policies:
            raise ValueError("a Plan needs at least one policy, got none")
        self._policies = policies
        self._owner = owner
        self._runners: dict[tuple[bool, bool, int | None], Callable[..., Any]] = {}
        self._lock = threading.Lock()

    @property
    def policies(self) -> tuple[Any, ...]:
        return self._policies

    def runner(self, *, sync: bool = False, arity: int | None = None) -> Callable[..., Any]:
        """``run(fn, *args, **kwargs)`` for this chain (async unless ``sync``);
        with ``arity``, ``run(fn, a0, ..., a<arity-1>)``: positional arguments
        only, which spares packing them per call."""
        run = self._runners.get((sync, False, arity))
        if run is None:
            run = self._runners[sync, False, arity] = self._compile(sync, False, None, arity)
        return run

    def _observed(self, sync: bool, arity: int | None) -> Callable[..., Any]:
        run = self._runners.get((sync, True, arity))
        if run is None:
            with self._lock:
                run = self._runners.get((sync, True, arity))
                if run is None:
                    run = self._compile(sync, True, None, arity)
                    self._runners[sync, True, arity] = run
        return run

    def check(self, fn: object, *, sync: bool) -> None:
        """Raise TypeError now if a policy of the chain cannot wrap ``fn``."""
        for policy in self._policies:
            check = getattr(policy, "_check_sync" if sync else "_check_async", None)
            if check is not None:
                check(fn)

    def decorate(
        self, fn: Callable[..., Any], *, sync: bool, arity: int | None = None
    ) -> Callable[..., Any]:
        """``fn`` wrapped by the chain (its metadata copied, as ``functools.wraps``
        does); ``arity`` as for :meth:`runner`."""
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            # Calling one only builds the generator: what its iteration raises
            # would never reach the policies.
            raise TypeError(
                f"{getattr(fn, '__qualname__', fn)!r} is a generator function: policies "
                "see a call's outcome, and a generator's comes while it is iterated; "
                "decorate the function that consumes it, or one that returns a list"
            )
        self.check(fn, sync=sync)
        wrapper = self._compile(sync, False, fn, arity)
        return functools.update_wrapper(wrapper, fn)

    def _compile(
        self, sync: bool, observed: bool, bound: Any, arity: int | None = None
    ) -> Callable[..., Any]:
        policies = self._policies
        if sync:
            for policy in policies:
                _refuse_sync(policy)
                threads = getattr(policy, "_threads", None)
                if threads is not None:
                    threads()  # our guards that lock only once threads use them
        segments: list[tuple[Any, tuple[Any, ...]] | Any] = []
        end = len(policies)
        while end:
            start = end
            while start and _is_guard(policies[start - 1]):
                start -= 1
            guards = policies[start:end]
            flow = None
            if start and _is_flow(policies[start - 1]):
                start -= 1
                flow = policies[start]
            if guards or flow is not None:
                segments.append((flow, guards))
            else:
                start -= 1
                segments.append(policies[start])
            end = start
        inner: Callable[..., Any] | None = None
        last = len(segments) - 1
        for index, segment in enumerate(segments):
            outermost = index == last
            check = outermost and not observed
            if isinstance(segment, tuple):
                flow, guards = segment
            else:
                method = "call_sync" if sync else "call"
                if getattr(type(segment), method) is _BASE_METHODS[method]:
                    raise TypeError(
                        f"{type(segment).__name__} is neither a guard nor a flow and does "
                        f"not override {method}(): it cannot run this chain"
                    )
                call = getattr(segment, method)
                if observed:
                    call = _timed(segment, call, sync)
                inner = call if inner is None else functools.partial(call, inner)
                if not check and (not outermost or bound is None):
                    continue
                # In front of it, a bracket without guards or flow: one frame
                # that checks for observers and binds ``fn``.
                flow, guards = None, ()
            inner = self._bracket(
                flow,
                guards,
                inner,
                sync=sync,
                observed=observed,
                check=check,
                bound=bound if outermost else None,
                arity=arity,
            )
        assert inner is not None
        if observed and self._owner is not None:
            # Observed runners are never bound: decorate() compiles unobserved.
            inner = _timed(self._owner, inner, sync)
        return inner

    def _bracket(
        self,
        flow: Any,
        guards: tuple[Any, ...],
        inner: Callable[..., Any] | None,
        *,
        sync: bool,
        observed: bool,
        check: bool,
        bound: Any,
        arity: int | None,
    ) -> Callable[..., Any]:
        inlines = tuple(inline_of(guard) for guard in guards)
        flow_inline: Inline | bool = flow is not None
        if flow is not None:
            flow_inline = inline_of(flow) or True
        # The shape: sources are compared by identity of their Inline objects.
        make = bracket_factory(
            inlines,
            flow_inline,
            inner is not None,
            observed,
            sync,
            bound is not None,
            check,
            arity,
        )
        args: list[Any] = []
        for guard, inline in zip(guards, inlines, strict=True):
            # Spans of our internal helpers (not user policies) are not observed.
            shown = None if getattr(guard, "_internal", False) else guard
            args += [guard, shown]
            if inline is not None:
                args += inline.names.values()
            else:
                args += [guard.admit, guard.settle]
        start = sleep = None
        if flow is not None:
            start = flow.start
            sleep = flow.clock.sleep_sync if sync else flow.clock.sleep
        observed_runner = functools.partial(self._observed, sync, arity)
        args += [flow, start, sleep, inner, observed_runner, bound]
        if isinstance(flow_inline, Inline):
            args += flow_inline.names.values()
        return make(*args)

    def __repr__(self) -> str:
        return f"<Plan {' | '.join(repr(p) for p in self._policies)}>"


_ASYNC_FLAGS = inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


class _FirstAttempt:
    """``fn``, whose first call's awaitable was made already (to check it is
    one): the first attempt gets it, the next ones call ``fn`` again."""

    __slots__ = ("first", "fn")

    def __init__(self, fn: Callable[..., Any], first: Any) -> None:
        self.fn = fn
        self.first = first

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        first = self.first
        if first is None:
            return self.fn(*args, **kwargs)
        self.first = None
        return first

    def discard(self) -> None:
        """A first attempt that never ran (rejected before it): close it unawaited."""
        first, self.first = self.first, None
        if inspect.iscoroutine(first):
            first.close()


# What Policy.call and Pipeline.call test before reaching for run_call: a
# plain ``async def`` function (the common case) needs none of its checks.
FUNCTION = types.FunctionType
COROUTINE = inspect.CO_COROUTINE


async def run_call(
    policy: Any,
    run: Callable[..., Any],
    fn: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    innermost: Any = None,
) -> Any:
    """What ``call`` does: ``run(fn, ...)``; but a callable that is not an
    ``async def`` (a lambda returning a coroutine, a sync function by
    mistake) is called once first, before any policy runs, so that one that
    returns no awaitable fails at once with a TypeError, not after its
    retries, and not hidden by an outer Fallback. A chain whose innermost
    policy runs plain callables itself (a PoolBulkhead) takes ``fn`` as it is."""
    if getattr(innermost, "_runs_plain_callables", False):
        return await run(fn, *args, **kwargs)
    try:
        is_async = fn.__code__.co_flags & inspect.CO_COROUTINE
    except AttributeError:
        is_async = inspect.iscoroutinefunction(fn)
    if is_async:
        return await run(fn, *args, **kwargs)
    first = fn(*args, **kwargs)
    if not inspect.isawaitable(first):
        raise TypeError(
            f"{type(policy).__name__} {policy.name!r}: call() awaits what its callable "
            f"returns, and {getattr(fn, '__qualname__', fn)!r} returned {first!r}; "
            "use .call_sync() for a plain callable"
        )
    attempt = _FirstAttempt(fn, first)
    try:
        return await run(attempt, *args, **kwargs)
    finally:
        attempt.discard()


def refuse_async(policy: Any, fn: object) -> None:
    """TypeError at once if ``call_sync`` is given an async function: run, it
    would only build a coroutine that nobody awaits (and no retry would help)."""
    code = getattr(fn, "__code__", None)
    if code is not None:
        is_async = bool(code.co_flags & _ASYNC_FLAGS)
    else:
        is_async = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
    if is_async:
        raise TypeError(
            f"{type(policy).__name__} {policy.name!r}: call_sync() runs plain callables, "
            f"and {getattr(fn, '__qualname__', fn)!r} is async; use await .call() instead"
        )


def _refuse_sync(policy: Any) -> None:
    """TypeError now if ``policy`` (or a policy of a pipeline in the chain)
    cannot run plain calls, rather than at the first call."""
    reason = getattr(policy, "sync_unsupported", None)
    if reason is not None:
        raise TypeError(f"{type(policy).__name__} {policy.name!r} cannot run plain calls: {reason}")
    for inner in getattr(policy, "policies", ()):
        _refuse_sync(inner)


_BASE_METHODS: dict[str, Any] = {}


def _set_base_call(call: Any, call_sync: Any) -> None:
    """policy.py registers its base ``call`` and ``call_sync``, which a
    wrapping policy must override to run a chain of that colour."""
    _BASE_METHODS.update(call=call, call_sync=call_sync)
