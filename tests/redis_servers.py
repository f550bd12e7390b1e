"""Real redis-server processes for end-to-end tests, with the faults they inject.

The servers themselves (a free port of 127.0.0.1, a temporary directory, no
RDB, no AOF, stopped at the end whatever happens) are
``examples/_redis_server.py``'s; this module adds what tests need on top.
``RedisServer`` finds the binary itself and injects faults: ``kill()`` (the
port then refuses), ``restart()`` (same port, empty data), ``pause()`` /
``resume()`` (SIGSTOP / SIGCONT: connections are accepted by the kernel but
never answered). ``RedisCluster`` is three such nodes joined by ``redis-cli
--cluster create`` (masters only, all 16384 slots covered). ``command()``
is a tiny RESP client of their own, for replies exactly as the server sends
them.

``redis_server_path()`` / ``redis_cli_path()`` find the binaries; when one is
missing they fail the test under CI (``CI=true``) and skip it elsewhere.
The fixtures built on these live in ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn, Self

import pytest

from examples import _redis_server as base
from examples._redis_server import HOST

_INSTALL_HINT = (
    "`make test` installs it (apt-get install -y redis-server, which brings redis-cli); "
    "install it the same way to run the Redis tests"
)


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


# -- a stopped process ------------------------------------------------------


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


class RedisServer(base.RedisServer):
    """One ``redis-server`` on 127.0.0.1, started by ``start()`` (or ``with``).

    ``port=None`` picks a free port (and, after a bind race, another one);
    ``cluster=True`` makes the node cluster-enabled and checks its bus port
    (port + 10000) too; ``args`` are extra ``--name value`` options. The
    binary is looked up by ``start()`` (see ``redis_server_path()``).
    """

    def __init__(
        self, *, port: int | None = None, cluster: bool = False, args: Iterable[str] = ()
    ) -> None:
        super().__init__("", "resilience-redis-", cluster=cluster, args=args)
        self.host = HOST
        self._fixed_port = port
        self._paused = False

    # where it is
    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def paused(self) -> bool:
        return self._paused and self.running

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.running else "stopped"
        return f"<RedisServer {self.host}:{self.port} {state}>"

    # lifecycle
    def start(self, port: int | None = None) -> Self:
        """Start the server and wait (10 s at most) until it answers."""
        self.binary = redis_server_path()
        return super().start(self._fixed_port if port is None else port)

    def terminate(self) -> None:
        if self.paused and self.process is not None:
            # A stopped process acts on SIGTERM once continued; no need to wait for that.
            os.kill(self.process.pid, signal.SIGCONT)
            self._paused = False
        super().terminate()

    # faults
    def kill(self) -> None:
        """SIGKILL the server: connections drop, new ones are refused."""
        super().kill()
        self._paused = False

    def restart(self) -> None:
        """Start again on the same port with empty data (stopping it first if alive)."""
        if self.directory is None:
            raise RuntimeError(f"{self!r} was never started (or was stopped): call start()")
        self.halt()
        super().start(self.port)

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts connections, nothing is answered."""
        if self.process is None or not self.running:
            raise RuntimeError(f"{self!r} is not running")
        os.kill(self.process.pid, signal.SIGSTOP)
        _wait_for_state(self.process.pid, stopped=True)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT after ``pause()``; a no-op when not paused."""
        if self.paused:
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGCONT)
            _wait_for_state(self.process.pid, stopped=False)
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


# -- a cluster --------------------------------------------------------------


class RedisCluster(base.RedisCluster):
    """``size`` cluster-enabled nodes joined by ``redis-cli --cluster create`` (no replicas).

    ``start()`` returns once every node reports ``cluster_state:ok``, knows
    every other node and sees all 16384 slots assigned (20 s at most).
    """

    servers: list[RedisServer]

    def __init__(self, size: int = 3) -> None:
        super().__init__([RedisServer(cluster=True) for _ in range(size)], cli="")

    @property
    def running(self) -> bool:
        return all(server.running for server in self.servers)

    def __repr__(self) -> str:
        return f"<RedisCluster {' '.join(f'{h}:{p}' for h, p in self.nodes)}>"

    def start(self) -> Self:
        self.cli = redis_cli_path()
        return super().start()

    def delete_prefix(self, prefix: str) -> int:
        """Delete the keys starting with ``prefix`` on every node; return how many."""
        return sum(server.delete_prefix(prefix) for server in self.servers)


# Async Redis tests: redis-py's asyncio client does not run on trio, so they
# override conftest's parametrized `anyio_backend` fixture with this mark.
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])
