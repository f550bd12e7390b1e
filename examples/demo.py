"""`make demo`: a resilient httpx client against a flaky upstream, live.

An embedded upstream (an ASGI app under uvicorn on 127.0.0.1, random port)
goes through four phases of equal length: healthy, slow, failing (503s and
connection resets) and recovering. Many concurrent clients call it through
one AsyncResilientTransport: retry with full-jitter backoff and a retry
budget, a per-host circuit breaker (failure rate and slow calls over a time
window), a per-attempt timeout and a bulkhead. A live view shows what each
policy does as the upstream changes, one row per second, with every state the
breaker went through during that second (half-open included, however brief);
Prometheus metrics are served on a local port printed at start. The
breaker's window and open duration scale down for runs shorter than 30 s, so
that it opens in the failing phase and closes again in the recovering one.

Run: python -m examples.demo [--duration SECONDS] [--clients N] [--seed N] [--check]
(--fleet runs examples/demo_fleet.py instead: worker processes sharing one
rate limit and one breaker on a local redis-server; the options after it
are that demo's.)
Ends by itself (30 s by default) with a per-phase summary, a summary and a
self-check (the rows and the summaries agree; with --check, the breaker must
also have opened and closed again). Ctrl-C ends it early: the load stops
first, then the upstream, and everything shown happened before the interrupt.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import prometheus_client
import uvicorn
from rich.console import Console
from rich.live import Live
from rich.table import Table

from resilience import (
    Bulkhead,
    CircuitBreaker,
    CircuitBreakerStatistics,
    CircuitState,
    Retry,
    RetryBudget,
    RetryStatistics,
    Timeout,
    TimeWindow,
    backoff,
)
from resilience.contrib.httpx import (
    AsyncResilientTransport,
    HTTPBulkheadFullError,
    HTTPCircuitOpenError,
    HTTPTimeoutError,
)
from resilience.contrib.prometheus import instrument
from resilience.events import Event, RetryScheduled, StateChanged


def _printable(text: str, fallback: str) -> str:
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return fallback
    return text


ARROW = _printable("→", "->")
TIMES = _printable("\N{MULTIPLICATION SIGN}", "x")

# The upstream -----------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    name: str
    error_rate: float  # answers 503
    reset_rate: float  # starts a response, then drops the connection
    latency: float  # mean seconds
    hang_rate: float  # far beyond the client's timeout

    def describe(self) -> str:
        parts = [f"{self.error_rate:.0%} 503s"]
        if self.reset_rate:
            parts.append(f"{self.reset_rate:.0%} dropped connections")
        if self.hang_rate:
            parts.append(f"{self.hang_rate:.0%} hang past the timeout")
        return ", ".join(parts) + f", ~{self.latency * 1000:.0f} ms"


PHASES = (
    Phase("healthy", 0.01, 0.0, 0.005, 0.0),
    Phase("slow", 0.02, 0.0, 0.08, 0.15),
    Phase("failing", 0.7, 0.2, 0.005, 0.02),
    Phase("recovering", 0.05, 0.0, 0.01, 0.0),
)
ATTEMPT_TIMEOUT = 0.25  # seconds, per attempt


@dataclass(frozen=True)
class Timeline:
    """Each phase gets an equal share of the run; the last one lasts past its end."""

    duration: float

    @property
    def phase_length(self) -> float:
        return self.duration / len(PHASES)

    def index(self, at: float) -> int:
        return max(0, min(int(at / self.phase_length), len(PHASES) - 1))

    def phase(self, at: float) -> Phase:
        return PHASES[self.index(at)]

    def span(self, index: int) -> tuple[float, float]:
        return index * self.phase_length, (index + 1) * self.phase_length

    def between(self, start: float, end: float) -> list[Phase]:
        """The phases in effect at some moment of [start, end)."""
        last = self.index(max(start, end - 1e-6))
        return list(PHASES[self.index(start) : last + 1])


class FlakyUpstream:
    """An ASGI app whose behaviour follows the phase of the demo."""

    def __init__(self, timeline: Timeline, seed: int) -> None:
        self.timeline = timeline
        self.started = time.monotonic()  # reset when the load starts
        self.rng = random.Random(seed)

    @property
    def phase(self) -> Phase:
        return self.timeline.phase(time.monotonic() - self.started)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        phase = self.phase
        roll = self.rng.random()
        if roll < phase.hang_rate:
            await asyncio.sleep(5)
        await asyncio.sleep(self.rng.expovariate(1 / phase.latency))
        roll = self.rng.random()
        if roll < phase.error_rate:
            await _respond(send, 503, b"busy", [(b"retry-after", b"0")])
            return
        if roll < phase.error_rate + phase.reset_rate:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            raise ConnectionResetError("upstream dropped the connection")
        await _respond(send, 200, b'{"ok": true}', [(b"content-type", b"application/json")])


async def _respond(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class UpstreamServer(uvicorn.Server):
    """uvicorn without its signal handlers: on Ctrl-C it would shut the upstream
    down while the clients still call it, and the last rows would show an outage
    that never happened. The demo handles Ctrl-C: load first, then this server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


