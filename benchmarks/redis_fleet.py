"""Shared rate limits on Redis: a fleet's throughput, round trips and Redis CPU,
and the cost of one decision.

What it measures:

- **Throughput.** 1, 4 and 16 OS processes (``--processes``) against one
  redis-server, then against a three-node Redis Cluster. Each process is
  this module run again with ``--worker``: one asyncio loop, one
  ``RedisBackend`` (``store_timeout=1.0``, so that a slow answer on a loaded
  machine is still the store's, not a local decision) and one keyed
  ``RateLimiter(10**6, burst=10**6, key=..., name="fleet-...")`` shared by
  every process, calling ``await limiter.call(h, key)`` one call after
  another, as fast as it can, for ``--seconds`` (2 s), over 1000 keys in
  turn (each process starting at another key). The limit is far above what
  the fleet can call, so every call is admitted: one round trip each.
  Before the start every process calls every key once (connections to
  every node are open) and waits for the others.
- Per configuration: admitted calls per second in total (the sum of each
  process's calls over its own timed window) and per process (the mean,
  with the range); **round trips per admitted call**, from Redis itself:
  the ``cmdstat_evalsha`` calls of ``INFO commandstats`` (summed over the
  nodes) over the run, divided by the calls admitted (1.00: one script per
  decision, nothing else); **Redis CPU**: the ``used_cpu_sys +
  used_cpu_user`` of ``INFO cpu`` over the run (summed over the nodes), in
  ms per 1000 admitted calls and as a share of one CPU; the client
  processes' own CPU time per call (``time.process_time()``); and the
  **other load**: the CPUs the machine was busy with meanwhile beside the
  clients and Redis (``/proc/stat``, less both), that is other tenants'
  work and the kernel's loopback networking not charged to a process. A
  row with much of it was measured on a busy machine.
- **Redis CPU at rest**, over one second with no client: one server's
  ``serverCron``, and the cluster's three nodes with their cluster bus
  (part of every cluster row's CPU per call).
- **One decision, in process** (asyncio, one redis-server, nothing else
  running): the median over 7 rounds of about 0.2 s each, the cases of a
  group taking turns in every round, of a tight loop of
  a **remembered refusal** (a limit of 1 per hour, used up: Redis refused
  once, and the refusal is repeated locally until its retry-after; the
  loop checks that Redis saw no EVALSHA meanwhile), against one raise
  caught (the floor of any refusal) and the same refusal
  by a limiter without a backend; and of an **admitted call** (one
  EVALSHA round trip), against a bare ``PING`` and the same ``EVALSHA``
  sent with redis-py directly (the round trip's floor).

The servers: ``redis-server`` on 127.0.0.1, free ports, a temporary
directory each, no RDB and no AOF; the cluster is three cluster-enabled
nodes joined by ``redis-cli --cluster create ... --cluster-replicas 0
--cluster-yes``, used once every node reports ``cluster_state:ok``. Every
server is stopped at the end, on an error or Ctrl-C too, and asks the
kernel for SIGTERM if this process dies without stopping it.

Everything runs on one machine: the clients and Redis share its CPUs, so on
a small VM the fleet's throughput is the clients' Python cost per call more
than Redis's, and 16 processes on 2 CPUs mostly queue for them.

Run it (about a minute)::

    python -m benchmarks.redis_fleet
    python -m benchmarks.redis_fleet --seconds 1 --processes 1,4 --json /tmp/redis.json

Needs ``redis-server`` and ``redis-cli`` on PATH (Debian: ``apt-get install
redis-server``) and redis-py (the ``redis`` extra). Linux for the kernel's
safety net (``prctl``) and the other load (``/proc/stat``); the rest runs
anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import redis
import redis.asyncio

from examples._redis_server import HOST, RedisCluster, RedisServer, stop_all
from examples._workers import Workers
from resilience import RateLimitedError, RateLimiter
from resilience.contrib.redis import RedisBackend

from .cases_baseline import Boom, f, f_fail

KEYS = 1000
RATE = 10**6  # per key per second, and the burst: every call is admitted
PREFIX = "bench"
READY_DEADLINE = 90.0  # for 16 processes to start, import and warm up on 2 CPUs
ROUNDS = 7
BATCH = 0.2  # seconds per in-process round


# -- servers (examples/_redis_server.py starts and stops them) -------------------


class Servers:
    """What a fleet talks to: one server, or the nodes of a cluster."""

    def __init__(self, kind: str, nodes: list[RedisServer]) -> None:
        self.kind = kind
        self.nodes = nodes

    @property
    def port(self) -> int:
        return self.nodes[0].port

    def counters(self) -> tuple[int, float]:
        """EVALSHA calls and CPU seconds (sys + user) so far, summed over the nodes."""
        calls, cpu = 0, 0.0
        for node in self.nodes:
            commands = node.info("commandstats")
            calls += int(commands.get("cmdstat_evalsha", {}).get("calls", 0))
            usage = node.info("cpu")
            cpu += float(usage["used_cpu_sys"]) + float(usage["used_cpu_user"])
        return calls, cpu


# -- one worker process ------------------------------------------------------------


async def h(key: str) -> int:
    """The work each call wraps (the key is its argument)."""
    return 1


async def worker(kind: str, port: int, seconds: float, name: str, index: int) -> None:
    if kind == "cluster":
        client: Any = redis.asyncio.RedisCluster(host=HOST, port=port)
    else:
        client = redis.asyncio.Redis(host=HOST, port=port)
    backend = RedisBackend(client, prefix=PREFIX, store_timeout=1.0)
    limiter = RateLimiter(
        RATE, burst=RATE, key=lambda key: key, max_keys=KEYS, name=name, backend=backend
    )
    if not await backend.ready():
        print(json.dumps({"error": "the script did not load"}), flush=True)
        return
    call = limiter.call
    keys = [f"k{(index * 61 + n) % KEYS}" for n in range(KEYS)]
    for key in keys:  # warm up: every node's connection open
        await call(h, key)
    print(json.dumps({"ready": True}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # every process starts at once

    admitted = 0
    cpu = time.process_time()
    start = time.perf_counter()
    end = start + seconds
    while True:
        for key in keys[:100]:
            await call(h, key)
        admitted += 100
        keys = keys[100:] + keys[:100]
        now = time.perf_counter()
        if now >= end:
            break
    cpu = time.process_time() - cpu
    store = backend.breaker.stats
    await client.aclose()
    print(
        json.dumps(
            {
                "admitted": admitted,
                "seconds": now - start,
                "cpu": cpu,
                "rejected": limiter.stats.rejected,
                "store_failures": store.failed_total,
                "store_skipped": store.rejected,
            }
        ),
        flush=True,
    )


# -- a fleet ---------------------------------------------------------------------


def _machine_busy() -> float:
    """CPU seconds the machine spent busy so far (user, nice, system, irq,
    softirq of /proc/stat); -inf where there is no /proc/stat."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()[1:8]
    except OSError:
        return -math.inf
    user, nice, system, _idle, _iowait, irq, softirq = (int(field) for field in fields)
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def fleet(servers: Servers, processes: int, seconds: float) -> dict[str, Any]:
    name = f"fleet-{servers.kind}-{processes}"
    argv = [servers.kind, str(servers.port), str(seconds), name]
    with Workers("benchmarks.redis_fleet", [[*argv, str(i)] for i in range(processes)]) as workers:
        deadline = time.monotonic() + READY_DEADLINE
        if (ready := workers.read()) != [{"ready": True}] * processes:
            raise RuntimeError(f"a worker did not start: {ready}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{processes} workers did not start in {READY_DEADLINE:g} s")
        calls_before, cpu_before = servers.counters()
        busy_before, wall_before = _machine_busy(), time.monotonic()
        reports = workers.ask("go")
        busy, wall = _machine_busy() - busy_before, time.monotonic() - wall_before
        calls_after, cpu_after = servers.counters()
    admitted = sum(report["admitted"] for report in reports)
    rates = [report["admitted"] / report["seconds"] for report in reports]
    window = max(report["seconds"] for report in reports)
    redis_cpu = cpu_after - cpu_before
    client_cpu = sum(report["cpu"] for report in reports)
    return {
        "target": servers.kind,
        "processes": processes,
        "admitted": admitted,
        "per_second": sum(rates),
        "per_process": statistics.mean(rates),
        "per_process_min": min(rates),
        "per_process_max": max(rates),
        "round_trips_per_call": (calls_after - calls_before) / admitted,
        "redis_cpu_ms_per_1000": redis_cpu / admitted * 1e6,
        "redis_cpu_share": redis_cpu / window,
        "client_cpu_us_per_call": client_cpu / admitted * 1e6,
        # What else the machine ran meanwhile (other tenants' work), in CPUs.
        "other_cpus": (busy - client_cpu - redis_cpu) / wall if busy >= 0 else None,
        "rejected": sum(report["rejected"] for report in reports),
        "store_failures": sum(report["store_failures"] for report in reports),
        "store_skipped": sum(report["store_skipped"] for report in reports),
    }


