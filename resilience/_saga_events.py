"""What a saga's runs tell: the events of its states, steps and
compensations (re-exported by :mod:`resilience.events`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ._event import Event

__all__ = [
    "SagaCompensationFailed",
    "SagaCompensationStarted",
    "SagaStateChanged",
    "SagaStepCancelled",
    "SagaStepCompensated",
    "SagaStepCompleted",
    "SagaStepFailed",
    "SagaStepStarted",
]


@dataclass(frozen=True, slots=True)
class SagaStateChanged(Event):
    """A run of a :class:`~resilience.saga.Saga` moved from ``old_state``
    (None when the run begins) to ``new_state``, ``seconds`` after it
    began. ``run`` numbers the saga's runs from 1, so concurrent runs of
    one saga can be told apart. The states: ``"running"``, then
    ``"completed"``, or ``"compensating"`` and then ``"compensated"`` (every
    compensation succeeded) or ``"failed"`` (a compensation failed: the run
    needs a human).

    Example::

        def on_saga(event: Event) -> None:
            if isinstance(event, SagaStateChanged) and event.new_state == "failed":
                page_someone(f"saga {event.name} run {event.run} could not be compensated")

        saga.add_listener(on_saga)
    """

    run: int
    old_state: Literal["running", "compensating"] | None
    new_state: Literal["running", "compensating", "completed", "compensated", "failed"]
    seconds: float


@dataclass(frozen=True, slots=True)
class SagaStepStarted(Event):
    """A saga's step ``step`` began: its action is called (under its policy).

    Example::

        saga.add_listener(lambda e: isinstance(e, SagaStepStarted) and print("->", e.step))
    """

    run: int
    step: str


@dataclass(frozen=True, slots=True)
class SagaStepCompleted(Event):
    """A saga's step ``step`` succeeded after ``seconds``: its compensation
    (if it has one) is now registered.

    Example::

        done = [e.step for e in events if isinstance(e, SagaStepCompleted)]
    """

    run: int
    step: str
    seconds: float


@dataclass(frozen=True, slots=True)
class SagaStepFailed(Event):
    """A saga's step ``step`` failed with ``exception`` (after its policy's
    retries): it is not compensated, the steps completed before are.

    Example::

        failed = [(e.step, e.exception) for e in events if isinstance(e, SagaStepFailed)]
    """

    run: int
    step: str
    seconds: float
    exception: BaseException


@dataclass(frozen=True, slots=True)
class SagaStepCancelled(Event):
    """A saga's step ``step`` was cancelled while its action ran (a sibling
    in its :class:`~resilience.saga.Parallel` group failed, or the run was
    cancelled): it did not complete, so it is not compensated.

    Example::

        cancelled = [e.step for e in events if isinstance(e, SagaStepCancelled)]
    """

    run: int
    step: str
    seconds: float


@dataclass(frozen=True, slots=True)
class SagaCompensationStarted(Event):
    """The compensation of the completed step ``step`` began.

    Example::

        undoing = [e.step for e in events if isinstance(e, SagaCompensationStarted)]
    """

    run: int
    step: str


@dataclass(frozen=True, slots=True)
class SagaStepCompensated(Event):
    """The compensation of step ``step`` succeeded after ``seconds`` (its
    retries included).

    Example::

        undone = [e.step for e in events if isinstance(e, SagaStepCompensated)]
    """

    run: int
    step: str
    seconds: float


@dataclass(frozen=True, slots=True)
class SagaCompensationFailed(Event):
    """The compensation of step ``step`` failed with ``exception`` after its
    retries: the run will end ``"failed"``, the other compensations still run.

    Example::

        def on_saga(event: Event) -> None:
            if isinstance(event, SagaCompensationFailed):
                log.critical("cannot undo %s: %r", event.step, event.exception)
    """

    run: int
    step: str
    seconds: float
    exception: BaseException
