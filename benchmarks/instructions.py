"""CPU instructions per call, counted by valgrind's callgrind: deterministic.

Why instructions. This VM is shared and has two CPUs; wall-clock timings of
the same case move by more than the few percent we want to resolve. The
number of instructions a process executes does not depend on its neighbours:
callgrind counts them per process, and repeat runs here give the same count
to the instruction (see the fixed child environment below).
Instructions are the work done, not the time taken: they do not count cache
misses, branch mispredictions or time spent in the kernel, so a change that
executes fewer instructions but misses the cache more can still be slower.
Use them to compare the work two code paths do, and ``make bench`` /
``make bench-wrk`` for time.

Method:

- each case is one of the runner's cases (:mod:`benchmarks.run`), found by its
  key in its ``benchmarks/cases_*.py`` module and built the same way: on a
  fresh asyncio loop (``asyncio.run``), ``gc.collect()``, ``setup()`` inside
  the loop, one warm-up ``await target()``, then N calls through
  :func:`benchmarks.run.time_async` (``await target()``, with an
  ``asyncio.sleep(0)`` every 1000 calls, as the runner does);
- that child program (``python -m benchmarks.instructions --child KEY N``) is
  run twice under ``valgrind --tool=callgrind --callgrind-out-file=/dev/null``,
  with N small (2,000) and N large (12,000), and the total instruction count
  (``Collected : <Ir>`` on valgrind's stderr) is read from each run;
- instructions per call = (Ir(N large) - Ir(N small)) / (N large - N small).
  The difference cancels everything both runs share: interpreter start-up,
  imports, ``setup()``, the warm-up call and the loop's start and end.
  Garbage collections are part of a call's work but come in lumps: the ASGI
  and stack rows trigger none, while the httpx rows run a full collection
  between N=2,000 and N=7,000 and none between 7,000 and 12,000, so their
  per-call counts move by ~0.3% (about 2k) with the choice of N. The httpx
  rows move alike, so the extra between them moves much less;
- the child gets a fixed environment (``CHILD_ENV``: ``PYTHONHASHSEED=0``,
  a fixed ``PATH`` and locale, nothing inherited) and N zero-padded to a fixed
  width, so its argv and environment, and with them its memory layout, are the
  same whoever starts it (a shell, ``make``, ``nohup``). That matters: string
  hashes depend on the seed, and objects hashed by address (contextvars,
  weak dictionaries, sets of objects) probe dicts differently when the
  layout moves. With an inherited environment, the same child's total moved
  by up to 0.06% between invocations; with this one, repeat runs give the
  same count to the instruction, from a shell or from ``make``. This fixes
  one layout, it does not average over layouts: the ASGI and stack rows
  hardly depend on it (within 0.1k), but the httpx rows do, by a few k per
  call (httpx.transport's extra over plain httpx was 21.6k to 27.5k across
  the layouts seen), so compare httpx figures only from the same checkout
  path, Python and environment settings here;
- before any valgrind run, each selected child runs once natively with N=1,
  which checks it works and writes any missing ``.pyc`` file; the valgrind
  runs then have ``PYTHONDONTWRITEBYTECODE=1``. Otherwise whichever run came
  first after an edit or a reinstall would also count compiling modules
  (tens of millions of instructions), and only one of a case's two runs
  would pay it;
- extra = a row's instructions per call minus its baseline's (the case's own
  ``baseline`` row: the bare ASGI app, plain httpx, a bare ``await f()``);
  ratio = row / baseline. For the ASGI pair the share extra / baseline is
  stated too; peers are also compared with our row of the same group.
  The bare ASGI app is in-process, with no server: a real server's request
  costs far more, so the share of a served request is smaller than shown;
- the single-policy rows (``timeout.success``, ``breaker.closed``,
  ``retry.success``, ``bulkhead.free``: a decorated ``f`` on its fast path)
  and the four-policy stack are all over the bare ``await f()``, and so are
  the unkeyed rate limiter rows; the keyed ones are over
  ``ratelimit.baseline.keyed`` (``await h(key)``, 100 keys in turn). The
  ``asgi.middleware.ratelimit`` rows are over ``asgi.middleware`` (the same
  middleware without the limit), and slowapi and our middleware on a
  Starlette app over ``starlette.app`` (the app alone). The
  ``limits`` moving window puts each hit at the front of a list that holds
  every hit of the last second, so its per-call count grows with N (and
  the wall-clock rows, with the batch's length);
- targets (``TARGETS``) bound a row's extra over its baseline; the report
  ends with one line per measured row that has one, "met" when its extra is
  at most the target and "missed" otherwise (the JSON has ``target`` and
  ``target_met``). A missed target does not change the exit status;
- up to ``--jobs`` (2) valgrind processes run at once; the counts do not
  depend on it.

Measured by hand with this method for the ASGI middleware (2,000 vs 12,000
requests), the per-request extra matched one measured in-situ under uvicorn
to within 1k instructions.

Run it::

    make bench-instructions                          # every case, ~5 minutes
    make bench-instructions ARGS="--filter asgi"
    python -m benchmarks.instructions --filter asgi
    python -m benchmarks.instructions --json /tmp/instructions.json

Needs ``valgrind`` on PATH (Debian: ``apt-get install valgrind``;
``make bench-instructions`` installs it when missing). Each valgrind run takes
5-45 s, except the httpx rows at N=12,000: 1.5-3.5 minutes each (a GET through
httpx is ~0.6M instructions).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cases import Case

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = __package__ or "benchmarks"

SMALL = 2_000
LARGE = 12_000
JOBS = 2
CHILD_TIMEOUT = 1800.0
"""Seconds one valgrind run may take before it is killed."""

CHILD_ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0"}
"""The child's whole environment: fixed, so its memory layout does not depend on the caller's."""
VALGRIND_ENV = {**CHILD_ENV, "PYTHONDONTWRITEBYTECODE": "1"}
"""Under valgrind: the same, and no .pyc written (see :func:`prepare`)."""
PREPARE_TIMEOUT = 300.0
N_WIDTH = 9
"""N is passed zero-padded to this many digits: the same argv length for every N."""

COLLECTED = re.compile(r"^==\d+==\s+Collected\s*:\s*(\d+)\s*$", re.MULTILINE)

CASES: tuple[tuple[str, str], ...] = (
    # (key, case module). A row's baseline is the case's own ``baseline`` label,
    # except for the rows in BASELINES, which are the baselines of this report.
    ("asgi.bare", "cases_asgi"),
    ("asgi.middleware", "cases_asgi"),
    ("asgi.middleware.ratelimit", "cases_asgi_ratelimit"),
    ("asgi.middleware.ratelimit.noheaders", "cases_asgi_ratelimit"),
    ("asgi.idempotency.nokey", "cases_asgi_idempotency"),
    ("asgi.idempotency.get", "cases_asgi_idempotency"),
    ("asgi.idempotency.replay", "cases_asgi_idempotency"),
    ("asgi.idempotency.run", "cases_asgi_idempotency"),
    ("starlette.app", "cases_asgi_ratelimit"),
    ("starlette.ours.ratelimit", "cases_asgi_ratelimit"),
    ("starlette.slowapi", "cases_asgi_ratelimit"),
    ("httpx.plain", "cases_httpx"),
    ("httpx.transport", "cases_httpx"),
    ("httpx_retries.transport", "cases_httpx"),
    ("baseline.await", "cases_baseline"),
    ("timeout.success", "cases_retry_timeout"),
    ("breaker.closed", "cases_breaker"),
    ("retry.success", "cases_retry_timeout"),
    ("bulkhead.free", "cases_bulkhead"),
    ("stack.four", "cases_stack"),
    ("stack.tenacity_aiobreaker", "cases_stack"),
    ("ratelimit.ours", "cases_ratelimit"),
    ("ratelimit.ours.call", "cases_ratelimit"),
    ("ratelimit.aiolimiter", "cases_ratelimit"),
    ("ratelimit.limits.moving", "cases_ratelimit"),
    ("ratelimit.limits.sliding", "cases_ratelimit"),
    ("ratelimit.pyrate.log", "cases_ratelimit"),
    ("ratelimit.pyrate.gcra", "cases_ratelimit"),
    ("ratelimit.baseline.keyed", "cases_ratelimit"),
    ("ratelimit.ours.keyed", "cases_ratelimit"),
    ("ratelimit.aiolimiter.keyed", "cases_ratelimit"),
    ("ratelimit.limits.moving.keyed", "cases_ratelimit"),
    ("ratelimit.limits.sliding.keyed", "cases_ratelimit"),
    ("ratelimit.pyrate.log.keyed", "cases_ratelimit"),
    ("ratelimit.pyrate.gcra.keyed", "cases_ratelimit"),
    ("latency.record", "cases_latency"),
    ("latency.quantile", "cases_latency"),
    ("latency.steady", "cases_latency"),
    ("hedge.first", "cases_hedge"),
    ("hedge.first.p95", "cases_hedge"),
    ("saga.baseline", "cases_saga"),
    ("saga.three", "cases_saga"),
)
MODULES = dict(CASES)
BASELINES = frozenset(
    {
        "asgi.bare",
        "httpx.plain",
        "baseline.await",
        "ratelimit.baseline.keyed",
        "saga.baseline",
        "starlette.app",
    }
)

TARGETS: dict[str, int] = {
    "stack.four": 20_000,
    "asgi.middleware": 20_000,
    # The per-client limit: at most 3k more per request than the
    # middleware with every feature on and no limit (asgi.middleware).
    "asgi.middleware.ratelimit": 3_000,
    # The idempotency issue's pass-through: a request without a key costs at
    # most 2k over the bare app.
    "asgi.idempotency.nokey": 2_000,
    "asgi.idempotency.get": 2_000,
    "httpx.transport": 12_500,
    "timeout.success": 8_000,
    "breaker.closed": 4_500,
    "retry.success": 4_000,
    "bulkhead.free": 2_500,
    # The 0.5 µs (unkeyed) and 1.0 µs (keyed) per admitted call, at
    # the 0.1 µs per k instructions of the other single-policy rows (see
    # benchmarks.run.TARGETS).
    "ratelimit.ours": 5_000,
    "ratelimit.ours.keyed": 10_000,
    # The 0.5 µs per recorded duration, and its 1 µs for a query
    # asked before every call (here a repeated one, between two rebuilds of
    # the cumulative counts), at the same 0.1 µs per k instructions.
    "latency.record": 5_000,
    "latency.quantile": 10_000,
    # Both per call in a steady 10,000-call window, rebuilds and rotations
    # amortised: what a Hedge or an adaptive Timeout adds to each call.
    "latency.steady": 10_000,
    # The 2 µs for a hedged call answered before its delay.
    "hedge.first": 20_000,
    # The 15 µs for a saga of three async steps that all succeed, at
    # the same 0.1 µs per k instructions.
    "saga.three": 150_000,
}
"""Targets: the most instructions per call a row may add over its baseline (its extra)."""

SHARE_KEY = "asgi.middleware"
"""The row whose extra is also stated as a share of its baseline."""


# Cases -----------------------------------------------------------------------


def load(key: str) -> Case:
    """The runner's case with this key, from its case module."""
    module_name = MODULES.get(key)
    if module_name is None:
        raise SystemExit(f"unknown case {key!r}; choose from {', '.join(MODULES)}")
    module = importlib.import_module(f"{PACKAGE}.{module_name}")
    for case in module.cases():
        if isinstance(case, Case) and case.key == key:
            return case
    raise SystemExit(f"no case with key {key!r} in {PACKAGE}.{module_name}")


