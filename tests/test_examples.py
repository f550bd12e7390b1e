"""Every example runs, and says what it should."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))

# What each example must print (every line listed, in this order).
EXPECTED = {
    "quickstart.py": ("stats: RetryStatistics(",),
    "sync_client.py": ("config: {'region': 'eu-west'} after 3 attempts",),
    "demo.py": ("per phase:", "summary:", "self-check passed"),
    "starlette_app.py": ("self-test passed",),
    "custom_policy.py": (
        "pipeline: 'in stock' after 3 attempts",
        "pipeline: 2 calls at once -> 'in stock', LimitReached",
        "transport: GET /items -> 200 after 2 attempts",
        "transport: 2 requests at once -> 200, HTTPBulkheadFullError",
        "middleware: GET / -> 200",
        "middleware: 2 requests at once -> 200, 503 (Retry-After: 2)",
        "limit: peak 1 in flight, 3 rejected",
        "custom policy: every check passed",
    ),
    "hedging.py": (
        "warm-up: 100 reads",
        "steady: 2,000 reads, p50",
        "steady: the adaptive timeout's limit is",
        "slow for everyone: 300 reads of 30-50 ms",
        "the last 200 reads timed out 0 times",
        "stats: HedgeStatistics(calls=2400,",
        "hedging: every check passed",
    ),
    "ratelimit.py": (
        "decorator: calls ran at [0.0, 0.0, 0.0, 0.5, 1.0, 1.5] (fake seconds)",
        "decorator: RateLimiterStatistics(admitted=6, waited=3, rejected=0, wait_seconds=1.5",
        "refusal: RateLimitedError at t=4, retry_after=6s",
        "refusal: came back after retry_after and passed at t=10",
        "per user: ann ok, ann ok, ann refused (retry in 30s), bob ok",
        "per user: ann posted again at t=30; 2 keys held",
        "ratelimit: every check passed",
    ),
    "idempotency_service.py": (
        "retried POST: 2 attempts with one key, -> 201 /orders/1, Idempotent-Replayed: true",
        "service: 1 order created",
        "same key, other body: 422 idempotency_conflict",
        "duplicate in flight: 409 idempotency_in_flight, Retry-After: 1; the first -> 201",
        "after the hour's expiry: 201, a new order 3",
        "stats: ran=3 replayed=1 conflicts=1 mismatches=1 stored=3",
        "idempotency_service: every check passed",
    ),
    "ratelimit_asgi.py": (
        "per client: 203.0.113.7 GET /items -> 429 Retry-After: 20, "
        'RateLimit-Policy: "per-client";q=3;w=60, RateLimit: "per-client";r=0;t=20',
        "per client: 198.51.100.4 GET /items -> 200 "
        'RateLimit-Policy: "per-client";q=3;w=60, RateLimit: "per-client";r=2;t=20',
        "per client: 203.0.113.7 GET /health x5 -> 200, no RateLimit fields",
        "per key: k-1 from 198.51.100.4 GET /items -> 429 Retry-After: 30",
        'per key: the 429\'s body: {"detail":"Too Many Requests"}',
        "per key: no key from 203.0.113.7, 198.51.100.4, 203.0.113.7 -> [200, 200, 429]",
        "ratelimit_asgi: every check passed",
    ),
    "demo_fleet.py": (
        "fleet demo: 2 worker processes",
        "summary: 2 workers",
        "one limit: ",
        "outage: Redis killed at",
        "rejoin: every worker shared again after the restart",
        "breaker: every worker saw it open within",
        "self-check passed: one limit while shared, tripped together, no call failed",
    ),
    "redis_fleet.py": (
        "fleet: 3 worker processes share RateLimiter(50, burst=10, name='partner-api')",
        "shared: worker 1 admitted",
        "shared: worker 3 admitted",
        "admitted in total over",
        "within one limit: burst + rate*W = 10 + 50*",
        "outage: worker 1 admitted",
        "store breaker open (Redis not asked",
        "outage: Redis killed, no call failed;",
        "rejoin: Redis restarted on its port; every worker shares again after",
        "shared again: worker 1 admitted",
        "redis_fleet: every check passed",
    ),
    "idempotency_client.py": (
        'generated key "',
        "502 from the gateway, retried with the same key -> 201 /orders/1, "
        "Idempotent-Replayed: true",
        "after a restart, a new generated key -> /orders/2 (a second order)",
        "your own key, first: -> 201 /orders/3, Idempotent-Replayed: true",
        "your own key, after a restart: -> 201 /orders/3, Idempotent-Replayed: true",
        "without keys: 502, not retried; the service has 4 orders",
        "idempotency_client: every check passed",
    ),
    "saga_temporal.py": (
        "order o-1: shipped, tracking TRK-o-1, charge ch-o-1",
        "order o-1: the payment took 2 attempts",
        "order o-2: payment failed (CardDeclined: card for o-2 declined); compensated ['reserve']",
        "order o-2: reserved ['lamp'], released ['lamp']",
        "saga_temporal: every check passed",
    ),
    "saga.py": (
        "order o-1: o-1 shipped with label_o-1, charge ch_o-1",
        "order o-1: payment retried after [1.0, 2.0] (fake seconds)",
        "order o-2: charge failed (card for o-2 declined); compensated ['label', 'reserve']",
        "order o-2: reserved ['lamp'], printed label_o-2, voided label_o-2, released ['lamp']",
        "order o-3: needs a human: undo 'reserve' by hand (it returned ['lamp'])",
        "order o-3: compensated anyway: ['label']",
        "stats: SagaStatistics(running=0, completed=1, compensated=1, failed=1,",
        "saga: every check passed",
    ),
}
# --check: the demo also fails unless its breaker opened and closed again.
ARGS = {
    "demo.py": ["--duration", "2", "--clients", "5", "--check"],
    # --check: one limit while shared, tripped together, no call failed, shared again.
    "demo_fleet.py": ["--duration", "8", "--workers", "2", "--check"],
}


def test_every_example_has_an_expectation() -> None:
    assert {p.name for p in EXAMPLES} == set(EXPECTED)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path: Path) -> None:
    module = f"examples.{path.stem}"
    out = subprocess.run(
        [sys.executable, "-m", module, *ARGS.get(path.name, [])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    found = [
        next((i for i, line in enumerate(lines) if expected in line), None)
        for expected in EXPECTED[path.name]
    ]
    assert None not in found, (EXPECTED[path.name], out.stdout)
    assert found == sorted(found), (EXPECTED[path.name], out.stdout)


DEMO_ROW = re.compile(r"^\s*[\d.]+-\s*[\d.]+s (\S+) .*conn err=(\d+) .*breaker=(\S+)$")


def test_demo_ctrl_c_stops_the_load_before_the_upstream() -> None:
    # Ctrl-C in the healthy phase (0-7.5 s of 30 s), after two rows: the load
    # stops first, then the upstream, so no row shows the connection errors or
    # the open breaker that stopping the upstream first would cause.
    demo = subprocess.Popen(
        [sys.executable, "-m", "examples.demo", "--duration", "30", "--clients", "5"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert demo.stdout is not None
        lines, rows = [], 0
        while rows < 2:
            line = demo.stdout.readline()
            assert line, lines
            lines.append(line)
            rows += bool(DEMO_ROW.match(line))
        demo.send_signal(signal.SIGINT)
        out, err = demo.communicate(timeout=30)
    finally:
        demo.kill()
        demo.wait()
    out = "".join(lines) + out
    assert demo.returncode == 130, (out, err)
    assert "interrupted (SIGINT)" in out, out
    assert "self-check passed" in out, (out, err)
    found = [DEMO_ROW.match(line) for line in out.splitlines()]
    shown = [(m[1], int(m[2]), m[3]) for m in found if m]
    assert len(shown) >= 2, out
    assert all(row == ("healthy", 0, "closed") for row in shown), out
