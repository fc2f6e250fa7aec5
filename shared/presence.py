"""Which workers are alive, what they run and what they are doing: each worker refreshes one field of a
per-queue hash every few seconds (``keys.worker_presence``). The API's ``GET /stats`` reads it for the
dashboard, and its task catalogue (``shared.catalogue``) takes the live workers' offers from it.

arq's own health key is per host (``<queue>:health-check:<hostname>``), so two workers on one host share it,
and it says nothing of what runs; this record is per process. A worker that stops cleanly says so in a last
record; one that dies stops refreshing it and shows as silent; either is dropped after ``FORGET_SECONDS``.

Times are Redis's: a worker stamps its record with its estimate of Redis's clock (the offset it keeps from its
claims, which read ``TIME``), and readers compare it with ``TIME``, so a worker whose clock is off is neither
taken for gone (its tasks refused by the API) nor kept alive after it stopped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from shared import keys
from shared.redis import server_time
from shared.serialization import dumps, loads

REFRESH_SECONDS = 5.0
SILENT_AFTER_SECONDS = 3 * REFRESH_SECONDS  # not heard of for this long: its loop is blocked, or it is gone
FORGET_SECONDS = 60.0
MAX_RUNNING_SHOWN = 20


def presence_key(queue_name: str) -> str:
    """The presence hash: per deployment, not per task, so in shard 0 (``shared/keys.py``)."""
    with keys.on_shard(0):
        return keys.worker_presence(queue_name)


async def publish(redis: Redis, queue_name: str, worker_id: str, info: dict[str, Any], seen_ms: float) -> None:
    """Refresh this worker's field (one HSET: a field of its own, so no worker overwrites another's), seen at
    ``seen_ms`` on Redis's clock (the worker's estimate of it: ``Engine.redis_now_ms``)."""
    record = info | {"id": worker_id, "seen_ms": int(seen_ms)}
    # redis-py types its hash commands as sync-or-async and str-valued; the async client awaits, bytes are fine.
    await cast(Awaitable[int], redis.hset(presence_key(queue_name), worker_id, dumps(record).decode()))


async def records(redis: Redis, queue_name: str) -> tuple[dict[bytes, bytes], float]:
    """Every worker's last record, as stored, and Redis's clock (ms) to compare their ``seen_ms`` with."""
    key = presence_key(queue_name)
    if isinstance(redis, RedisCluster):  # which pipelines no TIME: the clock of the node that holds the record
        fields = await cast(Awaitable[dict[bytes, bytes]], redis.hgetall(key))
        seconds, micros = await server_time(redis, key)
        return fields, seconds * 1000 + micros / 1000
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(key)
        pipe.time()
        fields, (seconds, micros) = await pipe.execute()
    return cast(dict[bytes, bytes], fields), seconds * 1000 + micros / 1000


async def read(redis: Redis, queue_name: str) -> list[dict[str, Any]]:
    """The workers heard of within ``FORGET_SECONDS`` that have not stopped, each with ``status`` (``alive``,
    ``stopping`` or ``silent``) and ``seen_seconds_ago``; longer-silent ones are removed."""
    key = presence_key(queue_name)
    fields, now_ms = await records(redis, queue_name)
    workers: list[dict[str, Any]] = []
    forgotten: list[str] = []
    for field, raw in fields.items():
        try:
            record = loads(raw)
            ago = (now_ms - float(record["seen_ms"])) / 1000
        except (ValueError, KeyError, TypeError):
            forgotten.append(field.decode())
            continue
        if ago > FORGET_SECONDS:
            forgotten.append(field.decode())
            continue
        if record.get("stopped") or "pid" not in record:
            continue  # gone (its record stays a while for the task catalogue), or not a worker's own record
        workers.append(_view(record, ago))
    if forgotten:
        await cast(Awaitable[int], redis.hdel(key, *forgotten))
    return sorted(workers, key=lambda w: (str(w.get("hostname", "")), int(w.get("pid") or 0)))


def _view(record: dict[str, Any], ago: float) -> dict[str, Any]:
    """What ``GET /stats`` shows of a worker: times as ISO strings, and its status."""
    status = "silent" if ago > SILENT_AFTER_SECONDS else ("stopping" if record.get("stopping") else "alive")
    running = [
        {"id": run.get("id"), "task": run.get("task"), "started_at": _iso(run.get("started_ms"))}
        for run in record.get("running_tasks") or []
        if isinstance(run, dict)
    ]
    return {
        "id": record.get("id"),
        "hostname": record.get("hostname"),
        "pid": record.get("pid"),
        "status": status,
        "seen_seconds_ago": round(max(0.0, ago), 1),
        "started_at": _iso(record.get("started_ms")),
        "concurrency": record.get("concurrency"),
        "running": record.get("running", 0),
        "running_tasks": running,
        "totals": record.get("totals") or {},
        "metrics_port": record.get("metrics_port"),
        "queues": [str(q) for q in record.get("queues") or ["default"]],
    }


def _iso(ms: Any) -> str | None:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat() if isinstance(ms, int | float) and ms else None
