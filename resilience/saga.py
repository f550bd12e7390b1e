"""Sagas: steps that each undo themselves if a later step fails.

A :class:`Saga` runs its steps in order; a :class:`Parallel` group runs its
members side by side. Each :class:`Step` has an action and, optionally, a
compensation that undoes it. When a step fails, the steps that completed are
compensated in reverse order of completion, and the run raises
:class:`SagaCompensated` (every compensation succeeded) or
:class:`SagaCompensationError` (one failed, after its retries: the run needs
a human). How a run goes, step by step, is the Sagas guide's first section.

The definition is data: a durable runner (Temporal) can run the same saga,
provided its step names are unique (they name the activities and the
results), its actions and compensations are importable module-level
functions (a worker registers them; a lambda or a closure cannot be), the
input and the results are serialisable by the runner's data converter, and
the step policies are ones it can translate (a :class:`~resilience.Retry`
on an exponential schedule, :class:`~resilience.Timeout`).

Example::

    saga = Saga("order", steps=[
        Step("reserve", reserve_inventory, compensate=release_inventory,
             policy=Retry(3) | Timeout(30)),
        Parallel(Step("charge", charge, compensate=refund),
                 Step("label", make_label, compensate=void_label)),
        Step("ship", ship),
    ])
    results = await saga.run(order)   # each step's result by name: results["ship"]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

# Modules, not names: this face binds no public name but its own.
from . import _clock, _listeners, _registry, _saga_run
from . import _saga_check as _check
from . import _saga_tally as _tally
from . import backoff as _backoff
from . import policy as _policy
from . import retry as _retry
from ._saga_tally import SagaStatistics, SagaStepStatistics
from ._saga_types import SagaCompensated, SagaCompensationError, SagaContext, SagaError

__all__ = [
    "Parallel",
    "Saga",
    "SagaCompensated",
    "SagaCompensationError",
    "SagaContext",
    "SagaError",
    "SagaStatistics",
    "SagaStepStatistics",
    "Step",
]


class Step:
    """One step of a :class:`Saga`: an action, and what undoes it.

    - ``action(ctx)``: called with the run's :class:`SagaContext`; what it
      returns is the step's result (``ctx.results[name]`` for later steps,
      and in what :meth:`Saga.run` returns). An ``async def`` is awaited; a
      plain ``def`` runs in a worker thread when the saga runs async (the
      event loop keeps running), in the calling thread under
      :meth:`Saga.run_sync`.
    - ``compensate(ctx, result)``: called with the same context and what
      the action returned, if a later step fails or the run is cancelled.
      It is registered only once the action has returned: a step that fails
      is not compensated (it must not leave anything half done).
    - ``policy``: any policy or pipeline of ours that runs the action
      (``Retry(3) | Timeout(30)``); each attempt calls the action again.
    - ``compensate_policy``: the same for the compensation; by default the
      saga's (see :class:`Saga`), which retries.

    A policy that cannot run the action (a :class:`~resilience.Timeout`
    around a plain function: a thread cannot be interrupted) is refused here,
    with a TypeError.

    Example::

        Step("charge", charge_card, compensate=refund_card,
             policy=Retry(3, backoff=backoff.exponential(1, 2, cap=10)) | Timeout(30),
             compensate_policy=Retry(10, backoff=backoff.exponential(1, 2, cap=60)))
    """

    __slots__ = (
        "_action",
        "_compensate",
        "_compensate_async",
        "_compensate_policy",
        "_mode",
        "_name",
        "_policy",
    )

    def __init__(
        self,
        name: str,
        action: Callable[[SagaContext], Any],
        *,
        compensate: Callable[[SagaContext, Any], Any] | None = None,
        policy: _policy.Policy | None = None,
        compensate_policy: _policy.Policy | None = None,
    ) -> None:
        _check.name("name", name)
        action_async = _check.check_callable(f"action of step {name!r}", action)
        compensate_async = False
        if compensate is not None:
            compensate_async = _check.check_callable(f"compensate of step {name!r}", compensate)
        if policy is not None:
            _check.check_policy(f"policy of step {name!r}", policy, action, action_async)
        if compensate_policy is not None:
            if compensate is None:
                raise ValueError(
                    f"compensate_policy of step {name!r} has no compensation to run "
                    f"(compensate is None), got {compensate_policy!r}"
                )
            _check.check_policy(
                f"compensate_policy of step {name!r}",
                compensate_policy,
                compensate,
                compensate_async,
            )
        self._name = name
        self._action = action
        self._compensate = compensate
        self._compensate_async = compensate_async
        self._policy = policy
        self._compensate_policy = compensate_policy
        if action_async:
            self._mode = _check.AWAIT if policy is None else _check.AWAIT_UNDER
        elif policy is None:
            self._mode = _check.THREAD
        else:
            self._mode = _check.POOL if _check.runs_plain(policy) else _check.THREAD_UNDER

    @property
    def name(self) -> str:
        """The step's name: unique in its saga, the key of its result."""
        return self._name

    @property
    def action(self) -> Callable[[SagaContext], Any]:
        return self._action

    @property
    def compensate(self) -> Callable[[SagaContext, Any], Any] | None:
        return self._compensate

    @property
    def policy(self) -> _policy.Policy | None:
        """The policy the action runs under, or None."""
        return self._policy

    @property
    def compensate_policy(self) -> _policy.Policy | None:
        """The compensation's own policy, or None for the saga's."""
        return self._compensate_policy

    @property
    def is_async(self) -> bool:
        """Whether the action is async (a plain one runs in a worker thread)."""
        return self._mode in (_check.AWAIT, _check.AWAIT_UNDER)

    def __repr__(self) -> str:
        undo = "" if self._compensate is None else ", compensated"
        return f"<Step {self._name!r}{undo}>"


