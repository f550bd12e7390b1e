"""`make demo ARGS=--fleet`: worker processes sharing one limit and one breaker on Redis, live.

They call the demo's flaky upstream; the demo kills Redis halfway.

The demo starts its own redis-server (127.0.0.1, a free port, a temporary
directory, no persistence), the flaky upstream of ``examples/demo.py`` (its
four phases: healthy, slow, failing, recovering) and ``--workers`` worker
processes. Each worker is this file run again with ``--worker``: an asyncio
client with ``--clients`` callers, calling the upstream through an
``AsyncResilientTransport`` (one shared policy for every request, not one
per host) that holds

- ``RateLimiter(100, burst=20, name="fleet-api", backend=...)``: one limit
  for the whole fleet, decided on Redis;
- ``CircuitBreaker("fleet-upstream", window=TimeWindow(...), backend=...)``:
  one breaker for the whole fleet, tripped on every worker's calls;
- a per-attempt timeout, and no retry (each call is one attempt: what the
  limit admitted is what reached the breaker),

on its own ``redis.asyncio`` client, with ``sync_interval=0.1``. Each worker
reports what its callers saw once a second (and each state change at once)
as JSON lines on its stdout; the main process shows a row a second, per
worker and for the fleet, with the shared limit next to what the fleet was
admitted.

Halfway, once every worker has seen the breaker open, the demo kills Redis:
the workers keep serving, each on its own copy of the limit (the fleet is
admitted up to N times the limit meanwhile) and its own breaker; 10% of the
run later (0.8 s to 3 s) it starts Redis again, empty, on the same port, and
the workers share again (each within about a second: its store breaker's
open duration).

Needs redis-server on PATH (Debian: apt-get install redis-server). Without
it the demo says so and exits 0, unless CI=true, where it fails.

Run: python -m examples.demo_fleet [--workers N] [--duration SECONDS]
     [--clients N] [--seed N] [--check]
(or python -m examples.demo --fleet ...). Ends by itself (20 s by default)
with a summary and a self-check; with --check it exits 1 unless the fleet
was admitted at most burst + rate*W in every window W while every worker
shared the limit, every worker saw the breaker open within a second of the
first, no call failed because Redis was down, and every worker shared again
after the restart. Ctrl-C ends it early: the workers stop first, then the
upstream, then Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
import redis.asyncio
import uvicorn
from rich.console import Console
from rich.live import Live
from rich.table import Table

from examples._redis_server import HOST, RedisServer
from examples.demo import (
    ARROW,
    ATTEMPT_TIMEOUT,
    PHASES,
    TIMES,
    FlakyUpstream,
    Timeline,
    UpstreamServer,
    _bound_socket,
    _painted,
    _quiet_uvicorn_errors,
    _seconds,
    breaker_timings,
    path_text,
)
from resilience import CircuitBreaker, CircuitState, RateLimiter, Timeout, TimeWindow
from resilience.contrib.httpx import (
    AsyncResilientTransport,
    HTTPCircuitOpenError,
    HTTPRateLimitedError,
    HTTPTimeoutError,
)
from resilience.contrib.redis import RedisBackend, RedisBreakerStore
from resilience.events import Event, StateChanged

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "demo-fleet"
RATE, BURST = 100.0, 20  # calls a second, for the whole fleet
SYNC_INTERVAL = 0.1  # how often each worker's breaker syncs with Redis
# The longest a call waits for Redis: more than a service needs (0.05 s,
# the default), for a busy demo machine; past it a call is decided locally.
STORE_TIMEOUT = 0.1
THINK = 0.02  # seconds between a caller's calls
OPEN_PAUSE = 0.05  # after a rejection by the open breaker (a fallback would answer)
# Admissions are stamped on the workers' clocks just after Redis decided
# them, not on Redis's at its decision: 0.1 s of slack for that.
SLACK = 0.1
TRIP_SPREAD = 1.0  # "together": every worker saw it open within this of the first
KILL_AFTER_OPEN = 0.5  # seconds after the last worker saw the breaker open

# Outcome of a call as a worker counts it (and the column header): what it means.
OUTCOMES = {
    "ok": "answered",
    "errors": f"503s, dropped connections and timeouts ({ATTEMPT_TIMEOUT:g} s)",
    "open": "admitted by the limit, then rejected by the open breaker",
    "refused": "refused by the rate limit (never sent)",
}


def _rel(t0: float) -> float:
    return time.time() - t0


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


# One worker process -------------------------------------------------------------


class StampedTransport(httpx.AsyncBaseTransport):
    """The innermost transport: notes when each request is sent, that is,
    once the limit admitted it and the breaker let it through."""

    def __init__(self, stamp: Any) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._stamp = stamp

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._stamp()
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


class WorkerTally:
    """What one worker's callers saw since the last tick; frozen when the load stops."""

    def __init__(self) -> None:
        self.t0 = 0.0
        self.frozen = False
        self.counts: Counter[str] = Counter()
        self.stamps: list[float] = []  # admissions, seconds since t0
        self.failed: list[str] = []  # anything a call raised that it should not
        self.slowest = 0.0  # the slowest decision that never reached the upstream

    def stamp(self) -> None:
        if not self.frozen:
            self.stamps.append(_rel(self.t0))

    def count(self, outcome: str, seconds: float | None = None) -> None:
        if self.frozen:
            return
        self.counts[outcome] += 1
        if seconds is not None:
            self.slowest = max(self.slowest, seconds)

    def take(self, tick: int, end: float) -> dict[str, Any]:
        report = {
            "tick": tick,
            "end": end,
            "counts": dict(self.counts),
            "stamps": [round(t, 4) for t in self.stamps],
            "failed": self.failed,
            "slowest": round(self.slowest, 4),
        }
        self.counts, self.stamps, self.failed, self.slowest = Counter(), [], [], 0.0
        return report


