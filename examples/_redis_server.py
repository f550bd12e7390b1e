"""Real redis-server processes on 127.0.0.1 and free ports, started and
stopped in one place.

``RedisServer`` is one server in a temporary directory (no RDB, no AOF);
``RedisCluster`` joins cluster-enabled servers with ``redis-cli --cluster
create`` (masters only) and waits until every node reports
``cluster_state:ok``. Nothing outlives its owner: ``stop()`` (call it in
``finally``) stops the process and removes the directory, a last resort at
exit stops what was not stopped, and on Linux the kernel sends SIGTERM to a
server (started from the main thread) whose parent dies without either.

The fleet examples use it, and so do ``benchmarks/redis_fleet.py`` and the
tests' fixtures (``tests/redis_servers.py`` adds the faults they inject).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Self

import redis
import redis.backoff
import redis.retry

__all__ = ["HOST", "PortTaken", "RedisCluster", "RedisServer", "free_port", "stop_all"]

HOST = "127.0.0.1"
BUS_OFFSET = 10000  # a cluster node's bus port is its port + 10000
START_DEADLINE = 10.0  # seconds for one server to answer
CLUSTER_DEADLINE = 20.0  # seconds for `--cluster create` and cluster_state:ok everywhere
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
PORT_ATTEMPTS = 20  # fresh ports tried after losing a bind race
PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>
IN_USE = "Address already in use"

_LIVE: set[RedisServer] = set()  # started and not yet stopped


def free_port(*, bus: bool = False) -> int:
    """A port nothing is bound to (bind port 0, close); with ``bus``, port + 10000 too.

    Another process may take it before redis-server binds it: ``start()``
    then tries another one.
    """
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            port = int(probe.getsockname()[1])
        if not bus or (port + BUS_OFFSET <= 65535 and _bindable(port + BUS_OFFSET)):
            return port
    raise RuntimeError("no free loopback port (with a free bus port) found")


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
        return True


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking the kernel for SIGTERM once this process dies, or None.

    Linux only, and only from the main thread: the kernel sends it when the
    *thread* that started the child ends, and only the main thread lasts as
    long as the process (a server started from another thread goes without).
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not (
        threading.main_thread()
    ):
        return None
    import ctypes

    # Looked up here, in the parent: the child, forked from a process that
    # may run threads, only makes the call.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _client(port: int, timeout: float) -> redis.Redis:
    # redis-py retries a refused connection 3 times with backoff (seconds)
    # by default; a server still starting should be asked again at once.
    return redis.Redis(
        host=HOST,
        port=port,
        socket_timeout=timeout,
        retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
    )


class PortTaken(RuntimeError):
    """redis-server exited because its port (or bus port) was taken."""


class RedisServer:
    """One redis-server on 127.0.0.1, in a temporary directory (``directory``,
    made by the first ``start()``, removed by ``stop()``) and a session of its
    own: a Ctrl-C on the terminal reaches its owner only, which stops it last.

    ``cluster=True`` makes it a cluster node (its bus port checked free too);
    ``args`` are extra ``--name value`` options.
    """

    def __init__(
        self,
        binary: str,
        prefix: str = "redis-example-",
        *,
        cluster: bool = False,
        args: Iterable[str] = (),
    ) -> None:
        self.binary = binary
        self.prefix = prefix
        self.cluster = cluster
        self.args = list(args)
        if cluster:
            self.args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            self.args += ["--cluster-node-timeout", "2000"]
        self.port = 0
        self.directory: str | None = None
        self.process: subprocess.Popen[bytes] | None = None
        # A restart in another thread may race the owner's stop(): nothing
        # is started, and no directory made, once stop() has begun.
        self._lock = threading.Lock()
        self._closed = False

    @property
    def running(self) -> bool:
        """The process is alive."""
        return self.process is not None and self.process.poll() is None

    def __repr__(self) -> str:
        return f"<RedisServer {HOST}:{self.port} {'running' if self.running else 'stopped'}>"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, port: int | None = None) -> Self:
        """Start on ``port`` or, when None, a free one (another after a bind
        race), and wait until this process answers; a no-op after ``stop()``.

        On failure nothing is left: the process is stopped, and the directory
        removed if this call made it.
        """
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        with self._lock:
            if self._closed:
                return self
            made = self.directory is None
            if made:
                self.directory = tempfile.mkdtemp(prefix=self.prefix)
            _LIVE.add(self)
        try:
            for _ in range(1 if port else PORT_ATTEMPTS):
                try:
                    self._spawn(port or free_port(bus=self.cluster))
                    return self
                except PortTaken:
                    if port:
                        raise
            raise RuntimeError(f"redis-server lost the race for a port {PORT_ATTEMPTS} times")
        except BaseException:
            # Nothing left behind by a failed start (a timeout, Ctrl-C while
            # waiting) but the directory it found.
            self.halt()
            if made:
                self._remove_directory()
            raise

    def terminate(self) -> None:
        """SIGTERM without waiting (``halt()`` waits), so that several stop together."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def halt(self) -> None:
        """SIGTERM, SIGKILL after 5 s, wait; the directory stays for a ``start()``."""
        self.terminate()
        if self.process is not None:
            try:
                self.process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """SIGKILL: connections drop, new ones are refused."""
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"{self!r} is not running")
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        """Stop it (if it runs) and remove its directory; safe to call twice."""
        with self._lock:
            self._closed = True
        self.halt()
        self._remove_directory()

    def _remove_directory(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
        _LIVE.discard(self)

    def info(self, section: str) -> dict[str, Any]:
        """``INFO section``, parsed by redis-py."""
        with _client(self.port, 5.0) as client:
            info: dict[str, Any] = client.info(section)
        return info

    def evalsha_calls(self) -> int:
        """How many EVALSHA this server has run (``INFO commandstats``)."""
        return int(self.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))

    def log(self) -> str:
        """The server's log so far, and what it wrote to stderr before opening it."""
        if self.directory is None:
            return ""
        text = []
        for name in ("redis.log", "stderr.log"):
            with contextlib.suppress(OSError), open(os.path.join(self.directory, name)) as log:
                text.append(log.read())
        return "".join(text)

    def _spawn(self, port: int) -> None:
        assert self.directory is not None
        argv = [
            self.binary,
            "--bind", HOST,
            "--port", str(port),
            "--dir", self.directory,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", os.path.join(self.directory, "redis.log"),
            *self.args,
        ]  # fmt: skip
        # Every start is an empty server: what a SAVE or a cluster join left is not loaded.
        for name in ("dump.rdb", "nodes.conf"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.directory, name))
        lost_before = self.log().count(IN_USE)  # the log goes on across restarts
        with self._lock:
            if self._closed:
                return
            with open(os.path.join(self.directory, "stderr.log"), "ab") as stderr:
                self.process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    start_new_session=True,
                    preexec_fn=_die_with_parent(),
                )
            self.port = port
        process, deadline = self.process, time.monotonic() + START_DEADLINE
        with _client(port, 0.5) as client:
            while not self._closed:
                if process.poll() is not None:
                    log = self.log()
                    if log.count(IN_USE) > lost_before:
                        raise PortTaken(f"port {port} is taken")
                    raise RuntimeError(
                        f"redis-server on port {port} exited with {process.returncode}:\n"
                        f"{log[-2000:]}"
                    )
                with contextlib.suppress(redis.RedisError):  # refused, still loading
                    # This process, not whoever else won the port meanwhile.
                    if client.info("server")["process_id"] == process.pid:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server on port {port} did not answer within "
                        f"{START_DEADLINE:g} s:\n{self.log()[-2000:]}"
                    )
                time.sleep(0.005)


