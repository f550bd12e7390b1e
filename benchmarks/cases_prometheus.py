"""Prometheus: the success paths of Retry, CircuitBreaker, Bulkhead and
Timeout with ``instrument()`` on and off, and the cost of one scrape.

With the default ``durations=False`` the exporter only reads the policies'
counters at scrape time, so the "on" rows must match the "off" rows (the
target is within 5 %). Each "on" row instruments a fresh registry before
building its policy, as an application would at start-up. The opt-in
duration histogram patches the policy classes for the whole process, so it
has no row here: it would leak into the cases that run after it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .cases import Case
from .cases_baseline import f, g

__all__ = ["cases"]

SUCCESS = "prometheus, instrument() on vs off (success path)"
SCRAPE = "prometheus, one scrape (sync)"

Target = Callable[[], Any]


def _instrument() -> None:
    from prometheus_client import CollectorRegistry

    from resilience.contrib.prometheus import instrument

    instrument(CollectorRegistry())


def _retry(on: bool) -> Target:
    from resilience import Retry

    if on:
        _instrument()
    return Retry(3)(f)


def _breaker(on: bool) -> Target:
    from resilience import CircuitBreaker

    if on:
        _instrument()
    return CircuitBreaker()(f)


def _bulkhead(on: bool) -> Target:
    from resilience import Bulkhead

    if on:
        _instrument()
    return Bulkhead(10)(f)


def _timeout(on: bool) -> Target:
    from resilience import Timeout

    if on:
        _instrument()
    return Timeout(10)(f)


def _scrape_100() -> Target:
    """generate_latest over one registry whose collector reads exactly 100
    breakers, retries, bulkheads and timeouts: 400 policies, not the
    thousands of others the run keeps alive."""
    from prometheus_client import CollectorRegistry, generate_latest

    from resilience import Bulkhead, CircuitBreaker, Retry, Timeout
    from resilience.contrib.prometheus import ResilienceCollector

    policies = [
        policy
        for n in range(100)
        for policy in (CircuitBreaker(f"b{n}"), Retry(name=f"r{n}"), Bulkhead(1), Timeout(1))
    ]
    registry = CollectorRegistry()
    registry.register(ResilienceCollector(policies=lambda: policies))

    def target() -> bytes:
        return generate_latest(registry)

    return target


def cases() -> list[Case]:
    found: list[Case] = []
    for kind, make in (
        ("retry", _retry),
        ("breaker", _breaker),
        ("bulkhead", _bulkhead),
        ("timeout", _timeout),
    ):
        for on in (False, True):
            state = "on" if on else "off"
            found.append(
                Case(
                    SUCCESS,
                    f"resilience {kind}, instrument() {state}",
                    functools.partial(make, on),
                    ours=True,
                    key=f"prometheus.{kind}.{state}",
                )
            )
    found.append(
        Case(
            SCRAPE,
            "generate_latest, 400 policies",
            _scrape_100,
            kind="sync",
            baseline="g()",
            ours=True,
            key="prometheus.scrape.400",
        )
    )
    _ = g  # the sync baseline row this module measures against
    return found