# -- one decision, in process ------------------------------------------------------


async def _calibrate(target: Callable[[], Awaitable[Any]]) -> int:
    """The number of calls that takes about BATCH seconds."""
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            await target()
        elapsed = time.perf_counter() - start
        if elapsed >= BATCH / 4:
            return max(1, int(calls * BATCH / elapsed))
        calls *= 4


async def _timed(targets: dict[str, Callable[[], Awaitable[Any]]]) -> dict[str, float]:
    """µs per call of each target: the median of ROUNDS rounds of about
    BATCH seconds, the targets taking turns in every round (so that a
    machine's drift falls on all of them alike)."""
    calls = {name: await _calibrate(target) for name, target in targets.items()}
    rounds: dict[str, list[float]] = {name: [] for name in targets}
    for _ in range(ROUNDS):
        for name, target in targets.items():
            start = time.perf_counter()
            for _ in range(calls[name]):
                await target()
            rounds[name].append((time.perf_counter() - start) / calls[name] * 1e6)
    return {name: statistics.median(times) for name, times in rounds.items()}


def _refusing(call: Callable[..., Awaitable[Any]]) -> Callable[[], Awaitable[None]]:
    async def target() -> None:
        try:
            await call(f)
        except RateLimitedError:
            pass

    return target


async def _raise_caught() -> None:
    try:
        await f_fail()
    except Boom:
        pass


