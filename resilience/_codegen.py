"""Code generation for plans: a bracket of guards under a flow, written once
as a template and compiled per shape; and :class:`Inline`, a policy's fast
path written once as source and compiled both into its own methods and into
every bracket that runs it.

Why code generation. A bracket for N guards is N nested ``try`` blocks with
the guards' bound methods in local cells. A loop over a list of guards does
the same work with a list, an index and a second loop to unwind, which costs
more than the guards themselves; hand-written copies for 1, 2, 3... guards
would be the same code written several times. So the bracket is written
once, as the template below, and compiled per shape (the guards' fast paths,
flow or not, sync or async, observed or not, the arity), the way
``dataclasses`` and ``attrs`` build their methods. The source of every
compiled shape is kept in ``linecache``, so tracebacks show it.
"""

from __future__ import annotations

import itertools
import linecache
import re
import textwrap
import threading
from collections.abc import Callable, Sequence
from typing import Any

from . import _observe

__all__ = ["Inline", "bracket_factory", "inline_of"]

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

    Example::

        class InFlight(Policy):
            def __init__(self) -> None:
                super().__init__(name="in-flight")
                self.count = 0

            async def wait(self) -> object: ...
            def wait_sync(self) -> object: ...

        InFlight._inline_source = Inline(
            admit="{g}.count += 1\n{t} = None",
            settle="{g}.count -= 1",
        )
        InFlight.admit = InFlight._inline_source.method("admit", "Count the call in.")
        InFlight.settle = InFlight._inline_source.method("settle", "Count it out.")
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
        kwargs: str = "kwargs",
        named: Sequence[str] = (),
    ) -> list[str]:
        out: list[str] = []
        for line in self.sources[kind].split("\n"):
            if line.strip() == "{wait}":
                indent = line[: len(line) - len(line.lstrip())]
                out += [indent + text for text in wait]
                continue
            if named:
                # ``{args}[i]`` of a runner with named positional arguments
                # reads ``a<i>`` itself, without building the tuple.
                line = _ITEM.sub(lambda m: named[int(m.group(1))], line)
            out.append(line.format(g=g, t=t, n=n, args=args, kwargs=kwargs))
        return out

    def method(self, kind: str, doc: str) -> Callable[..., Any]:
        """The policy's own ``admit`` / ``settle`` / ``start``, compiled from its source."""
        signature, tail = _METHODS[kind]
        # The method form has no call arguments: ``{args}`` reads as ().
        lines = self.lines(kind, "self", "ticket", "", args="()", kwargs="{}")
        body = "\n".join("        " + line for line in lines)
        source = (
            f"def make({', '.join(self.names)}):\n"
            f"    def {kind}{signature}:\n{body}\n        return {tail}\n"
            f"    return {kind}\n"
        )
        namespace: dict[str, Any] = {}
        exec(_compile_source(source, f"{kind} of a policy"), _observe.__dict__, namespace)
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


_ITEM = re.compile(r"\{args\}\[(\d+)\]")


def _compile_source(source: str, what: str) -> Any:
    filename = f"<resilience {what} {next(_serial)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return compile(source, filename, "exec")


def inline_of(policy: Any) -> Inline | None:
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
    kwargs = "kwargs" if arity is None else "{}"
    named = () if arity is None else tuple(f"a{i}" for i in range(arity))
    target = "inner(fn, " if inner else "fn("
    if arity is None:
        # ``f(*args, **kwargs)`` builds a fresh dict and merges kwargs into it
        # on every call (the compiler guards against a mapping that changes):
        # without keywords, ``f(*args)`` passes the tuple as it is.
        call = f"{aw}({target}*args, **kwargs) if kwargs else {target}*args))"
    else:
        call = f"{aw}{target}{passed})"
    count = len(guards)
    lines: list[tuple[int, str]] = []

    def snippet(at: int, text: list[str]) -> None:
        lines.extend((at, line) for line in text)

    def guard(i: int, at: int) -> None:
        inline = guards[i]
        # The wait method is looked up when it is needed: a closure cell for
        # it would be copied into every call's frame, waiting or not.
        waits = [
            f"if t{i} is WAIT:",
            f"    t{i} = {aw}guard{i}.{'wait_sync' if sync else 'wait'}()",
        ]
        if inline is not None:
            text = inline.lines("admit", f"guard{i}", f"t{i}", f"g{i}_", waits, args, kwargs, named)
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
        lines.append((body, "if _observing:"))
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
    elif guards:
        lines.append((body, "error = None"))
        guard(0, body)
    else:
        # Neither: the frame in front of a policy that wraps (binding ``fn``,
        # checking for observers), one frame where a closure for each would
        # be two, each packing *args and **kwargs again.
        lines.append((body, f"return {call}"))
    if guards or flow:
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
        params += [f"guard{i}", f"policy{i}"]
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


def bracket_factory(*shape: Any) -> Callable[..., Callable[..., Any]]:
    make = _factories.get(shape)
    if make is not None:
        return make
    with _factory_lock:
        make = _factories.get(shape)
        if make is None:
            namespace: dict[str, Any] = {}
            exec(_compile_source(_bracket_source(*shape), "plan"), _observe.__dict__, namespace)
            make = _factories[shape] = namespace["make"]
    return make