@dataclass
class Row:
    key: str
    case: Case
    baseline: str
    """Key of the baseline row; the row's own key when it is a baseline."""
    ours: str
    """Key of our row in the same group (the row's own key when it is ours or a baseline)."""
    ir: dict[int, int] = field(default_factory=dict)
    seconds: dict[int, float] = field(default_factory=dict)
    error: str = ""

    def per_call(self, small: int, large: int) -> float | None:
        if self.error or small not in self.ir or large not in self.ir:
            return None
        return (self.ir[large] - self.ir[small]) / (large - small)


def build_rows() -> list[Row]:
    cases = {key: load(key) for key, _ in CASES}
    by_label = {case.label: key for key, case in cases.items()}
    ours_of_group: dict[str, str] = {}
    for key, case in cases.items():
        if case.ours:
            ours_of_group.setdefault(case.group, key)
    rows: list[Row] = []
    for key, case in cases.items():
        baseline = key if key in BASELINES else by_label.get(case.baseline)
        if baseline is None:
            raise SystemExit(
                f"{key}: its baseline {case.baseline!r} is not among the cases measured here"
            )
        is_baseline = baseline == key
        ours = key if case.ours or is_baseline else ours_of_group.get(case.group, key)
        rows.append(Row(key, case, baseline, ours))
    return rows


