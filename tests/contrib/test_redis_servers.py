"""The real Redis fixtures (tests/redis_servers.py, tests/conftest.py) driven by redis-py.

A redis-server and a three-node Redis Cluster shared by the session, a fresh
server per fault test (kill, restart, pause), the Lua scripts the Redis state
backend will rely on, and what happens when the binaries are missing.
Async tests run on asyncio only (redis-py's asyncio client does not run on trio).
"""

from __future__ import annotations

import errno
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.cluster
import redis.retry
from redis.backoff import NoBackoff

from examples import _redis_server
from tests import redis_servers
from tests.redis_servers import RedisCluster, RedisServer, asyncio_only, command

# Increments KEYS[1] by ARGV[1], records the call in KEYS[2]: two keys, so on
# a cluster they must share a slot (the prefix's hash tag does that).
SCRIPT = """
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('RPUSH', KEYS[2], ARGV[1])
return {total, redis.call('LLEN', KEYS[2])}
"""


def sync_client(server: RedisServer, **kwargs: Any) -> redis.Redis:
    """No retries (redis-py retries 3 times with backoff by default): faults show at once."""
    return redis.Redis(
        host=server.host,
        port=server.port,
        decode_responses=True,
        retry=redis.retry.Retry(NoBackoff(), 0),
        socket_connect_timeout=1.0,
        **kwargs,
    )


def async_client(server: RedisServer, **kwargs: Any) -> redis.asyncio.Redis:
    return redis.asyncio.Redis(
        host=server.host,
        port=server.port,
        decode_responses=True,
        retry=redis.asyncio.retry.Retry(NoBackoff(), 0),
        socket_connect_timeout=1.0,
        **kwargs,
    )


@pytest.fixture
def cluster_client(redis_cluster: RedisCluster) -> Iterator[redis.cluster.RedisCluster]:
    client = redis.cluster.RedisCluster(
        startup_nodes=[redis.cluster.ClusterNode(host, port) for host, port in redis_cluster.nodes],
        decode_responses=True,
    )
    try:
        yield client
    finally:
        client.close()


# -- the shared server ----------------------------------------------------------


def test_sync_client(redis_server: RedisServer, redis_prefix: str) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    with redis.Redis.from_url(redis_server.url, decode_responses=True) as client:
        assert client.ping() is True
        client.set(f"{redis_prefix}name", "value", px=60_000)
        assert client.get(f"{redis_prefix}name") == "value"
        assert client.incrby(f"{redis_prefix}count", 3) == 3
        assert 0 < client.pttl(f"{redis_prefix}name") <= 60_000
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}


