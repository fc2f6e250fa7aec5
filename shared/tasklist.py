"""``GET /tasks``: recent tasks, newest first, filtered by state and task name, a page at a time.

The index (``relay:index:<queue>``, a sorted set by submit time) is walked by ``list.lua`` from a cursor; it
reads only the first bytes of each task's records, drops entries whose task has expired, and stops after a
bounded number of entries, so one request costs Redis a bounded amount of work whatever the filter. Workers
keep the index bounded (``maintenance.lua``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
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
    score, last_id = decode_cursor(cursor, seal) if cursor else ("+inf", "")
    if keys.shard_count() > 1:
        found, after = await _merged_ids(pool, scripts, queue_name, (score, last_id), (state, task, prefix), limit)
    else:
        found, after = await _page_ids(scripts, queue_name, (score, last_id), (state, task, prefix), limit)
    next_cursor = encode_cursor(*after, seal) if after else None
    views = await task_views(pool, queue_name, found, timeout_for) if found else []
    return Page([v for v in views if v is not None], next_cursor)


async def _page_ids(
    scripts: Scripts,
    queue_name: str,
    start: tuple[str, str],
    filters: tuple[str | None, str | None, str],
    limit: int,
) -> tuple[list[str], tuple[bytes, bytes] | None]:
    """The ids of one page of the index (of the shard this call works on) after ``start`` (score, id), and the
    index entry the walk stopped at (None: the index has no more)."""
    (score, last_id), (state, task, prefix) = start, filters
    found: list[str] = []
    after: tuple[bytes, bytes] | None = None
    for _ in range(MAX_CALLS):
        args: list[str | int] = [
            int(time.time() * 1000),
            score,
            last_id,
            SCAN_BUDGET,
            limit - len(found),
            state or "",
            task or "",
            prefix,
        ]
        matches, next_score, next_id = await scripts.list(
            keys=[keys.task_index(queue_name), keys.schedule(queue_name)], args=args
        )
        found += [m.decode() for m in matches[0::2]]
        if next_score is None:
            after = None
            break
        score, last_id = next_score.decode(), next_id.decode()
        after = (next_score, next_id)
        if len(found) >= limit:
            break
    return found, after


async def _merged_ids(
    pool: ArqRedis,
    scripts: Scripts,
    queue_name: str,
    start: tuple[str, str],
    filters: tuple[str | None, str | None, str],
    limit: int,
) -> tuple[list[str], tuple[bytes, bytes] | None]:
    """A page over every shard's index (``shared/keys.py``): a page from each, merged newest first. An entry
    is shown only if no shard that stopped early could still hold a newer one (each page stops after a bounded
    walk), so pages never skip a task; the cursor (score, id) means the same position in every shard."""
    entries: list[tuple[float, str, str]] = []  # (score, id, the score as Redis writes it)
    frontiers: list[tuple[float, str, str]] = []
    for shard in keys.shards():
        with keys.on_shard(shard):
            found, after = await _page_ids(scripts, queue_name, start, filters, limit)
            scores = await pool.zmscore(keys.task_index(queue_name), found) if found else []
        for task_id, score in zip(found, scores, strict=True):
            if score is not None:
                entries.append((score, task_id, _redis_number(score)))
        if after is not None:
            frontiers.append((float(after[0]), after[1].decode(), after[0].decode()))
    entries.sort(reverse=True)
    cut = max(frontiers, default=None)
    shown = [e for e in entries if cut is None or e[:2] >= cut[:2]][:limit]
    if len(shown) == limit:
        last = shown[-1]
    elif cut is not None:
        last = cut
    else:
        return [e[1] for e in shown], None
    return [e[1] for e in shown], (last[2].encode(), last[1].encode())


def _redis_number(score: float) -> str:
    """A score as Redis prints it (the index's are whole microseconds), which ``list.lua`` compares as a string."""
    return str(int(score)) if score.is_integer() else repr(score)
