"""shared.redis against real redis-servers: credentials, the bounded pool, retries through READONLY, the
write probe, and the limits of each client's patience."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import uvloop
from redis.exceptions import AuthenticationError, ConnectionError, OutOfMemoryError, ReadOnlyError

import shared.redis as shared_redis
from bench.harness.processes import free_port, wait_until
from bench.harness.redis_servers import Server, start_server
from shared.redis import api_client, check_writable, describe, probe_client, sync_client, worker_client
from shared.redis_errors import AUTH, classify
from shared.redis_pools import PoolExhausted
from shared.settings import Settings


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    started = start_server(tmp_path)
    yield started
    started.proc.stop()


def settings_for(url: str, **values: object) -> Settings:
    return Settings(redis_url=url, **values)  # type: ignore[arg-type]


def errors_seen(client: redis.Redis, prefix: str) -> int:
    """How many error replies starting with ``prefix`` the server has sent (INFO errorstats)."""
    return int(client.info("errorstats").get(f"errorstat_{prefix}", {}).get("count", 0))


def test_sentinel_addresses_are_parsed_and_checked() -> None:
    settings = Settings(redis_sentinels=" a:26379, 10.0.0.2:26380 ,[::1]:26381")
    assert settings.sentinel_addresses() == [("a", 26379), ("10.0.0.2", 26380), ("::1", 26381)]
    assert Settings().sentinel_addresses() == []
    with pytest.raises(ValueError, match="host:port"):
        Settings(redis_sentinels="a:26379,b")


def test_wait_timeout_must_end_before_the_command_timeout() -> None:
    with pytest.raises(ValueError, match="RELAY_REDIS_WAIT_TIMEOUT_MS"):
        Settings(redis_wait_replicas=1, redis_wait_timeout_ms=2000, redis_timeout_seconds=2)
    assert Settings(redis_wait_replicas=1, redis_wait_timeout_ms=1500).redis_wait_timeout_ms == 1500


def test_log_lines_name_the_target_but_never_a_password() -> None:
    plain = settings_for("rediss://:hunter2@cache.example:6380/1", redis_password="s3cret")
    assert describe(plain) == "cache.example:6380 (TLS)"
    via = settings_for("redis://:hunter2@ignored:1/0", redis_sentinels="s1:26379,s2:26379", redis_sentinel_master="m")
    assert describe(via) == "primary 'm' via sentinels s1:26379,s2:26379"


async def test_password_setting_overrides_the_url(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--requirepass", "s3cret")
    try:
        wrong_in_url = server.url.replace("redis://", "redis://:wrong@")
        settings = settings_for(wrong_in_url, redis_password="s3cret")
        for client in (api_client(settings), worker_client(settings), probe_client(settings)):
            assert await client.ping()
            await client.aclose()
        assert sync_client(settings).ping()
        with pytest.raises(ConnectionError):  # AuthenticationError: the URL's password alone is refused
            await probe_client(settings_for(wrong_in_url)).ping()
    finally:
        server.proc.stop()


async def test_a_server_that_wants_a_password_not_given_is_an_auth_refusal(tmp_path: Path) -> None:
    """No password configured for a server that requires one: the set-up's health-check PING got NOAUTH, dropped
    the connection and made it again, whose set-up PINGed again, until Python's recursion limit: a transient
    'redis_unavailable' (and a worker retrying its whole budget), not the refusal it is."""
    server = start_server(tmp_path, "--requirepass", "s3cret")
    try:
        client = api_client(settings_for(server.url))
        try:
            with pytest.raises(AuthenticationError) as refused:
                await client.get("anything")
            assert classify(refused.value) is AUTH
        finally:
            await client.aclose()
    finally:
        server.proc.stop()


async def test_api_pool_is_bounded_and_says_when_it_is_exhausted(server: Server) -> None:
    client = api_client(settings_for(server.url, redis_max_connections=2, redis_pool_timeout_seconds=0.3))
    admin = server.client()
    try:
        # Two BLPOPs hold both connections until something is pushed.
        holders = [asyncio.create_task(client.blpop([f"hold-{i}"], timeout=10)) for i in range(2)]
        await asyncio.to_thread(wait_until, lambda: admin.info("clients")["blocked_clients"] == 2, 10, "2 BLPOPs")
        with pytest.raises(PoolExhausted) as caught:
            await client.get("x")
        failure = classify(caught.value)
        assert failure is not None
        assert (failure.code, failure.retry_after, failure.transient) == ("redis_pool_exhausted", 1, True)
        assert admin.info("clients")["connected_clients"] == 3  # the two holders and this admin client
        admin.rpush("hold-0", "x")
        admin.rpush("hold-1", "x")
        await asyncio.gather(*holders)
        assert await client.get("x") is None  # a connection is free again
    finally:
        await client.aclose()
        admin.close()


def test_a_connection_closed_under_a_write_is_a_lost_connection_on_uvloop(server: Server) -> None:
    """Sanic runs uvloop, where writing to a transport the server closed raises RuntimeError (asyncio's own
    loop raises an OSError redis-py calls ConnectionError): the failover test saw it as a 500. It must be a
    lost connection, which the API's client retries once on a fresh one."""

    async def write_after_the_server_closed_the_connection() -> bytes | None:
        client = api_client(settings_for(server.url, redis_max_connections=2))
        try:
            await client.set("before", 1)
            (connection,) = client.connection_pool._available_connections  # type: ignore[attr-defined]
            connection._writer.transport.abort()  # as a killed server leaves it
            value: bytes | None = await client.get("before")
            return value
        finally:
            await client.aclose()

    assert uvloop.run(write_after_the_server_closed_the_connection()) == b"1"