async def one_decision(servers: Servers) -> dict[str, float]:
    client = redis.asyncio.Redis(host=HOST, port=servers.port)
    backend = RedisBackend(client, prefix=PREFIX, store_timeout=1.0)
    refusing = RateLimiter(1, per=3600.0, name="micro-refused", backend=backend)
    local = RateLimiter(1, per=3600.0, name="micro-local")
    admitting = RateLimiter(RATE, burst=RATE, name="micro-admitted", backend=backend)
    assert await backend.ready()
    for limiter in (refusing, local):
        for _ in range(2):  # the one slot of the hour, then a refusal (remembered)
            with contextlib.suppress(RateLimitedError):
                await limiter.call(f)
    calls_before, _ = servers.counters()
    results = await _timed(
        {
            "raise_caught_us": _raise_caught,
            "refused_remembered_us": _refusing(refusing.call),
            "refused_local_us": _refusing(local.call),
        }
    )
    calls_after, _ = servers.counters()
    if calls_after != calls_before:
        raise RuntimeError(f"a remembered refusal made {calls_after - calls_before} round trips")

    store = admitting._store  # to send the same EVALSHA by hand, on a key of its own
    assert store is not None
    key, sha, args = store.redis_key("by-hand"), backend._sha, store._args(1, 0.0)

    async def admitted() -> None:
        await admitting.call(f)

    async def ping() -> None:
        await client.ping()

    async def evalsha() -> None:
        await client.evalsha(sha, 1, key, *args)

    calls_before, _ = servers.counters()
    for _ in range(1000):
        await admitted()
    calls_after, _ = servers.counters()
    results["admitted_round_trips"] = (calls_after - calls_before) / 1000
    results.update(await _timed({"admitted_us": admitted, "ping_us": ping, "evalsha_us": evalsha}))
    await client.aclose()
    return results


# -- the run ---------------------------------------------------------------------


def _table(rows: list[dict[str, Any]]) -> Iterator[str]:
    yield (
        "| target | processes | admitted calls/s, total | per process (range) "
        "| round trips per call | Redis CPU, ms per 1000 calls | Redis CPU, share of one CPU "
        "| client CPU, µs per call | other load, CPUs |"
    )
    yield "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for row in rows:
        target = "one redis-server" if row["target"] == "single" else "3-node cluster"
        yield (
            f"| {target} | {row['processes']} | {row['per_second']:,.0f} "
            f"| {row['per_process']:,.0f} ({row['per_process_min']:,.0f}-"
            f"{row['per_process_max']:,.0f}) | {row['round_trips_per_call']:.2f} "
            f"| {row['redis_cpu_ms_per_1000']:.1f} | {row['redis_cpu_share']:.0%} "
            f"| {row['client_cpu_us_per_call']:.0f} "
            f"| {'?' if row['other_cpus'] is None else format(row['other_cpus'], '.2f')} |"
        )