async def caller(client: httpx.AsyncClient, url: str, tally: WorkerTally) -> None:
    """Calls until cancelled (when the load stops)."""
    while True:
        start = time.monotonic()
        try:
            response = await client.get(url)
            tally.count("ok" if response.status_code < 500 else "errors")
        except HTTPRateLimitedError:
            tally.count("refused", time.monotonic() - start)
        except HTTPCircuitOpenError:
            tally.stamp()  # the limit admitted it; the breaker rejected it at once
            tally.count("open", time.monotonic() - start)
            await asyncio.sleep(OPEN_PAUSE)
        except (HTTPTimeoutError, httpx.TransportError):
            tally.count("errors")
        except Exception as exc:  # what the demo says never happens (Redis down, say)
            if not tally.frozen:
                tally.failed.append(repr(exc))
        await asyncio.sleep(THINK)


async def stdin_lines() -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def worker(config: dict[str, Any]) -> None:
    """A worker: loads the scripts, says ready, waits for "go T0", runs the
    load, reports each tick, and ends on "stop", at the end of the run, or
    when its stdin closes (the demo is gone)."""
    index, port, duration = config["index"], config["port"], config["duration"]
    client = redis.asyncio.Redis(host=HOST, port=port)
    backend = RedisBackend(
        client, prefix=PREFIX, sync_interval=SYNC_INTERVAL, store_timeout=STORE_TIMEOUT
    )
    limiter = RateLimiter(RATE, burst=BURST, name="fleet-api", backend=backend)
    breaker = CircuitBreaker(
        "fleet-upstream",
        failure_rate=0.5,
        window=TimeWindow(config["window"]),
        minimum_calls=20,
        slow_call_duration=0.2,
        slow_call_rate=0.8,
        open_duration=config["open_duration"],
        half_open_calls=3,  # for the whole fleet
        backend=backend,
    )
    store = breaker.store
    assert isinstance(store, RedisBreakerStore)
    tally = WorkerTally()

    def on_event(event: Event) -> None:
        if isinstance(event, StateChanged) and tally.t0 and not tally.frozen:
            at = round(_rel(tally.t0), 4)
            _emit({"state": [at, event.old_state.value, event.new_state.value]})

    breaker.add_listener(on_event)

    def sharing() -> bool:
        """Whether this worker's limit and breaker are decided on Redis now."""
        return bool(
            backend.loaded and backend.breaker.state is CircuitState.CLOSED and store.connected
        )

    async def watch() -> None:
        shared = None
        while True:
            now = sharing()
            if now != shared and not tally.frozen:
                shared = now
                _emit({"sharing": [round(_rel(tally.t0), 4), now]})
            await asyncio.sleep(0.01)

    # Everything is built before "ready", so that the load starts at once on "go".
    transport = AsyncResilientTransport(
        StampedTransport(tally.stamp),
        rate_limit=limiter,
        breaker=breaker,
        timeout=Timeout(ATTEMPT_TIMEOUT, name="fleet-upstream"),
        per_host=False,  # the very limiter and breaker given, shared by name
    )
    http = httpx.AsyncClient(transport=transport)
    lines = await stdin_lines()
    # One connection per caller, opened now: on "go" every caller asks Redis
    # at once, and a connection opened then may take longer than store_timeout.
    with contextlib.suppress(redis.RedisError, OSError):
        await asyncio.gather(*(client.ping() for _ in range(config["clients"] + 2)))
    store.start()
    ready = await backend.ready() and await store.refresh()
    _emit({"ready": ready, "index": index})
    command = (await lines.readline()).decode().split()
    if command[:1] != ["go"]:
        await http.aclose()
        await store.aclose()
        await client.aclose()
        return
    tally.t0 = float(command[1])
    ticks = tick_ends(duration)

    async def ticker() -> None:
        for tick, end in enumerate(ticks, 1):
            await asyncio.sleep(max(0.0, tally.t0 + end - time.time()))
            if tick == len(ticks):
                tally.frozen = True
            _emit(tally.take(tick, end))

    url = config["url"]
    async with http:
        tasks = [asyncio.create_task(watch())]
        tasks += [asyncio.create_task(caller(http, url, tally)) for _ in range(config["clients"])]
        ticking = asyncio.create_task(ticker())
        told = asyncio.create_task(lines.readline())  # "stop", or b"" once stdin closes
        try:
            await asyncio.wait((ticking, told), return_when=asyncio.FIRST_COMPLETED)
            if not ticking.done():  # stopped early: the partial tick, then nothing
                ticking.cancel()
                end = round(_rel(tally.t0), 4)
                tally.frozen = True
                _emit(tally.take(len(ticks) + 1, end))
        finally:
            tally.frozen = True
            for task in (*tasks, ticking, told):
                task.cancel()
            await asyncio.gather(*tasks, ticking, told, return_exceptions=True)
    _emit({"final": {"limiter": repr(limiter.stats), "breaker": repr(breaker.stats)}})
    await store.aclose()
    await client.aclose()


