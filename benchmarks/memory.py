"""Memory: bytes per policy object, and a soak of the four-policy stack.

Usage::

    python -m benchmarks.memory [--calls N] [--json PATH]

- **bytes per policy**: ``tracemalloc`` measures what building 1,000 policies
  of one kind allocates (their registry entries included), divided by 1,000;
  for the breaker, also after each one has served 200 calls (its window
  filled with outcomes); for a breaker on ``CountWindow(10_000)``, built and
  after 10,000 calls (its whole window filled; 20 of them, not 1,000); and
  for the four-policy pipeline ``Retry(3) | CircuitBreaker() | Timeout(10) |
  Bulkhead(10)`` (its four policies included);
- **targets** (``TARGETS``): the most bytes one such object may hold, each
  reported as "met" or "missed" (1 KB = 1,000 bytes);
- **soak**: ``--calls`` (default 10^6) calls through
  ``Retry(3, backoff=immediate()) | CircuitBreaker() | Timeout(10) |
  Bulkhead(10)`` on asyncio, where every 20th attempt raises (5 %, each one
  retried at once). RSS (``/proc/self/statm``), the memory traced by
  ``tracemalloc`` and the number of objects the GC tracks are read at 0,
  1/4, 1/2 and all of the calls; memory that stays flat means nothing is
  kept per call.

``python -m benchmarks.run`` runs this module in full mode and adds its
figures to ``RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

__all__ = ["bytes_per_policy", "check_targets", "main", "render_markdown", "run", "soak"]

COUNT = 1_000
BIG_COUNT = 20
"""Objects built for the rows with a 10,000-call window (each is filled by 10,000 calls)."""

BIG_WINDOW = "CircuitBreaker(window=CountWindow(10_000))"
BIG_WINDOW_USED = f"{BIG_WINDOW} after 10,000 calls"
PIPELINE = "Retry(3) | CircuitBreaker() | Timeout(10) | Bulkhead(10)"

TARGETS: dict[str, int] = {
    BIG_WINDOW: 20_000,
    BIG_WINDOW_USED: 20_000,
    "Retry(3)": 1_500,
    PIPELINE: 4_000,
}
"""Targets: the most bytes one object of a row (its label) may hold."""


def _rss() -> int:
    """Resident set size in bytes (Linux), or 0 where /proc is missing."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, IndexError, ValueError):  # pragma: no cover - not Linux
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def _measure(build: Callable[[], Any], count: int = COUNT) -> float:
    """Bytes allocated and still held per object built by ``build`` (``count`` built)."""
    keep: list[Any] = [build() for _ in range(min(10, count))]  # warm caches and imports
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        keep = [build() for _ in range(count)]
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del keep
    return (after - before) / count


def _g() -> int:
    return 1


def _used_breaker() -> Any:
    from resilience import CircuitBreaker

    breaker = CircuitBreaker()
    for _ in range(200):
        breaker.call_sync(_g)
    return breaker


def _used_big_window_breaker() -> Any:
    from resilience import CircuitBreaker, CountWindow

    breaker = CircuitBreaker(window=CountWindow(10_000))
    for _ in range(10_000):
        breaker.call_sync(_g)
    return breaker


def _pipeline() -> Any:
    from resilience import Bulkhead, CircuitBreaker, Retry, Timeout

    return Retry(3) | CircuitBreaker() | Timeout(10) | Bulkhead(10)


def bytes_per_policy() -> dict[str, float]:
    from resilience import Bulkhead, CircuitBreaker, CountWindow, Retry, Timeout, TimeWindow

    builds: dict[str, tuple[Callable[[], Any], int]] = {
        "CircuitBreaker()": (CircuitBreaker, COUNT),
        "CircuitBreaker(window=CountWindow(100))": (
            lambda: CircuitBreaker(window=CountWindow(100)),
            COUNT,
        ),
        BIG_WINDOW: (lambda: CircuitBreaker(window=CountWindow(10_000)), BIG_COUNT),
        BIG_WINDOW_USED: (_used_big_window_breaker, BIG_COUNT),
        "CircuitBreaker(window=TimeWindow(60))": (
            lambda: CircuitBreaker(window=TimeWindow(60)),
            COUNT,
        ),
        "CircuitBreaker() after 200 calls": (_used_breaker, COUNT),
        "Bulkhead(10)": (lambda: Bulkhead(10), COUNT),
        "Retry(3)": (lambda: Retry(3), COUNT),
        "Timeout(10)": (lambda: Timeout(10), COUNT),
        PIPELINE: (_pipeline, COUNT),
    }
    return {label: round(_measure(build, count)) for label, (build, count) in builds.items()}


