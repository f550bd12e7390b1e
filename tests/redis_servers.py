"""Real redis-server processes on 127.0.0.1 and free ports, for end-to-end tests.

``RedisServer`` is one ``redis-server`` in a temporary directory (no RDB, no
AOF), with the faults later tests need: ``kill()`` (the port then refuses),
``restart()`` (same port, empty data), ``pause()`` / ``resume()`` (SIGSTOP /
SIGCONT: connections are accepted by the kernel but never answered).
``RedisCluster`` is three such nodes joined by ``redis-cli --cluster create``
(masters only, all 16384 slots covered). Both talk to the servers through a
tiny RESP client of their own, so they do not depend on redis-py.

``redis_server_path()`` / ``redis_cli_path()`` find the binaries; when one is
missing they fail the test under CI (``CI=true``) and skip it elsewhere.
The fixtures built on these live in ``tests/conftest.py``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn, Self

import pytest

HOST = "127.0.0.1"
START_DEADLINE = 10.0  # seconds for one redis-server to answer PING
CLUSTER_DEADLINE = 20.0  # seconds for the cluster to report cluster_state:ok everywhere
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
PORT_ATTEMPTS = 20  # servers started on a fresh port after losing a bind race
BUS_OFFSET = 10000  # a cluster node's bus port is its port + 10000
MAX_PORT = 65535

_INSTALL_HINT = (
    "`make test` installs it (apt-get install -y redis-server, which brings redis-cli); "
    "install it the same way to run the Redis tests"
)

_LIVE: set[RedisServer] = set()  # every server started and not yet stopped


# -- finding the binaries ---------------------------------------------------


def _missing(what: str) -> NoReturn:
    message = f"{what} was not found on PATH: {_INSTALL_HINT}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: a missing real component fails the run)", pytrace=False)
    pytest.skip(message)


def redis_server_path() -> str:
    """The ``redis-server`` binary; fails the test under CI=true, else skips it."""
    return shutil.which("redis-server") or _missing("redis-server")


def redis_cli_path() -> str:
    """The ``redis-cli`` binary; fails the test under CI=true, else skips it."""
    return shutil.which("redis-cli") or _missing("redis-cli")


# -- a minimal RESP2 client -------------------------------------------------


class RespError(Exception):
    """An error reply (``-ERR ...``) from the server."""


def _encode(args: Sequence[str | bytes | int]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _read(reader: Any) -> Any:
    line = reader.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed mid-reply")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body.decode()
    if kind == b"-":
        raise RespError(body.decode())
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        if size < 0:
            return None
        data = reader.read(size + 2)
        if len(data) != size + 2:
            raise ConnectionError("connection closed mid-reply")
        return data[:-2].decode(errors="replace")
    if kind == b"*":
        size = int(body)
        return None if size < 0 else [_read(reader) for _ in range(size)]
    raise ConnectionError(f"unexpected reply {line!r}")


def command(port: int, *args: str | bytes | int, host: str = HOST, timeout: float = 2.0) -> Any:
    """Send one command on a fresh connection and return the decoded reply.

    Raises ``OSError`` when the server cannot be reached or does not answer
    within ``timeout`` seconds, ``RespError`` for an error reply.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(_encode(args))
        with sock.makefile("rb") as reader:
            return _read(reader)


def _info(text: str) -> dict[str, str]:
    """``INFO`` / ``CLUSTER INFO`` text as a dict."""
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key: value.strip() for key, value in pairs}


# -- ports ------------------------------------------------------------------


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
        return True


def pick_port(*, bus: bool = False) -> int:
    """A port nothing is bound to (bind port 0, close); with ``bus``, port + 10000 too.

    Another process can take it before redis-server binds it: the servers
    retry on a fresh port when that happens.
    """
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            port = int(probe.getsockname()[1])
        if not bus or (port + BUS_OFFSET <= MAX_PORT and _bindable(port + BUS_OFFSET)):
            return port
    raise RuntimeError("no free loopback port (with a free bus port) found")


class _PortTaken(Exception):
    """redis-server exited because its port (or bus port) was taken meanwhile."""


