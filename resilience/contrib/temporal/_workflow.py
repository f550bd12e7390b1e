"""A saga run inside a Temporal workflow: :func:`run` schedules the steps'
activities and, when one fails, their compensations in reverse; the
workflow's history is the run's state, so a worker that dies mid-saga is
replaced by one that carries on where it was (completed activities are
not run again).

Nothing here reads a clock, draws a random number or does I/O: the code is
replayed. Activities in flight are never cancelled, because a cancellation
that meets a completion can lose it (and with it a compensation): when a
step fails or the workflow is cancelled, the steps in flight run to their
end, and those that completed are compensated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, FailureError
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from resilience import Saga, SagaCompensated, SagaCompensationError, SagaError

from ._activities import StepPlan, plan

__all__ = ["COMPENSATED", "COMPENSATION_FAILED", "run", "saga_error", "workflow_runner"]

COMPENSATED = "SagaCompensated"
"""The ``ApplicationError.type`` of a workflow whose saga was compensated.

Example::

    except WorkflowFailureError as exc:
        if getattr(exc.cause, "type", None) == COMPENSATED:
            ...  # undone cleanly: tell the customer
"""
COMPENSATION_FAILED = "SagaCompensationError"
"""The ``ApplicationError.type`` of one whose compensation failed: it needs a human.

Example::

    except WorkflowFailureError as exc:
        if getattr(exc.cause, "type", None) == COMPENSATION_FAILED:
            page_on_call(exc)