def check_targets(sizes: dict[str, float]) -> list[dict[str, Any]]:
    """One entry per target: its limit, the bytes measured, and "met", "missed" or "not measured"."""
    out: list[dict[str, Any]] = []
    for label, limit in TARGETS.items():
        measured = sizes.get(label)
        status = "not measured"
        if measured is not None:
            status = "met" if measured <= limit else "missed"
        out.append({"label": label, "limit": limit, "measured": measured, "status": status})
    return out


async def _soak(calls: int, marks: list[int]) -> list[dict[str, Any]]:
    from resilience import Bulkhead, CircuitBreaker, Retry, Timeout, backoff

    attempts = 0

    async def work() -> int:
        nonlocal attempts
        attempts += 1
        if attempts % 20 == 0:
            raise ConnectionError("injected")
        return 1

    stack = Retry(3, backoff=backoff.immediate()) | CircuitBreaker() | Timeout(10) | Bulkhead(10)
    wrapped = stack(work)
    points: list[dict[str, Any]] = []
    done = 0
    started = time.perf_counter()
    for mark in marks:
        while done < mark:
            chunk = min(1000, mark - done)
            for _ in range(chunk):
                await wrapped()
            done += chunk
            await asyncio.sleep(0)
        gc.collect()
        points.append(
            {
                "calls": done,
                "rss_bytes": _rss(),
                "traced_bytes": tracemalloc.get_traced_memory()[0],
                "gc_objects": len(gc.get_objects()),
                "seconds": round(time.perf_counter() - started, 2),
            }
        )
    points[-1]["attempts"] = attempts
    points[-1]["injected_failures"] = attempts // 20
    return points


def soak(calls: int) -> list[dict[str, Any]]:
    marks = [0, calls // 4, calls // 2, calls]
    gc.collect()
    tracemalloc.start()
    try:
        return asyncio.run(_soak(calls, marks))
    finally:
        tracemalloc.stop()


def run(calls: int = 1_000_000) -> dict[str, Any]:
    started = time.perf_counter()
    sizes = bytes_per_policy()
    points = soak(calls)
    return {
        "bytes_per_policy": sizes,
        "targets": check_targets(sizes),
        "soak": points,
        "soak_calls": calls,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|")


def _kib(value: int) -> str:
    return f"{value / 1024:,.0f} KiB"


def render_markdown(memory: dict[str, Any]) -> str:
    out = ["## Memory", ""]
    out.append(
        f"Measured by `python -m benchmarks.memory` ({memory['seconds']:g} s). "
        f"Bytes per policy: `tracemalloc`, {COUNT:,} built, registry entries included."
    )
    out.append("")
    out.append("| policy | bytes each |")
    out.append("|---|---:|")
    for label, size in memory["bytes_per_policy"].items():
        out.append(f"| `{_cell(label)}` | {size:,.0f} |")
    out.append("")
    targets = memory.get("targets") or check_targets(memory["bytes_per_policy"])
    out.append("Targets (1 KB = 1,000 bytes):")
    out.append("")
    out.append("| object | target: bytes at most | bytes | status |")
    out.append("|---|---:|---:|---|")
    for entry in targets:
        measured = "—" if entry["measured"] is None else f"{entry['measured']:,.0f}"
        out.append(
            f"| `{_cell(entry['label'])}` | {entry['limit']:,} ({entry['limit'] / 1000:g} KB) | "
            f"{measured} | {entry['status']} |"
        )
    out.append("")
    points = memory["soak"]
    last = points[-1]
    out.append(
        f"Soak: {memory['soak_calls']:,} calls through `Retry(3, backoff=immediate()) | "
        f"CircuitBreaker() | Timeout(10) | Bulkhead(10)` on asyncio, every 20th attempt "
        f"failing ({last.get('injected_failures', 0):,} failures injected and retried, "
        f"{last.get('attempts', 0):,} attempts), `tracemalloc` on."
    )
    out.append("")
    out.append("| calls | RSS | traced by tracemalloc | GC-tracked objects | elapsed s |")
    out.append("|---:|---:|---:|---:|---:|")
    for point in points:
        out.append(
            f"| {point['calls']:,} | {_kib(point['rss_bytes'])} | {_kib(point['traced_bytes'])} | "
            f"{point['gc_objects']:,} | {point['seconds']:g} |"
        )
    first = points[0]
    out.append("")
    out.append(
        f"Growth from 0 to {last['calls']:,} calls: RSS "
        f"{(last['rss_bytes'] - first['rss_bytes']) / 1024:+,.0f} KiB, traced "
        f"{(last['traced_bytes'] - first['traced_bytes']) / 1024:+,.1f} KiB, GC objects "
        f"{last['gc_objects'] - first['gc_objects']:+,}."
    )
    out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__)
    parser.add_argument("--calls", type=int, default=1_000_000, help="soak length (default 10^6)")
    parser.add_argument("--json", default="", help="also write the figures to this file")
    args = parser.parse_args(argv)
    memory = run(args.calls)
    print(render_markdown(memory))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(memory, out, indent=1)
            out.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