# The client side --------------------------------------------------------------

# Outcome of a call as the callers count it (also the column header): what it means.
OUTCOMES = {
    "ok": "answered",
    "5xx": "503 after the retries (or the retry budget) ran out",
    "conn err": "the upstream dropped the connection, after the retries",
    "timeout": f"no answer within {ATTEMPT_TIMEOUT:g} s per attempt, after the retries",
    "open": "rejected by the open breaker (a real caller would serve a fallback)",
    "shed": "rejected by the full bulkhead",
}


class Tally:
    """What the callers saw, the retries and the breaker's transitions, each
    stamped with the time since the load started and the upstream's phase then.
    Frozen when the load stops: nothing after that is counted."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.started = time.monotonic()
        self.stopped_at: float | None = None
        self.outcomes: Counter[str] = Counter()
        self.retries = 0
        self.by_phase: dict[str, Counter[str]] = {p.name: Counter() for p in PHASES}
        # (seconds since start, old state, new state), as the breaker emits them.
        self.transitions: list[tuple[float, str, str]] = []

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def count(self, outcome: str) -> None:
        if self.stopped_at is None:
            self.outcomes[outcome] += 1
            self.by_phase[self.timeline.phase(self.elapsed()).name][outcome] += 1

    def on_event(self, event: Event) -> None:
        if self.stopped_at is not None:
            return
        if isinstance(event, StateChanged):
            at = self.elapsed()
            self.transitions.append((at, event.old_state.value, event.new_state.value))
        elif isinstance(event, RetryScheduled):
            self.retries += 1
            self.by_phase[self.timeline.phase(self.elapsed()).name]["retries"] += 1

    def freeze(self) -> float:
        self.stopped_at = self.elapsed()
        return self.stopped_at

    def states_between(self, start: float, end: float) -> list[str]:
        """Every state the breaker was in during [start, end), in order."""
        states = [CircuitState.CLOSED.value]
        for at, _, new in self.transitions:
            if at >= end:
                break
            if at < start:
                states = [new]
            else:
                states.append(new)
        return states


async def caller(client: httpx.AsyncClient, url: str, tally: Tally) -> None:
    """Calls until cancelled (when the load stops)."""
    while True:
        try:
            response = await client.get(url)
            tally.count("ok" if response.status_code < 500 else "5xx")
        except HTTPCircuitOpenError:
            tally.count("open")
            await asyncio.sleep(0.05)  # a real caller would serve a fallback here
        except HTTPBulkheadFullError:
            tally.count("shed")
        except HTTPTimeoutError:
            tally.count("timeout")
        except httpx.TransportError:
            tally.count("conn err")
        await asyncio.sleep(0.02)  # think time between calls


# The view ---------------------------------------------------------------------

STYLES = {"closed": "green", "open": "bold red", "half_open": "bold yellow"}


def path_text(states: list[str], paint: Callable[[str], str] = str) -> str:
    """``closed→open→half_open→closed``; k failed trial rounds in a row read
    ``(half_open→open)`` followed by TIMES and k."""
    cycle = ["half_open", "open"]
    parts, i = [paint(states[0])], 1
    while i < len(states):
        k = 0
        while states[i + 2 * k : i + 2 * k + 2] == cycle:
            k += 1
        if k > 1:
            parts.append(f"({paint('half_open')}{ARROW}{paint('open')}){TIMES}{k}")
            i += 2 * k
        else:
            parts.append(paint(states[i]))
            i += 1
    return ARROW.join(parts)


def _painted(state: str) -> str:
    return f"[{STYLES.get(state, 'magenta')}]{state}[/]"


@dataclass
class Row:
    start: float
    end: float
    phases: list[str]
    states: list[str]  # every state the breaker was in during the row
    outcomes: Counter[str]
    retries: int
    in_flight: int
    waiting: int
    capacity: int

    def span(self) -> str:
        return f"{self.start:4.1f}-{self.end:4.1f}s"

    def plain(self) -> str:
        counts = " ".join(f"{name}={self.outcomes[name]}" for name in OUTCOMES)
        return (
            f"{self.span()} {ARROW.join(self.phases):<18} {counts} retries={self.retries} "
            f"bulkhead={self.in_flight}/{self.capacity}+{self.waiting} "
            f"breaker={path_text(self.states)}"
        )


class View:
    """One row per second: a live rich table on a terminal, plain lines otherwise.
    On a terminal the live table shows the latest rows; when the run ends it
    is replaced by the table of every row, so that the first phase stays in
    the output."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.rows: list[Row] = []
        self.live: Live | None = None

    @contextlib.contextmanager
    def showing(self) -> Iterator[None]:
        if not self.console.is_terminal:
            yield
            return
        with Live(
            self.table(self._fits()), console=self.console, refresh_per_second=4, transient=True
        ) as self.live:
            yield
        self.live = None
        self.console.print(self.table(len(self.rows)))

    def add(self, row: Row) -> None:
        self.rows.append(row)
        if self.live is not None:
            self.live.update(self.table(self._fits()))
        elif not self.console.is_terminal:
            print(row.plain(), flush=True)

    def _fits(self) -> int:
        return max(5, self.console.size.height - 8)

    def table(self, last: int) -> Table:
        table = Table(title="calls per second", expand=False)
        for header in ("seconds", "upstream", *OUTCOMES, "retries", "bulkhead", "breaker"):
            table.add_column(header, justify="left" if header == "breaker" else "right")
        for row in self.rows[-last:] if last else []:
            table.add_row(
                row.span(),
                ARROW.join(row.phases),
                *(str(row.outcomes[name]) for name in OUTCOMES),
                str(row.retries),
                f"{row.in_flight}/{row.capacity}+{row.waiting}",
                path_text(row.states, _painted),
            )
        return table


