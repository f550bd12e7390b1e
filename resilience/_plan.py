"""Plan: a chain of policies compiled once into the function that runs it.

Everything that runs policies runs them through a plan: decorators,
``Policy.call``, pipelines, the httpx transports and the ASGI middleware.

A chain is cut into segments, innermost first. A *bracket* is a run of
guards, optionally under one flow (a Retry), executed in one frame: the
flow's loop around the guards' ``admit``/``settle`` pairs around the call.
Any other policy *wraps* the rest of the chain through its own ``call``.
``Retry | CircuitBreaker | Timeout | Bulkhead`` is one bracket: one frame,
no closure and no object per call beyond the guards' tickets.

Why code generation. A bracket for N guards is N nested ``try`` blocks with
the guards' bound methods in local cells. A loop over a list of guards does
the same work with a list, an index and a second loop to unwind, which costs
more than the guards themselves; hand-written copies for 1, 2, 3... guards
would be the same code written several times. So the bracket is written
once, as the template below, and compiled per shape (number of guards,
flow or not, sync or async, observed or not), the way ``dataclasses`` and
``attrs`` build their methods. The source of every compiled shape is kept in
``linecache``, so tracebacks show it.

Observers. Each unobserved runner tests one global (``_observers``) per call;
when it is not empty, the call goes to the plan's observed runner (compiled
on first use), which times every policy's span and tells the observers.
Nothing is patched, so what is built before an observer is registered is
observed too.
"""

from __future__ import annotations

import functools
import itertools
import linecache
import logging
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ._protocol import WAIT, CallObserver, Flow, Guard  # noqa: F401 (WAIT: the compiled code reads it)

__all__ = ["Inline", "Plan", "add_observer", "remove_observer"]

_logger = logging.getLogger("resilience")
_perf = time.perf_counter

_observers: tuple[CallObserver, ...] = ()
_observers_lock = threading.Lock()


def add_observer(observer: CallObserver) -> None:
    """Call ``observer(policy, error, seconds)`` for every policy span of every call.

    Example::

        spans = []
        resilience.lowlevel.add_observer(lambda p, e, s: spans.append((p.name, s)))
    """
    global _observers
    if not callable(observer):
        raise TypeError(f"observer must be callable, got {observer!r}")
    with _observers_lock:
        _observers = (*_observers, observer)


def remove_observer(observer: CallObserver) -> None:
    """Stop calling an observer added with :func:`add_observer` (a no-op if it is not there).

    Example::

        resilience.lowlevel.remove_observer(log_slow)
    """
    global _observers
    with _observers_lock:
        _observers = tuple(o for o in _observers if o is not observer)


def _notify(policy: Any, error: BaseException | None, seconds: float) -> None:
    if policy is None:
        return  # an internal helper's span
    for observer in _observers:
        try:
            observer(policy, error, seconds)
        except Exception:
            _logger.exception("resilience: call observer %r raised", observer)


# Inline fast paths ----------------------------------------------------------


class Inline:
    """A policy's fast path, written once as source and compiled twice: into
    the policy's own methods and into every bracket that runs the policy.

    A guard gives ``admit`` (statements that assign the ticket to ``{t}``,
    never awaiting; a line ``{wait}`` marks where a branch that may answer
    WAIT goes on to wait, and without one the plan never checks for WAIT)
    and ``settle`` (statements that read ``{t}``, ``error``
    and ``result`` and assign ``error``, the exception to propagate). A flow
    gives ``start`` (assigns ``run``) and ``after`` (reads ``run``, ``error``,
    ``result``; assigns ``run`` and ``delay``). ``{g}`` stands for the policy,
    ``{n}`` prefixes the module names in ``names`` that the statements use,
    and ``{args}`` is the call's positional arguments (in a plan only: a
    guard whose source reads it has no method of that kind).
    A subclass that overrides a compiled method is run through its methods.
    """

    __slots__ = ("methods", "names", "sources")

    def __init__(self, *, names: dict[str, Any] | None = None, **sources: str) -> None:
        self.sources = {kind: textwrap.dedent(text).strip("\n") for kind, text in sources.items()}
        self.names = dict(sorted((names or {}).items()))
        self.methods: dict[str, Callable[..., Any]] = {}

    def lines(
        self,
        kind: str,
        g: str,
        t: str,
        n: str,
        wait: Sequence[str] = ("pass",),
        args: str = "args",
    ) -> list[str]:
        out: list[str] = []
        for line in self.sources[kind].split("\n"):
            if line.strip() == "{wait}":
                indent = line[: len(line) - len(line.lstrip())]
                out += [indent + text for text in wait]
            else:
                out.append(line.format(g=g, t=t, n=n, args=args))
        return out

    def method(self, kind: str, doc: str) -> Callable[..., Any]:
        """The policy's own ``admit`` / ``settle`` / ``start``, compiled from its source."""
        signature, tail = _METHODS[kind]
        body = "\n".join("        " + line for line in self.lines(kind, "self", "ticket", ""))
        source = (
            f"def make({', '.join(self.names)}):\n"
            f"    def {kind}{signature}:\n{body}\n        return {tail}\n"
            f"    return {kind}\n"
        )
        namespace: dict[str, Any] = {}
        exec(_compile_source(source, f"{kind} of a policy"), globals(), namespace)
        method: Callable[..., Any] = namespace["make"](*self.names.values())
        method.__doc__ = doc
        self.methods[kind] = method
        return method

    def applies(self, policy: Any) -> bool:
        cls = type(policy)
        return all(getattr(cls, kind, None) is method for kind, method in self.methods.items())


