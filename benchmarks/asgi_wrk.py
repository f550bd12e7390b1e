"""HTTP throughput of the ASGI middleware under a real server: uvicorn + wrk.

What it compares. ``app`` from :mod:`benchmarks.cases_asgi` (the bare ASGI app)
against the same app wrapped in :class:`resilience.contrib.asgi.ResilienceMiddleware`
with every feature on, built with the settings of ``cases_asgi.ours()``. The
target is: middleware throughput >= 97% of the bare app's.

Method:

- two uvicorn servers are started once, as subprocesses of this module
  (``--serve bare|middleware --port N``), each on its own free port on
  127.0.0.1: one worker process, ``loop="asyncio"`` (or ``--loop uvloop``),
  ``http="httptools"``, ``log_level="warning"``, no access log, no lifespan;
- with two or more CPUs, the servers are pinned to CPU 0 and wrk to CPU 1
  (the first two CPUs this process may use), so the load generator never
  competes with the server it measures (with one CPU nothing is pinned and
  the numbers mean less);
- each server first gets a 1 s wrk warm-up round, which is discarded;
- then ``--rounds`` rounds; a round is one wrk run against the bare server,
  then one against the middleware server (ABAB...), wrk with 1 thread and
  ``--connections`` (32) keep-alive connections for ``--duration`` seconds on
  ``GET /items/1``. Only one server is loaded at a time; the other sits idle
  in epoll. The servers are not restarted between rounds;
- the primary measure is the server's CPU time per request. Just before and
  just after each wrk run the driver reads the server process's utime + stime
  (fields 14 and 15 of ``/proc/<pid>/stat``, in clock ticks of
  ``os.sysconf("SC_CLK_TCK")``; that file already sums all the process's
  threads) and divides the difference by the requests wrk completed (its
  ``N requests in`` line). The "after" reading waits ``SETTLE_SECONDS`` so the
  server's work on the last in-flight requests and the connection close is
  counted too, as their opening was. Time stolen by other tenants of the VM
  is not charged to the process (the kernel's paravirtual steal accounting),
  so when steal is what moves req/s between rounds of the same server, CPU
  us/request stays much steadier. It is not immune to other noise: when
  nothing is stolen and the server is busy ~100% of the run, CPU us/request is
  just 1/(req/s) and swings with it; a neighbour that thrashes the shared
  caches or memory bandwidth makes the same work take more CPU time. The log
  shows each run's steal share and server busy share to tell the cases apart;
- resolution: each reading truncates utime and stime to whole clock ticks
  (10 ms at 100 Hz), so a round's CPU time is known to a tick or two; with
  ~5 s rounds of ~50k requests that is ~0.2 us/request, far below the
  difference being measured. The report prints the actual figure;
- per configuration: median, min and max CPU us/request over the rounds; the
  middleware's extra CPU us/request is the median of the per-round differences
  (middleware - bare); the implied throughput ratio is bare CPU / middleware
  CPU (of the medians), since a CPU-bound server's throughput is the inverse of
  its CPU time per request. The verdict compares that ratio with the target,
  and is INCONCLUSIVE when the bare configuration's CPU us/request varies
  across rounds (max - min) by more than the measured difference;
- req/s, secondary: wrk's ``Requests/sec:`` line. Per configuration: median,
  min and max over the rounds. Two ratios middleware/bare: of the medians, and
  the median of the per-round ratios (each round's two runs are seconds apart,
  so their ratio cancels the slow drift of a shared VM, but not its fast
  swings). The share of the server CPU's time stolen by the hypervisor during
  each run (``/proc/stat``) is logged beside it, to show where the swings
  come from;
- a run where wrk saw a non-2xx response or a socket error is reported as
  invalid: a 503 from the bulkhead is cheaper than the app and would flatter
  the middleware.

Run it::

    make bench-wrk                                  # 8 rounds of 5 s, ~2 minutes
    make bench-wrk ARGS="--quick"                   # 3 rounds of 2 s
    python -m benchmarks.asgi_wrk --quick
    python -m benchmarks.asgi_wrk --loop uvloop --json /tmp/wrk.json

Linux only (``/proc``). Needs ``wrk`` on PATH (Debian: ``apt-get install wrk``),
``taskset`` (util-linux) when pinning, and ``httptools`` (plus ``uvloop`` for
``--loop uvloop``) in the environment.

The servers are always stopped (terminate, then kill) when the run ends, on
an error or Ctrl-C too; and each server asks the kernel to send it SIGTERM if
this process dies, so none outlives a ``kill -9`` of the driver either.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PATH = "/items/1"
CONFIGS = ("bare", "middleware")
LABELS = {
    "bare": "bare ASGI app",
    "middleware": "ResilienceMiddleware (all features)",
}
TARGET = 0.97
WARMUP_SECONDS = 1
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
# wrk's own run time is bounded by -d; this is slack for start-up and the
# final report, so a hung wrk cannot keep the run alive forever.
WRK_SLACK = 30.0
# After wrk exits, the server still answers its last in-flight requests and
# closes the connections; wait for that before reading its CPU time.
SETTLE_SECONDS = 0.2
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PR_SET_PDEATHSIG = 1


# --- server side --------------------------------------------------------------


def build_app(config: str) -> Any:
    from .cases_asgi import app, full_middleware

    if config == "bare":
        return app
    return full_middleware()


def _die_with_parent() -> None:
    # Linux only: if the driver is killed without running its finally block,
    # the kernel still stops this server instead of leaving it listening.
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def serve(config: str, port: int, loop: str, cpu: int | None, parent: int) -> None:
    _die_with_parent()
    # The parent may have died before prctl took effect: then nobody would stop us.
    if os.getppid() != parent:
        sys.exit(1)
    if cpu is not None:
        # Pin before uvicorn starts any thread, so every thread inherits it.
        os.sched_setaffinity(0, {cpu})
    import uvicorn

    uvicorn.run(
        build_app(config),
        host=HOST,
        port=port,
        loop=loop,
        http="httptools",
        log_level="warning",
        access_log=False,
        # The benchmarked app answers every scope as HTTP; a lifespan scope
        # would make it fail at start-up.
        lifespan="off",
    )


# --- driver side --------------------------------------------------------------


@dataclass
class WrkRun:
    config: str
    round: int
    rps: float
    requests: int
    non_2xx: int
    socket_errors: int
    # The server process's utime + stime over the run, in seconds (whole ticks).
    server_cpu_s: float = 0.0
    # Wall time of the wrk run as the driver saw it (without SETTLE_SECONDS).
    wall_s: float = 0.0
    # Share of the server CPU's time stolen by the hypervisor, None if unknown.
    steal: float | None = None

    @property
    def cpu_us(self) -> float:
        """Server CPU time per completed request, in microseconds."""
        return self.server_cpu_s / self.requests * 1e6

    @property
    def resolution_us(self) -> float:
        """One clock tick spread over this run's requests, in microseconds."""
        return 1e6 / CLK_TCK / self.requests

    @property
    def valid(self) -> bool:
        return self.non_2xx == 0 and self.socket_errors == 0