def _process_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` from /proc ('T' when stopped), None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _wait_for_state(pid: int, stopped: bool, deadline: float = 2.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        state = _process_state(pid)
        if state is None or (state in "Tt") == stopped:
            return
        time.sleep(0.001)
    raise RuntimeError(f"redis-server (pid {pid}) did not {'stop' if stopped else 'continue'}")


# -- one server -------------------------------------------------------------


class RedisServer:
    """One ``redis-server`` on 127.0.0.1, started by ``start()`` (or ``with``).

    ``port=None`` picks a free port (and, after a bind race, another one);
    ``cluster=True`` makes the node cluster-enabled and checks its bus port
    (port + 10000) too; ``args`` are extra ``--name value`` options.
    """

    def __init__(
        self, *, port: int | None = None, cluster: bool = False, args: Iterable[str] = ()
    ) -> None:
        self.host = HOST
        self.port = port or 0
        self._fixed_port = port is not None
        self.cluster = cluster
        self._args = list(args)
        if cluster:
            self._args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        self._dir: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False

    # where it is
    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def directory(self) -> str | None:
        """The temporary directory (``--dir``, the log); None once stopped."""
        return self._dir

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """The process is alive (paused counts as alive)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def paused(self) -> bool:
        return self._paused and self.running

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.running else "stopped"
        return f"<RedisServer {self.host}:{self.port} {state}>"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # lifecycle
    def start(self) -> Self:
        """Start the server and wait (10 s at most) until it answers PING."""
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="resilience-redis-")
        _LIVE.add(self)
        try:
            for _ in range(1 if self._fixed_port else PORT_ATTEMPTS):
                port = self.port if self._fixed_port else pick_port(bus=self.cluster)
                try:
                    self._spawn(port)
                except _PortTaken:
                    continue
                return self
            raise RuntimeError(
                f"redis-server lost the race for its port {PORT_ATTEMPTS} times"
                if not self._fixed_port
                else f"port {self.port} is taken"
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM (then SIGKILL after 5 s), wait, remove the temporary directory."""
        self._terminate()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        _LIVE.discard(self)

    # faults
    def kill(self) -> None:
        """SIGKILL the server: connections drop, new ones are refused."""
        proc = self._require_process()
        proc.kill()
        proc.wait()
        self._paused = False

    def restart(self) -> None:
        """Start again on the same port with empty data (stopping it first if alive)."""
        if self._dir is None:
            raise RuntimeError(f"{self!r} was never started (or was stopped): call start()")
        self._terminate()
        try:
            self._spawn(self.port)
        except _PortTaken:
            raise RuntimeError(f"port {self.port} was taken while the server was down") from None

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts connections, nothing is answered."""
        proc = self._require_process()
        os.kill(proc.pid, signal.SIGSTOP)
        _wait_for_state(proc.pid, stopped=True)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT after ``pause()``; a no-op when not paused."""
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGCONT)
            _wait_for_state(self._proc.pid, stopped=False)
        self._paused = False

    # data
    def command(self, *args: str | bytes | int, timeout: float = 2.0) -> Any:
        """One command on a fresh raw connection (see the module's ``command``)."""
        return command(self.port, *args, host=self.host, timeout=timeout)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key starting with ``prefix`` (SCAN + DEL); return how many."""
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
        deleted, cursor = 0, "0"
        while True:
            cursor, keys = self.command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            if keys:
                deleted += self.command("DEL", *keys)
            if cursor == "0":
                return deleted

    def log(self) -> str:
        """The server's log so far (and anything it wrote to stderr)."""
        if self._dir is None:
            return ""
        text = []
        for name in ("redis.log", "stderr.log"):
            with contextlib.suppress(OSError), open(os.path.join(self._dir, name)) as f:
                text.append(f.read())
        return "".join(text)

    # internals
    def _require_process(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError(f"{self!r} is not running")
        return self._proc

    def _send_sigterm(self) -> None:
        """SIGTERM without waiting (``stop()`` waits), so several servers stop together."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            if self._paused:
                os.kill(proc.pid, signal.SIGCONT)  # SIGTERM waits for SIGCONT in a stopped process
                self._paused = False
            proc.terminate()

    def _terminate(self) -> None:
        self._send_sigterm()
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._paused = False

    def _spawn(self, port: int) -> None:
        assert self._dir is not None
        for entry in os.listdir(self._dir):  # fresh data (and a fresh nodes.conf)
            path = os.path.join(self._dir, entry)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
        argv = [
            redis_server_path(),
            "--bind", HOST,
            "--port", str(port),
            "--dir", self._dir,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", os.path.join(self._dir, "redis.log"),
            *self._args,
        ]  # fmt: skip
        with open(os.path.join(self._dir, "stderr.log"), "wb") as stderr:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
            )
        self._proc, self.port, self._paused = proc, port, False
        deadline = time.monotonic() + START_DEADLINE
        while True:
            if proc.poll() is not None:
                self._proc = None
                log = self.log()
                if "Address already in use" in log:
                    raise _PortTaken(port)
                raise RuntimeError(
                    f"redis-server on port {port} exited with {proc.returncode}:\n{log[-2000:]}"
                )
            if self._answers(port, proc.pid):
                return
            if time.monotonic() > deadline:
                self._terminate()
                raise RuntimeError(
                    f"redis-server on port {port} did not answer PING within "
                    f"{START_DEADLINE:g} s:\n{self.log()[-2000:]}"
                )
            time.sleep(0.005)

    def _answers(self, port: int, pid: int) -> bool:
        """PING answered by *this* process (not by whoever won the port)."""
        try:
            if command(port, "PING", timeout=0.2) != "PONG":
                return False
            return f"process_id:{pid}" in command(port, "INFO", "server", timeout=0.2)
        except (OSError, RespError):  # refused, reset, still loading
            return False


# -- a cluster --------------------------------------------------------------


class RedisCluster:
    """``size`` cluster-enabled nodes joined by ``redis-cli --cluster create`` (no replicas).

    ``start()`` returns once every node reports ``cluster_state:ok``, knows
    every other node and sees all 16384 slots assigned (20 s at most).
    """

    def __init__(self, size: int = 3, *, node_timeout_ms: int = 2000) -> None:
        self.servers = [
            RedisServer(cluster=True, args=["--cluster-node-timeout", str(node_timeout_ms)])
            for _ in range(size)
        ]

    @property
    def nodes(self) -> list[tuple[str, int]]:
        """(host, port) of every node, e.g. for ``startup_nodes``."""
        return [server.address for server in self.servers]

    @property
    def running(self) -> bool:
        return all(server.running for server in self.servers)

    def __repr__(self) -> str:
        return f"<RedisCluster {' '.join(f'{h}:{p}' for h, p in self.nodes)}>"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        deadline = time.monotonic() + CLUSTER_DEADLINE
        try:
            cli = redis_cli_path()
            for server in self.servers:
                server.start()
            addresses = [f"{host}:{port}" for host, port in self.nodes]
            created = subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *addresses,
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=max(1.0, deadline - time.monotonic()),
                check=False,
            )
            if created.returncode != 0:
                raise RuntimeError(
                    f"redis-cli --cluster create failed ({created.returncode}):\n"
                    f"{created.stdout[-2000:]}{created.stderr[-2000:]}"
                )
            self._wait_ok(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every node (SIGTERM to all, then wait for each)."""
        for server in self.servers:
            server._send_sigterm()
        for server in self.servers:
            server.stop()

    def delete_prefix(self, prefix: str) -> int:
        """Delete the keys starting with ``prefix`` on every node; return how many."""
        return sum(server.delete_prefix(prefix) for server in self.servers)

    def _wait_ok(self, deadline: float) -> None:
        size = str(len(self.servers))
        while True:
            states = []
            for server in self.servers:
                try:
                    info = _info(server.command("CLUSTER", "INFO", timeout=1.0))
                except (OSError, RespError) as exc:
                    info = {"error": repr(exc)}
                states.append(info)
            if all(
                info.get("cluster_state") == "ok"
                and info.get("cluster_known_nodes") == size
                and info.get("cluster_slots_ok") == "16384"
                for info in states
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the cluster was not ok within {CLUSTER_DEADLINE:g} s: {states}"
                )
            time.sleep(0.02)


@atexit.register
def _stop_leftovers() -> None:
    """Last resort (fixtures stop their servers themselves): nothing outlives pytest."""
    for server in list(_LIVE):
        server.stop()


# Async Redis tests: redis-py's asyncio client does not run on trio, so they
# override conftest's parametrized `anyio_backend` fixture with this mark.
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])