def outage_length(duration: float) -> float:
    """How long Redis stays down: 10% of the run, 0.8 s at least, 3 s at most."""
    return min(max(0.8, 0.1 * duration), 3.0)


def tick_ends(duration: float) -> list[float]:
    """The ends of the rows: every whole second, and the end of the run."""
    ends = [float(s) for s in range(1, int(duration) + 1)]
    if not ends or ends[-1] < duration:
        ends.append(duration)
    return ends


# The main process: Redis, the upstream, the workers ------------------------------


# Every child process, so that whatever happens (a second Ctrl-C, an error)
# none outlives the demo: see cli().
_CHILDREN: set[int] = set()


@dataclass
class WorkerHandle:
    """The main process's view of one worker: what it reported, as it arrives."""

    number: int  # 1-based, as shown
    process: asyncio.subprocess.Process
    log_path: str
    ready: bool | None = None
    ticks: dict[int, dict[str, Any]] = field(default_factory=dict)
    states: list[tuple[float, str]] = field(default_factory=list)  # (at, new state)
    sharing: list[tuple[float, bool]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    lines: int = 0

    def first_open(self, before: float = float("inf")) -> float | None:
        return next((at for at, new in self.states if new == "open" and at < before), None)

    def log_tail(self) -> str:
        try:
            with open(self.log_path) as log:
                return log.read()[-3000:]
        except OSError:
            return ""

    def tell(self, line: str) -> None:
        stdin = self.process.stdin
        if stdin is not None and not stdin.is_closing():
            with contextlib.suppress(OSError):
                stdin.write(line.encode() + b"\n")


async def read_reports(handle: WorkerHandle, changed: asyncio.Event) -> None:
    assert handle.process.stdout is not None
    async for raw in handle.process.stdout:
        message = json.loads(raw)
        handle.lines += 1
        if "tick" in message:
            handle.ticks[message["tick"]] = message
        elif "state" in message:
            at, _, new = message["state"]
            handle.states.append((at, new))
        elif "sharing" in message:
            at, now = message["sharing"]
            handle.sharing.append((at, now))
        elif "ready" in message:
            handle.ready = message["ready"]
        elif "final" in message:
            handle.final = message["final"]
        changed.set()
    changed.set()  # its stdout closed: the worker ended


def _log_file(path: str) -> Any:
    """A worker's stderr: its warnings (Redis down, say) stay out of the view."""
    return open(path, "wb")  # closed by the caller's with


async def start_workers(
    count: int, config: dict[str, Any], directory: str, changed: asyncio.Event
) -> tuple[list[WorkerHandle], list[asyncio.Task[None]]]:
    handles, readers = [], []
    for index in range(count):
        log_path = os.path.join(directory, f"worker-{index + 1}.log")
        with _log_file(log_path) as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "examples.demo_fleet",
                "--worker",
                json.dumps({**config, "index": index}),
                cwd=ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                start_new_session=True,  # a Ctrl-C reaches the demo, which stops them
            )
        _CHILDREN.add(process.pid)
        handle = WorkerHandle(index + 1, process, log_path)
        handles.append(handle)
        readers.append(asyncio.create_task(read_reports(handle, changed)))
    return handles, readers


async def stop_workers(handles: list[WorkerHandle], readers: list[asyncio.Task[None]]) -> None:
    """Say stop, close their stdin, wait a little, then kill what is left."""
    for handle in handles:
        handle.tell("stop")
        stdin = handle.process.stdin
        if stdin is not None:
            stdin.close()
    for handle in handles:
        try:
            async with asyncio.timeout(5.0):
                await handle.process.wait()
        except TimeoutError:
            handle.process.kill()
            await handle.process.wait()
        _CHILDREN.discard(handle.process.pid)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2.0):
            await asyncio.gather(*readers, return_exceptions=True)
    for task in readers:
        task.cancel()


