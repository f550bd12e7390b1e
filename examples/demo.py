"""`make demo`: a resilient httpx client against a flaky upstream, live.

An embedded upstream (an ASGI app under uvicorn on 127.0.0.1, random port)
goes through four phases: healthy, slow, failing (503s and connection
resets) and recovering. Many concurrent clients call it through one
AsyncResilientTransport: retry with full-jitter backoff and a retry budget,
a per-host circuit breaker (failure rate and slow calls over a time window),
a per-attempt timeout and a bulkhead. A live view shows what each policy
does as the upstream changes, and Prometheus metrics are served on a local
port printed at start.

Run: python -m examples.demo [--duration SECONDS] [--clients N]
Ends by itself (30 s by default) with a summary; Ctrl-C ends it early.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterator
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
    CircuitState,
    Retry,
    RetryBudget,
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
from resilience.events import Event, StateChanged

# The upstream -----------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    name: str
    error_rate: float  # answers 503
    reset_rate: float  # starts a response, then drops the connection
    latency: float  # mean seconds
    hang_rate: float  # far beyond the client's timeout


PHASES = (
    Phase("healthy", 0.01, 0.0, 0.005, 0.0),
    Phase("slow", 0.02, 0.0, 0.08, 0.15),
    Phase("failing", 0.7, 0.2, 0.005, 0.02),
    Phase("recovering", 0.05, 0.0, 0.01, 0.0),
)


class FlakyUpstream:
    """An ASGI app whose behaviour follows the phase of the demo."""

    def __init__(self, duration: float, seed: int) -> None:
        self.started = time.monotonic()
        self.phase_length = duration / len(PHASES)
        self.rng = random.Random(seed)

    @property
    def phase(self) -> Phase:
        index = int((time.monotonic() - self.started) / self.phase_length)
        return PHASES[min(index, len(PHASES) - 1)]

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


# The client side --------------------------------------------------------------


class Tally:
    """Outcomes seen by the callers, and the breaker's transitions."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.transitions: list[str] = []
        self.started = time.monotonic()

    def on_event(self, event: Event) -> None:
        if isinstance(event, StateChanged):
            at = time.monotonic() - self.started
            self.transitions.append(
                f"{at:5.1f}s {event.old_state.value} -> {event.new_state.value}"
            )


async def caller(client: httpx.AsyncClient, url: str, tally: Tally, stop: float) -> None:
    while time.monotonic() < stop:
        try:
            response = await client.get(url)
            tally.outcomes["ok" if response.status_code < 500 else "server error"] += 1
        except HTTPCircuitOpenError:
            tally.outcomes["rejected (open)"] += 1
            await asyncio.sleep(0.05)  # a real caller would serve a fallback here
        except HTTPBulkheadFullError:
            tally.outcomes["shed (bulkhead)"] += 1
        except HTTPTimeoutError:
            tally.outcomes["timed out"] += 1
        except httpx.TransportError:
            tally.outcomes["transport error"] += 1
        await asyncio.sleep(0.02)  # think time between calls


# Outcome (as counted by the callers) -> short column header.
COLUMNS = {
    "ok": "ok",
    "server error": "5xx",
    "transport error": "conn err",
    "timed out": "timeout",
    "rejected (open)": "open",
    "shed (bulkhead)": "shed",
}


@dataclass
class Snapshot:
    at: float
    phase: str
    state: str
    outcomes: Counter[str]
    retries: int
    in_flight: int
    waiting: int
    capacity: int


