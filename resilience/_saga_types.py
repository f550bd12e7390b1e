"""What a saga's run hands out: the context its steps are called with, and
the errors it raises (exported by :mod:`resilience.saga`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from .errors import ResilienceError

__all__ = ["SagaCompensated", "SagaCompensationError", "SagaContext", "SagaError"]

_NO_RESULTS: Mapping[str, Any] = MappingProxyType({})


class SagaContext:
    """What a step's action is called with, and its compensation too.

    - ``input``: what was given to :meth:`Saga.run`.
    - ``results``: a read-only mapping, by step name, of what the steps that
      completed before this one returned. A member of a :class:`Parallel`
      group sees the steps before the group, never its siblings (they run
      at the same time). A compensation gets the same context as its action.
    - ``saga`` and ``step``: the names of the saga and of this step (an
      idempotency key can be made of them and the input).

    Example::

        async def charge(ctx: SagaContext) -> str:
            reservation = ctx.results["reserve"]
            return await payments.charge(ctx.input.card, reservation.total,
                                         idempotency_key=f"{ctx.input.id}:{ctx.step}")

        # Steps can be tested alone:
        assert await charge(SagaContext(order, {"reserve": reservation})) == "ch_1"
    """

    __slots__ = ("input", "results", "saga", "step")

    input: Any
    results: Mapping[str, Any]
    saga: str
    step: str

    def __init__(
        self,
        input: Any = None,
        results: Mapping[str, Any] | None = None,
        *,
        saga: str = "",
        step: str = "",
    ) -> None:
        self.input = input
        self.results = _NO_RESULTS if results is None else MappingProxyType(dict(results))
        self.saga = saga
        self.step = step

    def __repr__(self) -> str:
        return (
            f"SagaContext(input={self.input!r}, results={dict(self.results)!r}, "
            f"saga={self.saga!r}, step={self.step!r})"
        )


def _names(names: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in names) or "none"


class SagaError(ResilienceError):
    """A step of a saga failed; base of :class:`SagaCompensated` and
    :class:`SagaCompensationError`. ``name`` is the saga's.

    - ``step``, ``error``: the step that failed first, and its exception.
    - ``failures``: every step that failed, by name (more than one only
      when members of a :class:`Parallel` group failed at the same time).
    - ``completed``: the steps that completed, in order of completion.
    - ``compensated``: the steps whose compensation succeeded, in the order
      they finished (steps without a compensation are in neither).
    - ``cancelled``: group members cancelled while their action ran (not
      compensated: they did not complete).
    - ``compensation_errors``: by step name, the compensations that failed
      after their retries (empty for :class:`SagaCompensated`).
    - ``results``: what the completed steps returned, by name.

    Example::

        try:
            await saga.run(order)
        except SagaError as exc:
            log.error("order %s: %s failed (%r); undone: %s", order.id, exc.step, exc.error,
                      exc.compensated)
    """

    step: str
    error: Exception
    failures: dict[str, Exception]
    completed: tuple[str, ...]
    compensated: tuple[str, ...]
    cancelled: tuple[str, ...]
    compensation_errors: dict[str, Exception]
    results: dict[str, Any]

    def _fields(
        self,
        name: str,
        step: str,
        error: Exception,
        failures: Mapping[str, Exception] | None,
        completed: Sequence[str],
        compensated: Sequence[str],
        cancelled: Sequence[str],
        compensation_errors: Mapping[str, Exception] | None,
        results: Mapping[str, Any] | None,
    ) -> None:
        self.name = name
        self.step = step
        self.error = error
        self.failures = dict(failures) if failures else {step: error}
        self.completed = tuple(completed)
        self.compensated = tuple(compensated)
        self.cancelled = tuple(cancelled)
        self.compensation_errors = dict(compensation_errors or {})
        self.results = dict(results or {})

    def _failure(self) -> str:
        error = self.error
        return f"saga {self.name!r}: step {self.step!r} failed ({type(error).__name__}: {error})"


class SagaCompensated(SagaError):
    """A step failed and every completed step was compensated: the saga is
    undone. The original exception is ``error`` and the ``__cause__``.

    Example::

        try:
            await saga.run(order)
        except SagaCompensated as exc:
            if isinstance(exc.error, CardDeclined):
                return Response(402)
            raise
    """

    def __init__(
        self,
        *,
        name: str,
        step: str,
        error: Exception,
        failures: Mapping[str, Exception] | None = None,
        completed: Sequence[str] = (),
        compensated: Sequence[str] = (),
        cancelled: Sequence[str] = (),
        results: Mapping[str, Any] | None = None,
    ) -> None:
        self._fields(name, step, error, failures, completed, compensated, cancelled, None, results)
        super().__init__(f"{self._failure()}; compensated: {_names(self.compensated)}", name=name)


class SagaCompensationError(SagaError, ExceptionGroup[Exception]):
    """A step failed and a compensation failed too, after its retries: the
    saga is half undone and needs a human. The other compensations ran.

    An :class:`ExceptionGroup` of the step's exception (and any other
    failed member of its group) and every compensation's exception; see
    :class:`SagaError` for the attributes (``compensation_errors`` maps each
    step that could not be undone to its compensation's exception).

    Example::

        try:
            await saga.run(order)
        except SagaCompensationError as exc:
            for step, error in exc.compensation_errors.items():
                alert(f"order {order.id}: undo {step} by hand "
                      f"(result {exc.results[step]!r}): {error!r}")
            raise
    """

    def __new__(
        cls,
        *,
        name: str,
        step: str,
        error: Exception,
        compensation_errors: Mapping[str, Exception],
        failures: Mapping[str, Exception] | None = None,
        compensated: Sequence[str] = (),
        **_: Any,
    ) -> SagaCompensationError:
        errors = [*(failures or {step: error}).values(), *compensation_errors.values()]
        message = (
            f"saga {name!r}: step {step!r} failed ({type(error).__name__}: {error}); "
            f"compensation failed for {_names(compensation_errors)}: needs manual repair; "
            f"compensated: {_names(compensated)}"
        )
        return super().__new__(cls, message, errors)

    def __init__(
        self,
        *,
        name: str,
        step: str,
        error: Exception,
        compensation_errors: Mapping[str, Exception],
        failures: Mapping[str, Exception] | None = None,
        completed: Sequence[str] = (),
        compensated: Sequence[str] = (),
        cancelled: Sequence[str] = (),
        results: Mapping[str, Any] | None = None,
    ) -> None:
        if not compensation_errors:
            raise ValueError(
                f"compensation_errors must name at least one step, got {compensation_errors!r}"
            )
        # Not ResilienceError.__init__: the group's args are (message, exceptions).
        self._fields(
            name,
            step,
            error,
            failures,
            completed,
            compensated,
            cancelled,
            compensation_errors,
            results,
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_group, (type(self), self.message, self.exceptions, dict(self.__dict__)))


def _rebuild_group(
    cls: type[SagaCompensationError],
    message: str,
    exceptions: tuple[Exception, ...],
    fields: dict[str, object],
) -> SagaCompensationError:
    error = ExceptionGroup.__new__(cls, message, list(exceptions))
    error.__dict__.update(fields)
    return error
