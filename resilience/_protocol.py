"""The two shapes a policy can take, as Protocols (documented in :mod:`resilience.lowlevel`).

It imports only the Clock protocol, so every floor of the package may use it.
"""

from __future__ import annotations

from typing import Any, Final, Protocol, runtime_checkable

from ._clock import Clock

__all__ = ["WAIT", "CallObserver", "Flow", "FlowRun", "Guard"]


class _Wait:
    __slots__ = ()

    def __repr__(self) -> str:
        return "WAIT"


WAIT: Final[Any] = _Wait()
"""What :meth:`Guard.admit` returns when the caller must wait for its ticket.

Example::

    ticket = guard.admit()
    if ticket is WAIT:
        ticket = await guard.wait()
"""


@runtime_checkable
class Guard(Protocol):
    """A policy that brackets one attempt: ``admit()``, then exactly one ``settle()``.

    - ``admit()`` never awaits and never blocks. It returns a *ticket* (any
      object but :data:`WAIT`), raises the policy's own rejection (a fresh
      exception each time), or returns :data:`WAIT`: then the caller gets
      its ticket from ``await wait()`` (async) or ``wait_sync()`` (threads),
      which may raise a rejection too. Whatever the guard checks and takes
      (a permit) it does inside ``admit`` or ``wait``: no caller can split it.
    - ``settle(ticket, error, result)`` is called exactly once per ticket,
      in the same task or thread, however the attempt ended: ``error`` is
      the exception it raised (None if it returned ``result``), including
      cancellation and the rejections of guards inside this one. It gives
      back what the ticket holds, records the outcome, and returns the
      exception to propagate: ``error`` itself, another one (a Timeout turns
      its own cancellation into :class:`~resilience.TimeoutError`), or None
      to let ``result`` stand. If it raises (a user callback failed), it has
      settled first.

    Guards are entered outermost first and settled innermost first, in one
    frame, by :class:`~resilience.lowlevel.Plan`.

    Example::

        class Counting(Policy):
            def __init__(self) -> None:
                super().__init__(name="counting")
                self.running = 0

            def admit(self) -> object:
                self.running += 1
                return None

            async def wait(self) -> object:
                raise AssertionError("admit never asks to wait")

            def wait_sync(self) -> object:
                raise AssertionError("admit never asks to wait")

            def settle(self, ticket, error, result):
                self.running -= 1
                return error
    """

    def admit(self) -> Any: ...

    async def wait(self) -> Any: ...

    def wait_sync(self) -> Any: ...

    def settle(
        self, ticket: Any, error: BaseException | None, result: Any
    ) -> BaseException | None: ...


@runtime_checkable
class FlowRun(Protocol):
    """One call's decisions in a :class:`Flow`: what to do after each attempt.

    Example::

        run = Retry(3, backoff=backoff.fixed(0.5)).start()
        assert run.after(ConnectionError("reset"), None) == 0.5   # wait 0.5 s, try again
        assert run.after(None, "ok") is None                       # stop: "ok" is the result
    """

    def after(self, error: BaseException | None, result: Any) -> float | None:
        """None: stop (raise ``error``, or return ``result``); a number: wait
        that many seconds, then make another attempt."""
        ...


@runtime_checkable
class Flow(Protocol):
    """A policy whose decisions are a sans-I/O object, driven by whoever runs it.

    ``start()`` is called once per call and returns a :class:`FlowRun`; the
    driver makes an attempt, asks ``run.after(error, result)``, sleeps on
    ``clock`` for the delay it answers, and repeats until it answers None.
    :class:`~resilience.Retry` is one; :class:`~resilience.Retry.call`,
    ``call_sync``, pipelines and both httpx transports all drive it the same
    way (the transports pass ``Retry-After`` to :meth:`RetryRun.retry` as a hint).

    Example::

        run = retry.start()
        while True:
            try:
                result, error = await attempt(), None
            except Exception as exc:
                result, error = None, exc
            delay = run.after(error, result)
            if delay is None:
                break
            await retry.clock.sleep(delay)
    """

    @property
    def clock(self) -> Clock: ...

    def start(self) -> FlowRun: ...


class CallObserver(Protocol):
    """Told how long each policy took on each call, once some observer is registered.

    ``policy`` is the policy whose span ended (a guard from admission to
    settlement, a flow over all its attempts, a pipeline over everything),
    ``error`` what its span ended with (None for a result; cancellation
    included), ``seconds`` its length on ``time.perf_counter``. An observer
    that raises is logged and ignored.

    Example::

        def log_slow(policy, error, seconds):
            if seconds > 1.0:
                print(f"{policy.name} took {seconds:.1f}s")

        resilience.lowlevel.add_observer(log_slow)
    """

    def __call__(self, policy: Any, error: BaseException | None, seconds: float) -> None: ...
