"""Run every benchmark case, on every backend, interleaved, and write the results.

Usage::

    python -m benchmarks.run [--quick] [--filter SUBSTR] [--backends asyncio,uvloop,trio]
                             [--repeats N] [--out DIR]

Method (the same as ``/work/shared/reference/peer-overhead.md``):

- every case module ``benchmarks/cases_*.py`` is imported and its ``cases()`` read;
- for each (case, backend) pair, a calibration pass picks N calls so that one
  batch lasts about ``--batch`` seconds (0.2 s; 0.02 s with ``--quick``);
- then ``--repeats`` rounds. In each round the backends run one after the other
  (the order rotates from round to round); each backend is one event loop run
  in which every case runs one batch, the case order rotating too. Sync cases
  are timed outside any loop, as the pseudo-backend "sync";
- a batch is: ``gc.collect()``, ``setup()`` inside the loop, then N calls of
  ``await target()`` (``target()`` for sync cases), yielding to the loop every
  1000 calls. µs/call = batch time / N; median, min and max over the rounds;
- overhead = median minus the median of the case's baseline on the same backend.

The whole run is kept within a time budget: if there are too many cases for the
requested batch length, batches are shortened (never below 0.05 s in full mode).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import importlib.metadata
import json
import os
import pkgutil
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cases import ALL_BACKENDS, Case

HERE = Path(__file__).resolve().parent
YIELD_EVERY = 1000
WARMUP = 20
# gc.collect() and setup() per batch, seconds (measured: 10 to 30 ms with every peer imported).
BATCH_FIXED_COST = 0.02
SYNC = "sync"

PACKAGES = (
    "resilience",
    "tenacity",
    "stamina",
    "backoff",
    "aiobreaker",
    "pybreaker",
    "circuitbreaker",
    "purgatory",
    "hyx",
    "pyresilience",
    "httpx",
    "httpx-retries",
    "httpcore",
    "anyio",
    "sniffio",
    "trio",
    "uvloop",
    "aiolimiter",
    "limits",
    "pyrate-limiter",
    "slowapi",
)


@dataclass(frozen=True)
class Target:
    key: str
    backend: str
    limit: float
    """Maximum overhead in µs over the case's own baseline."""
    what: str
    below_key: str = ""
    """If set, our median must also be below this case's median."""


@dataclass(frozen=True)
class RatioTarget:
    key: str
    backend: str
    peer_key: str
    factor: float
    what: str
    overhead: bool = False
    """Compare the overheads over each row's baseline instead of the medians
    (for rows whose baseline is most of their cost, such as a whole app)."""


@dataclass(frozen=True)
class AtMostTarget:
    """``key``'s median at most ``factor`` times ``other_key``'s (same backend, same run)."""

    key: str
    backend: str
    other_key: str
    factor: float
    what: str


# Where a row has an instruction target (benchmarks.instructions.TARGETS), its
# limit here is that target in µs: the target times the row's µs per k
# instructions measured at 8f3ebef (scaled to the reference machine): about
# 0.1 µs per k for retry, breaker and bulkhead, 0.13 for timeout, the stack and
# the ASGI middleware (so asgi.middleware.ratelimit's 3k over asgi.middleware
# is 0.4 µs). httpx.transport keeps 3.0 µs, tighter than its
# instruction target's equivalent (~0.6 µs per k there: about 7.7 µs).
TARGETS: tuple[Target, ...] = (
    Target("retry.success", "asyncio", 0.4, "retry, first attempt succeeds"),
    Target(
        "timeout.success",
        "asyncio",
        1.0,
        "timeout, not firing (and below asyncio.timeout)",
        below_key="asyncio.timeout",
    ),
    Target("breaker.closed", "asyncio", 0.45, "closed breaker, success"),
    Target("bulkhead.free", "asyncio", 0.25, "bulkhead, free permit"),
    Target("breaker.rejected", "asyncio", 1.0, "open breaker rejection (over a raise)"),
    Target("retry.three_failures", "asyncio", 5.0, "3 failed attempts, zero wait (over 3 raises)"),
    Target("stack.four", "asyncio", 2.6, "retry > breaker > timeout > bulkhead"),
    Target("stack.four", "trio", 10.0, "retry > breaker > timeout > bulkhead"),
    Target("asgi.middleware", "asyncio", 2.6, "ASGI middleware, all features (over the bare app)"),
    Target(
        "asgi.middleware.ratelimit",
        "asyncio",
        0.4,
        "ASGI middleware, all features + per-client rate limit (over asgi.middleware)",
    ),
    Target("httpx.transport", "asyncio", 3.0, "httpx AsyncResilientTransport (over plain httpx)"),
    Target("ratelimit.ours", "asyncio", 0.5, "rate limiter, admitted call"),
    Target("hedge.first", "asyncio", 2.0, "hedged call, answered before the delay"),
    Target("saga.three", "asyncio", 15.0, "saga of three async steps, all succeed (over 3 awaits)"),
    Target(
        "ratelimit.ours.keyed",
        "asyncio",
        1.0,
        "keyed rate limiter, 100 keys, admitted call (over await h(key))",
    ),
)

