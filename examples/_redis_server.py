"""A redis-server of the examples' own: 127.0.0.1, a free port, a temporary
directory (no RDB, no AOF), stopped and removed at the end. The fleet
examples (redis_fleet, demo_fleet) share it; tests have their own
(tests/redis_servers.py)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import redis

__all__ = ["HOST", "RedisServer", "free_port"]

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One redis-server on 127.0.0.1 in a temporary directory (no RDB, no AOF),
    in a session of its own: a Ctrl-C on the terminal reaches the example
    only, which stops the server itself, last."""

    def __init__(self, binary: str, prefix: str = "redis-example-") -> None:
        self.binary = binary
        self.directory = tempfile.mkdtemp(prefix=prefix)
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        # A restart (in a thread) may race the demo's stop: never one after it.
        self._lock = threading.Lock()
        self._closed = False

    def start(self, port: int | None = None) -> None:
        """Start on ``port`` or, when None, a free one (another after a bind race)."""
        for _ in range(1 if port else 10):
            self.port = port or free_port()
            argv = [
                self.binary,
                "--bind", HOST,
                "--port", str(self.port),
                "--dir", self.directory,
                "--save", "",
                "--appendonly", "no",
                "--logfile", os.path.join(self.directory, "redis.log"),
            ]  # fmt: skip
            with self._lock:
                if self._closed:
                    return
                self.process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            if self._answers() or self._closed:
                return
        raise RuntimeError(f"redis-server did not start on port {self.port}:\n{self.log()}")

    def _answers(self) -> bool:
        """True once this process answers; False if it exited (its port was taken)."""
        assert self.process is not None
        client = redis.Redis(host=HOST, port=self.port, socket_timeout=0.5)
        deadline = time.monotonic() + 10.0
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                try:
                    if client.info("server")["process_id"] == self.process.pid:
                        return True
                except redis.RedisError:
                    time.sleep(0.01)
        finally:
            client.close()
        raise RuntimeError(f"redis-server did not answer within 10 s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: connections drop, new ones are refused."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        """Stop it (if it runs) and remove its directory; safe to call twice."""
        with self._lock:
            self._closed = True
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)

    def evalsha_calls(self) -> int:
        with redis.Redis(host=HOST, port=self.port, socket_timeout=2.0) as client:
            stats = client.info("commandstats")
        return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

    def log(self) -> str:
        try:
            with open(os.path.join(self.directory, "redis.log")) as log:
                return log.read()[-2000:]
        except OSError:
            return ""
