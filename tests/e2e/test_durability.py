"""RELAY_REDIS_WAIT_REPLICAS: a 202 only once a replica has the job; otherwise a 503 that names the task,
which a resubmit with the same id settles."""

from __future__ import annotations

from pathlib import Path

import httpx

from bench.harness.redis_servers import start_replica, start_server
from tests.conftest import StartApi
from tests.support.tcp_proxy import StallingProxy

WAIT = {"RELAY_REDIS_WAIT_REPLICAS": "1", "RELAY_REDIS_WAIT_TIMEOUT_MS": "1000"}  # generous: a busy box


def post(base: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(f"{base}/tasks", json=body, timeout=10)


def test_a_submit_no_replica_confirmed_is_a_503_naming_the_task(tmp_path: Path, spawn_api: StartApi) -> None:
    primary = start_server(tmp_path, name="alone")
    try:
        _, base = spawn_api(url=primary.url, **WAIT)
        refused = post(base, {"task": "echo"})
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        error = refused.json()["error"]
        assert error["code"] == "not_replicated"
        assert error["details"]["replicas"] == 0
        assert error["details"]["wanted"] == 1
        task_id = error["details"]["id"]
        assert httpx.get(f"{base}/tasks/{task_id}", timeout=10).json()["state"] == "queued"  # it is there
        workflow = {"id": "wf-wait", "workflow": {"group": [{"task": "echo"}, {"task": "echo"}]}}
        flow = httpx.post(f"{base}/workflows", json=workflow, timeout=10)
        assert (flow.status_code, flow.json()["error"]["code"]) == (503, "not_replicated")
        assert flow.json()["error"]["details"]["id"] == "wf-wait"
        assert httpx.get(f"{base}/workflows/wf-wait", timeout=10).status_code == 200  # it is there too

        replica = start_replica(tmp_path, primary)
        try:
            again = post(base, {"task": "echo", "id": task_id})
            assert again.status_code == 200  # it survived: nothing new is enqueued
            assert again.json()["created"] is False
            assert post(base, {"task": "echo"}).status_code == 202
        finally:
            replica.proc.stop()
    finally:
        primary.proc.stop()


def test_wait_counts_the_writes_of_the_connection_that_enqueued(tmp_path: Path, spawn_api: StartApi) -> None:
    """WAIT on any other connection would return at once (it wrote nothing): the stalled replica must
    make the submit's own WAIT time out."""
    primary = start_server(tmp_path, name="primary")
    link = StallingProxy(primary.port)
    replica = start_replica(tmp_path, primary, via_port=link.port)
    try:
        _, base = spawn_api(url=primary.url, **WAIT)
        assert post(base, {"task": "echo"}).status_code == 202
        link.stall()
        stalled = post(base, {"task": "echo"})
        assert stalled.status_code == 503
        assert stalled.json()["error"]["code"] == "not_replicated"
        assert stalled.json()["error"]["details"]["replicas"] == 0
    finally:
        link.close()
        replica.proc.stop()
        primary.proc.stop()


def test_a_resubmit_of_an_id_replicas_lack_is_a_503_again_until_they_have_it(
    tmp_path: Path, spawn_api: StartApi
) -> None:
    """A submit refused for lack of replicas is on the primary: the resubmit its 503 asks for finds it there and
    writes nothing, so its own WAIT proved nothing. It must not answer 200 while the replica still lacks the job
    (a failover then would lose a task the client was told is safe); once the replica has it, it does."""
    primary = start_server(tmp_path, name="primary")
    link = StallingProxy(primary.port)
    replica = start_replica(tmp_path, primary, via_port=link.port)
    try:
        _, base = spawn_api(url=primary.url, **WAIT)
        link.stall()
        task_id = post(base, {"task": "echo"}).json()["error"]["details"]["id"]
        workflow = {"id": "wf-lagging", "workflow": {"chain": [{"task": "echo"}, {"task": "echo"}]}}
        assert httpx.post(f"{base}/workflows", json=workflow, timeout=10).status_code == 503
        again = post(base, {"task": "echo", "id": task_id})
        assert (again.status_code, again.json()["error"]["code"]) == (503, "not_replicated")
        flow_again = httpx.post(f"{base}/workflows", json=workflow, timeout=10)
        assert (flow_again.status_code, flow_again.json()["error"]["code"]) == (503, "not_replicated")
        link.resume()
        settled = post(base, {"task": "echo", "id": task_id})
        assert (settled.status_code, settled.json()["created"]) == (200, False)
        assert httpx.post(f"{base}/workflows", json=workflow, timeout=10).status_code == 200
    finally:
        link.close()
        replica.proc.stop()
        primary.proc.stop()
