"""``GET /tasks``: recent tasks, newest first, filtered by state and task name, a page at a time.

The index (``relay:index:<queue>``, a sorted set by submit time) is walked by ``list.lua`` from a cursor; it
reads only the first bytes of each task's records, drops entries whose task has expired, and stops after a
bounded number of entries, so one request costs Redis a bounded amount of work whatever the filter. Workers
keep the index bounded (``maintenance.lua``). ``GET /workflows`` pages through the workflow index the same way,
with the same cursors: a tenant with few workflows among many others' gets short pages, never an unbounded walk.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis
from cryptography.fernet import Fernet, InvalidToken

from shared import keys
from shared.scripts import Scripts
from shared.status import TimeoutFor, task_views

SCAN_BUDGET = 1000  # index entries one script call examines
MAX_CALLS = 10  # script calls one request makes at most (a page may come back short, with a cursor)


class BadCursor(ValueError):
    """The cursor is not one this API handed out."""


@dataclass(frozen=True)
class Page:
    """One page of tasks and where the next one starts (None when there is no more)."""

    tasks: list[dict[str, Any]]
    next_cursor: str | None


def cursor_seal(api_key_secrets: list[str]) -> Fernet | None:
    """What seals cursors when API keys are configured (None without: one tenant, nothing to hide), keyed from
    those keys, which every API process of a deployment shares. A cursor names the index entry a walk stopped at,
    and a tenant's walk steps over every other tenant's entries: unsealed, its cursor could name another tenant's
    task and submit time, and a tenant writing its own could read the whole index that way. A key added or
    removed makes older cursors ``BadCursor`` (the caller lists from the start again)."""
    if not api_key_secrets:
        return None
    material = b"\0".join(sorted(secret.encode() for secret in api_key_secrets))
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"relay task-list cursor\0" + material).digest()))


def encode_cursor(score: bytes, task_id: bytes, seal: Fernet | None = None) -> str:
    raw = score + b" " + task_id
    if seal is not None:
        return seal.encrypt(raw).decode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, seal: Fernet | None = None) -> tuple[str, str]:
    try:
        if seal is not None:
            raw = seal.decrypt(cursor.encode())
        else:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        score, task_id = raw.decode().split(" ", 1)
        float(score)
    except (binascii.Error, UnicodeError, ValueError, InvalidToken):
        raise BadCursor("cursor is not one this API handed out") from None
    return score, task_id


@dataclass(frozen=True)
class Index:
    """A sorted set of ids by submit time that ``list.lua`` pages through, newest first."""

    key: Callable[[str], str]  # its key, by namespace
    ids_only: bool  # True: entries match by id prefix alone (no record is read, no state or task filter)


TASKS = Index(keys.task_index, ids_only=False)
WORKFLOWS = Index(keys.flow_index, ids_only=True)  # GET /workflows: a workflow's state is read from its hash


@dataclass(frozen=True)
class Walk:
    """Where one page of an index walk starts and what it keeps."""

    index: Index
    queue_name: str
    start: tuple[str, str]  # the cursor's (score, id); ('+inf', '') from the newest
    filters: tuple[str | None, str | None, str]  # state, task name, id prefix (a tenant's; '' for any)
    limit: int


async def list_tasks(
    pool: ArqRedis,
    scripts: Scripts,
    queue_name: str,
    *,
    state: str | None = None,
    task: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    timeout_for: TimeoutFor | None = None,
    prefix: str = "",
    seal: Fernet | None = None,
) -> Page:
    """The next page after ``cursor`` (newest first), of the tasks whose stored id starts with ``prefix``
    (a tenant's, ``shared.tenancy``; '' for every task); cursors sealed with ``seal`` (``cursor_seal``)."""
    start = decode_cursor(cursor, seal) if cursor else ("+inf", "")
    found, next_cursor = await page_ids(
        pool, scripts, Walk(TASKS, queue_name, start, (state, task, prefix), limit), seal
    )
    views = await task_views(pool, queue_name, found, timeout_for) if found else []
    return Page([v for v in views if v is not None], next_cursor)


async def page_ids(pool: ArqRedis, scripts: Scripts, walk: Walk, seal: Fernet | None) -> tuple[list[str], str | None]:
    """The ids of one page of ``walk`` over every shard's index, and the cursor after it (None at the end).
    Each request examines a bounded number of entries per shard (``SCAN_BUDGET`` times ``MAX_CALLS``), whatever
    the filters: a page may come back short, even empty, with a cursor."""
    if keys.shard_count() > 1:
        found, after = await _merged_ids(pool, scripts, walk)
    else:
        found, after = await _page_ids(scripts, walk)
    return found, encode_cursor(*after, seal) if after else None


async def _page_ids(scripts: Scripts, walk: Walk) -> tuple[list[str], tuple[bytes, bytes] | None]:
    """The ids of one page of the index (of the shard this call works on) after the walk's start (score, id),
    and the index entry the walk stopped at (None: the index has no more)."""
    (score, last_id), (state, task, prefix) = walk.start, walk.filters
    found: list[str] = []
    after: tuple[bytes, bytes] | None = None
    index_keys = [walk.index.key(walk.queue_name), keys.schedule(walk.queue_name)]
    for _ in range(MAX_CALLS):
        args: list[str | int] = [int(time.time() * 1000), score, last_id, SCAN_BUDGET, walk.limit - len(found)]
        args += [state or "", task or "", prefix, "ids" if walk.index.ids_only else ""]
        matches, next_score, next_id = await scripts.list(keys=index_keys, args=args)
        found += [m.decode() for m in matches[0::2]]
        if next_score is None:
            after = None
            break
        score, last_id = next_score.decode(), next_id.decode()
        after = (next_score, next_id)
        if len(found) >= walk.limit:
            break
    return found, after


async def _merged_ids(pool: ArqRedis, scripts: Scripts, walk: Walk) -> tuple[list[str], tuple[bytes, bytes] | None]:
    """A page over every shard's index (``shared/keys.py``): a page from each, merged newest first. An entry
    is shown only if no shard that stopped early could still hold a newer one (each page stops after a bounded
    walk), so pages never skip an entry; the cursor (score, id) means the same position in every shard."""
    entries: list[tuple[float, str, str]] = []  # (score, id, the score as Redis writes it)
    frontiers: list[tuple[float, str, str]] = []
    for shard in keys.shards():
        with keys.on_shard(shard):
            found, after = await _page_ids(scripts, walk)
            scores = await pool.zmscore(walk.index.key(walk.queue_name), found) if found else []
        for entry_id, score in zip(found, scores, strict=True):
            if score is not None:
                entries.append((score, entry_id, _redis_number(score)))
        if after is not None:
            frontiers.append((float(after[0]), after[1].decode(), after[0].decode()))
    entries.sort(reverse=True)
    cut = max(frontiers, default=None)
    shown = [e for e in entries if cut is None or e[:2] >= cut[:2]][: walk.limit]
    if len(shown) == walk.limit:
        last = shown[-1]
    elif cut is not None:
        last = cut
    else:
        return [e[1] for e in shown], None
    return [e[1] for e in shown], (last[2].encode(), last[1].encode())


def _redis_number(score: float) -> str:
    """A score as Redis prints it (the index's are whole microseconds), which ``list.lua`` compares as a string."""
    return str(int(score)) if score.is_integer() else repr(score)