async def test_cancelled_commands_give_their_connection_back(server: Server) -> None:
    """Clients that disconnect cancel their request mid-command: the pool must not lose the slot."""
    client = api_client(settings_for(server.url, redis_max_connections=2, redis_pool_timeout_seconds=0.5))
    admin = server.client()
    try:
        for _ in range(20):
            pending = [asyncio.create_task(client.blpop([f"cancel-{i}"], timeout=5)) for i in range(3)]
            await asyncio.sleep(0)  # let them start: two hold a connection, one waits for a slot
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        holders = [asyncio.create_task(client.blpop([f"hold-{i}"], timeout=10)) for i in range(2)]
        await asyncio.to_thread(wait_until, lambda: admin.info("clients")["blocked_clients"] == 2, 10, "2 BLPOPs")
        admin.rpush("hold-0", "x")
        admin.rpush("hold-1", "x")
        assert len(await asyncio.gather(*holders)) == 2  # both slots are still there
    finally:
        await client.aclose()
        admin.close()


async def test_patient_clients_retry_through_readonly_until_writes_work(server: Server) -> None:
    """A demoted primary answers READONLY: workers and threads retry until writes work again."""
    admin = server.client()
    settings = settings_for(server.url)
    worker, thread_client = worker_client(settings), sync_client(settings)
    admin.replicaof("127.0.0.1", str(free_port()))  # a replica of nobody: reads work, writes get READONLY
    try:
        threaded: list[object] = []
        thread = threading.Thread(target=lambda: threaded.append(thread_client.set("from-thread", 1)))
        thread.start()
        pending = asyncio.create_task(worker.set("from-worker", 1))
        await asyncio.to_thread(wait_until, lambda: errors_seen(admin, "READONLY") >= 2, 10, "READONLY replies")
        admin.replicaof("NO", "ONE")
        assert await pending is True
        thread.join(10)
        assert threaded == [True]
        assert admin.get("from-worker") == b"1"
        assert admin.get("from-thread") == b"1"
    finally:
        admin.replicaof("NO", "ONE")
        await worker.aclose()
        admin.close()


async def test_api_client_fails_fast_on_readonly_and_drops_that_connection(server: Server) -> None:
    """The API answers at once (503) and its next command gets a new connection, which with a DNS name
    or Sentinel that follows failover reaches the new primary."""
    admin = server.client()
    client = api_client(settings_for(server.url, redis_max_connections=2))
    try:
        first_id = await client.client_id()
        admin.replicaof("127.0.0.1", str(free_port()))
        with pytest.raises(ReadOnlyError):
            await client.set("x", 1)
        assert errors_seen(admin, "READONLY") == 2  # the command, and its one retry on a fresh connection
        admin.replicaof("NO", "ONE")
        assert await client.client_id() != first_id
    finally:
        admin.replicaof("NO", "ONE")
        await client.aclose()
        admin.close()


async def test_write_probe_sees_what_ping_does_not(server: Server) -> None:
    admin = server.client()
    client = api_client(settings_for(server.url))
    try:
        await check_writable(client)
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)
        assert await client.ping()
        with pytest.raises(OutOfMemoryError):
            await check_writable(client)
        admin.config_set("maxmemory", 0)
        admin.replicaof("127.0.0.1", str(free_port()))
        assert await client.ping()
        with pytest.raises(ReadOnlyError):
            await check_writable(client)
        assert admin.dbsize() == 0  # the probe writes nothing
    finally:
        admin.replicaof("NO", "ONE")
        admin.config_set("maxmemory", 0)
        await client.aclose()
        admin.close()


