"""Relay's Lua scripts (``shared/lua/``), registered once per Redis client.

Every script is ``lib.lua`` followed by its own text, with the key prefixes of ``shared.keys`` filled in, so
key names have one source. Scripts build per-task key names from those prefixes (rather than receiving every
key in KEYS): Relay needs one Redis (or a Sentinel-managed primary), not Redis Cluster (see shared/keys.py for
how the keys are laid out, and where a cluster's hash tags would go).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio import Redis

from shared import keys

SCRIPT_NAMES = (
    "enqueue",
    "claim",
    "renew",
    "commit",
    "abort",
    "retry",
    "repair",
    "list",
    "maintenance",
    "outbox",
    "counts",
    "why",
    "flow_submit",
    "flow_cancel",
    "flow_retry",
)


@cache
def source(name: str) -> str:
    """The full text of script ``name``, as sent to Redis."""
    return with_library((resources.files("shared") / "lua" / f"{name}.lua").read_text())


def with_library(body: str) -> str:
    """``lib.lua`` (with Relay's key prefixes) followed by ``body``: a script that can use Relay's helpers."""
    text = (resources.files("shared") / "lua" / "lib.lua").read_text() + "\n" + body
    names = {
        "RUNNING_BASE": str(keys.RUNNING_BASE),
        "JOB_PREFIX": keys.job(""),
        "RESULT_PREFIX": keys.result(""),
        "IN_PROGRESS_PREFIX": keys.in_progress(""),
        "TRIES_PREFIX": keys.tries(""),
        "EVENTS_PREFIX": keys.EVENTS_PREFIX,
        "SEQ_PREFIX": keys.SEQ_PREFIX,
        "EVENT_BYTES_PREFIX": keys.EVENT_BYTES_PREFIX,
        "REPLY_PREFIX": keys.REPLY_PREFIX,
        "ABORT_SET": keys.ABORT_SET,
        "LANE_PREFIX": keys.LANE_PREFIX,
        "LANE_MARKER": keys.LANE_MARKER,
        "SLOTS_PREFIX": keys.SLOTS_PREFIX,
        "PARKED_PREFIX": keys.PARKED_PREFIX,
        "RATE_PREFIX": keys.RATE_PREFIX,
        "FAIRNESS_PREFIX": keys.FAIRNESS_PREFIX,
        "DEPTH_PREFIX": keys.DEPTH_PREFIX,
        "WAKEUP_PREFIX": keys.WAKEUP_PREFIX,
        "PARK_MS": str(keys.PARK_MS),
        "INDEX_PREFIX": keys.INDEX_PREFIX,
        "FLOW_PREFIX": keys.FLOW_PREFIX,
        "FLOW_EVENTS_PREFIX": keys.FLOW_EVENTS_PREFIX,
        "CHILDREN_PREFIX": keys.CHILDREN_PREFIX,
    }
    for placeholder, value in names.items():
        text = text.replace("{{" + placeholder + "}}", value)
    if "{{" in text:
        raise ValueError("a script has a placeholder Relay does not fill in")
    return text


class Scripts:
    """The scripts, registered on one async client (EVALSHA, loaded again by redis-py after a flush)."""

    def __init__(self, redis: Redis) -> None:
        self.enqueue = redis.register_script(source("enqueue"))
        self.claim = redis.register_script(source("claim"))
        self.commit = redis.register_script(source("commit"))
        self.abort = redis.register_script(source("abort"))
        self.retry = redis.register_script(source("retry"))
        self.repair = redis.register_script(source("repair"))
        self.list = redis.register_script(source("list"))
        self.maintenance = redis.register_script(source("maintenance"))
        self.outbox = redis.register_script(source("outbox"))
        self.counts = redis.register_script(source("counts"))
        self.why = redis.register_script(source("why"))
        self.flow_submit = redis.register_script(source("flow_submit"))
        self.flow_cancel = redis.register_script(source("flow_cancel"))
        self.flow_retry = redis.register_script(source("flow_retry"))


def renew_script(redis: SyncRedis) -> Any:
    """The lease renewal script on a synchronous client (the renewal thread's)."""
    return redis.register_script(source("renew"))
