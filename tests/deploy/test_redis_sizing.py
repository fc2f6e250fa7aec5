"""A full queue fits in the Redis each deploy artefact ships: RELAY_MAX_QUEUE_DEPTH tasks with arguments of
RELAY_MAX_ARGS_BYTES, at what such a task costs a real redis-server (measured here, through the real
enqueue), take at most half of maxmemory. The other half is for finished tasks' results and event
logs (kept RELAY_RESULT_TTL_SECONDS) and Redis's own buffers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis

from bench.harness.processes import ManagedProcess
from shared.enqueue import enqueue_task
from shared.limits import args_bytes
from shared.redis import connect_fail_fast
from shared.settings import Settings
from shared.tasks import TaskSubmission
from tests.deploy.manifests import Doc, configmap_data, container, named
from worker.tasks import load

registry = load(["worker.tasks.demo"])

QUEUE_SHARE = 0.5
SAMPLE_TASKS = 300
# As redis.conf documents them: 1k = 1000 bytes, 1kb = 1024 bytes, and so on.
UNITS = {"": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}


def maxmemory(command: list[str]) -> int:
    """redis-server's ``--maxmemory`` in bytes."""
    value = command[command.index("--maxmemory") + 1].lower()
    digits = value.rstrip("kmgb")
    return int(digits) * UNITS[value[len(digits) :]]


def queued_task_bytes(url: str, args_size: int) -> float:
    """What one queued task with ``args_size`` bytes of arguments costs Redis, measured."""
    client = redis.Redis.from_url(url)
    settings = Settings(redis_url=url, queue_name="relay:sizing", max_queue_depth=SAMPLE_TASKS + 1)
    empty = args_bytes(TaskSubmission(task="echo", kwargs={"message": ""}))
    submission = TaskSubmission(task="echo", kwargs={"message": "x" * (args_size - empty)}, delay_seconds=3600)
    assert args_bytes(submission) == args_size

    async def fill() -> None:
        pool = await connect_fail_fast(settings)
        try:
            for _ in range(SAMPLE_TASKS):
                await enqueue_task(pool, registry, settings, submission)
        finally:
            await pool.aclose()

    before = int(client.info("memory")["used_memory"])
    asyncio.run(fill())
    used = int(client.info("memory")["used_memory"]) - before
    client.close()
    return used / SAMPLE_TASKS


def fits(
    spawn_redis: Callable[..., tuple[ManagedProcess, str]], env: dict[str, str], maxmemory_bytes: int
) -> tuple[bool, str]:
    settings = Settings.model_validate({k.removeprefix("RELAY_").lower(): v for k, v in env.items()})
    _, url = spawn_redis()
    per_task = queued_task_bytes(url, settings.max_args_bytes)
    full_queue = settings.max_queue_depth * per_task
    summary = (
        f"{settings.max_queue_depth} tasks x {per_task:,.0f} B ({settings.max_args_bytes} B of arguments) = "
        f"{full_queue / 1024**2:,.0f} MiB of {maxmemory_bytes / 1024**2:,.0f} MiB maxmemory"
    )
    return full_queue <= maxmemory_bytes * QUEUE_SHARE, summary


def relay_env_of(env: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in env.items() if k.startswith("RELAY_") and "${" not in str(v)}


def test_kubernetes_queue_fits_its_redis(
    base: list[Doc], spawn_redis: Callable[..., tuple[ManagedProcess, str]]
) -> None:
    redis_container = container(named(base, "StatefulSet", "relay-redis"), "redis")
    ok, summary = fits(
        spawn_redis, relay_env_of(configmap_data(base, "relay-config")), maxmemory(redis_container["command"])
    )
    assert ok, summary


def test_compose_queue_fits_its_redis(
    compose: dict[str, Any], spawn_redis: Callable[..., tuple[ManagedProcess, str]]
) -> None:
    services = compose["services"]
    ok, summary = fits(
        spawn_redis, relay_env_of(services["api"]["environment"]), maxmemory(services["redis"]["command"])
    )
    assert ok, summary


def test_maxmemory_units() -> None:
    assert maxmemory(["--maxmemory", "512mb"]) == 512 * 1024**2
    assert maxmemory(["--maxmemory", "1gb"]) == 1024**3
    assert maxmemory(["--maxmemory", "100m"]) == 100_000_000