async def wait_until(
    changed: asyncio.Event, done: Any, stop: asyncio.Event, within: float, what: str
) -> None:
    """Wait for ``done()`` (re-checked whenever a worker reports), or ``stop``;
    RuntimeError after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not done() and not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"timed out waiting for {what}")
        changed.clear()
        waiter = asyncio.create_task(changed.wait())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait((waiter, stopper), timeout=left, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        stopper.cancel()


# The view --------------------------------------------------------------------


def changes_between(
    changes: list[tuple[float, Any]], initial: Any, start: float, end: float
) -> list[Any]:
    """Every value a quantity had during [start, end), in order, given its
    changes ``(at, new value)``."""
    values = [initial]
    for at, new in changes:
        if at >= end:
            break
        if at < start:
            values = [new]
        elif new != values[-1]:
            values.append(new)
    return values


@dataclass
class WorkerSecond:
    admitted: int
    counts: Counter[str]
    states: list[str]  # every breaker state it was in during the row
    alone: bool  # decided on its own (not on Redis) at some moment of the row

    def cell(self, paint: Any = str) -> str:
        text = f"{self.admitted:>3} {path_text(self.states, paint)}"
        return text + (" alone" if self.alone else "")


@dataclass
class FleetRow:
    start: float
    end: float
    phases: list[str]
    redis: list[str]  # "up", "down": every state Redis was in during the row
    workers: list[WorkerSecond]

    @property
    def admitted(self) -> int:
        return sum(w.admitted for w in self.workers)

    @property
    def counts(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for w in self.workers:
            total.update(w.counts)
        return total

    def limit(self) -> str:
        """The limit the fleet was under: one shared, or each worker's own."""
        alone = sum(w.alone for w in self.workers)
        limits = alone + (1 if alone < len(self.workers) else 0)
        return f"{RATE:g}" if limits == 1 else f"{limits}{TIMES}{RATE:g}"

    def span(self) -> str:
        return f"{self.start:4.1f}-{self.end:4.1f}s"

    def plain(self) -> str:
        counts = self.counts
        outcomes = " ".join(f"{name}={counts[name]}" for name in OUTCOMES)
        workers = " | ".join(f"w{n} {w.cell()}" for n, w in enumerate(self.workers, 1))
        return (
            f"{self.span()} {ARROW.join(self.phases):<18} redis={ARROW.join(self.redis):<7} "
            f"fleet admitted={self.admitted} limit={self.limit()}/s {outcomes} | {workers}"
        )


class FleetView:
    """One row a second: a live rich table on a terminal, plain lines otherwise;
    on a terminal, the table of every row once the run ends."""

    def __init__(self, console: Console, workers: int) -> None:
        self.console = console
        self.workers = workers
        self.rows: list[FleetRow] = []
        self.live: Live | None = None
        self.notes: list[str] = []

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

    def add(self, row: FleetRow) -> None:
        self.rows.append(row)
        self.refresh()
        if not self.console.is_terminal:
            print(row.plain(), flush=True)

    def note(self, text: str) -> None:
        """An event (Redis killed, restarted): under the table, or a line of its own."""
        self.notes.append(text)
        self.refresh()
        if not self.console.is_terminal:
            print(f"  -- {text}", flush=True)

    def refresh(self) -> None:
        if self.live is not None:
            self.live.update(self.table(self._fits()))

    def _fits(self) -> int:
        return max(5, self.console.size.height - 9)

    def table(self, last: int) -> Table:
        table = Table(
            title="per second: admitted by the shared limit, and the breaker, per worker",
            caption="\n".join(self.notes) or None,
            expand=False,
        )
        workers = [f"w{n}" for n in range(1, self.workers + 1)]
        for header in ("seconds", "upstream", "redis", *workers, "fleet", "limit", *OUTCOMES):
            table.add_column(header, justify="left" if header in workers else "right")
        for row in self.rows[-last:] if last else []:
            counts = row.counts
            table.add_row(
                row.span(),
                ARROW.join(row.phases),
                ARROW.join(
                    f"[bold red]{s}[/]" if s == "down" else f"[green]{s}[/]" for s in row.redis
                ),
                *(w.cell(_painted) for w in row.workers),
                str(row.admitted),
                row.limit(),
                *(str(counts[name]) for name in OUTCOMES),
            )
        return table


# The run ----------------------------------------------------------------------