# The run ----------------------------------------------------------------------


@dataclass
class Result:
    duration: float
    clients: int
    timeline: Timeline
    tally: Tally
    rows: list[Row]
    retry: RetryStatistics
    breakers: dict[str, CircuitBreakerStatistics]
    interrupted: str | None = None  # the signal's name
    stopped_at: float = 0.0


def breaker_timings(duration: float) -> tuple[int, float]:
    """The breaker's window (whole seconds) and open duration: 3 s and 2 s for
    runs of 30 s and more, scaled down for shorter runs so that the breaker can
    open in the failing phase and close again in the recovering one."""
    scale = min(1.0, duration / 30)
    return max(1, round(3 * scale)), max(0.01, round(2.0 * scale, 2))


async def run(duration: float, clients: int, seed: int) -> Result:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    interrupted: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        interrupted.append(sig.name)
        stop.set()
        for handled in (signal.SIGINT, signal.SIGTERM):  # a second one ends it hard
            loop.remove_signal_handler(handled)

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows, threads
            loop.add_signal_handler(sig, on_signal, sig)

    registry = prometheus_client.CollectorRegistry()
    instrumentation = instrument(registry)
    metrics_server, metrics_thread = prometheus_client.start_http_server(
        0, addr="127.0.0.1", registry=registry
    )
    timeline = Timeline(duration)
    upstream = FlakyUpstream(timeline, seed)
    sock = _bound_socket()
    server = UpstreamServer(
        uvicorn.Config(
            upstream,
            log_level="critical",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 (uvicorn exposes a flag, not an event)
        await asyncio.sleep(0.01)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/item"

    tally = Tally(timeline)
    retry = Retry(
        3,
        backoff=backoff.exponential(0.02, cap=0.3, jitter="full"),
        budget=RetryBudget(ratio=0.2, min_per_second=20),
        name="upstream",
    )
    retry.add_listener(tally.on_event)
    window, open_duration = breaker_timings(duration)
    breaker = CircuitBreaker(
        "upstream",
        failure_rate=0.5,
        window=TimeWindow(window),
        minimum_calls=20,
        slow_call_duration=0.2,
        slow_call_rate=0.8,
        open_duration=open_duration,
        half_open_calls=3,
    )
    breaker.add_listener(tally.on_event)  # derived per-host breakers inherit listeners
    bulkhead = Bulkhead(32, max_waiting=8, max_wait=0.1, name="upstream")
    transport = AsyncResilientTransport(
        retry=retry,
        breaker=breaker,
        timeout=Timeout(ATTEMPT_TIMEOUT, name="upstream"),
        bulkhead=bulkhead,
    )
    console = Console()
    view = View(console)
    print_legend(url, metrics_server.server_port, duration, clients, seed, window, open_duration)

    def sample(start: float) -> Row:
        # Reading the breakers applies their time-based transitions (open ->
        # half_open) first, so that the row ends in the state they are in now.
        breakers = {name: b.stats for name, b in transport.breakers.items()}
        end = tally.elapsed()
        outcomes = tally.outcomes - totals
        retries = tally.retries - totals["retries"]
        totals.update(outcomes)
        totals["retries"] += retries
        snapshots.update(breakers=breakers, retry=retry.stats)
        stats = bulkhead.stats
        return Row(
            start=start,
            end=end,
            phases=[p.name for p in timeline.between(start, end)],
            states=tally.states_between(start, end),
            outcomes=outcomes,
            retries=retries,
            in_flight=stats.in_flight,
            waiting=stats.waiting,
            capacity=stats.capacity,
        )

    totals: Counter[str] = Counter()
    snapshots: dict[str, Any] = {"breakers": {}, "retry": retry.stats}
    try:
        async with httpx.AsyncClient(transport=transport) as client:
            tally.started = upstream.started = time.monotonic()
            tasks = [asyncio.create_task(caller(client, url, tally)) for _ in range(clients)]
            try:
                with view.showing():
                    start, tick = 0.0, 1
                    while not stop.is_set():
                        end = min(float(tick), duration)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), end - tally.elapsed())
                        view.add(sample(start))
                        if end >= duration:
                            break
                        start, tick = view.rows[-1].end, tick + 1
            finally:
                # The load stops here: nothing from now on is counted, then
                # the callers go, then the upstream (in this order).
                stopped_at = tally.freeze()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        server.should_exit = True
        await serving
        metrics_server.shutdown()
        metrics_server.server_close()
        metrics_thread.join(5)
        instrumentation.close()
    result = Result(
        duration=duration,
        clients=clients,
        timeline=timeline,
        tally=tally,
        rows=view.rows,
        retry=snapshots["retry"],
        breakers=snapshots["breakers"],
        interrupted=interrupted[0] if interrupted else None,
        stopped_at=stopped_at,
    )
    print_phases(console, result)
    print_summary(result)
    return result


