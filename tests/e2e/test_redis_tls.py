"""rediss:// against a local TLS redis-server with a throwaway CA: the certificate and the host name are
verified by every client Relay builds; an untrusted CA is refused; a wrong host name is refused unless
RELAY_REDIS_TLS_CHECK_HOSTNAME=false."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis.exceptions import ConnectionError

import shared.redis
from bench.harness.client import read_events, submit_ok, types
from bench.harness.processes import wait_until
from bench.harness.redis_servers import Cluster, Server, TlsFiles, make_tls_files, start_cluster, start_tls_server
from shared.redis import api_client, probe_client, sync_client, worker_client
from shared.settings import Settings
from tests.conftest import StartApi, StartWorker


@pytest.fixture(autouse=True)
def short_patience(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused certificate is a ConnectionError, which patient clients retry for their whole budget."""
    monkeypatch.setattr(shared.redis, "RETRY_BUDGET_SECONDS", 0.2)


@pytest.fixture
def good(tmp_path: Path) -> Iterator[tuple[Server, TlsFiles]]:
    files = make_tls_files(tmp_path / "good", ["127.0.0.1", "localhost"])
    server = start_tls_server(tmp_path, files)
    yield server, files
    server.proc.stop()


@pytest.fixture
def misnamed(tmp_path: Path) -> Iterator[tuple[Server, TlsFiles]]:
    files = make_tls_files(tmp_path / "misnamed", ["redis.example.internal"])
    server = start_tls_server(tmp_path, files)
    yield server, files
    server.proc.stop()


@pytest.fixture
def tls_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A Redis Cluster that speaks only TLS (to clients, on its bus, for replication) and wants a password."""
    files = make_tls_files(tmp_path / "cluster", ["127.0.0.1", "localhost"], client_too=True)
    cluster = start_cluster(tmp_path, tls=files, password="cluster-s3cret")
    yield cluster
    cluster.stop()


def tls_settings(server: Server, ca: Path, **values: object) -> Settings:
    return Settings(redis_url=f"rediss://127.0.0.1:{server.port}/0", redis_tls_ca_file=str(ca), **values)  # type: ignore[arg-type]


async def reaches(settings: Settings) -> list[bool]:
    """Whether each kind of client Relay builds gets a PONG (False: refused)."""
    results = []
    for client in (api_client(settings), probe_client(settings), worker_client(settings)):
        try:
            results.append(bool(await client.ping()))
        except ConnectionError:
            results.append(False)
        finally:
            await client.aclose()
    sync = sync_client(settings)
    try:
        results.append(bool(sync.ping()))
    except ConnectionError:
        results.append(False)
    finally:
        sync.close()
    return results


def test_api_and_worker_work_over_verified_tls(
    good: tuple[Server, TlsFiles], spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    server, files = good
    for host in ("127.0.0.1", "localhost"):
        env = {"RELAY_REDIS_TLS_CA_FILE": str(files.ca), "RELAY_QUEUE_NAME": f"relay:tls:{host}"}
        url = f"rediss://{host}:{server.port}/0"
        spawn_worker(url=url, **env)
        _, base = spawn_api(url=url, offers=False, **env)
        task_id = submit_ok(base, {"task": "count", "kwargs": {"n": 2, "interval": 0.01}})
        assert types(read_events(base, task_id))[-1] == "end"


@pytest.mark.cluster
def test_api_and_worker_work_over_tls_with_a_password_on_a_cluster(
    tls_cluster: Cluster, spawn_api: StartApi, spawn_worker: StartWorker
) -> None:
    """As on one Redis: the CA and the password (RELAY_REDIS_PASSWORD, the URL holding none) reach every node the
    cluster client finds, and the pub/sub connection (the streamed events)."""
    assert tls_cluster.tls is not None
    env = {
        "RELAY_REDIS_CLUSTER": "true",
        "RELAY_REDIS_TLS_CA_FILE": str(tls_cluster.tls.ca),
        "RELAY_REDIS_PASSWORD": tls_cluster.password,
        "RELAY_QUEUE_NAME": "relay:tls-cluster",
    }
    url = f"rediss://127.0.0.1:{tls_cluster.servers[0].port}/0"
    spawn_worker(url=url, **env)
    _, base = spawn_api(url=url, offers=False, **env)
    task_id = submit_ok(base, {"task": "count", "kwargs": {"n": 2, "interval": 0.01}})
    assert types(read_events(base, task_id)) == ["started", "partial", "partial", "result", "end"]


async def test_every_client_verifies_the_chain(good: tuple[Server, TlsFiles]) -> None:
    server, files = good
    assert await reaches(tls_settings(server, files.ca)) == [True] * 4
    assert await reaches(tls_settings(server, files.other_ca)) == [False] * 4
    # The opt-out is for the name only: an untrusted chain stays refused.
    assert await reaches(tls_settings(server, files.other_ca, redis_tls_check_hostname=False)) == [False] * 4


async def test_every_client_checks_the_host_name_unless_told_not_to(misnamed: tuple[Server, TlsFiles]) -> None:
    server, files = misnamed
    assert await reaches(tls_settings(server, files.ca)) == [False] * 4
    assert await reaches(tls_settings(server, files.ca, redis_tls_check_hostname=False)) == [True] * 4
    with pytest.raises(ConnectionError, match=r"(?i)mismatch"):
        await probe_client(tls_settings(server, files.ca)).ping()


def test_an_untrusted_server_keeps_the_api_unready_with_a_clear_reason(
    good: tuple[Server, TlsFiles], spawn_api: StartApi
) -> None:
    server, files = good
    api, base = spawn_api(
        url=f"rediss://127.0.0.1:{server.port}/0",
        wait_ready=False,
        offers=False,
        RELAY_REDIS_TLS_CA_FILE=str(files.other_ca),
    )
    wait_until(lambda: "certificate verify failed" in api.output(), 20, "the API to log the refused certificate")
    assert httpx.get(f"{base}/health/ready", timeout=5).status_code == 503
    assert "Traceback" not in api.output()