@dataclass
class Server:
    config: str
    port: int
    proc: subprocess.Popen[bytes]
    output: IO[bytes]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{PATH}"


@dataclass
class Settings:
    rounds: int
    duration: int
    connections: int
    loop: str
    # (server CPU, wrk CPU), or None when there are fewer than two CPUs.
    pinning: tuple[int, int] | None
    cpus: int
    versions: dict[str, str] = field(default_factory=dict)


def free_ports(n: int) -> list[int]:
    # Hold all the sockets open together so the n ports are distinct.
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def start_server(config: str, port: int, loop: str, cpu: int | None, output: IO[bytes]) -> Server:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.asgi_wrk",
        "--serve",
        config,
        "--port",
        str(port),
        "--loop",
        loop,
        "--parent",
        str(os.getpid()),
    ]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
    )
    return Server(config, port, proc, output)


def server_output(server: Server) -> str:
    server.output.seek(0)
    return server.output.read().decode(errors="replace").strip()


def wait_ready(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.config} server exited with {server.proc.returncode}:\n"
                f"{server_output(server)}"
            )
        try:
            with socket.create_connection((HOST, server.port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{server.config} server not accepting on port {server.port} "
                    f"after {STARTUP_TIMEOUT:.0f} s:\n{server_output(server)}"
                ) from None
            time.sleep(0.05)
    # Accepting is not answering: check one real response before loading it.
    conn = http.client.HTTPConnection(HOST, server.port, timeout=5)
    try:
        conn.request("GET", PATH)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200 or body != b"ok":
        raise RuntimeError(
            f"{server.config} server answered {response.status} {body!r}, expected 200 b'ok'"
        )


def stop_server(server: Server) -> None:
    proc = server.proc
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)