def stop_all(servers: Iterable[RedisServer]) -> None:
    """Stop every server: SIGTERM to all first, then wait for each."""
    servers = list(servers)
    for server in servers:
        server.terminate()
    for server in servers:
        server.stop()


class RedisCluster:
    """Cluster-enabled ``servers`` joined by ``redis-cli --cluster create``, no replicas.

    ``start()`` starts them and returns once every node reports
    ``cluster_state:ok``, knows every other node and sees all 16384 slots
    served (20 s at most).
    """

    def __init__(self, servers: Sequence[RedisServer], cli: str) -> None:
        self.servers: Sequence[RedisServer] = list(servers)
        self.cli = cli

    @property
    def nodes(self) -> list[tuple[str, int]]:
        """(host, port) of every node, e.g. for ``startup_nodes``."""
        return [(HOST, server.port) for server in self.servers]

    def start(self) -> Self:
        """Start the nodes, join them, wait for ``cluster_state:ok``; all stopped on failure."""
        try:
            for server in self.servers:
                server.start()
            deadline = time.monotonic() + CLUSTER_DEADLINE
            created = subprocess.run(
                [
                    self.cli, "--cluster", "create",
                    *(f"{host}:{port}" for host, port in self.nodes),
                    "--cluster-replicas", "0", "--cluster-yes",
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=CLUSTER_DEADLINE,
                check=False,
            )  # fmt: skip
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
        stop_all(self.servers)

    def _wait_ok(self, deadline: float) -> None:
        while True:
            states: list[dict[str, Any]] = []
            for server in self.servers:
                try:
                    with _client(server.port, 1.0) as client:
                        states.append(client.cluster("info"))
                except redis.RedisError as exc:
                    states.append({"error": repr(exc)})
            if all(
                str(state.get("cluster_state")) == "ok"
                and int(state.get("cluster_known_nodes", 0)) == len(self.servers)
                and int(state.get("cluster_slots_ok", 0)) == 16384
                for state in states
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the cluster was not ok within {CLUSTER_DEADLINE:g} s: {states}"
                )
            time.sleep(0.02)


@atexit.register
def _stop_leftovers() -> None:
    """Last resort (owners stop their servers in ``finally``): none outlives this process."""
    stop_all(list(_LIVE))