# Output -----------------------------------------------------------------------


def _seconds(t: float) -> str:
    """1.25s, 2.5s, 30s"""
    return f"{t:.2f}".rstrip("0").rstrip(".") + "s"


def print_legend(
    url: str,
    metrics_port: int,
    duration: float,
    clients: int,
    seed: int,
    window: int,
    open_duration: float,
) -> None:
    timeline = Timeline(duration)
    print(f"resilience demo: {clients} clients for {duration:g}s against a flaky upstream")
    print(f"  upstream {url}   metrics http://127.0.0.1:{metrics_port}/metrics   seed {seed}")
    length = _seconds(timeline.phase_length)
    print(f"  phases, {length} each: {' -> '.join(p.name for p in PHASES)}")
    for index, phase in enumerate(PHASES):
        start, end = (_seconds(t) for t in timeline.span(index))
        print(f"    {start:>6}-{end:<6} {phase.name:<11} {phase.describe()}")
    print(
        f"  breaker: opens at 50% failed (or 80% slow) calls over a {window}s window "
        f"(20 calls at least),\n           stays open {open_duration:g}s, then lets 3 trial "
        "calls through (half_open) and closes or opens again"
    )
    print(f"  retry: 3 attempts, budget 20% of calls + 20/s; timeout {ATTEMPT_TIMEOUT:g}s")
    print("  rows: one a second (from-to, seconds since the start); calls ended, by outcome:")
    for name, meaning in OUTCOMES.items():
        print(f"    {name:<9} {meaning}")
    print("    retries   retries started; bulkhead: in flight/capacity+waiting")
    print(f"    breaker   every state it was in during the second ({ARROW} in order)")


