"""A saga's steps as Temporal activities: what a worker registers
(:func:`activities`), and the names and options the workflow schedules them
by (:func:`plan`).

An activity is called with the run's input and the results the step's
action saw (what the data converter carries), and builds the
:class:`~resilience.SagaContext` the step expects. The step's Retry is
Temporal's (its RetryPolicy); its ``on=`` filter is applied here: a failure
it would not retry leaves the activity as a non-retryable ApplicationError.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from resilience import Pipeline, Policy, Retry, Saga, SagaContext, Step
from resilience.saga import Parallel

from ._convert import ActivityOptions, _Conversion, convert

__all__ = ["StepPlan", "activities", "plan"]


class StepPlan:
    """How the workflow schedules one step: its activities' names and options."""

    __slots__ = ("action", "compensate", "compensate_options", "name", "options")

    def __init__(
        self,
        name: str,
        action: str,
        options: ActivityOptions,
        compensate: str | None,
        compensate_options: ActivityOptions | None,
    ) -> None:
        self.name = name
        self.action = action
        self.options = options
        self.compensate = compensate
        self.compensate_options = compensate_options


def _names(saga: Saga, step: Step) -> tuple[str, str]:
    return f"{saga.name}.{step.name}", f"{saga.name}.{step.name}.compensate"


def _retry_of(policy: Policy | None) -> Retry | None:
    for part in policy.policies if isinstance(policy, Pipeline) else (policy,):
        if isinstance(part, Retry):
            return part
    return None


def plan(
    saga: Saga, *, strict: bool = True, quiet: bool = False
) -> tuple[tuple[StepPlan, ...], ...]:
    """The saga's layers (a step, or a Parallel group's members) as StepPlans;
    TypeError or ValueError for a policy Temporal cannot express (``quiet``:
    no warning for what ``strict=False`` drops)."""
    if not isinstance(saga, Saga):
        raise TypeError(f"saga must be a resilience Saga, got {saga!r}")
    seen: dict[str, str] = {}
    layers: list[tuple[StepPlan, ...]] = []
    for entry in saga.steps:
        members = entry.steps if isinstance(entry, Parallel) else (entry,)
        layer = []
        for step in members:
            action, undo = _names(saga, step)
            options = convert(
                step.policy, _Conversion(f"policy of step {step.name!r}", strict, True, quiet)
            )
            compensate_options = None
            if step.compensate is not None:
                own = step.compensate_policy is not None
                where = (
                    f"compensate_policy of step {step.name!r}"
                    if own
                    else f"compensate_policy of saga {saga.name!r} (for step {step.name!r})"
                )
                compensate_options = convert(
                    step.compensate_policy if own else saga.compensate_policy,
                    _Conversion(where, strict, True, quiet),
                )
            for activity_name, what in ((action, "action"), (undo, "compensation")):
                if what == "compensation" and step.compensate is None:
                    continue
                if activity_name in seen:
                    raise ValueError(
                        f"the {what} of step {step.name!r} would be the activity "
                        f"{activity_name!r}, already the {seen[activity_name]}: rename a step"
                    )
                seen[activity_name] = f"{what} of step {step.name!r}"
            layer.append(
                StepPlan(
                    step.name,
                    action,
                    options,
                    undo if step.compensate is not None else None,
                    compensate_options,
                )
            )
        layers.append(tuple(layer))
    return tuple(layers)


def _refused(error: Exception, retry: Retry | None) -> Exception | None:
    """The non-retryable error to raise instead, when ``retry`` would not
    retry ``error`` (None: let Temporal retry it, or not, as it is)."""
    if retry is None or retry.retryable(error):
        return None
    kind = error.type if isinstance(error, ApplicationError) else type(error).__name__
    refused = ApplicationError(str(error), type=kind, non_retryable=True)
    refused.__cause__ = error
    return refused


def _plain_result(fn: Callable[..., Any], result: Any) -> Any:
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()
        raise TypeError(
            f"{getattr(fn, '__qualname__', fn)!r} returned an awaitable: a plain step runs "
            "in the worker's activity executor; make it an async def to have it awaited"
        )
    return result


