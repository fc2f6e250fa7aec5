"""Every Redis key and channel Relay owns, in one place (arq's own keys stay in ``arq.constants``)."""

EVENTS_PREFIX = "relay:events:"
ABORT_PREFIX = "relay:abort:"
REPLY_PREFIX = "relay:reply:"
WAKEUP_CHANNEL_SUFFIX = ":wakeup"


def events_stream(task_id: str) -> str:
    """The capped Redis Stream that keeps a task's events for replay."""
    return f"{EVENTS_PREFIX}{task_id}"


def events_channel(task_id: str) -> str:
    """The pub/sub channel a task's live events are published on."""
    return f"{EVENTS_PREFIX}{task_id}"


def wakeup_channel(queue_name: str) -> str:
    """Where enqueuers tell idle workers of this queue to poll now."""
    return f"{queue_name}{WAKEUP_CHANNEL_SUFFIX}"


def abort_marker(task_id: str) -> str:
    """Set by the API before asking arq to abort, so a worker can tell an abort from a shutdown."""
    return f"{ABORT_PREFIX}{task_id}"


def reply_request(task_id: str) -> str:
    """Where a Service Bus request asked its task's outcome to be sent."""
    return f"{REPLY_PREFIX}{task_id}"


def reply_sent(task_id: str) -> str:
    """Set once that reply went out, so a redelivery does not send it again."""
    return f"{REPLY_PREFIX}{task_id}:sent"


QUOTA_PREFIX = "relay:quota:"


def quota_active(queue_name: str, key_name: str) -> str:
    """The sorted set of task ids an API key (by name) has queued or running, scored by reservation time."""
    return f"{QUOTA_PREFIX}{queue_name}:active:{key_name}"


def quota_rate(queue_name: str, key_name: str) -> str:
    """An API key's submit token bucket (a hash: tokens, ts)."""
    return f"{QUOTA_PREFIX}{queue_name}:rate:{key_name}"