def print_phases(console: Console, result: Result) -> None:
    """Per-phase totals, so that the first phase is in the output however long the run."""
    tally, timeline = result.tally, result.timeline
    rows = []
    for index, phase in enumerate(PHASES):
        start, end = timeline.span(index)
        if start >= result.stopped_at:
            break
        end = min(end, result.stopped_at) if index < len(PHASES) - 1 else result.stopped_at
        counts = tally.by_phase[phase.name]
        rows.append((phase.name, start, end, counts, tally.states_between(start, end)))
    if console.is_terminal:
        table = Table(title="per phase", expand=False)
        for header in ("upstream", "from", "to", "calls", *OUTCOMES, "retries", "breaker"):
            table.add_column(header, justify="left" if header == "breaker" else "right")
        for name, start, end, counts, states in rows:
            table.add_row(
                name,
                _seconds(start),
                _seconds(end),
                str(sum(counts[o] for o in OUTCOMES)),
                *(str(counts[o]) for o in OUTCOMES),
                str(counts["retries"]),
                path_text(states, _painted),
            )
        console.print(table)
        return
    print("per phase:")
    for name, start, end, counts, states in rows:
        outcomes = " ".join(f"{o}={counts[o]}" for o in OUTCOMES)
        span = f"{_seconds(start)}-{_seconds(end)}"
        print(
            f"  {name:<11} {span:<13} calls={sum(counts[o] for o in OUTCOMES)} "
            f"{outcomes} retries={counts['retries']} breaker={path_text(states)}"
        )


def print_summary(result: Result) -> None:
    tally, stats = result.tally, result.retry
    outcomes = tally.outcomes
    if result.interrupted:
        print(
            f"interrupted ({result.interrupted}) at {result.stopped_at:.1f}s: the load was "
            "stopped first, then the upstream; everything here happened before that"
        )
    total = sum(outcomes.values())
    print(
        f"summary: {total} calls in {result.stopped_at:.1f}s: "
        + ", ".join(f"{name}={outcomes[name]}" for name in OUTCOMES)
    )
    print(f"  retries: {stats.retries} in all; the calls as the retry counted them:")
    print(f"    calls that succeeded at once:       {stats.success_without_retry:>7}")
    print(f"    calls that succeeded after retrying:{stats.success_with_retry:>7}")
    print(f"    calls that failed after retrying:   {stats.failed_with_retry:>7}")
    print(
        f"    calls that failed without a retry:  {stats.failed_without_retry:>7}"
        "  (rejected by the breaker or the bulkhead, or no retry budget left)"
    )
    reading = retry_calls(stats) - total
    if reading:
        print(
            f"    ({reading} more than the callers counted: their answers were still "
            "being read when the load stopped)"
        )
    for name, breaker in result.breakers.items():
        print(
            f"  breaker {name}: {breaker.state.value} at the end; {breaker.failed_total} "
            f"failed and {breaker.slow_total} slow calls recorded, {breaker.rejected} rejected"
        )
    for at, old, new in tally.transitions:
        print(f"    {at:5.1f}s {old} {ARROW} {new}")


def retry_calls(stats: RetryStatistics) -> int:
    return (
        stats.success_without_retry
        + stats.success_with_retry
        + stats.failed_without_retry
        + stats.failed_with_retry
    )


# The self-check ---------------------------------------------------------------


