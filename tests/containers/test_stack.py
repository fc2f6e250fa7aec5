"""The compose stack on real containers: up and healthy, locked down, the HTTP contract through the published
(loopback) port, and a Redis that refuses anyone without the password."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx

from bench.harness.processes import wait_until
from tests.containers import measure
from tests.containers.compose import Stack, health
from tests.containers.conftest import UP_SECONDS
from tests.containers.relay_http import NDJSON, RelayHttp, events_of, types

RELAY_UID, REDIS_UID = "10001", "999"
EX_CONFIG = 64  # what k8s/base/redis.sh exits with on a missing or unusable password
PROBE = Path(__file__).with_name("redis_probe.py")


def test_the_stack_comes_up_healthy_locked_down_and_on_loopback(stack: Stack) -> None:
    with measure.timed("stack up from nothing (2 workers healthy), s"):
        stack.up(workers=2, timeout=UP_SECONDS)
    (api,) = stack.containers("api")
    port = stack.api_base.rsplit(":", 1)[1]
    assert api["NetworkSettings"]["Ports"]["8000/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": port}]
    expected_uid = {"api": RELAY_UID, "worker": RELAY_UID, "redis": REDIS_UID}
    for service, uid in expected_uid.items():
        for container in stack.containers(service):
            name = container["Name"]
            assert container["HostConfig"]["ReadonlyRootfs"] is True, name
            assert stack.engine.run("exec", container["Id"], "id", "-u").stdout.strip() == uid, name
            mounts = stack.engine.run("exec", container["Id"], "cat", "/proc/self/mounts").stdout
            (root,) = [line.split() for line in mounts.splitlines() if line.split()[1] == "/"]
            assert "ro" in root[3].split(","), name


def test_the_http_contract_through_the_published_port(running: Stack) -> None:
    assert httpx.post(f"{running.api_base}/tasks", json={"task": "echo"}).status_code == 401, "API keys are on"
    with RelayHttp(running.api_base, running.api_key) as relay:
        # Submit and read the events back on the same response.
        status, events = relay.submit_and_stream("count", f"smoke-{uuid.uuid4().hex}", kwargs={"n": 3})
        assert status == 200
        assert types(events) == ["started", "partial", "partial", "partial", "result", "end"]
        assert events[-1]["data"]["state"] == "succeeded"

        # Submit, follow, then read the final state.
        task_id = relay.submit_ok("echo", kwargs={"message": "from a container"})
        assert types(relay.events(task_id))[-1] == "end"
        state = relay.state(task_id)
        assert (state["state"], state["result"]) == ("succeeded", {"echo": "from a container"})

        # Abort a running task, once it reports progress, while following its stream.
        task_id = relay.submit_ok("sleep", kwargs={"seconds": 120, "steps": 120})
        with relay.http.stream("GET", f"/tasks/{task_id}/events", headers=NDJSON) as stream:
            followed = []
            for event in events_of(stream):
                followed.append(event)
                if event["type"] == "progress" and len(followed) == 2:
                    response = relay.abort(task_id)
                    assert response.status_code == 202, response.text
                    assert response.json()["state"] == "aborting"
        assert types(followed)[:2] == ["started", "progress"]
        assert types(followed)[-2:] == ["aborted", "end"]
        assert followed[-1]["data"]["state"] == "aborted"
        assert relay.state(task_id)["state"] == "aborted"

    metrics = httpx.get(f"{running.api_base}/metrics").text
    assert "relay_redis_up 1.0" in metrics


def test_redis_refuses_clients_without_the_password(running: Stack) -> None:
    """Clients on the stack's network (run in the API container) with and without Relay's credentials."""
    (api,) = running.containers("api")
    probe = running.engine.run("exec", "-i", api["Id"], "python", "-", stdin=PROBE.read_text(), timeout=60)
    report = json.loads(probe.stdout)
    assert report["user"] == "relay"
    assert report["anonymous"] == "AuthenticationError: Authentication required."
    assert report["default user with the password"].startswith("AuthenticationError: invalid username-password")
    assert report["relay user, wrong password"].startswith("AuthenticationError: invalid username-password")
    assert report["relay user"] == report["relay user, INFO"] == report["relay user, SET"] == "ok"
    for command, answer in report["relay user, dangerous"].items():
        assert answer.startswith("NoPermissionError: this user has no permissions"), command


def test_without_a_password_redis_exits_saying_so(stack: Stack) -> None:
    """Unset RELAY_REDIS_PASSWORD: Compose still parses the file (down, logs work), Redis exits with the reason
    and nothing starts on top of it."""
    env_file = stack.env_file.with_name("compose-no-password.env")
    kept = [line for line in stack.env_file.read_text().splitlines() if not line.startswith("RELAY_REDIS_PASSWORD=")]
    env_file.write_text("\n".join(kept) + "\n")
    bare = Stack(
        stack.engine,
        stack.command,
        f"{stack.project}-no-password",
        env_file,
        api_base="",
        api_key="",
        redis_password="",
    )
    try:
        up = bare.compose("up", "--detach", "--no-build", check=False)
        assert up.returncode != 0, "up must fail when Redis cannot start"
        assert bare.containers("api", stopped=False) == bare.containers("worker", stopped=False) == []
        (container,) = bare.containers("redis")
        exit_codes: set[int] = set()

        def exited() -> bool:
            exit_codes.add(bare.engine.inspect(container["Id"])[0]["State"]["ExitCode"])
            return EX_CONFIG in exit_codes

        wait_until(exited, 60, "Redis to exit", interval=0.02)
        # Its message can reach `compose logs` a moment after the exit (seen once: only "Attaching to ..." read).
        wait_until(lambda: "RELAY_REDIS_PASSWORD" in bare.logs("redis"), 10, "Redis's reason in its log", interval=0.2)
        assert health(bare.engine.inspect(container["Id"])[0]) != "healthy"
    finally:
        bare.down()
        env_file.unlink()
