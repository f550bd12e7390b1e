"""How a saga runs: its async and sync drivers, over a run's state
(:mod:`resilience._saga_state`).

A step's action that had returned when a cancellation came (a worker
thread that finished, a policy still busy after the attempt) completed:
its compensation is registered before the cancellation propagates.

Compensating walks the layers backwards, a group's members concurrently.
It runs where nothing cancels it: in a task of its own on asyncio (a cancel
scope cannot shield a task from ``Task.cancel()``, which asyncio's
timeouts and ours use), in a shielded cancel scope on trio; and outside the
caller's deadline, which has often passed by then (an outer timeout fired).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import anyio.to_thread

from . import _backend
from ._deadline import _current as _current_deadline
from ._saga_check import AWAIT, AWAIT_UNDER, THREAD, THREAD_UNDER, runs_plain
from ._saga_state import Layer, Run
from ._saga_types import SagaCompensationError, SagaContext

if TYPE_CHECKING:
    from .saga import Saga, Step

__all__ = ["run_async", "run_sync"]

_running_loop = _backend.running_loop


def call_plain(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` for a plain step; one that hands back an awaitable (a
    lambda around a coroutine function) is a mistake that no thread can run."""
    result = fn(*args)
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()
        raise TypeError(
            f"{getattr(fn, '__qualname__', fn)!r} returned an awaitable: a plain step "
            "runs in a worker thread; make it an async def to have it awaited"
        )
    return result


async def uninterrupted(work: Coroutine[Any, Any, Any]) -> Any:
    """Await ``work`` to its end, whatever cancels the caller meanwhile; a
    cancellation that came is raised once the work is done (at once, not at
    some later checkpoint: in the next step's action)."""
    loop = _running_loop()
    if loop is not None:
        result = await _in_own_task(loop, work)
    else:
        with anyio.CancelScope(shield=True):  # trio: its cancel scopes shield for real
            result = await work
    await anyio.lowlevel.checkpoint_if_cancelled()
    return result


async def _in_own_task(loop: asyncio.AbstractEventLoop, work: Coroutine[Any, Any, Any]) -> Any:
    task = loop.create_task(work)
    cancelled: BaseException | None = None
    # The shield keeps anyio from redelivering its cancellation on every
    # pass of the loop while we wait; Task.cancel() still gets through, so
    # the wait is repeated until the work is done.
    with anyio.CancelScope(shield=True):
        while not task.done():
            try:
                await asyncio.wait((task,))
            except asyncio.CancelledError as exc:
                cancelled = exc
    if cancelled is not None:
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what propagates
        raise cancelled
    return task.result()


async def _in_thread(fn: Any, *args: Any) -> Any:
    return await anyio.to_thread.run_sync(call_plain, fn, *args)


class _Attempt:
    """One step's action as its policy calls it, attempt after attempt,
    remembering whether the last attempt returned, and what."""

    __slots__ = ("action", "ctx", "returned", "value")

    def __init__(self, action: Any, ctx: SagaContext) -> None:
        self.action = action
        self.ctx = ctx
        self.returned = False
        self.value: Any = None

    async def awaited(self) -> Any:
        self.returned = False
        value = await self.action(self.ctx)
        self.value = value
        self.returned = True
        return value

    def plain(self) -> Any:
        # In the worker thread: the result is kept even if the caller was
        # cancelled while the thread ran.
        self.returned = False
        value = call_plain(self.action, self.ctx)
        self.value = value
        self.returned = True
        return value

    async def thread(self) -> Any:
        return await uninterrupted(anyio.to_thread.run_sync(self.plain))


# The async driver -------------------------------------------------------------


async def step_async(run: Run, step: Step, ctx: SagaContext, layer: Layer) -> bool:
    """Run one step's action; False if it failed (recorded)."""
    start = run.step_started(step)
    mode = step._mode
    attempt = None
    try:
        if mode == AWAIT:
            result = await step._action(ctx)
        else:
            attempt = _Attempt(step._action, ctx)
            policy: Any = step._policy
            if mode == AWAIT_UNDER:
                result = await policy.call(attempt.awaited)
            elif mode == THREAD:
                result = await attempt.thread()
            elif mode == THREAD_UNDER:
                result = await policy.call(attempt.thread)
            else:
                result = await policy.call(attempt.plain)
    except Exception as exc:
        run.step_failed(step, exc, start)
        return False
    except BaseException:
        if attempt is not None and attempt.returned:
            run.step_completed(step, ctx, attempt.value, start, layer)
        else:
            run.step_cancelled(step, start)
        raise
    run.step_completed(step, ctx, result, start, layer)
    return True


async def _member(
    run: Run, scope: anyio.CancelScope, step: Step, ctx: SagaContext, layer: Layer
) -> None:
    if not await step_async(run, step, ctx, layer):
        scope.cancel()  # the siblings stop; the group then ends without error


