"""What a saga's definition is checked for when it is built: every mistake
is a TypeError or ValueError then, naming the parameter and the value, not
a surprise in the middle of a run."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .pipeline import Pipeline
from .policy import Policy

if TYPE_CHECKING:
    from .saga import Step

__all__ = [
    "AWAIT",
    "AWAIT_UNDER",
    "POOL",
    "THREAD",
    "THREAD_UNDER",
    "check_callable",
    "check_policy",
    "is_async",
    "name",
    "runs_plain",
    "sync_problem",
    "sync_refusal",
    "unique",
]

# How a step's action runs (Step._mode), decided once at construction.
AWAIT = 0  # an async action, no policy: awaited as it is
AWAIT_UNDER = 1  # an async action under its policy
THREAD = 2  # a plain action in a worker thread
THREAD_UNDER = 3  # a plain action in a worker thread, each attempt under its policy
POOL = 4  # a plain action handed to its policy, whose innermost runs it (a PoolBulkhead)


def name(what: str, name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a string, got {name!r}")
    if not name.strip():
        raise ValueError(f"{what} must be a non-empty string, got {name!r}")
    return name


def is_async(fn: object) -> bool:
    # A callable object with an ``async def __call__`` is async too.
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - the method, not callable()
    )


def check_callable(what: str, fn: object) -> bool:
    """True for an async callable, False for a plain one; TypeError otherwise."""
    if not callable(fn):
        raise TypeError(f"{what} must be callable, got {fn!r}")
    if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
        raise TypeError(f"{what} must be a function (async def or def), got the generator {fn!r}")
    return is_async(fn)


def runs_plain(policy: Policy) -> bool:
    """Whether ``policy`` takes a plain callable in ``call`` and runs it
    itself (its innermost policy is a PoolBulkhead)."""
    innermost = policy.policies[-1] if isinstance(policy, Pipeline) else policy
    return bool(getattr(innermost, "_runs_plain_callables", False))


def check_policy(what: str, policy: object, fn: object, is_async: bool) -> None:
    if not isinstance(policy, Policy):
        raise TypeError(f"{what} must be a Policy (or a pipeline of them) or None, got {policy!r}")
    try:
        if is_async:
            policy._check_async(fn)
        elif not runs_plain(policy):
            policy._check_sync(fn)
    except TypeError as exc:
        raise TypeError(f"{what} cannot run it: {exc}") from None


def sync_problem(policy: Policy) -> str | None:
    """Why ``policy`` cannot run a plain call in the calling thread, or None."""
    reason = policy.sync_unsupported
    if reason is not None:
        return f"{type(policy).__name__} {policy.name!r}: {reason}"
    for inner in policy.policies if isinstance(policy, Pipeline) else ():
        reason = sync_problem(inner)
        if reason is not None:
            return reason
    return None


def unique(steps: Iterable[Step]) -> None:
    seen: set[str] = set()
    for step in steps:
        if step.name in seen:
            raise ValueError(f"step names must be unique, got {step.name!r} twice")
        seen.add(step.name)


def sync_refusal(steps: list[Step], default: Policy) -> str | None:
    """Why :meth:`Saga.run_sync` cannot run these steps, or None."""
    for step in steps:
        if step.is_async:
            return f"the action of step {step.name!r} is async"
        if step.compensate is not None and step._compensate_async:
            return f"the compensation of step {step.name!r} is async"
        for what, policy in (
            ("policy", step.policy),
            ("compensate_policy", step.compensate_policy),
        ):
            problem = None if policy is None else sync_problem(policy)
            if problem is not None:
                return f"the {what} of step {step.name!r} cannot run a plain call ({problem})"
    problem = sync_problem(default)
    if problem is not None and any(
        s.compensate is not None and s.compensate_policy is None for s in steps
    ):
        return f"the saga's compensate_policy cannot run a plain call ({problem})"
    return None