class Parallel:
    """Steps of a :class:`Saga` that run side by side (tasks of one task
    group, on asyncio and trio).

    The group completes when every member has. When a member fails, the
    others are cancelled and awaited; those that had completed are
    compensated with the steps before the group (the group's members
    concurrently), those that were cancelled while their action ran are not:
    they did not complete. A member whose action had returned when the
    cancellation reached it did complete. A plain member runs in a worker
    thread, which cannot be cancelled: the group waits for it, and it counts
    as completed if its action returned. Each member sees the results of the
    steps before the group, not its siblings'.

    Under :meth:`Saga.run_sync` the members run one after the other in the
    calling thread, in order; after a failure the rest do not start.

    Example::

        Parallel(
            Step("charge", charge, compensate=refund),
            Step("label", make_label, compensate=void_label),
        )
    """

    __slots__ = ("_steps",)

    def __init__(self, *steps: Step) -> None:
        if not steps:
            raise ValueError("Parallel needs at least one step, got none")
        for step in steps:
            if not isinstance(step, Step):
                hint = (
                    " (pass the steps as arguments, not a list)" if isinstance(step, list) else ""
                )
                raise TypeError(f"Parallel runs Steps, got {step!r}{hint}")
        _check.unique(steps)
        self._steps = steps

    @property
    def steps(self) -> tuple[Step, ...]:
        return self._steps

    def __repr__(self) -> str:
        return f"<Parallel {', '.join(repr(s.name) for s in self._steps)}>"