"""


def workflow_runner(
    *passthrough: str, restrictions: SandboxRestrictions | None = None
) -> SandboxedWorkflowRunner:
    """The sandboxed workflow runner of a worker whose workflows run sagas:
    ``resilience`` passes through the sandbox, with the ``passthrough``
    modules given (the modules that define your sagas and steps, say).

    The sandbox cannot import resilience itself (anyio and sniffio subclass
    objects it proxies), and an ``imports_passed_through()`` block is not
    enough on its own: resilience imports some of its modules when first
    used (``Retry(3) | Timeout(10)`` imports the pipeline), and the sandbox
    would import those afresh, with classes of their own. ``restrictions``:
    yours to extend (the SDK's default otherwise).

    Example::

        worker = Worker(client, task_queue="orders", workflows=[OrderWorkflow],
                        activities=activities(order_saga),
                        workflow_runner=workflow_runner("shop.sagas"))
    """
    base = SandboxRestrictions.default if restrictions is None else restrictions
    return SandboxedWorkflowRunner(
        restrictions=base.with_passthrough_modules("resilience", *passthrough)
    )


def _describe(error: BaseException) -> tuple[str, str]:
    """(type, message) of a failure, as the step's code raised it."""
    while isinstance(error, ActivityError) and error.cause is not None:
        error = error.cause
    if isinstance(error, ApplicationError):
        return error.type or "ApplicationError", error.message
    if isinstance(error, FailureError):
        return type(error).__name__, error.message
    return type(error).__name__, str(error)


async def _settle(
    handles: Sequence[asyncio.Future[Any]],
) -> tuple[list[Any], BaseException | None]:
    """Every handle's result or exception, waiting for all of them even if
    the workflow is cancelled meanwhile (the cancellation is returned)."""
    together = asyncio.gather(*handles, return_exceptions=True)
    interruption: BaseException | None = None
    while not together.done():
        try:
            await asyncio.shield(together)
        except asyncio.CancelledError as exc:
            interruption = exc
    return list(together.result()), interruption


def _names(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names) or "none"


async def run(
    saga: Saga, input: Any = None, *, strict: bool = True, task_queue: str | None = None
) -> dict[str, Any]:
    """Run ``saga`` inside a Temporal workflow, each step as an activity
    (registered with :func:`activities`); return the results by step name.

    - Steps run in order, a :class:`~resilience.saga.Parallel` group's
      members concurrently; each activity is scheduled with its step's
      policy converted (:func:`activity_options`; a step without a policy
      gets one 30 s attempt).
    - When a step fails (after its retries), the completed steps are
      compensated in reverse, a group's members concurrently, each under
      its compensation policy converted the same way (by default the
      saga's: 5 attempts, 0.5 s doubling to 8 s). A failing compensation
      does not stop the others. The workflow then fails with a
      non-retryable ``ApplicationError`` of type :data:`COMPENSATED`, or
      :data:`COMPENSATION_FAILED` when a compensation gave up; its
      ``details[0]`` says which step failed (``step``, ``error``,
      ``error_type``), what ``completed``, was ``compensated`` and could
      not be (``compensation_errors``), and the ``results``;
      :func:`saga_error` turns it back into our SagaError.
    - Members of a group whose sibling failed, and a step in flight when the
      workflow is cancelled, are not interrupted: Temporal would report a
      step that completed at that moment as cancelled, and nobody would
      undo it. They run to their end (bounded by their timeouts), and are
      compensated if they completed. A cancelled workflow then ends
      cancelled (failed, if a compensation gave up); a cancellation while
      compensating does not stop the compensations either.
    - A policy Temporal cannot express raises TypeError or ValueError here
      too, which fails the workflow task (Temporal retries it until a fixed
      worker is deployed); :func:`activities` refuses it first, at startup.
      With ``strict=False`` the parts are dropped silently here
      (:func:`activities` warned).
    - ``task_queue``: where the activities run (the workflow's by default).

    Example::

        @workflow.defn
        class OrderWorkflow:
            @workflow.run
            async def run(self, order: Order) -> dict[str, Any]:
                return await run(order_saga, order)
    """
    if not workflow.in_workflow():
        raise RuntimeError(
            "resilience.contrib.temporal.run() runs a saga inside a Temporal workflow "
            "(await it in a @workflow.run method, on the worker's asyncio loop); to run "
            "the saga in process, await saga.run(input)"
        )
    layers = plan(saga, strict=strict, quiet=True)  # activities() warned at startup
    results: dict[str, Any] = {}
    done: list[list[tuple[StepPlan, dict[str, Any], Any]]] = []
    failures: dict[str, BaseException] = {}
    interruption: BaseException | None = None
    for layer in layers:
        before = dict(results)
        handles = [
            workflow.start_activity(
                step.action, args=[input, before], task_queue=task_queue, **step.options
            )
            for step in layer
        ]
        outcomes, interruption = await _settle(handles)
        finished: list[tuple[StepPlan, dict[str, Any], Any]] = []
        for step, outcome in zip(layer, outcomes, strict=True):
            _evicted(outcome)
            if isinstance(outcome, BaseException):
                failures[step.name] = outcome
            else:
                results[step.name] = outcome
                finished.append((step, before, outcome))
        done.append(finished)
        if failures or interruption is not None:
            break
    else:
        return results
    compensated, compensation_errors = await _compensate(done, input, task_queue)
    if not failures and not compensation_errors:
        assert interruption is not None
        raise interruption  # cancelled, and wholly compensated: the workflow ends cancelled
    completed = [step.name for layer in done for step, _, _ in layer]
    raise _failure(saga, failures, completed, compensated, compensation_errors, results)


def _evicted(outcome: object) -> None:
    """Re-raise a handle's own cancellation: run() never cancels one, only an
    eviction does (the workflow leaves this worker's cache, and the next
    worker replays it up to here); nothing may be scheduled meanwhile."""
    if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
        raise outcome


def _failure(
    saga: Saga,
    failures: dict[str, BaseException],
    completed: list[str],
    compensated: list[str],
    compensation_errors: dict[str, BaseException],
    results: dict[str, Any],
) -> ApplicationError:
    """The workflow's error: what failed (a step, or a cancellation whose
    compensation failed), what was undone, and what could not be."""
    failed, error = next(iter(failures.items()), ("", None))
    error_type, message = _describe(error) if error is not None else ("CancelledError", "")
    details = {
        "saga": saga.name,
        "step": failed,
        "error_type": error_type,
        "error": message,
        "failures": {name: list(_describe(exc)) for name, exc in failures.items()},
        "completed": completed,
        "compensated": compensated,
        "cancelled": [],  # nothing is cancelled (see run())
        "compensation_errors": {
            name: list(_describe(exc)) for name, exc in compensation_errors.items()
        },
        "results": results,
    }
    if failures:
        text = f"saga {saga.name!r}: step {failed!r} failed ({error_type}: {message}); "
    else:
        text = f"saga {saga.name!r}: the workflow was cancelled; "
    if compensation_errors:
        text += f"compensation failed for {_names(list(compensation_errors))}: "
        text += "needs manual repair; "
    text += f"compensated: {_names(compensated)}"
    kind = COMPENSATION_FAILED if compensation_errors else COMPENSATED
    failure = ApplicationError(text, details, type=kind, non_retryable=True)
    failure.__cause__ = error
    return failure


async def _compensate(
    done: list[list[tuple[StepPlan, dict[str, Any], Any]]], input: Any, task_queue: str | None
) -> tuple[list[str], dict[str, BaseException]]:
    """Compensate the completed steps, latest layer first: (compensated, the
    compensations that failed). A cancellation meanwhile stops none of them:
    the run ends as it would have (failed, or cancelled)."""
    compensated: list[str] = []
    errors: dict[str, BaseException] = {}
    for layer in reversed(done):
        undo = [(step, before, result) for step, before, result in layer if step.compensate]
        handles = [
            workflow.start_activity(
                step.compensate,
                args=[input, before, result],
                task_queue=task_queue,
                **(step.compensate_options or {}),
            )
            for step, before, result in undo
        ]
        outcomes, _ = await _settle(handles)
        for (step, _, _), outcome in zip(undo, outcomes, strict=True):
            _evicted(outcome)
            if isinstance(outcome, BaseException):
                errors[step.name] = outcome
            else:
                compensated.append(step.name)
    return compensated, errors


def saga_error(error: BaseException) -> SagaError | None:
    """The :class:`~resilience.SagaCompensated` or
    :class:`~resilience.SagaCompensationError` a workflow run by :func:`run`
    failed with, rebuilt from the client's ``WorkflowFailureError`` (or the
    ``ApplicationError`` itself); None for any other error. The step's and
    the compensations' exceptions are ``ApplicationError``s of the type the
    steps raised (``exc.error.type == "CardDeclined"``).

    Example::

        try:
            await client.execute_workflow(OrderWorkflow.run, order, id=order.id,
                                          task_queue="orders")
        except WorkflowFailureError as exc:
            failed = saga_error(exc)
            if failed is None:
                raise
            print(f"{failed.step} failed; undone: {failed.compensated}")
    """
    while error is not None and not (
        isinstance(error, ApplicationError) and error.type in (COMPENSATED, COMPENSATION_FAILED)
    ):
        error = getattr(error, "cause", None) or error.__cause__  # type: ignore[assignment]
    if error is None or not error.details or not isinstance(error.details[0], dict):
        return None
    info: dict[str, Any] = error.details[0]

    def rebuilt(pair: Sequence[str]) -> Exception:
        return ApplicationError(pair[1], type=pair[0])

    failures = {name: rebuilt(pair) for name, pair in info.get("failures", {}).items()}
    step = info.get("step", "")
    first = failures.get(step) or rebuilt((info.get("error_type", ""), info.get("error", "")))
    fields: dict[str, Any] = {
        "name": info.get("saga", ""),
        "step": step,
        "error": first,
        "failures": failures or None,
        "completed": info.get("completed", ()),
        "compensated": info.get("compensated", ()),
        "cancelled": info.get("cancelled", ()),
        "results": info.get("results"),
    }
    if error.type == COMPENSATION_FAILED:
        errors = {name: rebuilt(pair) for name, pair in info["compensation_errors"].items()}
        return SagaCompensationError(compensation_errors=errors, **fields)
    saga_failed = SagaCompensated(**fields)
    saga_failed.__cause__ = first
    return saga_failed
