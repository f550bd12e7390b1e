"""How a saga runs: one run's state, and its async and sync drivers.

A run is a small state machine: ``running``, then ``completed``, or
``compensating`` and then ``compensated`` or ``failed`` (a compensation
failed). What it records:

- a step completes when its action returns: its result joins the results
  and its compensation is registered, in a *layer* (one per sequential
  step, one per :class:`~resilience.saga.Parallel` group);
- a step fails when its action (under its policy) raises an Exception: it
  is not compensated, and no later step starts;
- a step is cancelled when a BaseException (a cancellation) interrupts its
  action: not compensated either. An action that had returned when the
  cancellation came (a worker thread that finished, a policy still busy
  after the attempt) did complete.

Compensating walks the layers backwards, a group's members concurrently.
It runs where nothing cancels it: in a task of its own on asyncio (a cancel
scope cannot shield a task from ``Task.cancel()``, which asyncio's
timeouts and ours use), in a shielded cancel scope on trio; and outside the
caller's deadline, which has often passed by then (an outer timeout fired).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Coroutine, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import anyio.to_thread

from . import _backend
from ._deadline import _current as _current_deadline
from ._saga_check import AWAIT, AWAIT_UNDER, THREAD, THREAD_UNDER, runs_plain
from ._saga_types import SagaCompensated, SagaCompensationError, SagaContext, SagaError
from .events import (
    SagaCompensationFailed,
    SagaCompensationStarted,
    SagaStateChanged,
    SagaStepCancelled,
    SagaStepCompensated,
    SagaStepCompleted,
    SagaStepFailed,
    SagaStepStarted,
    dispatch,
    global_listeners,
    logger,
)

if TYPE_CHECKING:
    from .saga import Saga, Step

__all__ = ["run_async", "run_sync"]

_running_loop = _backend.running_loop
_EMPTY: Mapping[str, Any] = MappingProxyType({})

Layer = list[tuple["Step", "SagaContext", Any]]


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
    cancellation that came is raised once the work is done."""
    loop = _running_loop()
    if loop is not None:
        return await _in_own_task(loop, work)
    with anyio.CancelScope(shield=True):  # trio: its cancel scopes shield for real
        result = await work
    # A cancellation that came meanwhile is raised now, as on asyncio, not
    # at some later checkpoint (in the next step's action).
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


