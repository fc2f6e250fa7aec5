"""Job leases, renewed from a thread of their own.

A running job's score in the queue is ``RUNNING_BASE`` plus its lease expiry; every worker's claim sweeps the
lapsed ones (``claim.lua``), so a job whose worker died runs again within about one lease. The renewal runs in
a thread with its own synchronous Redis client, not on the event loop: a task that blocks the loop (a
``time.sleep`` in an ``async def``) keeps its lease, so no other worker starts it a second time. A lease is
renewed until the job's timeout plus one lease has passed: past that, its worker is wedged on it, and the
job is left to lapse and run elsewhere (that try counts).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import redis
from redis.exceptions import RedisError

from shared import keys
from shared.redis import sync_client
from shared.scripts import renew_script
from shared.settings import Settings

if TYPE_CHECKING:
    from worker.engine.engine import Engine

logger = logging.getLogger("relay.worker.leases")


class LeaseKeeper:
    """Renews the leases of the jobs this worker holds, every third of a lease."""

    def __init__(self, settings: Settings, token: str, engine: Engine) -> None:
        self._settings = settings
        self._token = token
        self._engine = engine
        # task id -> (monotonic time after which it is no longer renewed, the run holding it: an id may run here
        # again, a retry claimed before the run before it ended, and only the current holder's entry counts)
        self._held: dict[str, tuple[float, object]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: redis.Redis | None = None
        self.renewals = 0

    def start(self, loop_call: object) -> None:
        """Start the renewal thread; ``loop_call`` is ``loop.call_soon_threadsafe`` of the worker's loop."""
        self._call_soon = loop_call
        self._client = sync_client(self._settings)
        self._renew: dict[str, Any] = {}  # per shard's tag: its renewal script (``_renew_shard``)
        self._thread = threading.Thread(target=self._run, name="relay-leases", daemon=True)
        self._thread.start()

    def hold(self, task_id: str, until_monotonic: float, holder: object = None) -> None:
        with self._lock:
            self._held[task_id] = (until_monotonic, holder)

    def release(self, task_id: str, holder: object = None) -> None:
        """Stop renewing ``task_id``: only ``holder``'s hold when given (a newer run of the id keeps its own)."""
        with self._lock:
            held = self._held.get(task_id)
            if held is not None and (holder is None or held[1] is holder):
                del self._held[task_id]

    def stop(self) -> None:
        """Stop renewing. The thread may be inside a renewal that retries an unreachable Redis: it is a daemon,
        so it is waited for only briefly (a stopping worker must not wait on Redis; its leases then lapse)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=0.5)
        if self._client is not None:
            self._client.close()

    def _run(self) -> None:
        interval = self._settings.lease_seconds / 3
        while not self._stop.wait(interval):
            now = time.monotonic()
            with self._lock:
                holders = {task_id: holder for task_id, (until, holder) in self._held.items() if until > now}
            ids = list(holders)
            if not ids:
                continue
            lost: list[bytes] = []
            for shard, shard_ids in _by_shard(ids).items():  # one call per shard of the queue (shared/keys.py)
                with keys.on_shard(shard):
                    try:
                        lost += self._renew_shard(shard_ids)
                        self.renewals += 1
                    except (RedisError, OSError) as exc:
                        logger.warning("could not renew %d leases: %s", len(shard_ids), exc)
                    except Exception:  # the thread must outlive any failure: without it, every lease lapses
                        logger.exception("could not renew %d leases", len(shard_ids))
            for raw in lost:
                task_id = raw.decode()
                self.release(task_id, holders[task_id])
                self._call_soon(self._engine.lease_lost, task_id, holders[task_id])  # type: ignore[operator]

    def _renew_shard(self, ids: list[str]) -> list[bytes]:
        """Renew ``ids``, all of the shard this call works on; the ones another worker owns now."""
        assert self._client is not None
        script = self._renew.get(keys.tag())
        if script is None:
            script = self._renew[keys.tag()] = renew_script(self._client)
        lost: list[bytes] = script(
            keys=[keys.schedule(self._settings.queue_name)],
            args=[0, int(self._settings.lease_seconds * 1000), self._token, *ids],  # Redis's clock
        )
        return lost


def _by_shard(ids: list[str]) -> dict[int, list[str]]:
    groups: dict[int, list[str]] = {}
    for task_id in ids:
        groups.setdefault(keys.shard_of(task_id), []).append(task_id)
    return groups
