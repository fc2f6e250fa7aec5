"""Size limits a submission must pass before anything is enqueued, for every entry point (HTTP, Service Bus).

The queue-depth limit counts jobs, not bytes: without a cap on each job's arguments, a few hundred
1 MiB bodies fill a 512 MB Redis long before the queue is "full". With it, the queue's worst case is
``RELAY_MAX_QUEUE_DEPTH x RELAY_MAX_ARGS_BYTES x`` a measured overhead factor (docs/redis.md, "Sizing Redis").
"""

from __future__ import annotations

from shared.errors import SubmissionError
from shared.serialization import dumps
from shared.tasks import TaskSubmission

MAX_ARGS_SETTING = "RELAY_MAX_ARGS_BYTES"


class ArgsTooLarge(SubmissionError):
    """The task's arguments are larger than the configured limit: never retry the same submission."""


def args_bytes(submission: TaskSubmission) -> int:
    """The size of the submission's arguments as stored: JSON-encoded ``[args, kwargs]``."""
    return len(dumps([submission.args, submission.kwargs]))


def check_args_size(submission: TaskSubmission, max_bytes: int) -> None:
    """Raise ``ArgsTooLarge`` when the arguments exceed ``max_bytes``; call it before the enqueue."""
    size = args_bytes(submission)
    if size > max_bytes:
        raise ArgsTooLarge(
            f"the task's arguments are {size} bytes as JSON; the limit is {max_bytes} ({MAX_ARGS_SETTING}). "
            "Pass large data by reference (a URL or a key), not inline.",
            {"size_bytes": size, "max_bytes": max_bytes, "setting": MAX_ARGS_SETTING},
        )
