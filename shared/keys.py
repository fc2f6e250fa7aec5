"""Every Redis key and channel Relay owns, in one place (arq's own keys stay in ``arq.constants``).

Keys are unambiguous for every valid task id and queue name: each kind has its own prefix, no prefix is a
prefix of another, and the variable part (a task id or a queue name) always comes last. So no id can make one
kind of key equal another (``relay:reply:x:sent`` could once be read as two different keys).
"""

from __future__ import annotations

from typing import Final

from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix

# Per task: prefix + task id.
EVENTS_PREFIX: Final = "relay:events:"
SEQ_PREFIX: Final = "relay:seq:"
EVENT_BYTES_PREFIX: Final = "relay:event-bytes:"
REPLY_PREFIX: Final = "relay:reply:"
# Per queue: prefix + queue name.
INDEX_PREFIX: Final = "relay:index:"
OUTBOX_PREFIX: Final = "relay:outbox:"
WAKEUP_PREFIX: Final = "relay:wakeup:"
MAINTENANCE_PREFIX: Final = "relay:maintenance:"
CATALOGUE_PREFIX: Final = "relay:catalogue:"
PRESENCE_PREFIX: Final = "relay:presence:"
# Per API key and queue: prefix + key name (no ':' in a name) + ':' + queue name.
QUOTA_ACTIVE_PREFIX: Final = "relay:quota-active:"
QUOTA_RATE_PREFIX: Final = "relay:quota-rate:"

RELAY_PREFIXES: Final = (
    EVENTS_PREFIX,
    SEQ_PREFIX,
    EVENT_BYTES_PREFIX,
    REPLY_PREFIX,
    INDEX_PREFIX,
    OUTBOX_PREFIX,
    WAKEUP_PREFIX,
    MAINTENANCE_PREFIX,
    CATALOGUE_PREFIX,
    PRESENCE_PREFIX,
    QUOTA_ACTIVE_PREFIX,
    QUOTA_RATE_PREFIX,
)
ARQ_PREFIXES: Final = (job_key_prefix, result_key_prefix, in_progress_key_prefix, retry_key_prefix)
ABORT_SET: Final = abort_jobs_ss

# A running job's score in the queue: this base plus its lease expiry (ms). Waiting jobs score their due time
# (ms since the epoch, far below 1e15), so one sorted set answers "due", "deferred" and "running" by range.
RUNNING_BASE: Final = 10**15


def events_stream(task_id: str) -> str:
    """The capped Redis Stream that keeps a task's events for replay."""
    return EVENTS_PREFIX + task_id


def events_channel(task_id: str) -> str:
    """The pub/sub channel a task's live events are published on (channels are not keys)."""
    return EVENTS_PREFIX + task_id


def event_seq(task_id: str) -> str:
    """The task's event counter: outlives its stream, so numbering never restarts while the task lives."""
    return SEQ_PREFIX + task_id


def event_bytes(task_id: str) -> str:
    """The bytes of events a task's stream holds (``RELAY_EVENT_LOG_MAX_BYTES``); expires with the stream."""
    return EVENT_BYTES_PREFIX + task_id


def reply_request(task_id: str) -> str:
    """Where a Service Bus request asked its task's outcome to be sent."""
    return REPLY_PREFIX + task_id


def job(task_id: str) -> str:
    """arq's job record."""
    return job_key_prefix + task_id


def result(task_id: str) -> str:
    """arq's result record."""
    return result_key_prefix + task_id


def in_progress(task_id: str) -> str:
    """arq's in-progress marker; Relay stores the owning worker's token, the try and the start time in it."""
    return in_progress_key_prefix + task_id


def tries(task_id: str) -> str:
    """arq's try counter."""
    return retry_key_prefix + task_id


def task_index(queue_name: str) -> str:
    """Every task of the queue by submit time, newest last: ``GET /tasks`` pages through it."""
    return INDEX_PREFIX + queue_name


def reply_outbox(queue_name: str) -> str:
    """Tasks whose Service Bus reply is due, by next attempt time."""
    return OUTBOX_PREFIX + queue_name


def wakeup_channel(queue_name: str) -> str:
    """Where enqueuers tell idle workers of this queue that a job is due (or when one will be)."""
    return WAKEUP_PREFIX + queue_name


def maintenance_lock(queue_name: str) -> str:
    """Held by the one worker that trims the task index this round."""
    return MAINTENANCE_PREFIX + queue_name


def catalogue(digest: str) -> str:
    """A published task catalogue, named by its digest (``shared.catalogue``)."""
    return CATALOGUE_PREFIX + digest


def worker_presence(queue_name: str) -> str:
    """The live workers of this queue (a hash: worker id -> what it is doing, refreshed every few seconds)."""
    return PRESENCE_PREFIX + queue_name


def quota_active(queue_name: str, key_name: str) -> str:
    """The sorted set of task ids an API key (by name) has queued or running, scored by reservation time."""
    return f"{QUOTA_ACTIVE_PREFIX}{key_name}:{queue_name}"


def quota_rate(queue_name: str, key_name: str) -> str:
    """An API key's submit token bucket (a hash: tokens, ts)."""
    return f"{QUOTA_RATE_PREFIX}{key_name}:{queue_name}"


def queue_name_problem(queue_name: str) -> str | None:
    """Why ``queue_name`` cannot be used (it would share keys with Relay's or arq's), or None."""
    for prefix in (*RELAY_PREFIXES, *ARQ_PREFIXES, ABORT_SET):
        if queue_name.startswith(prefix) or f"{queue_name}:".startswith(prefix):
            return f"it would share keys with {prefix!r}"
    return None
