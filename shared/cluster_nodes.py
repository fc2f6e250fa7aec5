"""Two fixes to redis-py's cluster clients' nodes managers (async and sync), installed by ``guard``.

**One failover's MOVED applied twice** (redis-py < 7) wrecked the slot map.

redis-py updates its slot map from a MOVED (``NodesManager._update_moved_slots``): the node it names becomes the slot's
primary, the old primary its replica. Commands in flight when a primary fails over all get that MOVED; one that comes
after the map was already updated applied it again, and the node that was already primary was then "demoted" too:
the slot was left with its real primary typed as a replica, twice. Nothing repairs that (the node does own the slot,
so no MOVED comes again), and ``SCRIPT LOAD``, sent to the primaries, never reaches it: every ``EVALSHA`` answers
NOSCRIPT for ever (seen when a killed primary came back as its successor's replica and answered MOVED,
``tests/e2e/test_cluster_failover.py``). redis-py later made such a MOVED a no-op (redis/redis-py#3899); so does this.

``tests/shared/test_cluster_wait.py`` holds it to the installed redis-py.

**A layout that cannot be read** (no node answers, or the nodes leave slots uncovered or disagree, as while a cluster
restarts or fails over) raised ``RedisClusterException``, which is not a ``RedisError``: every handler that rides out
a Redis outage let it through, so the API answered 500, a worker exited, the lease renewal thread and the bridge's
reply sender died. It is raised here as ``ClusterUnreachable``, a ``ConnectionError`` (``shared.redis_errors``), and
ridden out as one (``tests/e2e/test_cluster_unreachable.py``).
"""

from __future__ import annotations

from typing import Any, NoReturn

import redis
from redis.asyncio.cluster import NodesManager as AsyncNodesManager
from redis.cluster import NodesManager as SyncNodesManager
from redis.cluster import get_node_name
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    NoPermissionError,
    RedisClusterException,
    TimeoutError,
)

from shared.redis_errors import ClusterUnreachable


def _names_its_primary(manager: Any) -> bool:
    """Whether the MOVED being applied names the node the slot map already has as that slot's primary."""
    moved = manager._moved_exception
    nodes = manager.slots_cache.get(moved.slot_id)
    return bool(nodes) and nodes[0].name == get_node_name(moved.host, moved.port)


def _raise_as_outage(exc: RedisClusterException) -> NoReturn:
    """Raise what ``initialize``'s ``exc`` is: an outage (no node answered, or they leave slots uncovered or
    disagree, as while a cluster fails over) as ``ClusterUnreachable``; a node that refused Relay's credentials as
    that refusal (not transient: ``redis_auth``); anything else (a node not in cluster mode, a bug) as it was."""
    cause = exc.__cause__
    if isinstance(cause, AuthenticationError | NoPermissionError):
        raise cause from None  # the node's own answer, already with its context
    if cause is None or isinstance(cause, ConnectionError | TimeoutError | OSError):
        raise ClusterUnreachable(f"the cluster's layout could not be read: {exc}") from exc
    raise exc


class _AsyncNodesManager(AsyncNodesManager):
    __slots__ = ()  # redis-py's has slots: the same layout, so a client's manager can become this one

    def _update_moved_slots(self) -> None:
        if _names_its_primary(self):
            self._moved_exception = None  # type: ignore[assignment]  # what redis-py sets once it applied one
            return
        super()._update_moved_slots()

    async def initialize(self) -> None:
        try:
            await super().initialize()
        except RedisClusterException as exc:
            _raise_as_outage(exc)


class _SyncNodesManager(SyncNodesManager):
    __slots__ = ()

    def _update_moved_slots(self) -> None:
        if _names_its_primary(self):
            self._moved_exception = None
            return
        super()._update_moved_slots()  # type: ignore[no-untyped-call]

    def initialize(self) -> None:
        try:
            super().initialize()  # type: ignore[no-untyped-call]
        except RedisClusterException as exc:
            _raise_as_outage(exc)


def guard(manager: AsyncNodesManager | SyncNodesManager) -> None:
    """Give ``manager`` (a cluster client's ``nodes_manager``) the fix; fail loudly if redis-py's shape changed."""
    fixed = _AsyncNodesManager if isinstance(manager, AsyncNodesManager) else _SyncNodesManager
    base = fixed.__mro__[1]
    if type(manager) is not base or not hasattr(manager, "_moved_exception") or not hasattr(manager, "slots_cache"):
        raise RuntimeError(
            f"redis-py {redis.__version__}: the cluster client's nodes manager is not the one shared/cluster_nodes.py "
            "fixes; check whether it still needs the fix"
        )
    manager.__class__ = fixed
