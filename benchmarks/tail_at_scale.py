"""The Tail at Scale, simulated: tail latency without hedging, with a fixed
delay, and with ``Hedge(delay="p95")``.

Usage::

    python -m benchmarks.tail_at_scale [--calls N] [--rate PER_SECOND] [--seed N]
                                       [--median-ms MS] [--sigma S] [--fixed-ms MS]
                                       [--svg PATH] [--check]

Dean and Barroso ("The Tail at Scale", CACM 2013) sent a hedged request after
10 ms and cut the 99.9th percentile from 1,800 ms to 74 ms for 2 % more
requests. This script reproduces the shape of that result with
:class:`resilience.Hedge` and :class:`resilience.LatencyTracker`.

- **The upstream**: each attempt, the first or a hedge, draws its own
  latency (another replica): lognormal with a median of 5 ms and sigma 0.3
  (99 % of normal calls answer within 10 ms, the delay the paper used), and
  1 % of attempts stall for about 1 s (lognormal, median 1 s, sigma 0.25).
  The draws come from ``random.Random(seed)``, two per call drawn up front,
  so the three cases see the same first attempts and every run prints the
  same figures.
- **The load**: ``--calls`` calls (20,000) arriving at a steady ``--rate``
  (1,000 a second, one every millisecond), each timed from its arrival to its
  answer.
- **The cases**: the bare upstream; ``Hedge(2, delay=0.010)``; and
  ``Hedge(2, delay="p95")`` on a fresh tracker. The p95 case counts its
  warm-up honestly: its first 100 calls run with ``default_delay`` (1 s),
  until the tracker holds ``min_samples``, and they are measured like the
  rest. "Extra requests" is ``hedge.stats.hedges / hedge.stats.calls``.
- **Virtual time**: the calls run on a real asyncio event loop whose clock
  is virtual. :class:`VirtualTimeLoop` is a ``SelectorEventLoop`` whose
  selector, asked to wait ``timeout`` seconds for I/O, moves the loop's
  time forward by ``timeout`` instead (then polls without waiting), so the
  loop jumps to its next timer as soon as nothing is ready. Attempts
  overlap, timers and cancellations are the loop's own, and the Hedge runs
  its real code path; a simulated minute costs a few seconds of real time.
  (``FakeClock`` cannot do this: its ``sleep`` advances the one shared time
  at once, so two attempts cannot be in flight side by side.) Virtual time
  counts only the sleeps: the policy's own CPU time is not in these figures
  (see ``docs/performance.md`` for that).
- **The clock**: the Hedge and its tracker get a :class:`LoopClock`, whose
  ``now()`` is ``loop.time()``, whose ``sleep()`` is ``asyncio.sleep`` and
  whose ``call_at`` is ``loop.call_at``: the delay is timed by the loop's
  own timers, as it is for a policy on the system clock on asyncio (which
  maps to ``loop.time`` and ``loop.call_at``). A clock other than the
  system's must offer ``call_at`` to time a Hedge's delay or a Timeout.

``--check`` exits 1 unless the p95 case meets the issue's targets: its p99.9
at least 10 times lower than without hedging, for at most 6 % extra
requests. ``--svg PATH`` writes the percentiles as a bar chart (the image in
``docs/hedging.md``: ``--svg docs/images/hedging.svg``).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import selectors
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from resilience import Hedge, LatencyTracker

QUANTILES = (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999))
TARGET_RATIO = 10.0
"""The p95 case's p99.9 must be at least this many times lower than the bare upstream's."""
TARGET_EXTRA = 0.06
"""And it may send at most this fraction of extra requests."""


# The virtual-time loop --------------------------------------------------------


class _VirtualSelector(selectors.SelectSelector):
    """A selector that never waits: asked to wait, it moves the time on."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            # Nothing ready and no timer: a real loop would wait for I/O for
            # ever. Nothing here does I/O, so that is a deadlock.
            raise RuntimeError("the simulation has nothing left to wait for (deadlock)")
        if timeout > 0:
            self.now += timeout
        return super().select(0)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on virtual time: when nothing is ready it jumps to the
    next timer at once, so a simulated second costs no real time.

    Example::

        loop = VirtualTimeLoop()
        loop.run_until_complete(asyncio.sleep(3600))   # returns at once
        assert loop.time() == 3600.0
        loop.close()
    """

    def __init__(self) -> None:
        self._virtual = _VirtualSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now


class LoopClock:
    """A resilience clock on the loop's time (``resilience.Clock``): ``now()``
    is ``loop.time()``, ``sleep()`` is ``asyncio.sleep``, and ``call_at`` is
    ``loop.call_at``, which times a Hedge's delay (and a Timeout)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.now: Callable[[], float] = loop.time
        self.call_at = loop.call_at

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def sleep_sync(self, seconds: float) -> None:
        raise RuntimeError("the simulation has no threads: nothing may block")


