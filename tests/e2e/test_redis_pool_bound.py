"""A burst of 5,000 concurrent submits against one API process whose Redis is slowed by a pause: the API
never holds more than RELAY_REDIS_MAX_CONNECTIONS connections, and every submit gets a 202 or a clean
503 ``redis_pool_exhausted`` with Retry-After (never a 500, never a dropped connection)."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import StartApi
from tests.support.redis_servers import start_server

BURST = 5_000
BOUND = 8


async def submit_once(port: int, task_id: str) -> tuple[int, str, str]:
    """One POST on its own connection: (status, error code or "", Retry-After or "")."""
    body = json.dumps({"task": "echo", "id": task_id}).encode()
    head = (
        f"POST /tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode() + b"Connection: close\r\n\r\n" + body)
        status = int((await reader.readline()).split()[1])
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        payload = json.loads(await reader.readexactly(int(headers["content-length"])))
    finally:
        writer.close()
    code = payload["error"]["code"] if status >= 400 else ""
    return status, code, headers.get("retry-after", "")


async def burst(port: int, ids: list[str]) -> list[tuple[int, str, str] | BaseException]:
    return await asyncio.gather(*(submit_once(port, task_id) for task_id in ids), return_exceptions=True)


class ConnectionWatch:
    """Polls ``CLIENT LIST`` in a thread and counts the connections of unnamed clients: the API's (the
    test's own clients name themselves ``test-*``)."""

    def __init__(self, server_client: object) -> None:
        self.client = server_client
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ConnectionWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            clients = self.client.client_list()  # type: ignore[attr-defined]
            self.peak = max(self.peak, sum(not c["name"].startswith("test-") for c in clients))
            self.samples += 1
            self._stop.wait(0.002)


@pytest.mark.timeout(300)
def test_five_thousand_concurrent_submits_stay_within_the_pool_bound(tmp_path: Path, spawn_api: StartApi) -> None:
    server = start_server(tmp_path, "--maxclients", "10000", name="bounded")
    queue = f"relay:burst:{uuid.uuid4().hex[:8]}"
    api, base = spawn_api(
        url=server.url,
        RELAY_QUEUE_NAME=queue,
        RELAY_REDIS_MAX_CONNECTIONS=str(BOUND),
        RELAY_REDIS_POOL_TIMEOUT_SECONDS="0.5",
    )
    admin = server.client()
    watcher = server.client()
    admin.client_setname("test-admin")
    watcher.client_setname("test-watch")
    try:
        ids = [f"burst-{i}-{uuid.uuid4().hex[:8]}" for i in range(BURST)]
        with ConnectionWatch(watcher) as watch:
            admin.execute_command("CLIENT", "PAUSE", "1500", "WRITE")  # a slow Redis: enqueues pile up
            results = asyncio.run(burst(int(base.rsplit(":", 1)[1]), ids))
        failures = [r for r in results if isinstance(r, BaseException)]
        assert failures == []
        answers = [r for r in results if not isinstance(r, BaseException)]
        statuses = Counter(status for status, _, _ in answers)
        print(
            f"\nstatuses {dict(statuses)}; peak API connections {watch.peak} (bound {BOUND}); {watch.samples} samples"
        )
        assert set(statuses) <= {202, 503}
        assert statuses[202] > 0
        assert statuses[503] > 0  # the bound did bite
        assert {(code, retry) for status, code, retry in answers if status == 503} == {("redis_pool_exhausted", "1")}
        assert watch.peak <= BOUND
        assert admin.zcard(queue) == statuses[202]  # every 202 is a queued job, every 503 left nothing
        assert "unhandled error" not in api.output()
    finally:
        admin.close()
        watcher.close()
        api.stop()
        server.proc.stop()