@dataclass
class FleetResult:
    duration: float
    workers: list[WorkerHandle]
    rows: list[FleetRow]
    stopped_at: float
    killed_at: float | None
    restarted_at: float | None
    evalsha_after_restart: int = 0
    interrupted: str | None = None

    def stamps(self) -> list[float]:
        return sorted(t for w in self.workers for tick in w.ticks.values() for t in tick["stamps"])

    def failed(self) -> list[str]:
        return [f for w in self.workers for tick in w.ticks.values() for f in tick["failed"]]

    def slowest(self) -> float:
        return max(
            (tick["slowest"] for w in self.workers for tick in w.ticks.values()), default=0.0
        )

    def redis_up(self) -> list[tuple[float, float]]:
        if self.killed_at is None:
            return [(0.0, self.stopped_at)]
        spans = [(0.0, self.killed_at)]
        if self.restarted_at is not None:
            spans.append((self.restarted_at, self.stopped_at))
        return spans

    def shared(self) -> list[tuple[float, float]]:
        """When Redis was up and every worker decided on it."""
        spans = self.redis_up()
        for w in self.workers:
            spans = intersect(spans, true_spans(w.sharing, self.stopped_at))
        return [(a, b) for a, b in spans if b > a]

    def outage(self) -> tuple[float, float] | None:
        if self.killed_at is None:
            return None
        return self.killed_at, self.restarted_at or self.stopped_at

    def rejoined(self) -> list[float | None]:
        """Each worker's delay between the restart and its sharing again."""
        if self.restarted_at is None or self.killed_at is None:
            return [None] * len(self.workers)
        delays: list[float | None] = []
        for w in self.workers:
            back = [at for at, now in w.sharing if now and at > self.killed_at]
            delays.append(max(0.0, back[0] - self.restarted_at) if back else None)
        return delays


def true_spans(changes: list[tuple[float, bool]], end: float) -> list[tuple[float, float]]:
    spans, since = [], None
    for at, now in changes:
        if now and since is None:
            since = at
        elif not now and since is not None:
            spans.append((since, at))
            since = None
    if since is not None:
        spans.append((since, end))
    return spans


def intersect(
    a: list[tuple[float, float]], b: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    return [(max(s, t), min(e, f)) for s, e in a for t, f in b if max(s, t) < min(e, f)]


def fullest_window(stamps: list[float]) -> tuple[int, float, float]:
    """Of every window [t_i, t_j], the one whose calls exceed ``RATE * W`` the
    most: (calls, W, calls - RATE * W). The fleet obeys one limit when that
    excess is at most the burst (plus the clocks' slack)."""
    best = (0, 0.0, 0.0)
    lowest, at = float("inf"), 0.0  # min over i of i - RATE * t_i, and its t_i
    for j, t in enumerate(stamps):
        if j - RATE * t < lowest:
            lowest, at = j - RATE * t, t
        excess = (j + 1 - RATE * t) - lowest
        if excess > best[2]:
            best = (round(excess + RATE * (t - at)), t - at, excess)
    return best


def build_row(
    handles: list[WorkerHandle],
    tick: int,
    start: float,
    timeline: Timeline,
    redis_changes: list[tuple[float, str]],
) -> FleetRow:
    workers, end = [], start
    for w in handles:
        report = w.ticks.get(tick, {"counts": {}, "stamps": [], "end": start})
        end = max(end, report["end"])
    for w in handles:
        report = w.ticks.get(tick, {"counts": {}, "stamps": []})
        sharing = changes_between(w.sharing, True, start, end)
        workers.append(
            WorkerSecond(
                admitted=len(report["stamps"]),
                counts=Counter(report["counts"]),
                states=changes_between(w.states, CircuitState.CLOSED.value, start, end),
                alone=not all(sharing),
            )
        )
    return FleetRow(
        start=start,
        end=end,
        phases=[p.name for p in timeline.between(start, end)],
        redis=changes_between(redis_changes, "up", start, end),
        workers=workers,
    )


async def run(args: argparse.Namespace, binary: str) -> FleetResult | None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    interrupted: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        interrupted.append(sig.name)
        stop.set()
        for handled in (signal.SIGINT, signal.SIGTERM):  # a second one ends it hard
            loop.remove_signal_handler(handled)

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal, sig)

    duration = args.duration
    server = RedisServer(binary, "demo-fleet-")
    try:
        await asyncio.to_thread(server.start)
        timeline = Timeline(duration)
        upstream = FlakyUpstream(timeline, args.seed)
        sock = _bound_socket()
        http_server = UpstreamServer(
            uvicorn.Config(
                upstream,
                log_level="critical",
                lifespan="off",
                access_log=False,
                timeout_graceful_shutdown=1,
            )
        )
        serving = asyncio.create_task(http_server.serve(sockets=[sock]))
        try:
            while not http_server.started:  # noqa: ASYNC110 (uvicorn has a flag, not an event)
                await asyncio.sleep(0.01)
            url = f"http://127.0.0.1:{sock.getsockname()[1]}/item"
            window, open_duration = breaker_timings(duration)
            config = {
                "port": server.port,
                "url": url,
                "duration": duration,
                "clients": args.clients,
                "window": window,
                "open_duration": open_duration,
            }
            print_legend(args, server.port, url, window, open_duration)
            changed = asyncio.Event()
            handles, readers = await start_workers(args.workers, config, server.directory, changed)
            try:
                return await drive(
                    args, handles, changed, stop, interrupted, server, timeline, upstream
                )
            finally:
                await stop_workers(handles, readers)
        finally:
            http_server.should_exit = True
            await serving
    finally:
        await asyncio.to_thread(server.stop)