def select(rows: list[Row], needle: str) -> list[Row]:
    """Rows whose key, label or group contains ``needle``, plus our row and the baselines."""
    if not needle:
        return rows
    needle = needle.lower()
    chosen = {
        row.key for row in rows if needle in f"{row.key} {row.case.label} {row.case.group}".lower()
    }
    chosen |= {row.ours for row in rows if row.key in chosen}
    chosen |= {row.baseline for row in rows if row.key in chosen}
    return [row for row in rows if row.key in chosen]


# Child -----------------------------------------------------------------------


def child(key: str, n: int) -> None:
    """Run ``n`` calls of the case's target on asyncio, after one warm-up call."""
    from .run import checkpoint_for, time_async

    case = load(key)
    if case.kind != "async":
        raise SystemExit(f"{key}: only async cases are supported, not {case.kind!r}")

    async def main() -> None:
        gc.collect()
        target = case.setup()
        await target()
        await time_async(target, n, checkpoint_for("asyncio"))

    asyncio.run(main())


# Parent ----------------------------------------------------------------------


def valgrind_version() -> str:
    done = subprocess.run(["valgrind", "--version"], capture_output=True, text=True, timeout=30)
    return done.stdout.strip()


def measure(key: str, n: int) -> tuple[int, float]:
    """Instructions of one child run under callgrind, and its wall seconds."""
    cmd = [
        shutil.which("valgrind") or "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        f"{PACKAGE}.instructions",
        "--child",
        key,
        f"{n:0{N_WIDTH}d}",
    ]
    start = time.perf_counter()
    done = subprocess.run(
        cmd, cwd=ROOT, env=VALGRIND_ENV, capture_output=True, text=True, timeout=CHILD_TIMEOUT
    )
    elapsed = time.perf_counter() - start
    found = COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        own = [line for line in done.stderr.splitlines() if not line.startswith("==")]
        tail = "; ".join(own[-3:]) or done.stderr.strip()[-300:]
        raise RuntimeError(f"exit {done.returncode}: {tail}")
    return int(found.group(1)), elapsed