@asyncio_only
async def test_async_client(redis_server: RedisServer, redis_prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        assert await client.ping() is True
        async with client.pipeline(transaction=True) as pipe:
            pipe.incr(f"{redis_prefix}n").incr(f"{redis_prefix}n").get(f"{redis_prefix}n")
            assert await pipe.execute() == [1, 2, "2"]
        sha = await client.script_load(SCRIPT)
        keys = (f"{redis_prefix}total", f"{redis_prefix}log")
        assert await client.evalsha(sha, 2, *keys, 5) == [5, 1]
        assert await client.evalsha(sha, 2, *keys, 2) == [7, 2]
    finally:
        await client.aclose()


def test_prefix_is_unique_hash_tagged_and_cleaned(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    assert redis_prefix.startswith("{t-")
    assert redis_prefix.endswith("}:")
    assert redis.cluster.key_slot(f"{redis_prefix}a".encode()) == redis.cluster.key_slot(
        f"{redis_prefix}b".encode()
    )
    other = f"other-{uuid.uuid4().hex}:"
    with sync_client(redis_server) as client:
        client.mset({f"{redis_prefix}a": 1, f"{redis_prefix}b": 2, f"{other}a": 3})
        # glob characters in a prefix are taken literally
        assert redis_server.delete_prefix(f"{redis_prefix}*") == 0
        assert redis_server.delete_prefix(redis_prefix) == 2
        assert client.exists(f"{redis_prefix}a", f"{redis_prefix}b") == 0
        assert client.get(f"{other}a") == "3"
        client.delete(f"{other}a")


# -- the shared cluster ---------------------------------------------------------


def test_cluster_nodes(redis_cluster: RedisCluster) -> None:
    assert len(redis_cluster.nodes) == 3
    assert len(set(redis_cluster.nodes)) == 3
    for host, port in redis_cluster.nodes:
        info = command(port, "CLUSTER", "INFO", host=host)
        assert "cluster_state:ok" in info
        assert "cluster_known_nodes:3" in info
        with socket.create_connection((host, port + 10000), timeout=1):
            pass  # the cluster bus listens on port + 10000


def test_cluster_sync_client(
    cluster_client: redis.cluster.RedisCluster, redis_cluster: RedisCluster
) -> None:
    primaries = cluster_client.get_primaries()
    assert sorted((n.host, n.port) for n in primaries) == sorted(redis_cluster.nodes)
    keys = [f"spread-{uuid.uuid4().hex}" for _ in range(30)]
    try:
        for i, key in enumerate(keys):
            cluster_client.set(key, i)
        assert [cluster_client.get(key) for key in keys] == [str(i) for i in range(30)]
        # thirty random keys land on all three nodes (1 in ~10^5 that they don't)
        owners = {cluster_client.get_node_from_key(key).port for key in keys}
        assert owners == {port for _, port in redis_cluster.nodes}
    finally:
        for key in keys:
            cluster_client.delete(key)


@asyncio_only
async def test_cluster_async_client(redis_cluster: RedisCluster, redis_prefix: str) -> None:
    client = redis.asyncio.RedisCluster(
        startup_nodes=[
            redis.asyncio.cluster.ClusterNode(host, port) for host, port in redis_cluster.nodes
        ],
        decode_responses=True,
    )
    try:
        assert await client.ping() is True
        await client.set(f"{redis_prefix}a", "1")
        await client.incrby(f"{redis_prefix}b", 41)
        assert await client.mget(f"{redis_prefix}a", f"{redis_prefix}b") == ["1", "41"]
        assert len(client.get_primaries()) == 3
    finally:
        await client.aclose()


def test_cluster_lua_script(cluster_client: redis.cluster.RedisCluster, redis_prefix: str) -> None:
    keys = (f"{redis_prefix}total", f"{redis_prefix}log")
    sha = cluster_client.script_load(SCRIPT)  # sent to every primary
    assert cluster_client.script_exists(sha) == [True]
    assert cluster_client.evalsha(sha, 2, *keys, 5) == [5, 1]
    assert cluster_client.evalsha(sha, 2, *keys, 3) == [8, 2]
    # the node owning the hash tag's slot ran it
    owner = cluster_client.get_node_from_key(keys[0])
    with redis.Redis(host=owner.host, port=owner.port, decode_responses=True) as node:
        assert node.get(keys[0]) == "8"
    # keys in different slots cannot go to one script
    with pytest.raises(redis.exceptions.RedisClusterException, match="same key slot"):
        cluster_client.evalsha(sha, 2, f"a-{uuid.uuid4().hex}", f"b-{uuid.uuid4().hex}", 1)
    # after SCRIPT FLUSH (or a restart) EVALSHA answers NOSCRIPT: callers load it again
    assert cluster_client.script_flush() is True
    with pytest.raises(redis.exceptions.NoScriptError):
        cluster_client.evalsha(sha, 2, *keys, 1)
    assert cluster_client.get(keys[0]) == "8"
    # redis-py's Script does exactly that
    script = cluster_client.register_script(SCRIPT)
    assert script(keys=list(keys), args=[2]) == [10, 3]


@asyncio_only
async def test_cluster_lua_script_async(redis_cluster: RedisCluster, redis_prefix: str) -> None:
    client = redis.asyncio.RedisCluster(
        startup_nodes=[
            redis.asyncio.cluster.ClusterNode(host, port) for host, port in redis_cluster.nodes
        ]
    )
    keys = (f"{redis_prefix}total", f"{redis_prefix}log")
    try:
        sha = await client.script_load(SCRIPT)
        assert await client.evalsha(sha, 2, *keys, 4) == [4, 1]
        await client.script_flush()
        with pytest.raises(redis.exceptions.NoScriptError):
            await client.evalsha(sha, 2, *keys, 1)
        assert await client.script_load(SCRIPT) == sha
        assert await client.evalsha(sha, 2, *keys, 1) == [5, 2]
    finally:
        await client.aclose()


# -- faults on a server of the test's own ---------------------------------------


def test_kill_refuses_then_restart_starts_empty(fresh_redis_server: RedisServer) -> None:
    server = fresh_redis_server
    port, directory = server.port, server.directory
    with sync_client(server) as client:
        client.set("k", "before")
        server.kill()
        assert not server.running
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(server.address, timeout=1).close()
        started = time.monotonic()
        with pytest.raises(redis.exceptions.ConnectionError) as refused:
            client.get("k")
        assert time.monotonic() - started < 1.0
        assert "refused" in str(refused.value).lower() or str(errno.ECONNREFUSED) in str(
            refused.value
        )
        server.restart()
        assert (server.port, server.directory) == (port, directory)
        assert server.running
        assert client.get("k") is None  # fresh data
        assert client.set("k", "after") is True


def test_pause_times_out_then_resume(fresh_redis_server: RedisServer) -> None:
    server = fresh_redis_server
    with sync_client(server, socket_timeout=0.2) as client:
        assert client.ping() is True
        server.pause()
        assert server.paused
        assert server.running
        for _ in range(2):  # the open connection, then a new one the kernel accepts
            started = time.monotonic()
            with pytest.raises(redis.exceptions.TimeoutError):
                client.ping()
            assert 0.15 < time.monotonic() - started < 1.0
        server.resume()
        assert not server.paused
        assert client.ping() is True


@asyncio_only
async def test_faults_async(fresh_redis_server: RedisServer) -> None:
    server = fresh_redis_server
    client = async_client(server, socket_timeout=0.2)
    try:
        await client.set("k", "v")
        server.pause()
        started = time.monotonic()
        with pytest.raises(redis.exceptions.TimeoutError):
            await client.get("k")
        assert time.monotonic() - started < 1.0
        server.resume()
        assert await client.get("k") == "v"
        server.kill()
        with pytest.raises(redis.exceptions.ConnectionError):
            await client.get("k")
        server.restart()
        assert await client.get("k") is None
    finally:
        await client.aclose()


def test_left_paused_is_resumed_and_stopped(fresh_redis_server: RedisServer) -> None:
    # the fixture's teardown stops a paused server; stopping one directly is quick too
    with RedisServer() as server:
        pid = server.pid
        server.pause()
        started = time.monotonic()
    assert time.monotonic() - started < 2.0
    assert pid is not None
    assert not os.path.exists(f"/proc/{pid}")
    fresh_redis_server.pause()  # left paused on purpose: the fixture's teardown copes


# -- the helpers themselves -----------------------------------------------------


def test_stop_removes_everything() -> None:
    server = RedisServer().start()
    directory, address = server.directory, server.address
    assert directory is not None
    assert os.path.isdir(directory)
    assert "Ready to accept connections" in server.log()
    server.stop()
    assert not os.path.exists(directory)
    assert server.directory is None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=1).close()
    server.stop()  # idempotent
    with pytest.raises(RuntimeError, match="never started"):
        server.restart()


def test_lost_port_race_retries_on_another_port(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        real_free_port = _redis_server.free_port
        monkeypatch.setattr(
            _redis_server, "free_port", lambda **kw: next(ports, None) or real_free_port(**kw)
        )
        with RedisServer() as server:  # first tries `taken`, fails to bind, picks another
            assert server.port != taken
            assert command(server.port, "PING") == "PONG"
        with pytest.raises(RuntimeError, match=f"port {taken} is taken"):
            RedisServer(port=taken).start()


@pytest.mark.parametrize("find", [redis_servers.redis_server_path, redis_servers.redis_cli_path])
def test_missing_binary_fails_under_ci_and_skips_elsewhere(
    find: Callable[[], str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="make test"):
        find()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="apt-get install"):
        find()