def process_cpu_ticks(pid: int) -> int:
    """utime + stime of a whole process (all its threads), in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Field 2, the command name, is in parentheses and may hold spaces or
    # parentheses itself: split after the last ')'. What follows starts at
    # field 3, so fields 14 (utime) and 15 (stime) are at 11 and 12.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def cpu_times(cpu: int | None) -> tuple[int, int] | None:
    """(steal, total) clock ticks of one CPU (all CPUs if None), from /proc/stat."""
    name = "cpu" if cpu is None else f"cpu{cpu}"
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/stat").read_text().splitlines():
            parts = line.split()
            if parts and parts[0] == name:
                # user nice system idle iowait irq softirq steal (guest time is
                # already inside user and nice).
                ticks = [int(x) for x in parts[1:9]]
                return ticks[7], sum(ticks)
    return None


def _int(pattern: str, text: str) -> int:
    m = re.search(pattern, text, re.MULTILINE)
    return int(m.group(1)) if m else 0


def parse_wrk(output: str, config: str, round_: int) -> WrkRun:
    m = re.search(r"^Requests/sec:\s+([0-9.]+)", output, re.MULTILINE)
    if m is None:
        raise RuntimeError(f"no 'Requests/sec:' line in wrk's output:\n{output}")
    if _int(r"^\s*(\d+) requests in", output) == 0:
        raise RuntimeError(f"wrk completed no request (no 'N requests in' line):\n{output}")
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkRun(
        config=config,
        round=round_,
        rps=float(m.group(1)),
        requests=_int(r"^\s*(\d+) requests in", output),
        non_2xx=_int(r"Non-2xx or 3xx responses:\s+(\d+)", output),
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
    )


def run_wrk(
    server: Server,
    duration: int,
    connections: int,
    cpu: int | None,
    round_: int,
    server_cpu: int | None = None,
) -> WrkRun:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", server.url]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    pid = server.proc.pid
    stat_before = cpu_times(server_cpu)
    ticks_before = process_cpu_ticks(pid)
    start = time.monotonic()
    # subprocess.run kills wrk itself if we are interrupted or it overruns.
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=duration + WRK_SLACK, check=False
    )
    wall = time.monotonic() - start
    time.sleep(SETTLE_SECONDS)
    if server.proc.poll() is not None:
        raise RuntimeError(f"{server.config} server died during the run:\n{server_output(server)}")
    ticks_after = process_cpu_ticks(pid)
    stat_after = cpu_times(server_cpu)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}:\n{done.stdout}{done.stderr}")
    run = parse_wrk(done.stdout, server.config, round_)
    run.server_cpu_s = (ticks_after - ticks_before) / CLK_TCK
    run.wall_s = wall
    if stat_before is not None and stat_after is not None and stat_after[1] > stat_before[1]:
        run.steal = (stat_after[0] - stat_before[0]) / (stat_after[1] - stat_before[1])
    return run


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("resilience", "uvicorn", "httptools", "uvloop", "anyio"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=5)
        out["wrk"] = (wrk.stdout + wrk.stderr).split("Copyright")[0].strip()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = _git("rev-parse", "--short", "HEAD")
        if head.returncode == 0:
            dirty = _git("status", "--porcelain", "--untracked-files=no").stdout.strip()
            out["commit"] = head.stdout.strip() + ("+dirty" if dirty else "")
    return out


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=5, check=False
    )


def check_tools(loop: str, pinned: bool) -> None:
    missing = []
    if shutil.which("wrk") is None:
        missing.append("wrk (apt-get install wrk)")
    if not Path(f"/proc/{os.getpid()}/stat").exists():
        missing.append("/proc (Linux only: the server's CPU time is read there)")
    if pinned and shutil.which("taskset") is None:
        missing.append("taskset (apt-get install util-linux)")
    for module in ("uvicorn", "httptools", *(["uvloop"] if loop == "uvloop" else [])):
        if importlib.util.find_spec(module) is None:
            missing.append(f"{module} (pip install {module})")
    if missing:
        sys.exit("asgi_wrk: missing " + ", ".join(missing))


def log(message: str) -> None:
    # Progress goes to stderr so stdout holds only the report.
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def servers(loop: str, cpu: int | None) -> Iterator[dict[str, Server]]:
    started: dict[str, Server] = {}
    # Unwinds in reverse: each server is stopped before its output file closes,
    # and a failure to stop one still stops the other.
    with contextlib.ExitStack() as stack:
        for config, port in zip(CONFIGS, free_ports(len(CONFIGS)), strict=True):
            # A file, not a pipe: nobody reads it while the server runs, and a
            # full pipe would block the server mid-benchmark.
            output = stack.enter_context(tempfile.TemporaryFile())
            server = start_server(config, port, loop, cpu, output)
            stack.callback(stop_server, server)
            started[config] = server
        for server in started.values():
            wait_ready(server)
        yield started


def describe(run: WrkRun) -> str:
    steal = f", steal {run.steal:.0%}" if run.steal is not None else ""
    busy = run.server_cpu_s / run.wall_s if run.wall_s else 0.0
    return f"{run.rps:>8.0f} req/s  {run.cpu_us:>6.1f} µs CPU/req (server busy {busy:.0%}{steal})"


def measure(settings: Settings) -> tuple[list[WrkRun], list[WrkRun]]:
    warmups: list[WrkRun] = []
    runs: list[WrkRun] = []
    server_cpu, wrk_cpu = settings.pinning or (None, None)
    with servers(settings.loop, server_cpu) as running:
        for config in CONFIGS:
            warmup = run_wrk(
                running[config], WARMUP_SECONDS, settings.connections, wrk_cpu, 0, server_cpu
            )
            warmups.append(warmup)
            log(f"warm-up   {config:<10} {describe(warmup)} (discarded)")
        for round_ in range(1, settings.rounds + 1):
            for config in CONFIGS:
                run = run_wrk(
                    running[config],
                    settings.duration,
                    settings.connections,
                    wrk_cpu,
                    round_,
                    server_cpu,
                )
                runs.append(run)
                flag = (
                    ""
                    if run.valid
                    else f"  INVALID: {run.non_2xx} non-2xx, {run.socket_errors} socket errors"
                )
                log(f"round {round_:>2}  {config:<10} {describe(run)}{flag}")
    return warmups, runs


def _stats(values: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "rounds": values,
    }


def _rps_verdict(ratio_of_medians: float, median_pair_ratio: float) -> str:
    if ratio_of_medians >= TARGET and median_pair_ratio >= TARGET:
        return "PASS"
    if ratio_of_medians < TARGET and median_pair_ratio < TARGET:
        return "FAIL"
    # The two estimates straddle the target: the noise is larger than the margin.
    return "INCONCLUSIVE"


def summarize(runs: Sequence[WrkRun]) -> dict[str, Any]:
    by_config = {c: [r for r in runs if r.config == c] for c in CONFIGS}
    invalid = [asdict(r) for r in runs if not r.valid]

    # Primary: server CPU time per request.
    cpu = {c: [r.cpu_us for r in v] for c, v in by_config.items()}
    cpu_stats = {c: _stats(v) for c, v in cpu.items()}
    extra = [m - b for b, m in zip(cpu["bare"], cpu["middleware"], strict=True)]
    extra_us = statistics.median(extra)
    cpu_ratio = cpu_stats["bare"]["median"] / cpu_stats["middleware"]["median"]
    bare_spread = cpu_stats["bare"]["max"] - cpu_stats["bare"]["min"]
    resolution = max(r.resolution_us for r in runs)
    if invalid:
        verdict = "INVALID"
    elif bare_spread > abs(extra_us):
        # The bare app alone varies across rounds by more than the difference.
        verdict = "INCONCLUSIVE"
    elif cpu_ratio >= TARGET:
        verdict = "PASS"
    else:
        verdict = "FAIL"

    # Secondary: req/s.
    rps = {c: [r.rps for r in v] for c, v in by_config.items()}
    rps_stats = {c: _stats(v) for c, v in rps.items()}
    pair_ratios = [m / b for b, m in zip(rps["bare"], rps["middleware"], strict=True)]
    ratio_of_medians = rps_stats["middleware"]["median"] / rps_stats["bare"]["median"]
    median_pair_ratio = statistics.median(pair_ratios)
    steal = [r.steal for r in runs if r.steal is not None]
    return {
        "cpu_us_per_request": cpu_stats,
        "extra_cpu_us_per_request": extra,
        "median_extra_cpu_us": extra_us,
        "cpu_ratio": cpu_ratio,
        "bare_cpu_spread_us": bare_spread,
        "tick_resolution_us": resolution,
        "clock_ticks_per_second": CLK_TCK,
        "target": TARGET,
        "verdict": verdict,
        "configs": rps_stats,
        "ratio_of_medians": ratio_of_medians,
        "pair_ratios": pair_ratios,
        "median_pair_ratio": median_pair_ratio,
        "rps_verdict": _rps_verdict(ratio_of_medians, median_pair_ratio),
        "steal": _stats(steal) if steal else None,
        "invalid_runs": invalid,
    }


def report(settings: Settings, summary: dict[str, Any]) -> str:
    v = settings.versions
    pin = (
        f"server on CPU {settings.pinning[0]}, wrk on CPU {settings.pinning[1]}"
        if settings.pinning is not None
        else f"not pinned ({settings.cpus} CPU)"
    )
    lines = [
        f"uvicorn {v.get('uvicorn', '?')} (1 worker, loop={settings.loop}, http=httptools), "
        f"wrk -t1 -c{settings.connections} -d{settings.duration}s, "
        f"{settings.rounds} rounds ABAB, {pin}; python {v.get('python', '?')}, "
        f"resilience {v.get('resilience', '?')} @ {v.get('commit', '?')}",
        "",
        "Server CPU time per request (primary; steal time is not charged to the process):",
        "",
        "| configuration | median CPU µs/req | min CPU µs/req | max CPU µs/req |",
        "| --- | ---: | ---: | ---: |",
    ]
    for config in CONFIGS:
        s = summary["cpu_us_per_request"][config]
        lines.append(f"| {LABELS[config]} | {s['median']:.2f} | {s['min']:.2f} | {s['max']:.2f} |")
    extra = summary["extra_cpu_us_per_request"]
    ratio = summary["cpu_ratio"]
    spread = summary["bare_cpu_spread_us"]
    extra_us = summary["median_extra_cpu_us"]
    lines += [
        "",
        f"- middleware's extra CPU per request: {extra_us:+.2f} µs, median of per-round "
        f"differences (per round: {min(extra):+.2f} to {max(extra):+.2f} µs)",
        f"- implied throughput middleware / bare = bare CPU / middleware CPU (medians): "
        f"{ratio:.1%}",
        f"- bare CPU µs/req spread across rounds (max - min): {spread:.2f} µs; "
        f"clock-tick resolution: {summary['tick_resolution_us']:.2f} µs/req "
        f"(1 tick = {1000 / summary['clock_ticks_per_second']:g} ms over the smallest "
        f"round's requests)",
    ]
    verdict = summary["verdict"]
    if verdict == "INVALID":
        lines.append(
            f"- verdict: INVALID: {len(summary['invalid_runs'])} run(s) saw non-2xx "
            f"responses or socket errors"
        )
    elif verdict == "INCONCLUSIVE":
        lines.append(
            f"- verdict: INCONCLUSIVE: the bare app's spread ({spread:.2f} µs) exceeds the "
            f"measured difference ({abs(extra_us):.2f} µs); implied ratio {ratio:.1%} "
            f"vs the {TARGET:.0%} target"
        )
    else:
        relation = ">=" if verdict == "PASS" else "<"
        lines.append(
            f"- verdict: {verdict}: implied throughput ratio {ratio:.1%} {relation} the "
            f"{TARGET:.0%} target"
        )

    lines += [
        "",
        "Throughput (secondary; on a shared VM req/s swings with the time stolen from the server):",
        "",
        "| configuration | median req/s | min req/s | max req/s |",
        "| --- | ---: | ---: | ---: |",
    ]
    for config in CONFIGS:
        s = summary["configs"][config]
        lines.append(
            f"| {LABELS[config]} | {s['median']:,.0f} | {s['min']:,.0f} | {s['max']:,.0f} |"
        )
    pairs = summary["pair_ratios"]
    lines += [
        "",
        f"- middleware / bare, ratio of medians: {summary['ratio_of_medians']:.1%}",
        f"- middleware / bare, median of per-round ratios: {summary['median_pair_ratio']:.1%} "
        f"(per round: {min(pairs):.1%} to {max(pairs):.1%})",
    ]
    steal = summary["steal"]
    if steal is not None:
        lines.append(
            f"- time stolen from the server's CPU during the runs: median {steal['median']:.0%} "
            f"(per run: {steal['min']:.0%} to {steal['max']:.0%})"
        )
    rps_verdict = summary["rps_verdict"]
    relation = {"PASS": ">=", "FAIL": "<", "INCONCLUSIVE": "straddle"}[rps_verdict]
    lines.append(f"- req/s alone: {rps_verdict}: both ratios {relation} the {TARGET:.0%} target")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.asgi_wrk",
        description="HTTP throughput, bare ASGI app vs ResilienceMiddleware, uvicorn + wrk.",
    )
    parser.add_argument("--rounds", type=int, help="rounds per configuration (default 8)")
    parser.add_argument("--duration", type=int, help="seconds per wrk run (default 5)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 2 s")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers here")
    server = parser.add_argument_group("server mode (used by the driver itself)")
    server.add_argument("--serve", choices=CONFIGS, help="run one uvicorn server and nothing else")
    server.add_argument("--port", type=int)
    server.add_argument("--cpu", type=int, help="pin the server to this CPU")
    server.add_argument("--parent", type=int, help="the driver's pid")
    args = parser.parse_args(argv)
    if args.serve is not None and (args.port is None or args.parent is None):
        parser.error("--serve needs --port and --parent")
    if args.rounds is None:
        args.rounds = 3 if args.quick else 8
    if args.duration is None:
        args.duration = 2 if args.quick else 5
    if args.rounds < 1 or args.duration < 1 or args.connections < 1:
        parser.error("--rounds, --duration and --connections must be >= 1")
    return args


def run_json(run: WrkRun) -> dict[str, Any]:
    return {**asdict(run), "cpu_us_per_request": run.cpu_us}


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    # Turn SIGTERM into SystemExit so the finally blocks stop the servers.
    sys.exit(128 + signum)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.port, args.loop, args.cpu, args.parent)
        return
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    allowed = sorted(os.sched_getaffinity(0))
    # The first two CPUs we may use: 0 and 1 on an ordinary machine.
    pinning = (allowed[0], allowed[1]) if len(allowed) >= 2 else None
    check_tools(args.loop, pinning is not None)
    settings = Settings(
        rounds=args.rounds,
        duration=args.duration,
        connections=args.connections,
        loop=args.loop,
        pinning=pinning,
        cpus=len(allowed),
        versions=versions(),
    )
    if pinning is None:
        log("only 1 CPU: server and wrk share it, so the numbers mean less")
    warmups, runs = measure(settings)
    summary = summarize(runs)
    print(report(settings, summary), flush=True)
    if args.json is not None:
        data = {
            "settings": asdict(settings),
            "url_path": PATH,
            "warmups": [run_json(w) for w in warmups],
            "runs": [run_json(r) for r in runs],
            **summary,
        }
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
