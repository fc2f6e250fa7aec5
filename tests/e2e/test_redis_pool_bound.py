"""A burst of 5,000 concurrent requests (submits and aborts) against one API process whose Redis is slowed by
a pause: the API never holds more than RELAY_REDIS_MAX_CONNECTIONS connections, and every request gets its
answer or a clean 503 ``redis_pool_exhausted`` with Retry-After (never a 500, never a dropped connection).

Submits share connections (the enqueuer sends concurrent ones as one batch), so on their own they no longer
exhaust the pool; each abort holds a connection of its own while Redis is paused, and those do."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis

from bench.harness.redis_servers import start_server
from shared import keys, lanes
from tests.conftest import StartApi
from tests.support.heavy import heavy

BURST = 5_000
BOUND = 8
UNPAUSE_AFTER = 500


async def request_once(port: int, task_id: str, abort: bool) -> tuple[int, str, str]:
    """A submit (POST) or an abort (DELETE) of ``task_id``, on its own connection: (status, error code or "",
    Retry-After or "")."""
    body = b"" if abort else json.dumps({"task": "echo", "id": task_id}).encode()
    line = f"DELETE /tasks/{task_id}" if abort else "POST /tasks"
    head = f"{line} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
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


async def burst(port: int, ids: list[str], admin: redis.Redis) -> list[tuple[int, str, str] | BaseException]:
    """Submits ``ids``; every other request instead aborts an id nobody submitted (404 once Redis answers).
    Redis pauses writes until ``UNPAUSE_AFTER`` answers came back (all of them 503s: nothing can be written),
    so the pool is exhausted however long this machine takes to open 5,000 connections."""
    answered = 0
    done = asyncio.Event()

    async def one(i: int, task_id: str) -> tuple[int, str, str]:
        nonlocal answered
        try:
            return await request_once(port, task_id, abort=i % 2 == 1)
        finally:
            answered += 1
            if answered >= UNPAUSE_AFTER:
                done.set()

    async def unpause() -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(60):
                await done.wait()
        await asyncio.to_thread(admin.execute_command, "CLIENT", "UNPAUSE")

    admin.execute_command("CLIENT", "PAUSE", "120000", "WRITE")  # a stalled Redis: requests pile up
    answers, _ = await asyncio.gather(
        asyncio.gather(*(one(i, task_id) for i, task_id in enumerate(ids)), return_exceptions=True), unpause()
    )
    return answers


async def aborts_of_unknown_ids(port: int, count: int) -> list[tuple[int, str, str]]:
    """``count`` concurrent aborts of ids nobody submitted."""
    return await asyncio.gather(*(request_once(port, f"never-{uuid.uuid4().hex}", abort=True) for _ in range(count)))


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
@heavy
def test_five_thousand_concurrent_requests_stay_within_the_pool_bound(tmp_path: Path, spawn_api: StartApi) -> None:
    server = start_server(tmp_path, "--maxclients", "10000", name="bounded")
    queue = f"relay:burst:{uuid.uuid4().hex[:8]}"
    api, base = spawn_api(
        url=server.url,
        RELAY_QUEUE_NAME=queue,
        RELAY_REDIS_MAX_CONNECTIONS=str(BOUND),
        RELAY_REDIS_POOL_TIMEOUT_SECONDS="0.5",
        RELAY_REDIS_TIMEOUT_SECONDS="150",  # the requests holding the 8 connections wait out the pause
    )
    admin = server.client()
    watcher = server.client()
    admin.client_setname("test-admin")
    watcher.client_setname("test-watch")
    try:
        ids = [f"burst-{i}-{uuid.uuid4().hex[:8]}" for i in range(BURST)]
        with ConnectionWatch(watcher) as watch:
            results = asyncio.run(burst(int(base.rsplit(":", 1)[1]), ids, admin))
        failures = [r for r in results if isinstance(r, BaseException)]
        assert failures == []
        answers = [r for r in results if not isinstance(r, BaseException)]
        statuses = Counter(status for status, _, _ in answers)
        print(
            f"\nstatuses {dict(statuses)}; peak API connections {watch.peak} (bound {BOUND}); {watch.samples} samples"
        )
        assert set(statuses) <= {202, 404, 503}
        assert statuses[202] > 0
        assert statuses[503] > 0  # the bound did bite
        assert {(code, retry) for status, code, retry in answers if status == 503} == {("redis_pool_exhausted", "1")}
        assert watch.peak <= BOUND
        # Every 202 is a queued job (in the echo lane: shared/keys.py), every 503 left nothing.
        assert admin.zcard(keys.lane(queue, lanes.lane_id("echo", "default", 0, None))) == statuses[202]
        # The burst's aborts may all have waited past the pool's timeout (a slow host opens its 5,000 connections
        # before the pause ends): so, after it, the pool is whole again and as many aborts as it holds reach Redis.
        after = asyncio.run(aborts_of_unknown_ids(int(base.rsplit(":", 1)[1]), BOUND))
        assert [status for status, _, _ in after] == [404] * BOUND
        assert "unhandled error" not in api.output()
    finally:
        admin.close()
        watcher.close()
        api.stop()
        server.proc.stop()