class Run:
    """The state of one run of a saga, and what it reports."""

    __slots__ = (
        "cancelled",
        "compensated",
        "compensation_errors",
        "completed",
        "done",
        "failures",
        "id",
        "input",
        "results",
        "saga",
        "started",
        "state",
    )

    def __init__(self, saga: Saga, input: Any) -> None:
        self.saga = saga
        saga._runs += 1
        saga._running += 1
        self.id = saga._runs
        self.input = input
        self.results: dict[str, Any] = {}
        self.done: list[Layer] = []
        self.completed: list[str] = []
        self.failures: dict[str, Exception] = {}
        self.cancelled: list[str] = []
        self.compensated: list[str] = []
        self.compensation_errors: dict[str, Exception] = {}
        self.state: Any = None
        self.started = saga._clock.now()
        self.enter("running")

    def enter(self, state: Any) -> None:
        old = self.state
        self.state = state
        saga = self.saga
        if saga._listeners or global_listeners:
            seconds = saga._clock.now() - self.started
            dispatch(saga._listeners, SagaStateChanged(saga._name, self.id, old, state, seconds))

    def context(self, step: Step, results: Mapping[str, Any]) -> SagaContext:
        ctx: SagaContext = _new(SagaContext)
        ctx.input = self.input
        ctx.results = results
        ctx.saga = self.saga._name
        ctx.step = step._name
        return ctx

    def snapshot(self) -> Mapping[str, Any]:
        return MappingProxyType(dict(self.results)) if self.results else _EMPTY

    # What happens to a step -----------------------------------------------

    def step_started(self, step: Step) -> float:
        saga = self.saga
        if saga._listeners or global_listeners:
            dispatch(saga._listeners, SagaStepStarted(saga._name, self.id, step._name))
        return saga._clock.now()

    def step_completed(
        self, step: Step, ctx: SagaContext, result: Any, start: float, layer: Layer
    ) -> None:
        self.results[step._name] = result
        self.completed.append(step._name)
        layer.append((step, ctx, result))
        saga = self.saga
        saga._steps_completed += 1
        if saga._listeners or global_listeners:
            seconds = saga._clock.now() - start
            dispatch(saga._listeners, SagaStepCompleted(saga._name, self.id, step._name, seconds))

    def step_failed(self, step: Step, error: Exception, start: float) -> None:
        self.failures[step._name] = error
        saga = self.saga
        saga._steps_failed += 1
        if saga._listeners or global_listeners:
            seconds = saga._clock.now() - start
            event = SagaStepFailed(saga._name, self.id, step._name, seconds, error)
            dispatch(saga._listeners, event)

    def step_cancelled(self, step: Step, start: float) -> None:
        self.cancelled.append(step._name)
        saga = self.saga
        saga._steps_cancelled += 1
        if saga._listeners or global_listeners:
            seconds = saga._clock.now() - start
            dispatch(saga._listeners, SagaStepCancelled(saga._name, self.id, step._name, seconds))

    def compensation_started(self, step: Step) -> float:
        saga = self.saga
        if saga._listeners or global_listeners:
            dispatch(saga._listeners, SagaCompensationStarted(saga._name, self.id, step._name))
        return saga._clock.now()

    def step_compensated(self, step: Step, start: float) -> None:
        self.compensated.append(step._name)
        saga = self.saga
        saga._compensations += 1
        if saga._listeners or global_listeners:
            seconds = saga._clock.now() - start
            dispatch(saga._listeners, SagaStepCompensated(saga._name, self.id, step._name, seconds))

    def compensation_failed(self, step: Step, error: Exception, start: float) -> None:
        self.compensation_errors[step._name] = error
        saga = self.saga
        saga._compensations_failed += 1
        error.add_note(f"resilience: saga {saga._name!r} could not compensate step {step._name!r}")
        if saga._listeners or global_listeners:
            seconds = saga._clock.now() - start
            event = SagaCompensationFailed(saga._name, self.id, step._name, seconds, error)
            dispatch(saga._listeners, event)

    def to_compensate(self) -> list[Layer]:
        """The layers to undo, last first, each with its entries last first."""
        layers = []
        for layer in reversed(self.done):
            todo = [entry for entry in reversed(layer) if entry[0]._compensate is not None]
            if todo:
                layers.append(todo)
        return layers

    # How a run ends -------------------------------------------------------

    def finished(self) -> None:
        self.saga._completed += 1
        self.enter("completed")

    def undone(self) -> None:
        saga = self.saga
        if self.compensation_errors:
            saga._failed += 1
            self.enter("failed")
        else:
            saga._compensated += 1
            self.enter("compensated")

    def error(self) -> SagaError:
        step, error = next(iter(self.failures.items()))
        fields: dict[str, Any] = {
            "name": self.saga._name,
            "step": step,
            "error": error,
            "failures": self.failures,
            "completed": tuple(self.completed),
            "compensated": tuple(self.compensated),
            "cancelled": tuple(self.cancelled),
            "results": self.results,
        }
        if self.compensation_errors:
            return SagaCompensationError(compensation_errors=self.compensation_errors, **fields)
        return SagaCompensated(**fields)

    def interrupted(self, exc: BaseException) -> None:
        """The run was cancelled (or interrupted) and compensated: the
        cancellation propagates instead of a SagaError, so a failed
        compensation is told here, in the log and in a note on it."""
        self.saga._cancelled += 1
        if self.compensation_errors:
            failed = ", ".join(f"{n!r} ({e!r})" for n, e in self.compensation_errors.items())
            steps = "".join(f"; step {n!r} failed ({e!r})" for n, e in self.failures.items())
            message = (
                f"saga {self.saga._name!r} run {self.id} was interrupted by "
                f"{type(exc).__name__}{steps}; compensation failed for {failed}: needs manual "
                f"repair; compensated: {', '.join(map(repr, self.compensated)) or 'none'}"
            )
            logger.error("resilience: %s", message)
            exc.add_note(f"resilience: {message}")


_new = object.__new__


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
