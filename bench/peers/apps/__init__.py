"""What the peers' workers load: one no-op ``echo(message)`` task per system, returning ``{"echo": message}``."""

import os

READY = "bench worker ready"  # printed by each app's own start-up hook, whatever the library's log level


def redis_url() -> str:
    return os.environ["BENCH_REDIS_URL"]
