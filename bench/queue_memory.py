"""What one queued task costs Redis, measured: ``INFO memory`` before and after N real enqueues.

Each task is enqueued exactly as the API does it (``shared.enqueue.enqueue_task``: arq's job record,
its key and expiry, the queue's sorted set) with an ``echo`` argument of the given size, into a private
redis-server. The overhead factor is (used_memory after - before) / (N x argument bytes): what
``RELAY_MAX_QUEUE_DEPTH x RELAY_MAX_ARGS_BYTES`` must be multiplied by to compare with Redis's
``maxmemory`` (see "Sizing Redis" in docs/redis.md).

    .venv/bin/python -m bench.queue_memory [--tasks 2000] [--sizes 1024,16384,65536,262144]
"""

from __future__ import annotations

import argparse
import asyncio

import redis

from bench.common import arq_pool, bench_scope
from shared.enqueue import enqueue_task
from shared.limits import args_bytes
from shared.settings import Settings
from shared.tasks import TaskSubmission
from worker.tasks import load

registry = load(["worker.tasks.demo"])


def used_memory(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


async def fill(url: str, queue: str, tasks: int, size: int) -> int:
    """Enqueue ``tasks`` deferred echo tasks whose JSON-encoded arguments are ``size`` bytes; their total."""
    settings = Settings(redis_url=url, queue_name=queue, max_queue_depth=tasks + 1)
    pool = arq_pool(url)
    # {"message": "xxx..."} encodes to the string plus 15 bytes of JSON around it.
    submission = TaskSubmission(task="echo", kwargs={"message": "x" * (size - 15)}, delay_seconds=3600)
    total = args_bytes(submission) * tasks
    try:
        for _ in range(tasks):
            await enqueue_task(pool, registry, settings, submission)
    finally:
        await pool.aclose()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--sizes", default="256,1024,16384,65536,262144")
    ns = parser.parse_args()
    print("| argument bytes | tasks | used_memory delta | bytes per task | overhead factor |")
    print("|---:|---:|---:|---:|---:|")
    with bench_scope() as bench:
        server = bench.redis()
        for size in (int(s) for s in ns.sizes.split(",")):
            queue = f"bench:mem:{size}"
            before = used_memory(server.url)
            total = asyncio.run(fill(server.url, queue, ns.tasks, size))
            delta = used_memory(server.url) - before
            print(f"| {size:,} | {ns.tasks:,} | {delta:,} | {delta // ns.tasks:,} | {delta / total:.2f} |")
            redis.Redis.from_url(server.url).flushall()


if __name__ == "__main__":
    main()