async def drive(
    args: argparse.Namespace,
    handles: list[WorkerHandle],
    changed: asyncio.Event,
    stop: asyncio.Event,
    interrupted: list[str],
    server: RedisServer,
    timeline: Timeline,
    upstream: FlakyUpstream,
) -> FleetResult | None:
    duration = args.duration

    def gone() -> list[WorkerHandle]:
        return [w for w in handles if w.process.returncode is not None and w.final is None]

    def check_alive() -> None:
        for w in gone():
            raise RuntimeError(
                f"worker {w.number} exited with {w.process.returncode}:\n{w.log_tail()}"
            )

    await wait_until(
        changed,
        lambda: all(w.ready is not None for w in handles) or bool(gone()),
        stop,
        30.0,
        "the workers to start",
    )
    if stop.is_set():
        return None
    check_alive()
    if not all(w.ready for w in handles):
        raise RuntimeError("a worker could not load its scripts on Redis")

    console = Console()
    view = FleetView(console, len(handles))
    t0 = time.time()
    upstream.started = time.monotonic()
    for w in handles:
        w.tell(f"go {t0!r}")
    redis_changes: list[tuple[float, str]] = []
    marks: dict[str, float] = {}

    async def chaos() -> None:
        """Kill Redis halfway, once every worker has seen the breaker open;
        start it again a while later."""
        while True:
            now = _rel(t0)
            opened = [w.first_open() for w in handles]
            if now >= 0.65 * duration:
                break
            if (
                now >= duration / 2
                and None not in opened
                and now >= max(o for o in opened if o is not None) + KILL_AFTER_OPEN
            ):
                break
            await asyncio.sleep(0.02)
        server.kill()
        marks["killed"] = _rel(t0)
        redis_changes.append((marks["killed"], "down"))
        view.note(
            f"{marks['killed']:.1f}s: Redis killed; every worker goes on alone "
            "(its own limit and breaker)"
        )
        restart = marks["killed"] + outage_length(duration)
        await asyncio.sleep(max(0.0, restart - _rel(t0)))
        await asyncio.to_thread(server.start, server.port)
        marks["restarted"] = _rel(t0)
        redis_changes.append((marks["restarted"], "up"))
        view.note(f"{marks['restarted']:.1f}s: Redis started again (empty) on its port")

    ticks = tick_ends(duration)
    stopped_at = 0.0
    chaotic = asyncio.create_task(chaos())
    try:
        with view.showing():
            start = 0.0
            for tick in range(1, len(ticks) + 1):
                await wait_until(
                    changed,
                    lambda tick=tick: all(tick in w.ticks for w in handles) or bool(gone()),
                    stop,
                    ticks[tick - 1] - _rel(t0) + 10.0,
                    f"the workers' reports of second {tick}",
                )
                check_alive()
                if chaotic.done() and chaotic.exception() is not None:
                    raise chaotic.exception()  # type: ignore[misc]
                if stop.is_set():
                    break
                view.add(build_row(handles, tick, start, timeline, redis_changes))
                start = view.rows[-1].end
            stopped_at = start
            if stop.is_set():
                # The load stops first: the workers report the partial second.
                partial = len(ticks) + 1
                for w in handles:
                    w.tell("stop")
                with contextlib.suppress(RuntimeError):
                    await wait_until(
                        changed,
                        lambda: all(partial in w.ticks or w.final for w in handles),
                        asyncio.Event(),
                        5.0,
                        "the workers to stop",
                    )
                row = build_row(handles, partial, start, timeline, redis_changes)
                if row.end > start:
                    view.add(row)
                stopped_at = row.end
    finally:
        chaotic.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await chaotic
    evalsha = 0
    if "restarted" in marks:
        with contextlib.suppress(redis.RedisError):
            evalsha = await asyncio.to_thread(server.evalsha_calls)
    for w in handles:
        w.tell("stop")
    with contextlib.suppress(RuntimeError):
        await wait_until(
            changed, lambda: all(w.final or gone() for w in handles), asyncio.Event(), 5.0, ""
        )
    result = FleetResult(
        duration=duration,
        workers=handles,
        rows=view.rows,
        stopped_at=stopped_at,
        killed_at=marks.get("killed"),
        restarted_at=marks.get("restarted"),
        evalsha_after_restart=evalsha,
        interrupted=interrupted[0] if interrupted else None,
    )
    print_summary(result)
    return result


# Output -----------------------------------------------------------------------


