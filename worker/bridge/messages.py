"""From a Service Bus message to a Relay submission, or to the reason it must be dead-lettered.

The body is JSON ``{"task", "args"?, "kwargs"?, "delay_seconds"?, "run_at"?, "timeout_seconds"?,
"max_retries"?}``; the task name may instead be given in the application property ``task``. The message id
becomes the task id, so a redelivered message enqueues nothing new. AMQP allows a message without an id
(other SDKs and integrations send them): its task id is then derived from the entity and the broker's
sequence number, which is unique per entity and survives redelivery.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import msgspec
from azure.servicebus import ServiceBusReceivedMessage
from azure.servicebus.amqp import AmqpMessageBodyType
from pydantic import ValidationError

from shared import tracing
from shared.tasks import TaskSubmission, is_task_id

DESCRIPTION_LIMIT = 1024  # Service Bus caps dead-letter descriptions; keep them readable anyway


class DeadLetterReason:
    """The ``DeadLetterReason`` values the bridge uses (Service Bus adds ``MaxDeliveryCountExceeded``)."""

    INVALID_JSON = "InvalidJson"
    INVALID_SCHEMA = "InvalidSchema"
    UNKNOWN_TASK = "UnknownTask"
    INVALID_ARGUMENTS = "InvalidArguments"
    ID_CONFLICT = "IdConflict"
    ARGS_TOO_LARGE = "ArgsTooLarge"


@dataclass(frozen=True)
class Poison(Exception):
    """A message that can never become a task: dead-letter it with this reason."""

    reason: str
    description: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.description}"


def task_id_for(message_id: str) -> str:
    """The message id itself when it is a valid task id, else a stable digest of it."""
    if is_task_id(message_id):
        return message_id
    return "sb-" + hashlib.sha256(message_id.encode()).hexdigest()[:40]


def message_task_id(message: ServiceBusReceivedMessage, entity: str) -> str:
    """The task id of a message: from its id, or from its entity and sequence number when it has none."""
    if message.message_id is not None and str(message.message_id) != "":
        return task_id_for(str(message.message_id))
    if message.sequence_number is None:
        raise Poison(DeadLetterReason.INVALID_SCHEMA, "the message has neither a message id nor a sequence number")
    return sequence_task_id(entity, message.sequence_number)


def sequence_task_id(entity: str, sequence_number: int) -> str:
    """The task id of a message without an id: its entity (digested) and the broker's sequence number."""
    digest = hashlib.sha256(entity.encode()).hexdigest()[:12]
    return f"sb-{digest}-seq-{sequence_number}"


def reply_request(message: ServiceBusReceivedMessage) -> dict[str, str | None] | None:
    """Where the outcome should go, if the sender asked for a reply (``reply_to``)."""
    if not message.reply_to:
        return None
    message_id = str(message.message_id) if message.message_id is not None else None
    return {"reply_to": message.reply_to, "session_id": message.reply_to_session_id, "message_id": message_id}


def trace_context(message: ServiceBusReceivedMessage) -> dict[str, str]:
    """The sender's W3C trace context (application properties ``traceparent``/``tracestate``), if valid."""
    return tracing.incoming(lambda name: _property(message, name))


def _json(raw: bytes | str) -> Any:
    try:
        return msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise Poison(DeadLetterReason.INVALID_JSON, f"the body is not JSON: {exc}"[:DESCRIPTION_LIMIT]) from None


def _body_value(message: ServiceBusReceivedMessage) -> Any:
    """Data bodies (what SDK senders produce) as JSON bytes; value bodies as JSON text or as a value."""
    if message.body_type == AmqpMessageBodyType.DATA:
        return _json(b"".join(message.body))
    value = message.body
    return _json(value) if isinstance(value, bytes | str) else value


def _property(message: ServiceBusReceivedMessage, name: str) -> str | None:
    props = message.application_properties or {}
    value = props.get(name) or props.get(name.encode())
    return value.decode() if isinstance(value, bytes) else (str(value) if value is not None else None)


def parse(message: ServiceBusReceivedMessage, entity: str) -> TaskSubmission:
    """The submission a message carries, with its task id; ``Poison`` if it cannot carry one."""
    body = _body_value(message)
    if not isinstance(body, dict):
        raise Poison(DeadLetterReason.INVALID_SCHEMA, "the body must be a JSON object")
    task = _property(message, "task")
    if task and "task" not in body:
        body = {**body, "task": task}
    body = {**body, "id": message_task_id(message, entity)}
    try:
        return TaskSubmission.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise Poison(DeadLetterReason.INVALID_SCHEMA, problems[:DESCRIPTION_LIMIT]) from None