_METHODS = {
    "admit": ("(self)", "ticket"),
    "settle": ("(self, ticket, error, result)", "error"),
    "start": ("(self)", "run"),
}


def _compile_source(source: str, what: str) -> Any:
    filename = f"<resilience {what} {next(_serial)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return compile(source, filename, "exec")


def _inline_of(policy: Any) -> Inline | None:
    inline = getattr(type(policy), "_inline_source", None)
    if inline is None or not inline.applies(policy):
        return None
    return inline  # type: ignore[no-any-return]


# The bracket template -----------------------------------------------------


def _bracket_source(
    guards: tuple[Inline | None, ...],
    flow: Inline | bool,
    inner: bool,
    observed: bool,
    sync: bool,
    bound: bool,
    check: bool,
    arity: int | None,
) -> str:
    """The source of ``make(...)``, which returns a runner of this shape."""
    aw = "" if sync else "await "
    # A fixed number of positional arguments spares the packing of *args, **kwargs.
    passed = "*args, **kwargs" if arity is None else ", ".join(f"a{i}" for i in range(arity))
    args = "args" if arity is None else f"({passed}{',' if arity == 1 else ''})"
    call = f"{aw}inner(fn, {passed})" if inner else f"{aw}fn({passed})"
    count = len(guards)
    lines: list[tuple[int, str]] = []

    def snippet(at: int, text: list[str]) -> None:
        lines.extend((at, line) for line in text)

    def guard(i: int, at: int) -> None:
        inline = guards[i]
        waits = [f"if t{i} is WAIT:", f"    t{i} = {aw}wait{i}()"]
        if inline is not None:
            text = inline.lines("admit", f"guard{i}", f"t{i}", f"g{i}_", waits, args)
            admit = [(at, line) for line in text]
        else:
            admit = [(at, f"t{i} = admit{i}()"), *((at, line) for line in waits)]
        if observed:
            lines.append((at, f"s{i} = _perf()"))
            lines.append((at, "try:"))
            lines.extend((depth + 1, text) for depth, text in admit)
            lines.append((at, "except BaseException as e:"))
            lines.append((at + 1, f"_notify(policy{i}, e, _perf() - s{i})"))
            lines.append((at + 1, "raise"))
        else:
            lines.extend(admit)
        lines.append((at, "try:"))
        if i + 1 < count:
            guard(i + 1, at + 1)
        else:
            lines.append((at + 1, f"result = {call}"))
        lines.append((at, "except BaseException as e:"))
        lines.append((at + 1, "error = e"))
        # Every settle reads `result`; on the way out with an error it is None.
        lines.append((at + 1, "result = None"))
        if inline is not None:
            snippet(at, inline.lines("settle", f"guard{i}", f"t{i}", f"g{i}_"))
        else:
            lines.append((at, f"error = settle{i}(t{i}, error, result)"))
        if observed:
            lines.append((at, f"_notify(policy{i}, error, _perf() - s{i})"))

    body = 2
    if check:
        lines.append((body, "if _observers:"))
        lines.append((body + 1, f"return {aw}observed()(fn, {passed})"))
    if flow:
        if isinstance(flow, Inline):
            snippet(body, flow.lines("start", "flow", "", "f_"))
        else:
            lines.append((body, "run = start()"))
        if observed:
            lines.append((body, "sf = _perf()"))
        lines.append((body, "while True:"))
        lines.append((body + 1, "error = None"))
        lines.append((body + 1, "try:"))
        if guards:
            guard(0, body + 2)
        else:
            lines.append((body + 2, f"result = {call}"))
        lines.append((body + 1, "except BaseException as e:"))
        lines.append((body + 2, "error = e"))
        lines.append((body + 2, "result = None"))
        if isinstance(flow, Inline):
            snippet(body + 1, flow.lines("after", "flow", "", "f_"))
        else:
            lines.append((body + 1, "delay = run.after(error, result)"))
        lines.append((body + 1, "if delay is None:"))
        lines.append((body + 2, "break"))
        lines.append((body + 1, "if delay:"))
        lines.append((body + 2, f"{aw}sleep(delay)"))
        if observed:
            lines.append((body, "_notify(flow, error, _perf() - sf)"))
    else:
        lines.append((body, "error = None"))
        guard(0, body)
    lines.append((body, "if error is None:"))
    lines.append((body + 1, "return result"))
    # Raised from here, not from an except block: no implicit __context__;
    # the local is cleared so the traceback does not keep a cycle alive.
    lines.append((body, "try:"))
    lines.append((body + 1, "raise error"))
    lines.append((body, "finally:"))
    lines.append((body + 1, "error = None"))

    params: list[str] = []
    for i, inline in enumerate(guards):
        params += [f"guard{i}", f"wait{i}", f"policy{i}"]
        if inline is not None:
            params += [f"g{i}_{name}" for name in inline.names]
        else:
            params += [f"admit{i}", f"settle{i}"]
    params += ["flow", "start", "sleep", "inner", "observed", "fn"]
    if isinstance(flow, Inline):
        params += [f"f_{name}" for name in flow.names]
    signature = passed if bound else f"fn, /, {passed}"
    head = [
        f"def make({', '.join(params)}):",
        f"    {'def' if sync else 'async def'} run({signature}):",
    ]
    return "\n".join(
        [*head, *("    " * depth + text for depth, text in lines), "    return run", ""]
    )