class Saga(_listeners.EventSource):
    """Steps run in order, each undone by its compensation if a later one fails.

    - ``steps``: :class:`Step` and :class:`Parallel` entries, run in order;
      step names are unique across the saga, groups included.
    - ``compensate_policy``: the policy of every compensation that has none
      of its own. By default a :class:`~resilience.Retry` of 5 attempts,
      waiting 0.5, 1, 2, 4 s at most (``backoff.exponential(0.5, 2.0,
      cap=8.0, jitter="full")``), named ``"<saga>.compensate"``: a
      compensation that gives up is the worst outcome there is.
    - ``clock``: the default compensation policy's clock (a
      :class:`~resilience.testing.FakeClock` in tests), and the clock that
      times the events.

    :meth:`run` returns the steps' results by name. When a step fails, the
    steps that completed are compensated in reverse order of completion, a
    failing compensation does not stop the others, and the run raises
    :class:`SagaCompensated` or :class:`SagaCompensationError`. Cancelling
    a run (or an outer timeout) compensates what completed, shielded from
    the cancellation and from the caller's deadline, then re-raises the
    cancellation. Runs are independent: one saga can run many at once.

    Example::

        saga = Saga("order", [
            Step("reserve", reserve, compensate=release),
            Step("charge", charge, compensate=refund, policy=Retry(3)),
            Step("ship", ship),
        ])
        try:
            results = await saga.run(order)
        except SagaCompensated as exc:
            print(f"{exc.step} failed: {exc.error!r}; undone: {exc.compensated}")
    """

    __slots__ = (
        "__weakref__",
        "_cancelled",
        "_clock",
        "_compensate_policy",
        "_name",
        "_plan",
        "_run_tally",
        "_running",
        "_runs",
        "_step_tallies",
        "_steps",
        "_sync_refusal",
    )

    def __init__(
        self,
        name: str,
        steps: Iterable[Step | Parallel],
        *,
        compensate_policy: _policy.Policy | None = None,
        clock: _clock.Clock | None = None,
    ) -> None:
        _check.name("name", name)
        if isinstance(steps, Step | Parallel | str | bytes) or not isinstance(steps, Iterable):
            raise TypeError(f"steps must be a list of Step and Parallel entries, got {steps!r}")
        entries = tuple(steps)
        if not entries:
            raise ValueError(f"steps of saga {name!r} must hold at least one step, got none")
        flat: list[Step] = []
        for entry in entries:
            if isinstance(entry, Step):
                flat.append(entry)
            elif isinstance(entry, Parallel):
                flat.extend(entry.steps)
            else:
                raise TypeError(f"steps must be Step or Parallel entries, got {entry!r}")
        _check.unique(flat)
        if clock is not None and not isinstance(clock, _clock.Clock):
            raise TypeError(f"clock must provide now(), sleep() and sleep_sync(), got {clock!r}")
        if compensate_policy is None:
            compensate_policy = _retry.Retry(
                5,
                backoff=_backoff.exponential(0.5, 2.0, cap=8.0, jitter="full"),
                name=f"{name}.compensate",
                clock=clock,
            )
        elif not isinstance(compensate_policy, _policy.Policy):
            raise TypeError(
                f"compensate_policy must be a Policy (or a pipeline of them) or None, "
                f"got {compensate_policy!r}"
            )
        else:
            for step in flat:
                if step.compensate is not None and step.compensate_policy is None:
                    _check.check_policy(
                        f"compensate_policy of saga {name!r} (for step {step.name!r})",
                        compensate_policy,
                        step.compensate,
                        step._compensate_async,
                    )
        self._name = name
        self._steps = entries
        # What the drivers walk: a Step, or a Parallel group's tuple of Steps.
        self._plan: tuple[Step | tuple[Step, ...], ...] = tuple(
            e if isinstance(e, Step) else e.steps for e in entries
        )
        self._compensate_policy = compensate_policy
        self._clock: _clock.Clock = _clock.SYSTEM_CLOCK if clock is None else clock
        self._listeners = ()
        self._sync_refusal = _check.sync_refusal(flat, compensate_policy)
        self._runs = self._running = self._cancelled = 0
        self._run_tally = _tally.Tally(len(_tally.RUN_OUTCOMES))
        self._step_tallies = {step.name: _tally.Tally(len(_tally.STEP_KEYS)) for step in flat}
        _registry.register_saga(self)

    @property
    def name(self) -> str:
        """The saga's name, in its events and errors."""
        return self._name

    @property
    def steps(self) -> tuple[Step | Parallel, ...]:
        """The entries, in order, as given."""
        return self._steps

    @property
    def compensate_policy(self) -> _policy.Policy:
        """The policy of the compensations that have none of their own."""
        return self._compensate_policy

    @property
    def clock(self) -> _clock.Clock:
        return self._clock

    @property
    def stats(self) -> SagaStatistics:
        """Run, step and compensation totals since creation, and their seconds."""
        return _tally.statistics(
            self._running, self._cancelled, self._run_tally, self._step_tallies
        )

    async def run(self, input: Any = None) -> dict[str, Any]:
        """Run the steps with ``input``; return their results by step name.

        Raises :class:`SagaCompensated` or :class:`SagaCompensationError`
        when a step fails; a cancellation propagates once the completed
        steps are compensated. On asyncio and trio.

        Example::

            results = await saga.run(order)
            tracking = results["ship"]
        """
        return await _saga_run.run_async(self, input)

    def run_sync(self, input: Any = None) -> dict[str, Any]:
        """Run a saga of plain steps in the calling thread (see :meth:`run`).

        A saga with an async action or compensation, or a policy that cannot
        run a plain call, is refused with a TypeError before anything runs.

        Example::

            results = saga.run_sync(order)
        """
        if self._sync_refusal is not None:
            raise TypeError(f"saga {self._name!r} cannot run_sync(): {self._sync_refusal}")
        return _saga_run.run_sync(self, input)

    def __repr__(self) -> str:
        names = [
            repr(e.name) if isinstance(e, Step) else f"[{', '.join(repr(s.name) for s in e.steps)}]"
            for e in self._steps
        ]
        return f"<Saga {self._name!r}: {', '.join(names)}>"
