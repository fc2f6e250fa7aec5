"""Request/response nodes: CBS ``put-token`` and an entity's ``$management`` operations.

Replies carry ``correlation_id`` = the request's ``message_id``, which is how the SDK's
management link pairs them; CBS reports ``status-code`` while entity management reports
``statusCode``/``statusDescription`` (and ``errorCondition`` on failure), exactly as the SDK reads.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from proton import UNDESCRIBED, Array, Data, Message, symbol, timestamp

from bench.harness.servicebus import names
from bench.harness.servicebus.store import Entity, LockLostError

_SETTLEMENTS = (names.DISPOSITION_COMPLETED, names.DISPOSITION_ABANDONED, names.DISPOSITION_SUSPENDED)


@dataclass
class Outcome:
    """What a management request did: the reply to send and the lock tokens it settled."""

    reply: Message
    settled: list[uuid.UUID] = field(default_factory=list)


def cbs_reply(request: Message) -> Message:
    """Accept any token: the endpoint authenticates nobody, it only has to complete the handshake."""
    status = 202 if (request.properties or {}).get(names.CBS_OPERATION_KEY) == names.CBS_PUT_TOKEN else 400
    reply = Message(body=None, correlation_id=request.id)
    reply.properties = {names.CBS_STATUS_CODE: status, names.CBS_STATUS_DESCRIPTION: _describe(status)}
    return reply


def handle(entity: Entity, request: Message) -> Outcome:
    """Run one ``$management`` request against ``entity``."""
    operation = (request.properties or {}).get(names.MGMT_OPERATION_KEY)
    body = request.body if isinstance(request.body, dict) else {}
    try:
        if operation == names.OP_RENEW_LOCK:
            return _renew_lock(entity, request, body)
        if operation == names.OP_UPDATE_DISPOSITION:
            return _update_disposition(entity, request, body)
    except LockLostError as error:
        return Outcome(_lock_lost(request, error))
    return Outcome(_reply(request, 501, f"{operation} is not supported here", condition=names.NOT_IMPLEMENTED))


def _renew_lock(entity: Entity, request: Message, body: dict[Any, Any]) -> Outcome:
    now = time.time()
    expirations = [timestamp(int(entity.renew(token, now) * 1000)) for token in _tokens(body)]
    value = {names.EXPIRATIONS: Array(UNDESCRIBED, Data.TIMESTAMP, *expirations)}
    return Outcome(_reply(request, 200, "OK", value))


def _update_disposition(entity: Entity, request: Message, body: dict[Any, Any]) -> Outcome:
    status = body.get(names.DISPOSITION_STATUS)
    if status not in _SETTLEMENTS:
        description = f"disposition {status} is not supported here"
        return Outcome(_reply(request, 501, description, condition=names.NOT_IMPLEMENTED))
    settled: list[uuid.UUID] = []
    for token in _tokens(body):
        try:
            _settle(entity, token, status, body)
        except LockLostError as error:
            # Tokens settled before the lost one stay settled; report them so their deliveries close.
            return Outcome(_lock_lost(request, error), settled)
        settled.append(token)
    return Outcome(_reply(request, 200, "OK", {}), settled)


def _settle(entity: Entity, token: uuid.UUID, status: str, body: dict[Any, Any]) -> None:
    if status == names.DISPOSITION_COMPLETED:
        entity.complete(token)
    elif status == names.DISPOSITION_ABANDONED:
        entity.abandon(token)
    else:
        reason = body.get(names.MGMT_DEAD_LETTER_REASON)
        entity.dead_letter(token, reason, body.get(names.MGMT_DEAD_LETTER_DESCRIPTION))


def _tokens(body: dict[Any, Any]) -> list[uuid.UUID]:
    """The request's lock tokens; the SDK sends them as an AMQP array of uuid."""
    value = body.get(names.LOCK_TOKENS)
    elements = value.elements if isinstance(value, Array) else list(value or [])
    return [element if isinstance(element, uuid.UUID) else uuid.UUID(str(element)) for element in elements]


def _lock_lost(request: Message, error: LockLostError) -> Message:
    description = f"The lock supplied is invalid: it expired or the message was already settled ({error})."
    return _reply(request, 410, description, condition=names.MESSAGE_LOCK_LOST)


def _reply(request: Message, status: int, description: str, value: Any = None, condition: str | None = None) -> Message:
    reply = Message(body=value, correlation_id=request.id)
    properties: dict[str, Any] = {names.MGMT_STATUS_CODE: status, names.MGMT_STATUS_DESCRIPTION: description}
    if condition is not None:
        properties[names.MGMT_ERROR_CONDITION] = symbol(condition)
    reply.properties = properties
    return reply


def _describe(status: int) -> str:
    return "Accepted" if status == 202 else "Bad Request"