_factories: dict[tuple[Any, ...], Callable[..., Callable[..., Any]]] = {}
_factory_lock = threading.Lock()
_serial = itertools.count(1)


def _factory(*shape: Any) -> Callable[..., Callable[..., Any]]:
    make = _factories.get(shape)
    if make is not None:
        return make
    with _factory_lock:
        make = _factories.get(shape)
        if make is None:
            namespace: dict[str, Any] = {}
            exec(_compile_source(_bracket_source(*shape), "plan"), globals(), namespace)
            make = _factories[shape] = namespace["make"]
    return make


# Plans --------------------------------------------------------------------


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
                if check:
                    inner = self._checked(inner, sync, arity)
                if outermost and bound is not None:
                    inner = _bind(inner, bound, sync)
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
        inlines = tuple(_inline_of(guard) for guard in guards)
        flow_inline: Inline | bool = flow is not None
        if flow is not None:
            flow_inline = _inline_of(flow) or True
        # The shape: sources are compared by identity of their Inline objects.
        make = _factory(
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
            wait = guard.wait_sync if sync else guard.wait
            # Spans of our internal helpers (not user policies) are not observed.
            shown = None if getattr(guard, "_internal", False) else guard
            args += [guard, wait, shown]
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

    def _checked(
        self, run: Callable[..., Any], sync: bool, arity: int | None
    ) -> Callable[..., Any]:
        """``run``, sent to the observed runner while observers are registered
        (for a chain whose outermost policy wraps through its own call)."""
        observed = functools.partial(self._observed, sync, arity)
        if sync:

            def checked_sync(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
                if _observers:
                    return observed()(fn, *args, **kwargs)
                return run(fn, *args, **kwargs)

            return checked_sync

        async def checked(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            if _observers:
                return await observed()(fn, *args, **kwargs)
            return await run(fn, *args, **kwargs)

        return checked

    def __repr__(self) -> str:
        return f"<Plan {' | '.join(repr(p) for p in self._policies)}>"


def _refuse_sync(policy: Any) -> None:
    """TypeError now if ``policy`` (or a policy of a pipeline in the chain)
    cannot run plain calls, rather than at the first call."""
    reason = getattr(policy, "_sync_unsupported", None)
    if reason is not None:
        raise TypeError(f"{type(policy).__name__} {policy.name!r} cannot run plain calls: {reason}")
    for inner in getattr(policy, "policies", ()):
        _refuse_sync(inner)


def _bind(run: Callable[..., Any], fn: Any, sync: bool) -> Callable[..., Any]:
    if sync:

        def bound_sync(*args: Any, **kwargs: Any) -> Any:
            return run(fn, *args, **kwargs)

        return bound_sync

    async def bound(*args: Any, **kwargs: Any) -> Any:
        return await run(fn, *args, **kwargs)

    return bound


_BASE_METHODS: dict[str, Any] = {}


def _set_base_call(call: Any, call_sync: Any) -> None:
    """policy.py registers its base ``call`` and ``call_sync``, which a
    wrapping policy must override to run a chain of that colour."""
    _BASE_METHODS.update(call=call, call_sync=call_sync)