def _action(saga: Saga, step: Step, name: str, input_type: Any) -> Callable[..., Any]:
    fn, retry, saga_name, step_name = step.action, _retry_of(step.policy), saga.name, step.name

    if step.is_async:

        async def run_action(input: Any, results: dict[str, Any]) -> Any:
            try:
                return await fn(SagaContext(input, results, saga=saga_name, step=step_name))
            except Exception as exc:
                refused = _refused(exc, retry)
                if refused is None:
                    raise
                raise refused from exc

        wrapper: Callable[..., Any] = run_action
    else:

        def run_plain_action(input: Any, results: dict[str, Any]) -> Any:
            try:
                ctx = SagaContext(input, results, saga=saga_name, step=step_name)
                return _plain_result(fn, fn(ctx))
            except Exception as exc:
                refused = _refused(exc, retry)
                if refused is None:
                    raise
                raise refused from exc

        wrapper = run_plain_action
    return _define(wrapper, name, input_type, fn)


def _compensation(saga: Saga, step: Step, name: str, input_type: Any) -> Callable[..., Any]:
    fn = step.compensate
    assert fn is not None
    retry = _retry_of(step.compensate_policy or saga.compensate_policy)
    saga_name, step_name = saga.name, step.name

    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    ):

        async def run_compensation(input: Any, results: dict[str, Any], result: Any) -> None:
            try:
                await fn(SagaContext(input, results, saga=saga_name, step=step_name), result)
            except Exception as exc:
                refused = _refused(exc, retry)
                if refused is None:
                    raise
                raise refused from exc

        wrapper: Callable[..., Any] = run_compensation
    else:

        def run_plain_compensation(input: Any, results: dict[str, Any], result: Any) -> None:
            try:
                ctx = SagaContext(input, results, saga=saga_name, step=step_name)
                _plain_result(fn, fn(ctx, result))
            except Exception as exc:
                refused = _refused(exc, retry)
                if refused is None:
                    raise
                raise refused from exc

        wrapper = run_plain_compensation
    return _define(wrapper, name, input_type, fn)


def _define(
    wrapper: Callable[..., Any], name: str, input_type: Any, fn: Callable[..., Any]
) -> Callable[..., Any]:
    # The data converter decodes each argument by these hints: the input as
    # the type given, the rest as whatever JSON holds.
    wrapper.__annotations__ = {**wrapper.__annotations__, "input": input_type}
    wrapper.__name__ = wrapper.__qualname__ = name
    wrapper.__doc__ = f"Activity {name!r}: runs {getattr(fn, '__qualname__', fn)!r}."
    return activity.defn(name=name)(wrapper)


def activities(
    saga: Saga, *, input_type: Any = Any, strict: bool = True
) -> list[Callable[..., Any]]:
    """The activities to register on a worker that runs ``saga`` with
    :func:`run`: one per step's action, named ``"<saga>.<step>"``, and one
    per compensation, ``"<saga>.<step>.compensate"``.

    - Steps whose action or compensation is a plain ``def`` become plain
      activities, which a worker runs only with an ``activity_executor``
      (``Worker(..., activity_executor=ThreadPoolExecutor(8))``); async ones
      run on the worker's event loop.
    - ``input_type``: what the data converter decodes the run's input into
      (a dataclass, say); the results the steps see are decoded as JSON
      values (dicts, lists, strings, numbers), whatever the steps returned.
    - Every step's policy and compensation policy is converted here, as
      :func:`run` will (TypeError or ValueError for a part Temporal cannot
      express; with ``strict=False`` a
      :class:`TemporalConversionWarning` and the part dropped), so a worker
      refuses a saga it cannot run before it starts.
    - The step's Retry runs as Temporal's retries; an exception its ``on=``
      would not retry fails the activity as a non-retryable
      ``ApplicationError`` whose type is the exception's class name.

    Example::

        worker = Worker(client, task_queue="orders", workflows=[OrderWorkflow],
                        activities=activities(order_saga, input_type=Order),
                        activity_executor=ThreadPoolExecutor(4))   # for plain def steps
    """
    layers = plan(saga, strict=strict)  # the errors and warnings, once, at startup
    steps = {
        step.name: step
        for entry in saga.steps
        for step in (entry.steps if isinstance(entry, Parallel) else (entry,))
    }
    defined: list[Callable[..., Any]] = []
    for layer in layers:
        for step_plan in layer:
            step = steps[step_plan.name]
            defined.append(_action(saga, step, step_plan.action, input_type))
            if step_plan.compensate is not None:
                defined.append(_compensation(saga, step, step_plan.compensate, input_type))
    return defined