def prepare(rows: Sequence[Row]) -> None:
    """Run each child once natively (N=1): it must work, and it writes any missing .pyc."""
    for row in rows:
        cmd = [
            sys.executable,
            "-m",
            f"{PACKAGE}.instructions",
            "--child",
            row.key,
            f"{1:0{N_WIDTH}d}",
        ]
        try:
            done = subprocess.run(
                cmd,
                cwd=ROOT,
                env=CHILD_ENV,
                capture_output=True,
                text=True,
                timeout=PREPARE_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            row.error = f"native N=1 run did not finish in {PREPARE_TIMEOUT:g} s"
        else:
            if done.returncode != 0:
                lines = done.stderr.strip().splitlines()
                row.error = f"native N=1 run: exit {done.returncode}: {'; '.join(lines[-3:])}"
        if row.error:
            print(f"  !! {row.key:<26} {row.error}", file=sys.stderr, flush=True)


def run_all(rows: Sequence[Row], sizes: Sequence[int], jobs: int) -> None:
    by_key = {row.key: row for row in rows}
    # Largest runs first, so the last one to finish is short.
    work = sorted(
        ((row.key, n) for row in rows if not row.error for n in sizes), key=lambda kn: -kn[1]
    )

    def one(item: tuple[str, int]) -> None:
        key, n = item
        row = by_key[key]
        try:
            ir, elapsed = measure(key, n)
        except Exception as exc:
            row.error = row.error or f"N={n}: {type(exc).__name__}: {exc}"
            print(f"  !! {key:<26} N={n:<6} {row.error}", file=sys.stderr, flush=True)
            return
        row.ir[n] = ir
        row.seconds[n] = elapsed
        print(f"  {key:<26} N={n:<6} {ir:>15,} Ir  {elapsed:6.1f} s", file=sys.stderr, flush=True)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, work))


