"""The order workflow as a saga: reserve inventory, then charge the card and
print the shipping label side by side, then ship.

Three orders, on a fake clock (resilience.testing.FakeClock: the retries'
waits take no real time):

1. the payment service blips twice, its step's Retry gets through, the
   order ships;
2. the card is declined: the label (printed meanwhile) is voided and the
   inventory released, in reverse order, and SagaCompensated says so;
3. the card is declined and the warehouse is down for good: releasing the
   inventory fails after its retries, the label is voided anyway, and
   SagaCompensationError says what a human must undo by hand.

Run: python -m examples.saga
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from resilience import Pipeline, Retry, Timeout, backoff
from resilience.events import Event, SagaStepCompensated, SagaStepFailed
from resilience.saga import (
    Parallel,
    Saga,
    SagaCompensated,
    SagaCompensationError,
    SagaContext,
    Step,
)
from resilience.testing import FakeClock


class CardDeclined(Exception):
    pass


@dataclass
class Order:
    id: str
    card: str
    items: list[str]


@dataclass
class World:
    """The services the workflow talks to, faked: what they hold, and how they fail."""

    stock: dict[str, int] = field(default_factory=lambda: {"book": 3, "lamp": 1})
    charges: dict[str, int] = field(default_factory=dict)
    labels: set[str] = field(default_factory=set)
    shipped: list[str] = field(default_factory=list)
    payment_blips: int = 0  # the next charge attempts that fail with ConnectionError
    warehouse_down: bool = False
    log: list[str] = field(default_factory=list)


def order_saga(world: World, clock: FakeClock) -> Saga:
    async def reserve_inventory(ctx: SagaContext) -> list[str]:
        order: Order = ctx.input
        for item in order.items:
            world.stock[item] -= 1
        world.log.append(f"reserved {order.items}")
        return order.items

    async def release_inventory(ctx: SagaContext, reserved: list[str]) -> None:
        if world.warehouse_down:
            raise ConnectionError("warehouse unreachable")
        for item in reserved:
            world.stock[item] += 1
        world.log.append(f"released {reserved}")

    async def charge(ctx: SagaContext) -> str:
        order: Order = ctx.input
        if world.payment_blips:
            world.payment_blips -= 1
            raise ConnectionError("payment service blip")
        if order.card == "declined":
            raise CardDeclined(f"card for {order.id} declined")
        charge_id = f"ch_{order.id}"
        world.charges[charge_id] = 10 * len(ctx.results["reserve"])
        world.log.append(f"charged {charge_id}")
        return charge_id

    async def refund(ctx: SagaContext, charge_id: str) -> None:
        del world.charges[charge_id]
        world.log.append(f"refunded {charge_id}")

    async def make_label(ctx: SagaContext) -> str:
        label = f"label_{ctx.input.id}"
        world.labels.add(label)
        world.log.append(f"printed {label}")
        return label

    async def void_label(ctx: SagaContext, label: str) -> None:
        world.labels.discard(label)
        world.log.append(f"voided {label}")

    async def ship(ctx: SagaContext) -> str:
        order: Order = ctx.input
        world.shipped.append(order.id)
        return f"{order.id} shipped with {ctx.results['label']}"

    # The seed's activity retry policy, on our Retry: max_attempts=3,
    # initial_interval=1 s, backoff_multiplier=2, max_interval=10 s; and its
    # 30 s timeout per attempt.
    def activity_policy() -> Pipeline:
        retry = Retry(
            3, backoff=backoff.exponential(1.0, 2.0, cap=10.0), on=ConnectionError, clock=clock
        )
        return retry | Timeout(30, clock=clock)

    return Saga(
        "order",
        [
            Step("reserve", reserve_inventory, compensate=release_inventory),
            # Side by side (the label first: a declined card cancels it if it
            # has not finished, and then it needs no voiding).
            Parallel(
                Step("label", make_label, compensate=void_label),
                Step("charge", charge, compensate=refund, policy=activity_policy()),
            ),
            Step("ship", ship, policy=activity_policy()),
        ],
        clock=clock,  # the default compensation Retry waits on it too
    )


async def main() -> None:
    clock = FakeClock()
    world = World()
    saga = order_saga(world, clock)
    events: list[Event] = []
    saga.add_listener(events.append)

    # 1. Two blips, then the charge goes through.
    world.payment_blips = 2
    results = await saga.run(Order("o-1", "visa", ["book"]))
    print(f"order o-1: {results['ship']}, charge {results['charge']}")
    print(f"order o-1: payment retried after {clock.sleeps} (fake seconds)")
    assert clock.sleeps == [1.0, 2.0]
    assert world.shipped == ["o-1"]
    assert world.stock == {"book": 2, "lamp": 1}

    # 2. Declined: what completed is undone, last first.
    world.log.clear()
    try:
        await saga.run(Order("o-2", "declined", ["lamp"]))
    except SagaCompensated as exc:
        undone: SagaCompensated | None = exc
    else:
        undone = None
    assert undone is not None
    compensated = list(undone.compensated)
    print(f"order o-2: {undone.step} failed ({undone.error}); compensated {compensated}")
    assert isinstance(undone.__cause__, CardDeclined)
    assert undone.compensated == ("label", "reserve")
    print(f"order o-2: {', '.join(world.log)}")
    assert world.stock == {"book": 2, "lamp": 1}
    assert world.labels == {"label_o-1"}
    assert "o-2" not in world.shipped

    # 3. Declined, and the warehouse cannot take the lamp back.
    world.log.clear()
    world.warehouse_down = True
    before = len(clock.sleeps)
    try:
        await saga.run(Order("o-3", "declined", ["lamp"]))
    except SagaCompensationError as exc:
        stuck: SagaCompensationError | None = exc
    else:
        stuck = None
    assert stuck is not None
    for step, error in stuck.compensation_errors.items():
        print(
            f"order o-3: needs a human: undo {step!r} by hand "
            f"(it returned {stuck.results[step]!r}): {error}"
        )
    print(f"order o-3: compensated anyway: {list(stuck.compensated)}")
    assert stuck.step == "charge"
    assert list(stuck.compensation_errors) == ["reserve"]
    assert stuck.compensated == ("label",)
    print(f"order o-3: releasing was tried 5 times, waiting {len(clock.sleeps) - before} times")
    assert len(clock.sleeps) - before == 4
    assert world.stock == {"book": 2, "lamp": 0}  # the lamp is still held

    failed = [e.step for e in events if isinstance(e, SagaStepFailed)]
    undone_steps = [e.step for e in events if isinstance(e, SagaStepCompensated)]
    print(f"events: steps failed {failed}, compensated {undone_steps}")
    print(f"stats: {saga.stats}")
    assert saga.stats.completed == 1
    assert saga.stats.compensated == 1
    assert saga.stats.failed == 1
    print("saga: every check passed")


if __name__ == "__main__":
    asyncio.run(main())
