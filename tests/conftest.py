"""Fixtures that start real processes: a private redis-server, the API and an arq worker.

Session-scoped ones serve the many tests that only submit and read; tests about signals and
configuration start their own processes through the factories and stop them by PID afterwards.
"""

from __future__ import annotations

import os

# In-process imports of worker.settings (a few unit tests) load the same task modules as the processes.
os.environ.setdefault("RELAY_TASK_MODULES", "worker.tasks.demo,tests.support.tasks")
# ... and start no metrics server on the default port (other test runs or a scripts/dev may hold it).
os.environ.setdefault("RELAY_WORKER_METRICS_PORT", "0")

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from bench.harness.processes import API_FACTORY, ManagedProcess, start_api, start_redis, start_worker
from bench.harness.redis_servers import start_cluster
from shared import keys
from tests.support.environment import relay_env


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def redis_url(log_dir: Path) -> Iterator[str]:
    proc, url = start_redis(log_dir)
    try:
        yield url
    finally:
        proc.stop()


@pytest.fixture(autouse=True)
def _key_layout_kept() -> Iterator[None]:
    """A test that builds a cluster client switches this process to that namespace's tagged key layout
    (``shared.keys.use_layout``); the next test in the process must get the layout it had (plain, for single
    Redis), or its keys miss the ones its scripts write (``test_event_log_budget`` read nothing after one)."""
    with keys.layout_kept():
        yield


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def relay(redis_url: str, log_dir: Path) -> Iterator[str]:
    """One API and one worker shared by the read-and-submit tests; yields the API's base URL."""
    yield from _api_and_worker(log_dir, relay_env(redis_url, RELAY_HEARTBEAT_SECONDS="1"))


def _api_and_worker(log_dir: Path, env: dict[str, str]) -> Iterator[str]:
    """Start a worker and an API with ``env``, yield the API's base URL, stop both (by PID)."""
    worker = start_worker(log_dir, env)
    api, base = start_api(log_dir, env)
    try:
        yield base
    finally:
        api.stop()
        worker.stop()


StartApi = Callable[..., tuple[ManagedProcess, str]]
StartWorker = Callable[..., ManagedProcess]


@pytest.fixture
def spawn_api(redis_url: str, log_dir: Path) -> Iterator[StartApi]:
    """Start extra API processes (``spawn_api(RELAY_X="...")``), stopped when the test ends."""
    started: list[ManagedProcess] = []

    def spawn(
        *, url: str | None = None, wait_ready: bool = True, factory: str = API_FACTORY, offers: bool = True, **env: str
    ) -> tuple[ManagedProcess, str]:
        environment = relay_env(url or redis_url, **env)
        proc, base = start_api(log_dir, environment, wait_ready=wait_ready, factory=factory, offers=offers)
        started.append(proc)
        return proc, base

    yield spawn
    for proc in started:
        proc.stop()


@pytest.fixture
def spawn_worker(redis_url: str, log_dir: Path) -> Iterator[StartWorker]:
    """Start extra workers (``spawn_worker(RELAY_X="...")``), stopped when the test ends."""
    started: list[ManagedProcess] = []

    def spawn(*, url: str | None = None, wait_ready: bool = True, **env: str) -> ManagedProcess:
        proc = start_worker(log_dir, relay_env(url or redis_url, **env), wait_ready=wait_ready)
        started.append(proc)
        return proc

    yield spawn
    for proc in started:
        proc.stop()


@pytest.fixture
def spawn_redis(log_dir: Path) -> Iterator[Callable[..., tuple[ManagedProcess, str]]]:
    """Start extra private redis-servers (``spawn_redis("--maxmemory", "8mb")``), stopped when the test ends."""
    started: list[ManagedProcess] = []

    def spawn(*extra_args: str) -> tuple[ManagedProcess, str]:
        proc, url = start_redis(log_dir, extra_args=extra_args)
        started.append(proc)
        return proc, url

    yield spawn
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session")
def redis_cluster_url(log_dir: Path) -> Iterator[str]:
    """A local Redis Cluster (3 primaries, 3 replicas), started once per session and stopped by PID; yields
    one node's URL."""
    cluster = start_cluster(log_dir)
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def relay_cluster(redis_cluster_url: str, log_dir: Path) -> Iterator[str]:
    """``relay`` on the Redis Cluster (RELAY_REDIS_CLUSTER=true); yields the API's base URL."""
    env = relay_env(redis_cluster_url, RELAY_HEARTBEAT_SECONDS="1", RELAY_REDIS_CLUSTER="true")
    yield from _api_and_worker(log_dir, env)


@pytest.fixture(params=["redis", pytest.param("cluster", marks=pytest.mark.cluster)])
def relay_any(request: pytest.FixtureRequest) -> Iterator[str]:
    """``relay`` on single Redis, then on a Redis Cluster: the tests that take it run on both. On the cluster,
    this process uses its key layout while the test runs (for a test that reads keys itself)."""
    if request.param == "redis":
        yield str(request.getfixturevalue("relay"))
        return
    base = str(request.getfixturevalue("relay_cluster"))
    with keys.layout("relay:queue", cluster=True):
        yield base


@pytest.fixture(params=["redis", pytest.param("cluster", marks=pytest.mark.cluster)])
def on_redis(request: pytest.FixtureRequest) -> dict[str, str]:
    """Where ``spawn_api(**on_redis)`` / ``spawn_worker(**on_redis)`` connect: the session's Redis, then the Redis
    Cluster (the tests that take it run on both)."""
    if request.param == "redis":
        return {}
    return {"url": str(request.getfixturevalue("redis_cluster_url")), "RELAY_REDIS_CLUSTER": "true"}