def print_legend(
    args: argparse.Namespace, port: int, url: str, window: int, open_duration: float
) -> None:
    timeline = Timeline(args.duration)
    print(
        f"fleet demo: {args.workers} worker processes, {args.clients} callers each, for "
        f"{args.duration:g}s against a flaky upstream, sharing state on Redis"
    )
    print(f"  redis-server 127.0.0.1:{port} (ours, temporary)   upstream {url}   seed {args.seed}")
    print(
        f"  every worker: RateLimiter({RATE:g}, burst={BURST}, name='fleet-api') and "
        f"CircuitBreaker('fleet-upstream', window=TimeWindow({window})) on its own "
        f"RedisBackend (sync_interval={SYNC_INTERVAL:g}, store_timeout={STORE_TIMEOUT:g}), "
        f"in one AsyncResilientTransport, timeout {ATTEMPT_TIMEOUT:g}s, no retry"
    )
    print(
        f"  one limit for the fleet: at most {BURST} + {RATE:g}*W calls in any W seconds "
        "while Redis answers; each worker its own meanwhile"
    )
    print(
        f"  one breaker for the fleet: opens at 50% failed (or 80% slow) calls of every "
        f"worker over {window}s (20 calls at least),\n    stays open {open_duration:g}s, "
        "then 3 trial calls in total (half_open)"
    )
    length = _seconds(timeline.phase_length)
    print(f"  upstream phases, {length} each: {' -> '.join(p.name for p in PHASES)}")
    for index, phase in enumerate(PHASES):
        start, end = (_seconds(t) for t in timeline.span(index))
        print(f"    {start:>6}-{end:<6} {phase.name:<11} {phase.describe()}")
    print(
        "  Redis is killed halfway, once every worker has seen the breaker open, and "
        f"started again (empty) {outage_length(args.duration):g}s later"
    )
    print("  rows: one a second; per worker: calls admitted by the limit, breaker states,")
    print("    'alone' if it decided without Redis at some moment; fleet: admitted in all,")
    print(f"    next to the limit it was under (per second; {TIMES}N: N limits, workers alone)")
    for name, meaning in OUTCOMES.items():
        print(f"    {name:<9} {meaning}")


def print_summary(result: FleetResult) -> None:
    if result.interrupted:
        print(
            f"interrupted ({result.interrupted}) at {result.stopped_at:.1f}s: the workers "
            "stopped first, then the upstream, then Redis"
        )
    totals: Counter[str] = Counter()
    admitted = 0
    for row in result.rows:
        totals.update(row.counts)
        admitted += row.admitted
    print(
        f"summary: {len(result.workers)} workers, {result.stopped_at:.1f}s: admitted "
        f"{admitted} by the limit, "
        + ", ".join(f"{name}={totals[name]}" for name in OUTCOMES)
        + f", failed={len(result.failed())}"
    )
    for number, w in enumerate(result.workers, 1):
        counts: Counter[str] = Counter()
        mine = 0
        for tick in w.ticks.values():
            counts.update(tick["counts"])
            mine += len(tick["stamps"])
        print(
            f"  worker {number}: admitted {mine}, "
            + ", ".join(f"{name}={counts[name]}" for name in OUTCOMES)
        )
    stamps = result.stamps()
    shared = result.shared()
    spans = ", ".join(f"{a:.1f}-{b:.1f}s" for a, b in shared)
    for a, b in shared:
        calls, width, _ = fullest_window([t for t in stamps if a <= t < b])
        inside = sum(a <= t < b for t in stamps)
        print(
            f"one limit: {inside} admitted in {a:.1f}-{b:.1f}s ({inside / max(b - a, 1e-9):.0f}/s"
            f", limit {RATE:g}/s); the window closest to the bound: {calls} calls in {width:.2f}s, "
            f"burst + rate*W = {BURST} + {RATE:g}*{width:.2f} = {BURST + RATE * width:.0f}"
            f" (+{RATE * SLACK:g} for the clocks)"
        )
    if not shared:
        print("one limit: no moment when every worker shared it")
    outage = result.outage()
    if outage is not None:
        a, b = outage
        inside = sum(a <= t < b for t in stamps)
        back = (
            f"started again at {b:.1f}s"
            if result.restarted_at is not None
            else f"still down at {b:.1f}s"
        )
        print(
            f"outage: Redis killed at {a:.1f}s, {back}: {inside} admitted "
            f"in {b - a:.1f}s ({inside / max(b - a, 1e-9):.0f}/s, each worker on its own "
            f"{RATE:g}/s); failed calls: {len(result.failed())}; slowest decision without "
            f"the upstream {result.slowest() * 1000:.0f} ms (store_timeout "
            f"{STORE_TIMEOUT * 1000:.0f} ms)"
        )
    if result.restarted_at is not None:
        delays = result.rejoined()
        shown = ", ".join("never" if d is None else f"{d:.2f}s" for d in delays)
        who = "every worker" if None not in delays else "not every worker"
        print(
            f"rejoin: {who} shared again after the restart: {shown} later "
            f"(Redis ran {result.evalsha_after_restart} scripts since); shared: {spans}"
        )
    opened = [w.first_open(result.killed_at or float("inf")) for w in result.workers]
    if None not in opened:
        spread = max(opened) - min(opened)  # type: ignore[type-var,operator]
        shown = ", ".join(f"w{n} {at:.2f}s" for n, at in enumerate(opened, 1))
        print(f"breaker: every worker saw it open within {spread:.2f}s: {shown}")
    else:
        print(
            "breaker: not every worker saw it open while Redis was up: "
            + ", ".join("never" if at is None else f"{at:.2f}s" for at in opened)
        )
    for number, w in enumerate(result.workers, 1):
        path = path_text([CircuitState.CLOSED.value, *(new for _, new in w.states)])
        print(f"  worker {number}: {path}")