async def group_async(run: Run, group: tuple[Step, ...]) -> bool:
    results = run.snapshot()
    layer: Layer = []
    run.done.append(layer)
    async with anyio.create_task_group() as tasks:
        for step in group:
            tasks.start_soon(
                _member, run, tasks.cancel_scope, step, run.context(step, results), layer
            )
    return not run.failures


async def _compensate_one(run: Run, step: Step, ctx: SagaContext, result: Any) -> None:
    start = run.compensation_started(step)
    policy: Any = step._compensate_policy or run.saga._compensate_policy
    try:
        if step._compensate_async or runs_plain(policy):
            await policy.call(step._compensate, ctx, result)
        else:
            await policy.call(_in_thread, step._compensate, ctx, result)
    except Exception as exc:
        run.compensation_failed(step, exc, start)
        return
    run.step_compensated(step, start)


async def _compensate_all(run: Run) -> None:
    # Not bounded by the caller's deadline: it has often passed by now.
    token = _current_deadline.set(None)
    try:
        for layer in run.to_compensate():
            if len(layer) == 1:
                await _compensate_one(run, *layer[0])
                continue
            async with anyio.create_task_group() as tasks:
                for entry in layer:
                    tasks.start_soon(_compensate_one, run, *entry)
    finally:
        _current_deadline.reset(token)


async def _undo_async(run: Run, interruption: BaseException | None) -> None:
    run.enter("compensating")
    try:
        await uninterrupted(_compensate_all(run))
    except BaseException as exc:  # cancelled meanwhile: it propagates, now
        run.undone()
        run.interrupted(exc)
        raise
    run.undone()
    if interruption is not None:
        run.interrupted(interruption)


async def run_async(saga: Saga, input: Any) -> dict[str, Any]:
    run = Run(saga, input)
    try:
        try:
            for entry in saga._plan:
                if not isinstance(entry, tuple):
                    layer: Layer = []
                    run.done.append(layer)
                    ok = await step_async(run, entry, run.context(entry, run.snapshot()), layer)
                else:
                    ok = await group_async(run, entry)
                if not ok:
                    break
            else:
                run.finished()
                return dict(run.results)
        except GeneratorExit:
            raise  # the coroutine was closed: nothing can be awaited any more
        except BaseException as exc:
            await _undo_async(run, exc)
            raise
        await _undo_async(run, None)
    finally:
        saga._running -= 1
    error = run.error()
    if isinstance(error, SagaCompensationError):
        raise error
    raise error from error.error


# The sync driver --------------------------------------------------------------


def step_sync(run: Run, step: Step, ctx: SagaContext, layer: Layer) -> bool:
    start = run.step_started(step)
    policy = step._policy
    try:
        if policy is None:
            result = call_plain(step._action, ctx)
        else:
            result = policy.call_sync(call_plain, step._action, ctx)
    except Exception as exc:
        run.step_failed(step, exc, start)
        return False
    except BaseException:
        run.step_cancelled(step, start)
        raise
    run.step_completed(step, ctx, result, start, layer)
    return True


def _compensate_all_sync(run: Run) -> None:
    token = _current_deadline.set(None)
    try:
        for layer in run.to_compensate():
            for step, ctx, result in layer:
                start = run.compensation_started(step)
                policy = step._compensate_policy or run.saga._compensate_policy
                try:
                    policy.call_sync(call_plain, step._compensate, ctx, result)
                except Exception as exc:
                    run.compensation_failed(step, exc, start)
                else:
                    run.step_compensated(step, start)
    finally:
        _current_deadline.reset(token)


def _undo_sync(run: Run, interruption: BaseException | None) -> None:
    run.enter("compensating")
    try:
        _compensate_all_sync(run)
    except BaseException as exc:  # interrupted meanwhile (KeyboardInterrupt)
        run.undone()
        run.interrupted(exc)
        raise
    run.undone()
    if interruption is not None:
        run.interrupted(interruption)


def run_sync(saga: Saga, input: Any) -> dict[str, Any]:
    run = Run(saga, input)
    try:
        try:
            for entry in saga._plan:
                if not isinstance(entry, tuple):
                    layer: Layer = []
                    run.done.append(layer)
                    ok = step_sync(run, entry, run.context(entry, run.snapshot()), layer)
                else:
                    # Members one after the other, each seeing the results
                    # before the group, as they would side by side.
                    results = run.snapshot()
                    layer = []
                    run.done.append(layer)
                    for step in entry:
                        ok = step_sync(run, step, run.context(step, results), layer)
                        if not ok:
                            break
                if not ok:
                    break
            else:
                run.finished()
                return dict(run.results)
        except BaseException as exc:
            _undo_sync(run, exc)
            raise
        _undo_sync(run, None)
    finally:
        saga._running -= 1
    error = run.error()
    if isinstance(error, SagaCompensationError):
        raise error
    raise error from error.error