class View:
    """Per-second rates: a rich table on a terminal, plain lines otherwise."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.rows: list[tuple[Snapshot, Counter[str], int]] = []

    def add(self, snap: Snapshot, delta: Counter[str], retries: int) -> None:
        self.rows.append((snap, delta, retries))
        if not self.console.is_terminal:
            counts = " ".join(f"{short}={delta[name]}" for name, short in COLUMNS.items())
            print(
                f"{snap.at:5.1f}s {snap.phase:<10} breaker={snap.state:<9} {counts} "
                f"retries={retries} bulkhead={snap.in_flight}/{snap.capacity}",
                flush=True,
            )

    def table(self) -> Table:
        table = Table(title="resilience demo: calls per second", expand=False)
        for header in ("t", "upstream", "breaker", *COLUMNS.values(), "retries", "bulkhead"):
            table.add_column(header, justify="right")
        for snap, delta, retries in self.rows[-15:]:
            style = {"open": "bold red", "half_open": "yellow"}.get(snap.state, "green")
            table.add_row(
                f"{snap.at:.0f}s",
                snap.phase,
                f"[{style}]{snap.state}[/]",
                *(str(delta[name]) for name in COLUMNS),
                str(retries),
                f"{snap.in_flight}/{snap.capacity}+{snap.waiting}",
            )
        return table


async def run(duration: float, clients: int, seed: int) -> Tally:
    registry = prometheus_client.CollectorRegistry()
    instrumentation = instrument(registry)
    metrics_server, metrics_thread = prometheus_client.start_http_server(
        0, addr="127.0.0.1", registry=registry
    )
    upstream = FlakyUpstream(duration, seed)
    sock = _bound_socket()
    server = uvicorn.Server(
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

    tally = Tally()
    retry = Retry(
        3,
        backoff=backoff.exponential(0.02, cap=0.3, jitter="full"),
        budget=RetryBudget(ratio=0.2, min_per_second=20),
        name="upstream",
    )
    breaker = CircuitBreaker(
        "upstream",
        failure_rate=0.5,
        window=TimeWindow(3),
        minimum_calls=20,
        slow_call_duration=0.2,
        slow_call_rate=0.8,
        open_duration=2.0,
        half_open_calls=3,
    )
    breaker.add_listener(tally.on_event)  # derived per-host breakers inherit listeners
    bulkhead = Bulkhead(32, max_waiting=8, max_wait=0.1, name="upstream")
    transport = AsyncResilientTransport(
        retry=retry, breaker=breaker, timeout=Timeout(0.25, name="upstream"), bulkhead=bulkhead
    )
    console = Console()
    view = View(console)
    print(f"upstream: {url}   metrics: http://127.0.0.1:{metrics_server.server_port}/metrics")
    print(f"{clients} clients for {duration:g}s; phases: {' -> '.join(p.name for p in PHASES)}")

    stop = time.monotonic() + duration
    async with httpx.AsyncClient(transport=transport) as client:
        tasks = [asyncio.create_task(caller(client, url, tally, stop)) for _ in range(clients)]
        try:
            live = Live(view.table(), console=console, refresh_per_second=4, transient=False)
            with live if console.is_terminal else contextlib.nullcontext():
                last, last_retries = Counter[str](), 0
                while time.monotonic() < stop:
                    await asyncio.sleep(min(1.0, max(0.0, stop - time.monotonic())))
                    now = tally.outcomes.copy()
                    retries = retry.stats.retries
                    breakers = list(transport.breakers.values())
                    stats = bulkhead.stats
                    snap = Snapshot(
                        at=time.monotonic() - tally.started,
                        phase=upstream.phase.name,
                        state=breakers[0].state.value if breakers else CircuitState.CLOSED.value,
                        outcomes=now,
                        retries=retries,
                        in_flight=stats.in_flight,
                        waiting=stats.waiting,
                        capacity=stats.capacity,
                    )
                    view.add(snap, now - last, retries - last_retries)
                    last, last_retries = now, retries
                    if console.is_terminal:
                        live.update(view.table())
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            server.should_exit = True
            await serving
            metrics_server.shutdown()
            metrics_server.server_close()
            metrics_thread.join(5)
            instrumentation.close()
            # Also on Ctrl-C: the run was cut short, not lost.
            print_summary(tally, retry, transport)
    return tally


def print_summary(tally: Tally, retry: Retry, transport: AsyncResilientTransport) -> None:
    total = sum(tally.outcomes.values())
    print("summary:", ", ".join(f"{k}={v}" for k, v in sorted(tally.outcomes.items())))
    print(f"  calls: {total}; retries: {retry.stats.retries}; retry stats: {retry.stats}")
    for name, breaker in transport.breakers.items():
        stats = breaker.stats
        print(
            f"  breaker {name}: {stats.state.value}, {stats.failed_total} failures, "
            f"{stats.slow_total} slow, {stats.rejected} rejected"
        )
    for line in tally.transitions:
        print(f"  transition {line}")


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds (default 30)")
    parser.add_argument("--clients", type=int, default=40, help="concurrent callers (default 40)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error(f"--duration must be > 0, got {args.duration}")
    if args.clients < 1:
        parser.error(f"--clients must be >= 1, got {args.clients}")
    try:
        with _quiet_uvicorn_errors():
            asyncio.run(run(args.duration, args.clients, args.seed))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(cli())