def check_consistency(result: Result) -> list[str]:
    """What every run must show (the problems found, none when all is well):
    the rows, the per-phase totals and the summary count the same calls,
    retries and breaker transitions, nothing after the load stopped, and
    connection errors only where the upstream drops connections."""
    tally, rows = result.tally, result.rows
    problems = []
    shown: Counter[str] = Counter()
    for row in rows:
        shown.update(row.outcomes)
    if +shown != +tally.outcomes:
        problems.append(f"the rows show {dict(shown)}, the summary {dict(tally.outcomes)}")
    if sum(row.retries for row in rows) != tally.retries or tally.retries != result.retry.retries:
        problems.append(
            f"retries: rows {sum(row.retries for row in rows)}, events {tally.retries}, "
            f"retry stats {result.retry.retries}"
        )
    # A call leaves the retry (counted there) before its caller has read the
    # answer (counted here): at most one such call per caller when the load stops.
    reading = retry_calls(result.retry) - sum(tally.outcomes.values())
    if not 0 <= reading <= result.clients:
        problems.append(f"the retry counted {reading} calls more than the callers")
    per_phase: Counter[str] = Counter()
    for counts in tally.by_phase.values():
        per_phase.update(counts)
    if +per_phase != +Counter({**tally.outcomes, "retries": tally.retries}):
        problems.append(f"the phases add up to {dict(per_phase)}, not the summary's totals")
    if any(at > result.stopped_at for at, _, _ in tally.transitions):
        problems.append(f"a transition after the load stopped: {tally.transitions[-1]}")
    visited = [CircuitState.CLOSED.value]
    for row in rows:
        if row.states[0] != visited[-1]:
            problems.append(f"row {row.span()} starts {row.states[0]}, not {visited[-1]}")
        visited += row.states[1:]
    if visited[1:] != [new for _, _, new in tally.transitions]:
        problems.append(f"the rows show {visited}, the breaker went {tally.transitions}")
    for row in rows:
        # Only a phase that drops connections causes connection errors (one
        # may be counted a little after its phase ended: within a second).
        causes = result.timeline.between(row.start - 1.0, row.end)
        if row.outcomes["conn err"] and not any(p.reset_rate for p in causes):
            problems.append(
                f"row {row.span()}: {row.outcomes['conn err']} connection errors in "
                f"{ARROW.join(row.phases)}, where the upstream drops no connection"
            )
    return problems


def check_story(result: Result) -> list[str]:
    """What a run that was not interrupted should show: every phase had calls,
    and the breaker stayed closed while healthy, then opened (in whichever
    phase), went half-open in some row and was closed again at the end. A
    loaded machine can change the story (calls slowed by the CPU are slow
    calls to the breaker), so this fails the run only with --check."""
    tally = result.tally
    if result.interrupted is not None:
        return []
    problems = [
        f"no call ended in the {phase.name} phase"
        for phase in PHASES
        if not sum(tally.by_phase[phase.name][o] for o in OUTCOMES)
    ]
    healthy_end = result.timeline.span(0)[1]
    if any(at < healthy_end for at, _, _ in tally.transitions):
        problems.append(f"the breaker left closed in the healthy phase: {tally.transitions}")
    states = [new for _, _, new in tally.transitions]
    if "open" not in states:
        problems.append("the breaker never opened")
    if not any("half_open" in row.states for row in result.rows):
        problems.append("no row shows the breaker half-open")
    if not states or states[-1] != "closed":
        problems.append(f"the breaker was not closed again at the end: {tally.transitions}")
    return problems


@contextlib.contextmanager
def _quiet_uvicorn_errors() -> Iterator[None]:
    # The upstream drops connections on purpose; uvicorn logs each one.
    import logging

    logger = logging.getLogger("uvicorn.error")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def cli(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--fleet" in argv:  # `make demo ARGS=--fleet`: the other options are the fleet's
        from examples import demo_fleet

        return demo_fleet.cli([arg for arg in argv if arg != "--fleet"])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds (default 30)")
    parser.add_argument("--clients", type=int, default=40, help="concurrent callers (default 40)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--check",
        action="store_true",
        help="also fail (exit 1) when the breaker did not open and close again",
    )
    parser.add_argument(
        "--fleet",
        action="store_true",
        help="the fleet demo instead: worker processes sharing one rate limit and one "
        "breaker on a local redis-server (its options: --fleet --help)",
    )
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error(f"--duration must be > 0, got {args.duration}")
    if args.clients < 1:
        parser.error(f"--clients must be >= 1, got {args.clients}")
    try:
        with _quiet_uvicorn_errors():
            result = asyncio.run(run(args.duration, args.clients, args.seed))
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the load started
        print("interrupted", file=sys.stderr)
        return 130
    problems = check_consistency(result)
    story = check_story(result)
    if args.check:
        problems += story
    for problem in problems:
        print(f"self-check: {problem}", file=sys.stderr)
    if problems:
        print(f"self-check FAILED ({len(problems)} problems)")
        return 1
    told = "" if story or result.interrupted else "; the breaker opened, went half-open, closed"
    print(f"self-check passed: the rows, the phases and the summary agree{told}")
    if story:
        print(
            "  not the usual story (a run too short, too few clients or a loaded machine?): "
            + "; ".join(story)
        )
    if result.interrupted:
        return 128 + signal.Signals[result.interrupted].value
    return 0


if __name__ == "__main__":
    sys.exit(cli())
