"""Relay's Lua scripts (``shared/lua/``), registered once per Redis client.

Every script is ``lib.lua`` followed by its own text, with the key prefixes of ``shared.keys`` filled in, so
key names have one source. Scripts build per-task key names from those prefixes (rather than receiving every
key in KEYS). On a Redis Cluster the prefixes carry the namespace's hash tag (``keys.tag()``), so every key a
script builds is in the slot of the keys it receives, and every call passes at least one tagged key, so the
cluster client sends it to the node that holds that slot (see shared/keys.py); there they publish with
``SPUBLISH`` (``{{PUBLISH}}``), since their channels carry the tag too.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

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
    "handback",
    "wake_all",
)


def source(name: str) -> str:
    """The full text of script ``name`` in this process's key layout, as sent to Redis."""
    return _source(name, keys.tag())


@cache
def _source(name: str, tag: str) -> str:
    return with_library((resources.files("shared") / "lua" / f"{name}.lua").read_text())


def with_library(body: str) -> str:
    """``lib.lua`` (with Relay's key prefixes) followed by ``body``: a script that can use Relay's helpers."""
    text = (resources.files("shared") / "lua" / "lib.lua").read_text() + "\n" + body
    tag = keys.tag()
    names = {
        "RUNNING_BASE": str(keys.RUNNING_BASE),
        "JOB_PREFIX": keys.job(""),
        "RESULT_PREFIX": keys.result(""),
        "IN_PROGRESS_PREFIX": keys.in_progress(""),
        "TRIES_PREFIX": keys.tries(""),
        "EVENTS_PREFIX": tag + keys.EVENTS_PREFIX,
        "SEQ_PREFIX": tag + keys.SEQ_PREFIX,
        "EVENT_BYTES_PREFIX": tag + keys.EVENT_BYTES_PREFIX,
        "REPLY_PREFIX": tag + keys.REPLY_PREFIX,
        "ABORT_SET": keys.abort_set(),
        "LANE_PREFIX": tag + keys.LANE_PREFIX,
        "LANE_MARKER": keys.LANE_MARKER,
        "SLOTS_PREFIX": tag + keys.SLOTS_PREFIX,
        "PARKED_PREFIX": tag + keys.PARKED_PREFIX,
        "RATE_PREFIX": tag + keys.RATE_PREFIX,
        "FAIRNESS_PREFIX": tag + keys.FAIRNESS_PREFIX,
        "DEPTH_PREFIX": tag + keys.DEPTH_PREFIX,
        "WAKEUP_PREFIX": tag + keys.WAKEUP_PREFIX,
        "PARK_MS": str(keys.PARK_MS),
        "PUBLISH": keys.publish_command(),
        "INDEX_PREFIX": tag + keys.INDEX_PREFIX,
        "FLOW_PREFIX": tag + keys.FLOW_PREFIX,
        "FLOW_EVENTS_PREFIX": tag + keys.FLOW_EVENTS_PREFIX,
        "CHILDREN_PREFIX": tag + keys.CHILDREN_PREFIX,
        "HANDOFF_PREFIX": tag + keys.HANDOFF_PREFIX,
        "HANDED_PREFIX": tag + keys.HANDED_PREFIX,
        "IDLE_PREFIX": tag + keys.IDLE_PREFIX,
        "WATCH_PREFIX": tag + keys.WATCH_PREFIX,
    }
    for placeholder, value in names.items():
        text = text.replace("{{" + placeholder + "}}", value)
    if "{{" in text:
        raise ValueError("a script has a placeholder Relay does not fill in")
    return text


class _Script:
    """One of ``Scripts``' scripts: the one registered for the shard the call works on (``keys.tag()``)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, scripts: Scripts, owner: type | None = None) -> AsyncScript:
        registered = scripts._by_tag.get(keys.tag())
        if registered is None:
            registered = scripts._by_tag[keys.tag()] = scripts._register()
        return registered[self.name]


class Scripts:
    """The scripts, registered on one async client (EVALSHA, loaded again by redis-py after a flush). With several
    shards (``RELAY_QUEUE_SHARDS``) each shard has its own texts (its tag is compiled in), registered the first time
    a call works on that shard (``keys.on_shard``): each attribute is the current shard's."""

    enqueue = _Script()
    claim = _Script()
    commit = _Script()
    abort = _Script()
    retry = _Script()
    repair = _Script()
    list = _Script()
    maintenance = _Script()
    outbox = _Script()
    counts = _Script()
    why = _Script()
    flow_submit = _Script()
    flow_cancel = _Script()
    flow_retry = _Script()
    handback = _Script()
    wake_all = _Script()

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._by_tag: dict[str, dict[str, AsyncScript]] = {keys.tag(): self._register()}

    def _register(self) -> dict[str, AsyncScript]:
        return {name: self._redis.register_script(source(name)) for name in _REGISTERED}


_REGISTERED = tuple(name for name in SCRIPT_NAMES if name != "renew")


def renew_script(redis: SyncRedis) -> Any:
    """The lease renewal script on a synchronous client (the renewal thread's)."""
    return redis.register_script(source("renew"))