# The experiment --------------------------------------------------------------


@dataclass(frozen=True)
class Upstream:
    """Latency of one attempt: lognormal around ``median``, and a stall of
    about ``stall`` seconds with probability ``stall_rate``."""

    median: float = 0.005
    sigma: float = 0.3
    stall_rate: float = 0.01
    stall: float = 1.0
    stall_sigma: float = 0.25

    def draw(self, rng: random.Random) -> float:
        if rng.random() < self.stall_rate:
            return rng.lognormvariate(math.log(self.stall), self.stall_sigma)
        return rng.lognormvariate(math.log(self.median), self.sigma)


@dataclass(frozen=True)
class Result:
    case: str
    latencies: list[float]  # seconds, sorted
    extra: float  # hedges per call
    delay: float | None  # the delay in force at the end (None: no hedge)
    won: int

    def quantile(self, q: float) -> float:
        """The exact ``q``-quantile (nearest rank: the ``ceil(q * n)``-th smallest)."""
        n = len(self.latencies)
        return self.latencies[max(0, math.ceil(q * n) - 1)]


def _draws(upstream: Upstream, calls: int, seed: int) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    return [(upstream.draw(rng), upstream.draw(rng)) for _ in range(calls)]


def run_case(
    case: str,
    make_hedge: Callable[[LoopClock], Hedge] | None,
    draws: list[tuple[float, float]],
    rate: float,
) -> Result:
    """Run the calls of ``draws`` through ``make_hedge(clock)`` (or bare) on a
    fresh virtual-time loop."""
    loop = VirtualTimeLoop()
    try:
        clock = LoopClock(loop)
        hedge = make_hedge(clock) if make_hedge is not None else None
        latencies: list[float] = []
        interval = 1.0 / rate

        def attempts(latency: tuple[float, float]) -> Callable[[], Awaitable[None]]:
            """The call's attempts: each one sleeps for its own draw."""
            started = 0

            async def attempt() -> None:
                nonlocal started
                index = started
                started += 1
                await asyncio.sleep(latency[index])

            return attempt

        async def one(latency: tuple[float, float]) -> None:
            start = loop.time()
            fn = attempts(latency)
            if hedge is None:
                await fn()
            else:
                await hedge.call(fn)
            latencies.append(loop.time() - start)

        async def main() -> None:
            tasks: list[asyncio.Task[Any]] = []
            origin = loop.time()
            for i, latency in enumerate(draws):
                delay = origin + i * interval - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(loop.create_task(one(latency)))
            await asyncio.gather(*tasks)

        loop.run_until_complete(main())
    finally:
        loop.close()
    latencies.sort()
    if hedge is None:
        return Result(case, latencies, 0.0, None, 0)
    stats = hedge.stats
    assert stats.calls == len(draws)
    return Result(case, latencies, stats.hedges / stats.calls, hedge.delay, stats.won)


def experiment(
    calls: int, rate: float, seed: int, upstream: Upstream, fixed: float
) -> list[Result]:
    draws = _draws(upstream, calls, seed)
    return [
        run_case("no hedge", None, draws, rate),
        run_case(
            f"fixed {fixed * 1000:g} ms",
            lambda clock: Hedge(2, delay=fixed, clock=clock),
            draws,
            rate,
        ),
        run_case(
            'delay="p95"',
            lambda clock: Hedge(2, delay="p95", tracker=LatencyTracker(clock=clock), clock=clock),
            draws,
            rate,
        ),
    ]


# Output ------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.1f}"


