"""What the peers' workers load: per system, a no-op ``echo(message)`` task returning ``{"echo": message}``, and
``echo_await(message)``, which awaits once first (``asyncio.sleep(0)``, or its nearest equivalent); and the chain
workload's ``step(value)``, returning ``value + 1``, for the systems that chain (Relay, Celery, Dramatiq, streaq)."""

import os

READY = "bench worker ready"  # printed by each app's own start-up hook, whatever the library's log level


def redis_url() -> str:
    return os.environ["BENCH_REDIS_URL"]
