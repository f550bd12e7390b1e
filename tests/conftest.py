from __future__ import annotations

import atexit
import inspect
import os
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.redis_servers import RedisCluster, RedisServer


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs once on asyncio and once on trio."""
    return str(request.param)


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: Any) -> None:
    # Mark coroutine tests before the anyio plugin looks for its marker, so no
    # test module has to repeat `pytestmark = pytest.mark.anyio`.
    if inspect.iscoroutinefunction(obj) and collector.istestfunction(obj, name):  # type: ignore[attr-defined]
        pytest.mark.anyio(obj)


# -- temporalio and the interpreter's teardown --------------------------------
# temporalio's Rust threads can abort the interpreter while it finalizes
# ("PyGILState_Release: thread state ... must be current", SIGABRT:
# temporalio/sdk-python#300), after every test has passed and been reported.
# A session that loaded the bridge ends, once pytest itself has finished
# (atexit runs after pytest has returned its status), with that status and
# without the finalization the threads trip on.


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if "temporalio.bridge.temporal_sdk_bridge" in sys.modules:
        atexit.register(_exit_now, int(exitstatus))


def _exit_now(status: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


# -- real Redis (tests/redis_servers.py) --------------------------------------
# One redis-server and one three-node Redis Cluster per session, started on
# first use and stopped at session end (in `finally`, after failures too);
# `fresh_redis_server` is a server of the test's own, for kill/pause faults.
# Tests share the session's servers: keep to the keys under `redis_prefix`.

_SHARED_REDIS: list[RedisServer] = []  # the session's servers and cluster nodes


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The session's redis-server (do not kill or pause it: use fresh_redis_server)."""
    server = RedisServer()
    try:  # stopped even if starting fails halfway or the session is interrupted
        _SHARED_REDIS.append(server.start())
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """The session's three-node Redis Cluster (masters only); `.nodes` is [(host, port)]."""
    cluster = RedisCluster(3)
    try:
        _SHARED_REDIS.extend(cluster.start().servers)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def fresh_redis_server() -> Iterator[RedisServer]:
    """A redis-server for this test alone: kill(), restart(), pause() it freely."""
    server = RedisServer()
    try:
        yield server.start()
    finally:
        server.stop()  # resumes a paused server first


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix unique to the test, with a hash tag ("{t-<hex>}:") so that its
    keys share one cluster slot; its keys are deleted from the session's servers
    and cluster afterwards."""
    prefix = f"{{t-{uuid.uuid4().hex[:12]}}}:"
    yield prefix
    for server in _SHARED_REDIS:
        if server.running and not server.paused:
            server.delete_prefix(prefix)


@pytest.fixture(autouse=True)
def _redis_left_healthy() -> Iterator[None]:
    """No test leaves the session's Redis paused or dead (a no-op until one is started)."""
    yield
    broken = []
    for server in _SHARED_REDIS:
        if server.paused:
            server.resume()
            broken.append(f"{server!r} was left paused (resumed)")
        elif not server.running:
            broken.append(f"{server!r} was left dead")
            if not server.cluster:
                server.restart()
    if broken:
        pytest.fail(
            "a test broke the session's Redis; use fresh_redis_server for faults: "
            + "; ".join(broken),
            pytrace=False,
        )