# The self-check ---------------------------------------------------------------


def check(result: FleetResult) -> list[str]:
    """What --check asks of a run (the problems found; none when all is well)."""
    problems = []
    stamps = result.stamps()
    shared = result.shared()
    if not shared:
        problems.append("the workers never all shared the limit")
    for a, b in shared:
        calls, width, excess = fullest_window([t for t in stamps if a <= t < b])
        if excess > BURST + RATE * SLACK:
            problems.append(
                f"{a:.1f}-{b:.1f}s: {calls} calls admitted in {width:.2f}s, over "
                f"burst + rate*W = {BURST + RATE * width:.0f} (+{RATE * SLACK:g})"
            )
    opened = [w.first_open(result.killed_at or float("inf")) for w in result.workers]
    if None in opened:
        problems.append(f"not every worker saw the breaker open while Redis was up: {opened}")
    elif max(opened) - min(opened) > TRIP_SPREAD:  # type: ignore[type-var,operator]
        problems.append(f"the workers saw the breaker open {opened}: not together")
    if result.failed():
        problems.append(f"{len(result.failed())} calls failed: {result.failed()[:3]}")
    if result.killed_at is None or result.restarted_at is None:
        problems.append("Redis was not killed and restarted")
    else:
        delays = result.rejoined()
        if None in delays:
            problems.append(f"not every worker shared again after the restart: {delays}")
        if not any(a >= result.restarted_at for a, _ in shared):
            problems.append("the workers did not all share again after the restart")
        if not result.evalsha_after_restart:
            problems.append("Redis ran no script after the restart")
    shown = sum(row.admitted for row in result.rows)
    if shown != len(stamps):
        problems.append(f"the rows show {shown} admitted calls, the workers reported {len(stamps)}")
    return problems


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, default=3, help="worker processes (default 3)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds (default 20)")
    parser.add_argument("--clients", type=int, default=10, help="callers per worker (default 10)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 unless the fleet obeyed one limit, tripped together, no call "
        "failed and the workers shared again after Redis restarted",
    )
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error(f"--duration must be > 0, got {args.duration}")
    if not 1 <= args.workers <= 32:
        parser.error(f"--workers must be between 1 and 32, got {args.workers}")
    if args.clients < 1:
        parser.error(f"--clients must be >= 1, got {args.clients}")
    binary = shutil.which("redis-server")
    if binary is None:
        in_ci = os.environ.get("CI") == "true"
        print(
            "demo --fleet: redis-server was not found on PATH; install it to run the fleet "
            "demo (Debian: apt-get install redis-server)" + (" (CI=true: failing)" if in_ci else "")
        )
        return 1 if in_ci else 0
    try:
        with _quiet_uvicorn_errors():
            result = asyncio.run(run(args, binary))
    except KeyboardInterrupt:  # a second Ctrl-C
        print("interrupted", file=sys.stderr)
        return 130
    except RuntimeError as exc:  # a worker or redis-server that failed: said, then 1
        print(f"demo --fleet: {exc}", file=sys.stderr)
        return 1
    finally:
        for pid in list(_CHILDREN):  # whatever went wrong, no worker outlives the demo
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _CHILDREN.clear()
    if result is None:
        print("interrupted before the load started", file=sys.stderr)
        return 130
    problems = check(result) if not result.interrupted else []
    for problem in problems:
        print(f"self-check: {problem}", file=sys.stderr)
    if problems and args.check:
        print(f"self-check FAILED ({len(problems)} problems)")
        return 1
    if result.interrupted:
        print("self-check skipped (interrupted)")
        return 128 + signal.Signals[result.interrupted].value
    if problems:
        print(f"self-check: not the usual story ({len(problems)} problems, listed above)")
        return 0
    print(
        "self-check passed: one limit while shared, tripped together, no call failed, "
        "shared again after the restart"
    )
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the demo stops its workers
        asyncio.run(worker(json.loads(sys.argv[2])))
    else:
        sys.exit(cli())
