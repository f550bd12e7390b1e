"""Sagas and policies on Temporal (extra ``temporal``): the same
:class:`~resilience.Saga` run durably, each step an activity, its
:class:`~resilience.Retry` and :class:`~resilience.Timeout` converted to
Temporal's ``RetryPolicy`` and activity timeouts.

- :func:`activities` gives a worker the saga's activities to register;
- ``await run(saga, input)`` inside a workflow runs the steps as those
  activities and, when one fails, the compensations in reverse, then fails
  the workflow with a non-retryable ``ApplicationError`` saying what failed
  and what was undone (:func:`saga_error` reads it back on the client);
- :func:`retry_policy` and :func:`activity_options` convert our policies
  for activities of your own.

The workflow sandbox cannot import ``resilience`` (anyio and sniffio
subclass objects it proxies): a worker that runs sagas passes it through,
with :func:`workflow_runner`, and the workflow's module imports it passed
through too (the sandbox imports that module to check it)::

    with workflow.unsafe.imports_passed_through():
        from resilience.contrib.temporal import run
        from shop.sagas import order_saga

Example::

    @workflow.defn
    class OrderWorkflow:
        @workflow.run
        async def run(self, order: Order) -> dict[str, Any]:
            return await run(order_saga, order)

    worker = Worker(client, task_queue="orders", workflows=[OrderWorkflow],
                    activities=activities(order_saga, input_type=Order),
                    workflow_runner=workflow_runner())
"""

from resilience.contrib import _extras

with _extras.needs_extra(__name__, "temporal"):
    import temporalio.workflow as _temporalio_workflow  # noqa: F401

from ._activities import activities
from ._convert import (
    DEFAULT_START_TO_CLOSE,
    ActivityOptions,
    TemporalConversionWarning,
    activity_options,
    retry_policy,
)
from ._workflow import COMPENSATED, COMPENSATION_FAILED, run, saga_error, workflow_runner

__all__ = [
    "COMPENSATED",
    "COMPENSATION_FAILED",
    "DEFAULT_START_TO_CLOSE",
    "ActivityOptions",
    "TemporalConversionWarning",
    "activities",
    "activity_options",
    "retry_policy",
    "run",
    "saga_error",
    "workflow_runner",
]