# Report ----------------------------------------------------------------------


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def fmt_k(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    k = value / 1000
    digits = 1 if abs(k) >= 100 else 2
    return f"{k:+.{digits}f}" if signed else f"{k:.{digits}f}"


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def analyse(rows: Sequence[Row], small: int, large: int) -> list[dict[str, Any]]:
    per_call = {row.key: row.per_call(small, large) for row in rows}
    out: list[dict[str, Any]] = []
    for row in rows:
        value = per_call[row.key]
        base = per_call.get(row.baseline) if row.baseline != row.key else None
        extra = value - base if value is not None and base is not None else None
        ours = per_call.get(row.ours) if row.ours != row.key else None
        ours_base = None
        if row.ours != row.key:
            ours_row = next((r for r in rows if r.key == row.ours), None)
            if ours_row is not None:
                ours_base = per_call.get(ours_row.baseline)
        ours_extra = ours - ours_base if ours is not None and ours_base is not None else None
        out.append(
            {
                "key": row.key,
                "group": row.case.group,
                "label": row.case.label,
                "ours": row.case.ours,
                "baseline": row.baseline,
                "ir": {str(n): ir for n, ir in sorted(row.ir.items())},
                "seconds": {str(n): round(s, 1) for n, s in sorted(row.seconds.items())},
                "instructions_per_call": value,
                "baseline_instructions_per_call": base,
                "extra": extra,
                "ratio_to_baseline": value / base if value is not None and base else None,
                "share": extra / base if extra is not None and base else None,
                "ours_key": row.ours if row.ours != row.key else None,
                "ratio_to_ours": value / ours if value is not None and ours else None,
                "extra_ratio_to_ours": (
                    extra / ours_extra
                    if extra is not None and ours_extra is not None and ours_extra > 0
                    else None
                ),
                "target": TARGETS.get(row.key),
                "target_met": (
                    extra <= TARGETS[row.key] if row.key in TARGETS and extra is not None else None
                ),
                "error": row.error or None,
            }
        )
    return out


def target_status(result: dict[str, Any]) -> str:
    """Whether a row with a target met it: met, missed, or not measured."""
    if result["target_met"] is None:
        return "not measured"
    return "met" if result["target_met"] else "missed"


def render_targets(results: Sequence[dict[str, Any]]) -> list[str]:
    """The report's targets table: one line per measured row that has a target."""
    lines = [
        "## Targets",
        "",
        "Met when a row's extra over its baseline is at most its target (`TARGETS`).",
        "",
        "| case | target: extra at most (k) | extra (k) | status |",
        "|---|---:|---:|---|",
    ]
    for r in results:
        if r["target"] is None:
            continue
        lines.append(
            f"| `{r['key']}` | ≤ {fmt_k(r['target'], signed=True)} over `{r['baseline']}` | "
            f"{fmt_k(r['extra'], signed=True)} | {target_status(r)} |"
        )
    return lines


def render(results: Sequence[dict[str, Any]], meta: dict[str, Any]) -> str:
    small, large = meta["small"], meta["large"]
    lines = [
        "# Instructions per call (valgrind callgrind)",
        "",
        f"(Ir(N={large:,}) - Ir(N={small:,})) / {large - small:,} on asyncio; "
        f"k = thousands of instructions. {meta['valgrind']}, Python {meta['python']}, "
        "fixed child environment, PYTHONHASHSEED=0.",
        "",
        "| case | instructions/call (k) | extra over baseline (k) | x baseline |",
        "|---|---:|---:|---:|",
    ]
    by_key = {r["key"]: r for r in results}
    for r in results:
        name = f"`{r['key']}` {cell(r['label'])}"
        if r["ours"]:
            name = f"**{name}**"
        if r["error"]:
            lines.append(f"| {name} | error: {cell(r['error'])} | | |")
            continue
        if r["baseline"] == r["key"]:
            lines.append(f"| {name} | {fmt_k(r['instructions_per_call'])} | (baseline) | — |")
            continue
        lines.append(
            f"| {name} | {fmt_k(r['instructions_per_call'])} | {fmt_k(r['extra'], signed=True)} "
            f"(vs `{r['baseline']}`) | {fmt_ratio(r['ratio_to_baseline'])} |"
        )
    notes: list[str] = []
    share = by_key.get(SHARE_KEY)
    if share is not None and share["share"] is not None:
        notes.append(
            f"- ASGI: `{SHARE_KEY}` adds {fmt_k(share['extra'])}k instructions per request "
            f"over the bare in-process app's {fmt_k(share['baseline_instructions_per_call'])}k: "
            f"a share (extra / baseline) of {share['share']:.1%}."
        )
    for r in results:
        if r["ratio_to_ours"] is None:
            continue
        extra = (
            f"; its extra over `{r['baseline']}` is {r['extra_ratio_to_ours']:.2f}x ours"
            if r["extra_ratio_to_ours"] is not None
            else ""
        )
        notes.append(
            f"- `{r['key']}` executes {r['ratio_to_ours']:.2f}x the instructions of "
            f"`{r['ours_key']}` per call{extra}."
        )
    if notes:
        lines += ["", *notes]
    if any(r["target"] is not None for r in results):
        lines += ["", *render_targets(results)]
    return "\n".join(lines) + "\n"


# Main ------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.instructions",
        description=(__doc__ or "").split("\n")[0],
    )
    parser.add_argument(
        "--filter", default="", help="only cases whose key/label/group contains this"
    )
    parser.add_argument("--small", type=int, default=SMALL, help=f"small N (default {SMALL})")
    parser.add_argument("--large", type=int, default=LARGE, help=f"large N (default {LARGE})")
    parser.add_argument(
        "--jobs", type=int, default=JOBS, help=f"valgrind runs at once (default {JOBS})"
    )
    parser.add_argument("--json", default="", metavar="PATH", help="also write the numbers here")
    parser.add_argument("--list", action="store_true", help="list the selected cases and exit")
    parser.add_argument(
        "--child", nargs=2, metavar=("CASE", "N"), help=argparse.SUPPRESS, default=None
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        child(args.child[0], int(args.child[1]))
        return 0
    if not 0 < args.small < args.large:
        raise SystemExit("need 0 < --small < --large")
    if not 1 <= args.jobs <= JOBS:
        raise SystemExit(f"--jobs must be 1 to {JOBS} (two CPUs)")

    rows = select(build_rows(), args.filter)
    if not rows:
        print(f"no case matches {args.filter!r}", file=sys.stderr)
        return 1
    if args.list:
        for row in rows:
            base = "" if row.baseline == row.key else f"  (baseline {row.baseline})"
            print(f"{row.key:<26} {row.case.label}{base}")
        return 0
    if shutil.which("valgrind") is None:
        raise SystemExit(
            "valgrind is not on PATH: install it with `apt-get install valgrind` "
            "(`make bench-instructions` does this when it is missing)"
        )

    started = time.perf_counter()
    sizes = (args.small, args.large)
    print(
        f"{len(rows)} cases x N={args.small:,} and N={args.large:,} under callgrind, "
        f"{args.jobs} at a time",
        file=sys.stderr,
        flush=True,
    )
    prepare(rows)
    run_all(rows, sizes, args.jobs)
    results = analyse(rows, args.small, args.large)
    meta: dict[str, Any] = {
        "argv": list(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "small": args.small,
        "large": args.large,
        "jobs": args.jobs,
        "filter": args.filter,
        "valgrind": valgrind_version(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    print(render(results, meta), end="")
    print(f"\n{meta['wall_seconds']:.0f} s wall", file=sys.stderr)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps({"meta": meta, "results": results}, indent=1, ensure_ascii=False) + "\n"
        )
        print(f"wrote {path}", file=sys.stderr)
    return 1 if any(row.error for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