async def test_scripts_are_reloaded_after_a_flush(server: Server) -> None:
    """NOSCRIPT after SCRIPT FLUSH (or a restart) is handled by redis-py's Script: EVALSHA, then EVAL."""
    admin = server.client()
    client = api_client(settings_for(server.url))
    try:
        script = client.register_script("return redis.call('INCR', KEYS[1])")
        assert await script(keys=["n"]) == 1  # first use: NOSCRIPT, then EVAL loads it
        admin.script_flush()
        before = errors_seen(admin, "NOSCRIPT")
        assert await script(keys=["n"]) == 2
        assert errors_seen(admin, "NOSCRIPT") == before + 1  # the flush was met, and recovered from
    finally:
        await client.aclose()
        admin.close()


async def test_patience_is_bounded_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command that cannot reach Redis ends in an error once the budget is spent, rather than hanging."""
    monkeypatch.setattr(shared_redis, "RETRY_BUDGET_SECONDS", 0.5)
    client = worker_client(settings_for(f"redis://127.0.0.1:{free_port()}/0", redis_timeout_seconds=0.2))
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(client.ping(), 30)
    await client.aclose()


async def test_a_stop_deadline_ends_retries_in_flight(server: Server) -> None:
    """``stop_retrying_at`` reaches a command already retrying (redis-py copies the retry per connection): a
    stopping worker gives an unreachable Redis until its deadline, not the whole budget per command."""
    client = worker_client(settings_for(server.url, redis_timeout_seconds=0.2))
    try:
        await client.ping()  # a connection exists, so its copy of the retry is the one that must see the deadline
        server.proc.stop()
        ping = asyncio.create_task(client.ping())
        await asyncio.sleep(0.3)  # it is retrying now
        assert not ping.done()
        shared_redis.stop_retrying_at(client, time.monotonic())
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(ping, 5)  # it was due to retry for RETRY_BUDGET_SECONDS (30 s)
    finally:
        await client.aclose()


async def test_commands_are_written_without_a_task_of_their_own(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py bounds each write with asyncio.wait_for: a Task per command on Python 3.11, and a cancel it can
    lose (CPython gh-86296). Relay's connections write at once and bound only a wait for room."""

    def no_wait_for(*_: object, **__: object) -> None:
        raise AssertionError("a command was written through asyncio.wait_for")

    client = api_client(settings_for(server.url, redis_timeout_seconds=2))
    try:
        await client.ping()  # connected first: a connect may use wait_for, a command must not
        monkeypatch.setattr(asyncio, "wait_for", no_wait_for)
        await client.set("written", "1")
        assert await client.get("written") == b"1"
    finally:
        await client.aclose()


async def test_a_write_with_no_room_times_out_and_drops_its_connection() -> None:
    """A server that never reads: the socket buffers fill, and the write gives up after the socket timeout."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # never read, never answer

    listener = await asyncio.start_server(silent, "127.0.0.1", free_port())
    port = listener.sockets[0].getsockname()[1]
    client = api_client(settings_for(f"redis://127.0.0.1:{port}/0", redis_timeout_seconds=0.5))
    try:
        started = time.monotonic()
        with pytest.raises(redis.exceptions.TimeoutError):
            await client.set("big", b"x" * (64 * 1024 * 1024))
        assert 0.4 < time.monotonic() - started < 5
        pool = client.connection_pool
        assert all(not c.is_connected for c in pool._available_connections + list(pool._in_use_connections))  # type: ignore[attr-defined]
    finally:
        await client.aclose()
        for writer in accepted:
            writer.close()
        listener.close()


@pytest.mark.parametrize(
    "args",
    [
        ("PING",),
        ("CONFIG GET", "maxmemory"),
        (b"EVALSHA", "ab" * 20, 2, "q", "i", *[b"x" * 300, "\u00e9t\u00e9", 17, 2.5, 0.1] * 40),
        ("SET", "big", b"y" * 7000),
        ("SET", "view", memoryview(b"z" * 10)),
        ("MSET", *[f"k{i}" for i in range(3000)]),
    ],
)
def test_commands_are_encoded_as_redis_py_encodes_them(args: tuple[object, ...]) -> None:
    """Relay's connections encode a command in linear time: the same bytes on the wire as redis-py's."""
    from redis.asyncio.connection import Connection

    from shared.redis_pools import AsyncConnection

    ours, theirs = AsyncConnection(), Connection()
    assert b"".join(ours.pack_command(*args)) == b"".join(bytes(part) for part in theirs.pack_command(*args))
