"""The state of one run of a saga, and what it reports.

A run is a small state machine: ``running``, then ``completed``, or
``compensating`` and then ``compensated`` or ``failed`` (a compensation
failed). What it records, for the drivers in :mod:`resilience._saga_run`:

- a step completes when its action returns: its result joins the results
  and its compensation is registered, in a *layer* (one per sequential
  step, one per :class:`~resilience.saga.Parallel` group);
- a step fails when its action (under its policy) raises an Exception: it
  is not compensated, and no later step starts;
- a step is cancelled when a BaseException (a cancellation) interrupts its
  action: not compensated either.

Every report costs one test when nobody listens: no event is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ._saga_tally import (
    CANCELLED,
    COMPENSATED,
    COMPENSATION_FAILED,
    COMPLETED,
    FAILED,
    RUN_COMPENSATED,
    RUN_COMPLETED,
    RUN_FAILED,
)
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

__all__ = ["Layer", "Run"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_new = object.__new__

Layer = list[tuple["Step", "SagaContext", Any]]
"""The completed steps of one sequential step or group: (step, its context, its result)."""


def _tally(saga: Saga, step: Step, outcome: int, start: float) -> float:
    """Count what happened to ``step`` and the seconds it took; return them."""
    seconds = saga._clock.now() - start
    tally = saga._step_tallies[step._name]
    tally.counts[outcome] += 1
    tally.seconds[outcome] += seconds
    return seconds


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

    def enter(self, state: Any, seconds: float | None = None) -> None:
        old = self.state
        self.state = state
        saga = self.saga
        if saga._listeners or global_listeners:
            if seconds is None:
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
        seconds = _tally(saga, step, COMPLETED, start)
        if saga._listeners or global_listeners:
            dispatch(saga._listeners, SagaStepCompleted(saga._name, self.id, step._name, seconds))

    def step_failed(self, step: Step, error: Exception, start: float) -> None:
        self.failures[step._name] = error
        saga = self.saga
        seconds = _tally(saga, step, FAILED, start)
        if saga._listeners or global_listeners:
            event = SagaStepFailed(saga._name, self.id, step._name, seconds, error)
            dispatch(saga._listeners, event)

    def step_cancelled(self, step: Step, start: float) -> None:
        self.cancelled.append(step._name)
        saga = self.saga
        seconds = _tally(saga, step, CANCELLED, start)
        if saga._listeners or global_listeners:
            dispatch(saga._listeners, SagaStepCancelled(saga._name, self.id, step._name, seconds))

    def compensation_started(self, step: Step) -> float:
        saga = self.saga
        if saga._listeners or global_listeners:
            dispatch(saga._listeners, SagaCompensationStarted(saga._name, self.id, step._name))
        return saga._clock.now()

    def step_compensated(self, step: Step, start: float) -> None:
        self.compensated.append(step._name)
        saga = self.saga
        seconds = _tally(saga, step, COMPENSATED, start)
        if saga._listeners or global_listeners:
            dispatch(saga._listeners, SagaStepCompensated(saga._name, self.id, step._name, seconds))

    def compensation_failed(self, step: Step, error: Exception, start: float) -> None:
        self.compensation_errors[step._name] = error
        saga = self.saga
        seconds = _tally(saga, step, COMPENSATION_FAILED, start)
        error.add_note(f"resilience: saga {saga._name!r} could not compensate step {step._name!r}")
        if saga._listeners or global_listeners:
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
        self.end(RUN_COMPLETED, "completed")

    def undone(self) -> None:
        if self.compensation_errors:
            self.end(RUN_FAILED, "failed")
        else:
            self.end(RUN_COMPENSATED, "compensated")

    def end(self, outcome: int, state: str) -> None:
        saga = self.saga
        seconds = saga._clock.now() - self.started
        tally = saga._run_tally
        tally.counts[outcome] += 1
        tally.seconds[outcome] += seconds
        self.enter(state, seconds)

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
