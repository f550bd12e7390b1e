"""The contract between case modules and the runner.

A case module (``benchmarks/cases_<topic>.py``) defines ``cases() ->
list[Case]``. The runner discovers every such module, and for each backend a
case supports it calls ``setup()`` inside the running event loop (so loop-bound
objects are made there) and times the zero-argument callable it returns:
``await target()`` for ``kind="async"``, ``target()`` for ``kind="sync"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Backend = Literal["asyncio", "uvloop", "trio"]
ALL_BACKENDS: tuple[Backend, ...] = ("asyncio", "uvloop", "trio")
ASYNCIO_ONLY: tuple[Backend, ...] = ("asyncio", "uvloop")


@dataclass(frozen=True)
class Case:
    group: str
    """Table section, e.g. "circuit breaker, closed, success"."""
    label: str
    """Row label, e.g. "resilience CircuitBreaker" or "aiobreaker 1.2.0"."""
    setup: Callable[[], Callable[[], Any]]
    """Called once per batch inside the loop; returns the target to time."""
    kind: Literal["async", "sync"] = "async"
    backends: tuple[Backend, ...] = ALL_BACKENDS
    baseline: str = "await f()"
    """Label of the row the overhead is measured against (same backend)."""
    ours: bool = False
    """True for this library's rows: ratios are computed against them."""
    key: str = ""
    """Stable id for the JSON output and target checks, e.g. "breaker.closed"."""
