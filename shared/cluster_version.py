"""Which Redis a cluster must run: 7.0 or later, since every script publishes with ``SPUBLISH`` there (sharded
pub/sub, ``shared.sharded_pubsub``) and the API's hub and the workers' wake-up listener ``SSUBSCRIBE``. On an
older primary each script call would fail; the worker refuses to start (``worker.connect``) and the API stays
unready (``api.resources``), each saying why in one line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

CLUSTER_REDIS_SINCE = (7, 0)


async def primaries_too_old(cluster: Any, log_func: Callable[[str], Any] | None = None) -> list[str]:
    """The primaries of ``cluster`` (a ``shared.redis.RelayCluster``) that run a Redis older than 7.0, as
    ``'<node> runs Redis <version>'``; each primary's ``INFO`` line goes to ``log_func`` if given."""
    await cluster.initialize()  # the client learns the cluster's nodes on its first command
    too_old = []
    for node in cluster.get_primaries():
        info = await cluster.info(target_nodes=node)
        version = str(info.get("redis_version", "?"))
        if log_func is not None:
            log_func(
                f"redis cluster primary {node.name}: redis_version={version} "
                f"mem_usage={info.get('used_memory_human', '?')} db_keys={info.get('db0', {}).get('keys', 0)}"
            )
        if predates(version, CLUSTER_REDIS_SINCE):
            too_old.append(f"{node.name} runs Redis {version}")
    return too_old


def refusal(too_old: list[str]) -> str:
    """The one line that says why Relay cannot use this cluster."""
    return f"a Redis Cluster needs Redis 7.0 or later (sharded pub/sub): {', '.join(too_old)}"


def predates(version: str, since: tuple[int, int]) -> bool:
    """Whether ``version`` ('6.2.14') is older than ``since``; an unreadable one is not judged."""
    parts = version.split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:2]):
        return False
    return (int(parts[0]), int(parts[1])) < since
