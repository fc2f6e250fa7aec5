"""Every Redis key and channel Relay owns, in one place (arq's own keys stay in ``arq.constants``).

Keys are unambiguous for every valid task id and queue name: each kind has its own prefix, no prefix is a
prefix of another, and the variable part (a task id or a queue name) always comes last. So no id can make one
kind of key equal another (``relay:reply:x:sent`` could once be read as two different keys). Where a key has
two variable parts, the first cannot contain the separator that follows it (a task name has no ``|``, an API
key name no ``:``).

The queue, lanes and claims (one design, shared by the enqueue, claim, commit, abort and retry scripts):

- **Lanes.** A waiting job (queued, deferred, retrying) sits in its *lane*: a sorted set per queue and task name
  (``lane(queue, task)``), scored by the time it falls due (ms, Redis's clock). A worker claims only from the
  lanes of the tasks it runs, so a job is never taken by a worker that lacks its code, and a lane no live
  worker serves simply waits (nothing scans past it).
- **The schedule** is the queue's own sorted set (``settings.queue_name``), in two bands: each non-empty lane
  has a *marker* member (``lane_marker(task)``: ``~`` + task name, which no task id can be) scored by its
  lane's head (earliest due time), and each running job has its id scored ``RUNNING_BASE`` + its lease expiry.
  So one ``ZRANGE 0 0`` tells an idle worker whether anything is due or any lease lapses, and the claim reads
  the due lanes' markers, never a scan of jobs. A marker's score is never later than its lane's head (every add
  uses ``ZADD LT``); the claim corrects a marker that is early or whose lane emptied.
- **Later lanes.** Named queues, priorities, per-key limits and tenant fairness (issue #21) refine the lane
  (task, tenant, priority band): the marker names the lane, and the claim's choice among due lanes is where
  round-robin, limits and priority order go. Redis Cluster (issue #22) puts a queue shard's schedule, its
  lanes and its tasks' keys in one hash slot.
- **Time** that decides ownership (due, leases, the sweep, abort requests against enqueue times) is Redis's
  ``TIME``, read inside each script (``relay_now`` in ``lib.lua``); callers pass delays, never "now".
- **Replays.** A script the client sends again after a timeout or a dropped connection is applied once: the
  claim records its request id and batch under ``claim_request(token)``, and a replay returns that batch;
  commits are fenced by the owner's token and skip events already in the log; enqueues are idempotent by id.
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
# Per queue and task name: prefix + task name (no '|' in a name) + '|' + queue name.
LANE_PREFIX: Final = "relay:lane:"
# Per worker: prefix + the worker's token.
CLAIM_REQUEST_PREFIX: Final = "relay:claim-request:"
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
    LANE_PREFIX,
    CLAIM_REQUEST_PREFIX,
    CATALOGUE_PREFIX,
    PRESENCE_PREFIX,
    QUOTA_ACTIVE_PREFIX,
    QUOTA_RATE_PREFIX,
)
ARQ_PREFIXES: Final = (job_key_prefix, result_key_prefix, in_progress_key_prefix, retry_key_prefix)
ABORT_SET: Final = abort_jobs_ss

# A running job's score in the queue: this base plus its lease expiry (ms). Lane markers score their lane's
# head (ms since the epoch, far below 1e15), so one sorted set answers "what is due" and "what lapses" by range.
RUNNING_BASE: Final = 10**15
# A lane's member in the schedule: this character (never the first of a task id) + the task name.
LANE_MARKER: Final = "~"


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


def lane(queue_name: str, task_name: str) -> str:
    """The waiting jobs of one task on one queue, by due time (see the module docstring)."""
    return f"{LANE_PREFIX}{task_name}|{queue_name}"


def lane_marker(task_name: str) -> str:
    """The member of the queue's schedule that stands for a lane, scored by the lane's head."""
    return LANE_MARKER + task_name


def claim_request(token: str) -> str:
    """A worker's last claim (its request id and what it claimed), kept briefly so a replayed claim returns the
    same jobs instead of claiming more."""
    return CLAIM_REQUEST_PREFIX + token


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