def _decisions(micro: dict[str, float]) -> Iterator[str]:
    over = micro["refused_remembered_us"] - micro["raise_caught_us"]
    local_over = micro["refused_local_us"] - micro["raise_caught_us"]
    yield "| one call (asyncio, in process) | µs per call | over |"
    yield "|---|---:|---|"
    yield f"| one raise caught (baseline) | {micro['raise_caught_us']:.2f} | |"
    yield (
        f"| refusal remembered from Redis (no round trip) | {micro['refused_remembered_us']:.2f} "
        f"| +{over:.2f} over a raise (target ≤ 1 µs: {'ok' if over <= 1.0 else 'missed'}) |"
    )
    yield (
        f"| refusal by a limiter without a backend | {micro['refused_local_us']:.2f} "
        f"| +{local_over:.2f} over a raise |"
    )
    yield f"| `PING` (redis-py, one round trip) | {micro['ping_us']:.1f} | |"
    yield f"| the same `EVALSHA` sent by hand | {micro['evalsha_us']:.1f} | |"
    yield (
        f"| admitted call (one `EVALSHA`: {micro['admitted_round_trips']:.2f} per call) "
        f"| {micro['admitted_us']:.1f} | +{micro['admitted_us'] - micro['evalsha_us']:.1f} "
        "over the EVALSHA by hand |"
    )


def _at_rest(*targets: Servers) -> dict[str, float]:
    """The share of one CPU each target's servers use with no client, over 1 s."""
    before = {servers.kind: servers.counters()[1] for servers in targets}
    time.sleep(1.0)
    return {servers.kind: servers.counters()[1] - before[servers.kind] for servers in targets}


def run(processes: list[int], seconds: float, json_path: str | None) -> None:
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        raise SystemExit(
            "redis-server and redis-cli are needed on PATH (Debian: apt-get install redis-server)"
        )
    started = time.monotonic()
    prefix = "resilience-bench-redis-"
    server = RedisServer(binary, prefix)
    nodes = RedisCluster([RedisServer(binary, prefix, cluster=True) for _ in range(3)], cli)
    single, cluster = Servers("single", [server]), Servers("cluster", list(nodes.servers))
    rows: list[dict[str, Any]] = []
    try:
        server.start()
        nodes.start()
        version = server.info("server")["redis_version"]
        print(
            f"redis-server {version}, redis-py {redis.__version__}, Python "
            f"{platform.python_version()}, {os.cpu_count()} CPUs (load average "
            f"{os.getloadavg()[0]:.1f} before the run); {seconds:g} s per run",
            flush=True,
        )
        resting = _at_rest(single, cluster)
        print(
            f"Redis CPU at rest: {resting['single']:.1%} of one CPU for one server, "
            f"{resting['cluster']:.1%} for the cluster's three nodes",
            flush=True,
        )
        micro = asyncio.run(one_decision(single))
        for servers in (single, cluster):
            for count in processes:
                row = fleet(servers, count, seconds)
                rows.append(row)
                print(
                    f"  {servers.kind:7} {count:2} processes: {row['per_second']:9,.0f} calls/s, "
                    f"{row['round_trips_per_call']:.2f} round trips per call",
                    flush=True,
                )
    finally:
        stop_all([server, *nodes.servers])
    print()
    for line in _table(rows):
        print(line)
    print()
    for line in _decisions(micro):
        print(line)
    odd = [row for row in rows if row["store_failures"] or row["store_skipped"] or row["rejected"]]
    for row in odd:
        print(
            f"note: {row['target']} x{row['processes']}: {row['store_failures']} store "
            f"failures, {row['store_skipped']} calls decided locally, {row['rejected']} refused"
        )
    print(
        f"\n{time.monotonic() - started:.0f} s in all; load average {os.getloadavg()[0]:.1f} "
        "at the end (this run's own processes included)"
    )
    if json_path:
        with open(json_path, "w") as out:
            json.dump(
                {
                    "machine": {
                        "cpus": os.cpu_count(),
                        "python": platform.python_version(),
                        "redis_server": version,
                        "redis_py": redis.__version__,
                        "load_average_end": os.getloadavg()[0],
                    },
                    "seconds": seconds,
                    "redis_cpu_at_rest": resting,
                    "fleets": rows,
                    "one_decision": micro,
                },
                out,
                indent=2,
            )


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        kind, port, seconds, name, index = sys.argv[2:7]
        asyncio.run(worker(kind, int(port), float(seconds), name, int(index)))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per fleet run (default 2)")
    parser.add_argument("--processes", default="1,4,16", help="fleet sizes (default 1,4,16)")
    parser.add_argument("--json", help="also write the figures to this file")
    options = parser.parse_args()
    sizes = [int(size) for size in options.processes.split(",")]
    if min(sizes) < 1 or options.seconds <= 0:
        parser.error("--processes takes counts >= 1, --seconds a duration > 0")
    run(sizes, options.seconds, options.json)


if __name__ == "__main__":
    main()