REFERENCE_AWAIT = 0.114
# Below this scale (a bare await more than 1.25x the reference) the run is
# taken as noisy rather than slow: noise inflates a tight loop of bare awaits
# more than larger work, so scaling by it would flatter. Judged unscaled then.
NOISY_SCALE = 0.8
"""µs for a bare ``await f()`` on the machine the targets were set on."""

RATIO_TARGETS: tuple[RatioTarget, ...] = (
    RatioTarget(
        "stack.four",
        "asyncio",
        "stack.tenacity_aiobreaker",
        10.0,
        "vs tenacity+aiobreaker+asyncio stack",
    ),
    RatioTarget("stack.four", "asyncio", "stack.hyx", 5.0, "vs hyx stack"),
    RatioTarget("stack.four", "asyncio", "stack.pyresilience", 5.0, "vs pyresilience stack"),
    # At least 3x the cheapest peer's speed: one target per peer, so whichever
    # is cheapest in a run is held to it.
    *(
        RatioTarget("ratelimit.ours", "asyncio", peer, 3.0, "rate limiter vs a peer")
        for peer in (
            "ratelimit.aiolimiter",
            "ratelimit.limits.moving",
            "ratelimit.limits.sliding",
            "ratelimit.pyrate.log",
            "ratelimit.pyrate.gcra",
        )
    ),
    RatioTarget(
        "starlette.ours.ratelimit",
        "asyncio",
        "starlette.slowapi",
        3.0,
        "per-client rate limit on a Starlette app vs slowapi (overheads over starlette.app)",
        overhead=True,
    ),
    *(
        RatioTarget("ratelimit.ours.keyed", "asyncio", peer, 3.0, "keyed rate limiter vs a peer")
        for peer in (
            "ratelimit.aiolimiter.keyed",
            "ratelimit.limits.moving.keyed",
            "ratelimit.limits.sliding.keyed",
            "ratelimit.pyrate.log.keyed",
            "ratelimit.pyrate.gcra.keyed",
        )
    ),
)

AT_MOST_TARGETS: tuple[AtMostTarget, ...] = (
    AtMostTarget(
        "breaker.many.10000",
        "asyncio",
        "breaker.many.1",
        1.1,
        "10,000 breakers round-robin vs one, per call",
    ),
)


@dataclass
class Slot:
    """One case on one backend, and what was measured for it."""

    case: Case
    module: str
    backend: str
    index: int
    n: int = 0
    us: list[float] = field(default_factory=list)
    error: str = ""

    @property
    def median(self) -> float | None:
        return statistics.median(self.us) if self.us else None


# Discovery -----------------------------------------------------------------