def table(results: list[Result]) -> str:
    """A Markdown table of the figures."""
    lines = [
        "| case | p50 (ms) | p99 (ms) | p99.9 (ms) | slowest (ms) | extra requests "
        "| won by a hedge | delay at the end (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        cells = [r.case, *(_ms(r.quantile(q)) for _, q in QUANTILES), _ms(r.latencies[-1])]
        cells.append(f"{r.extra:.1%}" if r.delay is not None else "0")
        cells.append(f"{r.won / len(r.latencies):.1%}" if r.delay is not None else "-")
        cells.append(_ms(r.delay) if r.delay is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


COLOURS = ("#9e9e9e", "#f0a030", "#3f7fbf")


def svg(results: list[Result], title: str) -> str:
    """A grouped bar chart, log scale: one group per percentile, one bar per case."""
    width, height = 720, 400
    left, right, top, bottom = 70, 20, 50, 90
    plot_w, plot_h = width - left - right, height - top - bottom
    low, high = 1.0, 3_000.0  # ms, the axis' ends (log scale)

    def y(ms: float) -> float:
        ms = min(max(ms, low), high)
        return top + plot_h * (1 - math.log10(ms / low) / math.log10(high / low))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="24" text-anchor="middle" font-size="15" '
        f'font-weight="bold">{title}</text>',
    ]
    for exponent in range(4):
        ms = 10.0**exponent
        label = f"{ms:,.0f} ms"
        out.append(
            f'<line x1="{left}" y1="{y(ms):.1f}" x2="{width - right}" y2="{y(ms):.1f}" '
            f'stroke="#dddddd"/>'
        )
        out.append(f'<text x="{left - 6}" y="{y(ms) + 4:.1f}" text-anchor="end">{label}</text>')
    group_w = plot_w / len(QUANTILES)
    bar_w = group_w * 0.8 / len(results)
    for g, (name, q) in enumerate(QUANTILES):
        x0 = left + g * group_w + group_w * 0.1
        for b, r in enumerate(results):
            ms = r.quantile(q) * 1000
            x = x0 + b * bar_w
            out.append(
                f'<rect x="{x + 2:.1f}" y="{y(ms):.1f}" width="{bar_w - 4:.1f}" '
                f'height="{top + plot_h - y(ms):.1f}" fill="{COLOURS[b % len(COLOURS)]}"/>'
            )
            out.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{y(ms) - 4:.1f}" '
                f'text-anchor="middle">{_ms(ms / 1000)}</text>'
            )
        out.append(
            f'<text x="{left + g * group_w + group_w / 2:.1f}" y="{top + plot_h + 18}" '
            f'text-anchor="middle" font-weight="bold">{name}</text>'
        )
    out.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" '
        f'stroke="black"/>'
    )
    legend_y = height - 40
    step = (width - left - right) / len(results)
    for b, r in enumerate(results):
        x = left + b * step
        extra = f", +{r.extra:.1%} requests" if r.delay is not None else ""
        label = r.case.replace('"', "&quot;") + extra
        out.append(
            f'<rect x="{x:.1f}" y="{legend_y - 10}" width="12" height="12" '
            f'fill="{COLOURS[b % len(COLOURS)]}"/>'
        )
        out.append(f'<text x="{x + 18:.1f}" y="{legend_y}">{label}</text>')
    out.append(
        f'<text x="{width / 2}" y="{height - 12}" text-anchor="middle" fill="#555555">'
        f"latency per call, log scale (simulated: python -m benchmarks.tail_at_scale)</text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="calls per second")
    parser.add_argument("--seed", type=int, default=2013)
    parser.add_argument("--median-ms", type=float, default=5.0, help="normal latency's median")
    parser.add_argument("--sigma", type=float, default=0.3, help="normal latency's sigma")
    parser.add_argument("--fixed-ms", type=float, default=10.0, help="the fixed case's delay")
    parser.add_argument("--svg", metavar="PATH", help="write the bar chart there")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    if args.calls < 1000:
        parser.error("--calls must be at least 1000 (a p99.9 needs them)")

    upstream = Upstream(median=args.median_ms / 1000, sigma=args.sigma)
    started = time.perf_counter()
    results = experiment(args.calls, args.rate, args.seed, upstream, args.fixed_ms / 1000)
    real = time.perf_counter() - started
    simulated = args.calls / args.rate
    print(
        f"{args.calls:,} calls at {args.rate:g}/s ({simulated:g} simulated seconds, "
        f"{real:.1f} s real); upstream: lognormal median {args.median_ms:g} ms sigma "
        f"{args.sigma:g}, {upstream.stall_rate:.0%} stalls of ~{upstream.stall:g} s; "
        f"seed {args.seed}"
    )
    print()
    print(table(results))
    print()

    bare, hedged = results[0], results[-1]
    ratio = bare.quantile(0.999) / hedged.quantile(0.999)
    met_ratio = ratio >= TARGET_RATIO
    met_extra = hedged.extra <= TARGET_EXTRA
    print(
        f'target: delay="p95" cuts p99.9 at least {TARGET_RATIO:g}x: '
        f"{ratio:.1f}x, {'met' if met_ratio else 'MISSED'}"
    )
    print(
        f"target: for at most {TARGET_EXTRA:.0%} extra requests: {hedged.extra:.2%}, "
        f"{'met' if met_extra else 'MISSED'}"
    )
    if args.svg:
        title = f"Latency per call, {args.calls:,} calls, 1 % of attempts stalling ~1 s"
        with open(args.svg, "w", encoding="utf-8") as f:
            f.write(svg(results, title))
        print(f"wrote {args.svg}")
    if args.check and not (met_ratio and met_extra):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
