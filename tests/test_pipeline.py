from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import pytest

from resilience import Fallback, Pipeline, Policy, PoolBulkhead, Retry, Timeout, backoff
from resilience.testing import FakeClock

P = ParamSpec("P")
T = TypeVar("T")


class Tracer(Policy):
    """Records entry and exit order into a shared log."""

    def __init__(self, label: str, log: list[str]) -> None:
        super().__init__(name=label)
        self.log = log

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        self.log.append(f"enter {self.name}")
        try:
            return await fn(*args, **kwargs)
        finally:
            self.log.append(f"exit {self.name}")

    def call_sync(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        self.log.append(f"enter {self.name}")
        try:
            return fn(*args, **kwargs)
        finally:
            self.log.append(f"exit {self.name}")


async def test_first_policy_is_outermost_and_arguments_pass_through() -> None:
    log: list[str] = []
    pipeline = Pipeline(Tracer("a", log), Tracer("b", log), Tracer("c", log))

    async def target(x: int, *, y: int) -> int:
        log.append("call")
        return x + y

    assert await pipeline.call(target, 1, y=2) == 3
    assert log == ["enter a", "enter b", "enter c", "call", "exit c", "exit b", "exit a"]


def test_sync_pipeline_has_the_same_order() -> None:
    log: list[str] = []
    pipeline = Tracer("a", log) | Tracer("b", log)
    assert pipeline.call_sync(lambda: log.append("call") or 7) == 7
    assert log == ["enter a", "enter b", "call", "exit b", "exit a"]


def test_or_and_nesting_flatten_to_the_same_pipeline() -> None:
    log: list[str] = []
    a, b, c = Tracer("a", log), Tracer("b", log), Tracer("c", log)
    assert (a | b | c).policies == (a, b, c)
    assert (a | (b | c)).policies == (a, b, c)
    assert Pipeline(a, Pipeline(b, c)).policies == (a, b, c)


async def test_pipeline_decorates_like_any_policy() -> None:
    clock = FakeClock()
    calls = 0

    @Fallback("fallback") | Retry(2, backoff=backoff.fixed(1), clock=clock)
    async def flaky(tag: str) -> str:
        nonlocal calls
        calls += 1
        raise ConnectionError(tag)

    assert flaky.__name__ == "flaky"
    assert await flaky("x") == "fallback"
    assert calls == 2
    assert clock.sleeps == [1]


def test_a_sync_decoration_is_refused_if_any_member_cannot_run_sync() -> None:
    with pytest.raises(TypeError, match="Timeout"):

        @Retry(2) | Timeout(1)
        def blocking() -> None: ...


def test_bad_members_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Pipeline()
    with pytest.raises(TypeError, match="Policy"):
        Pipeline(Retry(), "timeout")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Retry() | 3  # type: ignore[operator]


def test_repr_lists_the_members() -> None:
    pipeline = Retry(name="r") | Timeout(1, name="t")
    retry, timeout = pipeline.policies
    assert repr(pipeline) == f"<Pipeline {pipeline.name!r}: {retry!r} | {timeout!r}>"
    assert repr(timeout) == "<Timeout 't' seconds=1.0>"


def test_decorated_methods_bind_self() -> None:
    class Service:
        def __init__(self) -> None:
            self.n = 0

        @Retry(3, backoff=backoff.immediate())
        def bump(self) -> int:
            self.n += 1
            if self.n < 2:
                raise ConnectionError
            return self.n

    assert Service().bump() == 2


def test_an_async_decoration_is_refused_if_any_member_cannot_run_async() -> None:
    pool = PoolBulkhead(1, name="blocking")
    try:
        with pytest.raises(TypeError, match="PoolBulkhead 'blocking' cannot wrap the async"):

            @Retry(2) | pool
            async def fetch() -> None: ...

        @Retry(2) | pool
        def blocking() -> int:
            return 1

        assert blocking() == 1
    finally:
        pool.close()