def discover(errors: list[str]) -> list[tuple[str, Case]]:
    """Every case of every ``benchmarks/cases_*.py``, baselines first."""
    names = sorted(
        info.name for info in pkgutil.iter_modules([str(HERE)]) if info.name.startswith("cases_")
    )
    names.sort(key=lambda name: name != "cases_baseline")
    found: list[tuple[str, Case]] = []
    for name in names:
        try:
            module = importlib.import_module(f"{__package__ or 'benchmarks'}.{name}")
            module_cases = list(module.cases())
        except Exception as exc:
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            print(f"!! {name} could not be loaded: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        for case in module_cases:
            if not isinstance(case, Case):
                errors.append(f"{name}: not a Case: {case!r}")
                continue
            found.append((name, case))
    return found


def select(found: list[tuple[str, Case]], needle: str) -> list[tuple[str, Case]]:
    """Cases matching ``needle`` (case-insensitive), plus the baselines they need."""
    if not needle:
        return found
    needle = needle.lower()

    def hit(module: str, case: Case) -> bool:
        text = f"{module} {case.group} {case.label} {case.key}".lower()
        return needle in text

    chosen = [(m, c) for m, c in found if hit(m, c)]
    wanted = {c.baseline for _, c in chosen}
    return [(m, c) for m, c in found if hit(m, c) or c.label in wanted]


# Backends --------------------------------------------------------------------


def available_backends(requested: Sequence[str]) -> tuple[list[str], list[str]]:
    ok: list[str] = []
    notes: list[str] = []
    for backend in requested:
        if backend not in ALL_BACKENDS:
            raise SystemExit(f"unknown backend {backend!r}; choose from {', '.join(ALL_BACKENDS)}")
        module = {"uvloop": "uvloop", "trio": "trio"}.get(backend)
        if module is not None:
            try:
                importlib.import_module(module)
            except ImportError:
                notes.append(f"{backend}: not installed, skipped")
                continue
        ok.append(backend)
    return ok, notes


def run_in_loop(backend: str, main: Callable[[], Any]) -> None:
    """Run the coroutine function ``main`` to completion on a fresh loop of ``backend``."""
    if backend == "trio":
        import trio

        trio.run(main)
    elif backend == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    else:
        with asyncio.Runner() as runner:
            runner.run(main())


def checkpoint_for(backend: str) -> Callable[[], Any]:
    if backend == "trio":
        import trio

        return trio.lowlevel.checkpoint

    async def sleep0() -> None:
        await asyncio.sleep(0)

    return sleep0


# Timing ----------------------------------------------------------------------

_perf = time.perf_counter


async def time_async(target: Callable[[], Any], n: int, checkpoint: Callable[[], Any]) -> float:
    """Seconds for ``n`` awaited calls, yielding to the loop every 1000 (included)."""
    left = n
    start = _perf()
    while left > 0:
        chunk = YIELD_EVERY if left > YIELD_EVERY else left
        for _ in range(chunk):
            await target()
        left -= chunk
        await checkpoint()
    return _perf() - start


def time_sync(target: Callable[[], Any], n: int) -> float:
    start = _perf()
    for _ in range(n):
        target()
    return _perf() - start


def next_n(n: int, elapsed: float, goal: float) -> int:
    """The call count that should take ``goal`` seconds, given ``n`` took ``elapsed``."""
    if elapsed <= 0:
        return n * 100
    return max(1, round(n * goal / elapsed))


@dataclass(frozen=True)
class Plan:
    batch: float
    calibrate: float
    repeats: int


async def calibrate_async(slot: Slot, plan: Plan, checkpoint: Callable[[], Any]) -> None:
    gc.collect()
    target = slot.case.setup()
    # Warm up first (lazy imports, first-call caches), then grow n from 1.
    spent = 0.0
    for _ in range(WARMUP):
        spent += await time_async(target, 1, checkpoint)
        if spent > plan.calibrate:
            break
    n = 1
    elapsed = await time_async(target, n, checkpoint)
    while elapsed < plan.calibrate:
        n = min(max(next_n(n, elapsed, plan.calibrate * 1.1), n * 2), n * 100)
        elapsed = await time_async(target, n, checkpoint)
    slot.n = next_n(n, elapsed, plan.batch)


def calibrate_sync(slot: Slot, plan: Plan) -> None:
    gc.collect()
    target = slot.case.setup()
    spent = 0.0
    for _ in range(WARMUP):
        spent += time_sync(target, 1)
        if spent > plan.calibrate:
            break
    n = 1
    elapsed = time_sync(target, n)
    while elapsed < plan.calibrate:
        n = min(max(next_n(n, elapsed, plan.calibrate * 1.1), n * 2), n * 100)
        elapsed = time_sync(target, n)
    slot.n = next_n(n, elapsed, plan.batch)


def rotated(slots: Sequence[Slot], round_no: int, repeats: int) -> list[Slot]:
    if not slots:
        return []
    step = max(1, len(slots) // max(1, repeats))
    shift = (round_no * step) % len(slots)
    return [*slots[shift:], *slots[:shift]]


def _fail(slot: Slot, exc: BaseException) -> None:
    slot.error = f"{type(exc).__name__}: {exc}"
    where = traceback.format_exception(exc)[-2].strip().splitlines()[0] if exc.__traceback__ else ""
    print(
        f"!! [{slot.backend}] {slot.case.group} / {slot.case.label}: {slot.error} ({where})",
        file=sys.stderr,
    )


def run_round(backend: str, slots: Sequence[Slot], plan: Plan, calibrating: bool) -> None:
    """One loop run (or, for sync cases, one plain pass) over ``slots`` in the given order."""
    if backend == SYNC:
        for slot in slots:
            if slot.error:
                continue
            try:
                if calibrating:
                    calibrate_sync(slot, plan)
                else:
                    gc.collect()
                    target = slot.case.setup()
                    slot.us.append(time_sync(target, slot.n) / slot.n * 1e6)
            except Exception as exc:
                _fail(slot, exc)
        return

    checkpoint = checkpoint_for(backend)

    async def main() -> None:
        for slot in slots:
            if slot.error:
                continue
            try:
                if calibrating:
                    await calibrate_async(slot, plan, checkpoint)
                else:
                    gc.collect()
                    target = slot.case.setup()
                    elapsed = await time_async(target, slot.n, checkpoint)
                    slot.us.append(elapsed / slot.n * 1e6)
            except Exception as exc:
                _fail(slot, exc)

    run_in_loop(backend, main)


# Results -----------------------------------------------------------------------


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|")


def fmt_us(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:.1f}"
    if value >= 10:
        return f"{value:.2f}"
    return f"{value:.3f}"


def fmt_signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.3f}"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}x" if value >= 10 else f"{value:.2f}x"


def analyse(slots: Sequence[Slot]) -> list[dict[str, Any]]:
    """One row per slot with median/min/max, overhead and ratio to ours."""
    by_label: dict[tuple[str, str], Slot] = {}
    for slot in slots:
        by_label.setdefault((slot.backend, slot.case.label), slot)
    ours_of_group: dict[tuple[str, str], Slot] = {}
    for slot in slots:
        if slot.case.ours and slot.us:
            ours_of_group.setdefault((slot.backend, slot.case.group), slot)
    rows: list[dict[str, Any]] = []
    for slot in slots:
        case = slot.case
        median = slot.median
        base = by_label.get((slot.backend, case.baseline))
        base_median = base.median if base is not None else None
        overhead = median - base_median if median is not None and base_median is not None else None
        ours = ours_of_group.get((slot.backend, case.group))
        ours_median = ours.median if ours is not None else None
        ours_overhead = None
        if ours is not None and ours_median is not None:
            ours_base = by_label.get((slot.backend, ours.case.baseline))
            if ours_base is not None and ours_base.median is not None:
                ours_overhead = ours_median - ours_base.median
        rows.append(
            {
                "backend": slot.backend,
                "module": slot.module,
                "group": case.group,
                "label": case.label,
                "key": case.key,
                "ours": case.ours,
                "kind": case.kind,
                "baseline": case.baseline,
                "n": slot.n,
                "us_per_call": [round(v, 5) for v in slot.us],
                "median": median,
                "min": min(slot.us) if slot.us else None,
                "max": max(slot.us) if slot.us else None,
                "baseline_median": base_median,
                "overhead": overhead,
                "ratio_to_baseline": (
                    median / base_median if median is not None and base_median else None
                ),
                "ours_label": ours.case.label if ours is not None else None,
                "ratio_to_ours": (
                    median / ours_median if median is not None and ours_median else None
                ),
                "overhead_ratio_to_ours": (
                    overhead / ours_overhead
                    if overhead is not None and ours_overhead is not None and ours_overhead > 0
                    else None
                ),
                "error": slot.error or None,
            }
        )
    return rows


def _row_for(rows: Iterable[dict[str, Any]], key: str, backend: str) -> dict[str, Any] | None:
    for row in rows:
        if row["key"] == key and row["backend"] == backend and row["median"] is not None:
            return row
    return None


def scale_for(rows: Sequence[dict[str, Any]], backend: str) -> float | None:
    """Reference bare-await cost over this run's, on ``backend`` (None if unmeasured).

    The machine may be slower (or loaded by other work) than the one the
    targets were set on; scaling by the bare await, measured in the same run
    and interleaved with every other case, judges the ratio, not the machine.
    """
    bare = _row_for(rows, "baseline.await", backend)
    if bare is None or not bare["median"]:
        return None
    return REFERENCE_AWAIT / float(bare["median"])


def check_targets(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for target in TARGETS:
        row = _row_for(rows, target.key, target.backend)
        scale = scale_for(rows, target.backend)
        entry: dict[str, Any] = {
            "key": target.key,
            "backend": target.backend,
            "what": target.what,
            "target": f"≤ {target.limit} µs over {row['baseline'] if row else 'its baseline'}",
            "measured": None,
            "status": "not measured",
        }
        if row is not None and row["overhead"] is not None:
            overhead = row["overhead"]
            entry["measured"] = overhead
            scaled = overhead * scale if scale is not None else overhead
            entry["scaled"] = scaled
            noisy = scale is not None and scale < NOISY_SCALE
            ok = (overhead if noisy else scaled) <= target.limit
            detail = (
                f"{overhead:+.3f} µs (median {fmt_us(row['median'])}); "
                f"scaled to the reference machine {scaled:+.3f} µs"
            )
            if noisy and scale is not None:
                detail += f" (bare await {1 / scale:.2f}x the reference: noisy, judged unscaled)"
            if target.below_key:
                other = _row_for(rows, target.below_key, target.backend)
                if other is None:
                    detail += f"; {target.below_key} not measured"
                else:
                    below = row["median"] < other["median"]
                    ok = ok and below
                    detail += (
                        f"; {target.below_key} {fmt_us(other['median'])} µs: "
                        f"{'below' if below else 'NOT below'}"
                    )
            entry["detail"] = detail
            entry["status"] = "ok" if ok else "MISSED"
        results.append(entry)
    for ratio in RATIO_TARGETS:
        row = _row_for(rows, ratio.key, ratio.backend)
        peer = _row_for(rows, ratio.peer_key, ratio.backend)
        field = "overhead" if ratio.overhead else "median"
        entry = {
            "key": ratio.key,
            "backend": ratio.backend,
            "what": ratio.what,
            "target": f"≥ {ratio.factor:g}x faster than {ratio.peer_key} ({field})",
            "measured": None,
            "status": "not measured",
        }
        if (
            row is not None
            and peer is not None
            and row[field] is not None
            and peer[field] is not None
        ):
            ours, theirs = row[field], peer[field]
            factor = theirs / ours if ours > 0 else float("inf")
            entry["measured"] = factor
            entry["detail"] = f"{factor:.1f}x ({fmt_us(theirs)} vs {fmt_us(ours)} µs)"
            entry["status"] = "ok" if factor >= ratio.factor else "MISSED"
        results.append(entry)
    for bound in AT_MOST_TARGETS:
        row = _row_for(rows, bound.key, bound.backend)
        other = _row_for(rows, bound.other_key, bound.backend)
        entry = {
            "key": bound.key,
            "backend": bound.backend,
            "what": bound.what,
            "target": f"≤ {bound.factor:g}x {bound.other_key} (median)",
            "measured": None,
            "status": "not measured",
        }
        if row is not None and other is not None:
            factor = row["median"] / other["median"]
            entry["measured"] = factor
            entry["detail"] = (
                f"{factor:.2f}x ({fmt_us(row['median'])} vs {fmt_us(other['median'])} µs)"
            )
            entry["status"] = "ok" if factor <= bound.factor else "MISSED"
        results.append(entry)
    return results


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def machine() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
    }


BACKEND_TITLES = {
    "asyncio": "asyncio (default event loop)",
    "uvloop": "asyncio on uvloop",
    "trio": "trio",
    SYNC: "sync (no event loop)",
}


def render_markdown(
    meta: dict[str, Any], rows: Sequence[dict[str, Any]], targets: Sequence[dict[str, Any]]
) -> str:
    out: list[str] = []
    out.append("# Benchmark results")
    out.append("")
    out.append(
        f"Generated by `python -m benchmarks.run {' '.join(meta['argv'])}`".rstrip()
        + f" on {meta['date']}, {meta['wall_seconds']:.0f} s wall, mode: {meta['mode']}."
    )
    out.append("")
    out.append(
        f"- machine: {meta['machine']['platform']}, {meta['machine']['cpu_count']} CPUs "
        f"({meta['machine']['usable_cpus']} usable), {meta['machine']['python']}"
    )
    out.append(
        f"- method: N calibrated per case for ~{meta['batch_seconds']:g} s per batch; "
        f"{meta['repeats']} repeats, backends and cases interleaved round-robin in rotating order; "
        "`gc.collect()` before each batch; the loop gets a checkpoint every 1000 calls (included); "
        "µs/call = batch time / N; median/min/max over repeats."
    )
    out.append(
        "- **overhead** = median minus the median of the row's baseline on the same backend. "
        "**x ours** = this row's median divided by the median of our first row in the same group "
        "(higher is slower than us); **x ours (overhead)** divides the overheads instead."
    )
    if meta.get("filter"):
        out.append(f"- partial run: only cases matching `{meta['filter']}` (and their baselines).")
    out.append("")
    out.append("## Targets")
    out.append("")
    bare = _row_for(rows, "baseline.await", "asyncio")
    if bare is not None:
        out.append(
            f"The targets were set on a machine where a bare `await f()` costs 0.114 µs; "
            f"here it costs {fmt_us(bare['median'])} µs on asyncio, so absolute figures "
            f"scale by about {bare['median'] / REFERENCE_AWAIT:.2f}."
        )
        out.append("")
    out.append(
        "Each overhead is also shown scaled by (reference bare await 0.114 µs / this run's bare "
        "await on the same backend), which removes the machine's speed and load from the "
        "comparison; **status is judged on the scaled figure**, unless the bare await costs "
        "more than 1.25x the reference: such a run is taken as noisy (noise inflates a tight "
        "loop more than larger work) and judged on the unscaled figure. Ratio targets "
        "(at least Nx faster than a peer, at most Nx another row of ours) compare medians "
        "measured side by side and need no scaling."
    )
    out.append("")
    out.append("| key | backend | what | target | measured | status |")
    out.append("|---|---|---|---|---|---|")
    for entry in targets:
        out.append(
            f"| `{entry['key']}` | {entry['backend']} | {cell(entry['what'])} | "
            f"{cell(entry['target'])} | {cell(entry.get('detail', '—'))} | {entry['status']} |"
        )
    out.append("")
    backends = [b for b in [*ALL_BACKENDS, SYNC] if any(r["backend"] == b for r in rows)]
    for backend in backends:
        out.append(f"## {BACKEND_TITLES[backend]}")
        out.append("")
        out.append(
            "| group | case | µs/call median | min | max | baseline | overhead µs | x ours | x ours (overhead) |"
        )
        out.append("|---|---|---:|---:|---:|---|---:|---:|---:|")
        for row in rows:
            if row["backend"] != backend:
                continue
            label = f"**{cell(row['label'])}**" if row["ours"] else cell(row["label"])
            if row["error"]:
                out.append(
                    f"| {cell(row['group'])} | {label} | error: {cell(row['error'])} | | | | | | |"
                )
                continue
            base = "—" if row["baseline"] == row["label"] else f"`{cell(row['baseline'])}`"
            out.append(
                f"| {cell(row['group'])} | {label} | {fmt_us(row['median'])} | {fmt_us(row['min'])} | "
                f"{fmt_us(row['max'])} | {base} | {fmt_signed(row['overhead'])} | "
                f"{fmt_ratio(row['ratio_to_ours'])} | {fmt_ratio(row['overhead_ratio_to_ours'])} |"
            )
        out.append("")
    out.append("## Library versions")
    out.append("")
    out.append("```")
    out.extend(f"{name}=={version}" for name, version in meta["versions"].items())
    out.append("```")
    if meta.get("memory"):
        from .memory import render_markdown as render_memory

        out.append("")
        out.append(render_memory(meta["memory"]).rstrip())
    if meta["errors"]:
        out.append("")
        out.append("## Errors")
        out.append("")
        out.extend(f"- {error}" for error in meta["errors"])
    if meta["notes"]:
        out.append("")
        out.append("## Notes")
        out.append("")
        out.extend(f"- {note}" for note in meta["notes"])
    out.append("")
    return "\n".join(out)


def print_targets(targets: Sequence[dict[str, Any]]) -> None:
    print("\ntargets")
    for entry in targets:
        measured = entry.get("detail", "not measured")
        print(
            f"  {entry['status']:<12} {entry['key']:<22} {entry['backend']:<8} "
            f"{entry['target']:<44} {measured}"
        )


def print_summary(rows: Sequence[dict[str, Any]]) -> None:
    print()
    backend = None
    for row in rows:
        if row["backend"] != backend:
            backend = row["backend"]
            print(f"\n{BACKEND_TITLES[backend]}")
        if row["error"]:
            print(f"  {row['label'][:70]:<70} error: {row['error']}")
            continue
        mark = "*" if row["ours"] else " "
        print(
            f" {mark}{row['label'][:70]:<70} {fmt_us(row['median']):>9} µs "
            f"{fmt_signed(row['overhead']):>9}  {fmt_ratio(row['ratio_to_ours']):>7}"
        )


# Main -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="short batches and 3 repeats (~1 min)")
    parser.add_argument(
        "--filter", default="", help="only cases whose module/group/label/key contains this"
    )
    parser.add_argument(
        "--backends", default=",".join(ALL_BACKENDS), help="comma-separated: asyncio,uvloop,trio"
    )
    parser.add_argument("--repeats", type=int, default=None, help="rounds (default 7, quick 3)")
    parser.add_argument(
        "--batch", type=float, default=None, help="seconds per batch (default 0.2, quick 0.02)"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds for the timed rounds (default 300, quick 40)",
    )
    parser.add_argument(
        "--out",
        default=str(HERE.parent / ".bench"),
        help="directory for RESULTS.md and results.json (default .bench/, ignored by git; "
        "--out benchmarks refreshes the committed tables on purpose)",
    )
    parser.add_argument("--list", action="store_true", help="list the selected cases and exit")
    parser.add_argument(
        "--memory",
        choices=("auto", "on", "off"),
        default="auto",
        help="run benchmarks.memory too (auto: in full mode without --filter)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    repeats = args.repeats or (3 if args.quick else 7)
    batch = args.batch or (0.02 if args.quick else 0.2)
    budget = args.budget or (40.0 if args.quick else 300.0)
    floor = 0.005 if args.quick else 0.05

    errors: list[str] = []
    backends, notes = available_backends([b for b in args.backends.split(",") if b])
    found = select(discover(errors), args.filter)

    if args.list:
        for module, case in found:
            where = SYNC if case.kind == "sync" else ",".join(case.backends)
            key = f" [{case.key}]" if case.key else ""
            print(f"{module:<22} {case.group} / {case.label}{key}  ({where})")
        return 0

    slots: dict[str, list[Slot]] = {b: [] for b in [*backends, SYNC]}
    for index, (module, case) in enumerate(found):
        if case.kind == "sync":
            slots[SYNC].append(Slot(case, module, SYNC, index))
            continue
        for backend in case.backends:
            if backend in slots:
                slots[backend].append(Slot(case, module, backend, index))
    order = [b for b in [*backends, SYNC] if slots[b]]
    total = sum(len(slots[b]) for b in order)
    if total == 0:
        print("no cases selected", file=sys.stderr)
        return 1
    if total * repeats * (batch + BATCH_FIXED_COST) > budget:
        shortened = max(floor, budget / (total * repeats) - BATCH_FIXED_COST)
        notes.append(
            f"{total} case-backend pairs x {repeats} repeats: batches shortened from {batch:g} s "
            f"to {shortened:.3f} s to fit the {budget:g} s budget"
        )
        batch = shortened
    plan = Plan(batch=batch, calibrate=max(batch / 4, 0.005), repeats=repeats)
    print(
        f"{total} case-backend pairs on {', '.join(order)}; {repeats} repeats of ~{batch:g} s "
        f"batches (estimated {total * repeats * (batch + BATCH_FIXED_COST) + total * 3 * plan.calibrate:.0f} s)",
        flush=True,
    )

    for backend in order:
        t0 = time.perf_counter()
        run_round(backend, slots[backend], plan, calibrating=True)
        print(f"  calibrated {backend:<8} {time.perf_counter() - t0:6.1f} s", flush=True)
    for round_no in range(repeats):
        shift = round_no % len(order)
        for backend in [*order[shift:], *order[:shift]]:
            t0 = time.perf_counter()
            run_round(backend, rotated(slots[backend], round_no, repeats), plan, calibrating=False)
            print(
                f"  round {round_no + 1}/{repeats} {backend:<8} {time.perf_counter() - t0:6.1f} s",
                flush=True,
            )

    memory: dict[str, Any] | None = None
    if args.memory == "on" or (args.memory == "auto" and not args.quick and not args.filter):
        from .memory import run as run_memory

        t0 = time.perf_counter()
        try:
            memory = run_memory()
        except Exception as exc:
            errors.append(f"memory: {type(exc).__name__}: {exc}")
        print(f"  memory            {time.perf_counter() - t0:6.1f} s", flush=True)

    ordered = sorted(
        (slot for backend in order for slot in slots[backend]),
        key=lambda s: ([*ALL_BACKENDS, SYNC].index(s.backend), s.index),
    )
    # Rows grouped by group (first appearance), then in discovery order.
    group_rank: dict[str, int] = {}
    for slot in ordered:
        group_rank.setdefault(slot.case.group, len(group_rank))
    ordered.sort(
        key=lambda s: ([*ALL_BACKENDS, SYNC].index(s.backend), group_rank[s.case.group], s.index)
    )
    rows = analyse(ordered)
    targets = check_targets(rows)
    errors.extend(
        f"[{s.backend}] {s.case.group} / {s.case.label}: {s.error}" for s in ordered if s.error
    )
    wall = time.perf_counter() - started
    meta = {
        "argv": list(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "mode": "quick" if args.quick else "full",
        "filter": args.filter,
        "repeats": repeats,
        "batch_seconds": round(batch, 4),
        "wall_seconds": wall,
        "backends": order,
        "machine": machine(),
        "versions": versions(),
        "errors": errors,
        "notes": notes,
        "memory": memory,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps(
            {"meta": meta, "targets": targets, "results": rows}, indent=1, ensure_ascii=False
        )
        + "\n"
    )
    (out / "RESULTS.md").write_text(render_markdown(meta, rows, targets))
    print_summary(rows)
    print_targets(targets)
    print(f"\nwrote {out / 'RESULTS.md'} and {out / 'results.json'} in {wall:.0f} s")
    if errors:
        print(f"{len(errors)} error(s): see the Errors section of RESULTS.md", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
