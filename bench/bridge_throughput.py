"""Service Bus bridge throughput: messages/s from a queue to enqueued (and completed) tasks.

Usage: .venv/bin/python -m bench.bridge_throughput [--messages 2000] [--concurrency 8,32] [--prefetch 64]

Pre-fills the local Service Bus-compatible endpoint (bench/harness/servicebus, in this process) with
``echo`` messages, then starts one worker (``arq worker.settings`` with the bridge configured) and
times until every message has been completed, i.e. its task durably enqueued. The worker also runs
the tasks meanwhile, as it would in production; both share this machine's 2 cores with the endpoint.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from bench.harness.processes import relay_env, start_redis, start_worker, wait_until
from bench.harness.servicebus import LocalServiceBus


def run(messages: int, concurrency: int, prefetch: int, log_dir: Path) -> float:
    redis, url = start_redis(log_dir)
    queue = f"bench-{uuid.uuid4().hex[:6]}"
    with LocalServiceBus(lock_duration=60.0) as bus:
        for i in range(messages):
            bus.send(queue, b'{"task": "echo", "args": ["x"]}', message_id=f"bench-{i}")
        env = relay_env(
            url,
            RELAY_SERVICEBUS_CONNECTION_STRING=bus.connection_string,
            RELAY_SERVICEBUS_QUEUE=queue,
            RELAY_SERVICEBUS_MAX_CONCURRENCY=str(concurrency),
            RELAY_SERVICEBUS_PREFETCH=str(prefetch),
            RELAY_WORKER_CONCURRENCY="50",
        )
        worker = start_worker(log_dir, env)
        try:
            started = time.perf_counter()
            wait_until(
                lambda: len(bus.completed_ids(queue)) >= messages, 600, "every message to be completed", interval=0.01
            )
            elapsed = time.perf_counter() - started
        finally:
            worker.stop()
            redis.stop()
    return messages / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", default="8,32")
    parser.add_argument("--prefetch", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            rate = run(args.messages, concurrency, args.prefetch, Path(tmp))
            print(
                f"bridge: {args.messages} messages, max_concurrency={concurrency}, prefetch={args.prefetch}: "
                f"{rate:,.0f} messages/s queue -> enqueued task -> completed"
            )


if __name__ == "__main__":
    main()
